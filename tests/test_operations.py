"""Running punchcard as an operator does: fail-fast errors (one line, a known exit code),
the banner and how little a first start prints, readiness, /metrics after known traffic,
one log format (JSON on request) with request ids, and the sweeper child restarted.

Real processes on a real PostgreSQL throughout; nothing is timed."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from punchcard.db.migrate import head
from punchcard.settings import BadSetting, Settings, hide_password
from tests.conftest import JWT_SECRET, database_url, in_process
from tests.live import token
from tests.processes import (
    child_env,
    free_port,
    punchcard_command,
    server,
    start,
    stop,
    wait_healthy,
)

TIMEOUT = 120


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*punchcard_command(), *args], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def refused(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """Exited ``code`` having said, in exactly one line on stderr, ``words``."""
    lines = done.stderr.splitlines()
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    env = child_env(PUNCHCARD_DATA_DIR=str(tmp_path / "data"), JWT_SECRET=JWT_SECRET)
    env.pop("DATABASE_URL", None)
    return env


# -- the CLI ---------------------------------------------------------------------------------


def test_version_comes_from_the_package_metadata() -> None:
    done = run("--version", env=child_env())
    assert done.returncode == 0
    assert done.stdout.strip() == f"punchcard {version('punchcard')}"


@pytest.mark.parametrize("command", ["serve", "sweep", "migrate", "schema", "token"])
def test_every_command_says_what_it_does_its_defaults_and_environment(command: str) -> None:
    done = run(command, "--help", env=child_env())
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "environment:" in text
    expected = {
        "serve": ["PUNCHCARD_PORT (8000)", "--workers WORKERS server processes (default: 1)"],
        "sweep": ["PUNCHCARD_SWEEP_GRACE_MINUTES (15)", "PUNCHCARD_SWEEPER_METRICS_PORT"],
        "migrate": ["DATABASE_URL", "PUNCHCARD_DATA_DIR"],
        "schema": ["(default: schema.graphql)"],
        "token": ["JWT_SECRET", "(default: 3600)"],
    }[command]
    for words in expected:
        assert words in text, text


# -- fail fast, one line each ------------------------------------------------------------


def test_a_bad_setting_names_the_variable(tmp_path: Path) -> None:
    env = child_env(PUNCHCARD_PORT="abc", PUNCHCARD_DATA_DIR=str(tmp_path))
    refused(run("serve", env=env), 2, "PUNCHCARD_PORT=abc", "not a whole number")
    refused(run("sweep", env={**env, "PUNCHCARD_PORT": "99999"}), 2, "PUNCHCARD_PORT=99999")
    env = child_env(PUNCHCARD_LOG_FORMAT="xml", PUNCHCARD_DATA_DIR=str(tmp_path))
    refused(run("serve", env=env), 2, "PUNCHCARD_LOG_FORMAT=xml", "human, json")
    assert not (tmp_path / "pg").exists()  # nothing was started


def test_a_reminder_webhook_without_its_secret_is_refused(tmp_path: Path) -> None:
    env = child_env(
        PUNCHCARD_REMINDER_WEBHOOK_URL="https://hooks.example/remind",
        PUNCHCARD_DATA_DIR=str(tmp_path),
    )
    env.pop("PUNCHCARD_REMINDER_WEBHOOK_SECRET", None)
    refused(run("sweep", env=env), 2, "PUNCHCARD_REMINDER_WEBHOOK_SECRET")
    with pytest.raises(BadSetting, match="PUNCHCARD_REMINDER_WEBHOOK_URL"):
        Settings.from_env({"PUNCHCARD_REMINDER_WEBHOOK_URL": "https://hooks.example/remind"})


def test_an_unreachable_database_is_one_line() -> None:
    closed = free_port()  # nothing listens there
    url = f"postgresql://someone:s3cret@127.0.0.1:{closed}/punchcard"
    env = child_env(DATABASE_URL=url, JWT_SECRET=JWT_SECRET)
    for command in ("serve", "sweep"):
        done = run(command, "--port", str(free_port()), env=env) if command == "serve" else None
        done = done or run(command, env=env)
        refused(done, 3, "cannot reach PostgreSQL", f"127.0.0.1:{closed}", "DATABASE_URL")
        assert "s3cret" not in done.stderr  # the password is hidden


async def test_a_database_not_migrated_says_punchcard_migrate(
    pg_server: str, template_url: str
) -> None:
    name = f"unmigrated_{free_port()}"
    admin = await asyncpg.connect(pg_server)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        env = child_env(DATABASE_URL=database_url(pg_server, name), JWT_SECRET=JWT_SECRET)
        done = await asyncio.to_thread(run, "serve", "--port", str(free_port()), env=env)
        refused(done, 4, "not migrated", "no migration", head(), "punchcard migrate")
        done = await asyncio.to_thread(run, "sweep", env=env)
        refused(done, 4, "punchcard migrate")
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def test_a_port_in_use_says_port(db_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = child_env(DATABASE_URL=db_url, JWT_SECRET=JWT_SECRET)
        refused(run("serve", "--port", str(port), env=env), 5, f"127.0.0.1:{port}", "--port")


def test_a_half_initialised_data_dir_says_how_to_recover(
    tmp_path: Path, embedded_env: dict[str, str]
) -> None:
    pgdata = Path(embedded_env["PUNCHCARD_DATA_DIR"]) / "pg"
    pgdata.mkdir(parents=True)
    (pgdata / "postgresql.conf").write_text("# initdb was interrupted here\n")
    done = run("serve", "--port", str(free_port()), env=embedded_env)
    refused(done, 6, "half-initialised", f"rm -rf {pgdata.resolve()}")


def test_hide_password() -> None:
    assert hide_password("postgresql://u:p%40ss@h:5432/d?x=1") == "postgresql://u:***@h:5432/d?x=1"
    assert hide_password("postgresql://u@h/d") == "postgresql://u@h/d"
    assert hide_password("postgresql://postgres:@/postgres?host=/x") == (
        "postgresql://postgres:@/postgres?host=/x"
    )


# -- a first start, and the sweeper child --------------------------------------------------


def test_a_first_demo_start_prints_a_short_banner(
    tmp_path: Path, embedded_env: dict[str, str]
) -> None:
    """A fresh data dir: initdb (atomically: into a temporary dir, then renamed),
    migrations, demo data, the sweeper, and no more than 15 lines before it serves."""
    embedded_env.pop("JWT_SECRET")  # the development secret: the banner warns
    log = tmp_path / "serve.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(["serve", "--demo", "--sweeper", "--port", str(port)], embedded_env, log)
    try:
        deadline = time.monotonic() + TIMEOUT
        while "Token:" not in log.read_text():  # the banner is printed once it listens
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        before_first_request = log.read_text().splitlines()
        wait_healthy(process, url, log, TIMEOUT, path="/readyz")
    finally:
        assert stop(process) == 0
    assert len(before_first_request) <= 15, "\n".join(before_first_request)
    text = "\n".join(before_first_request)
    token = re.search(r"Token:     (\S+)", text)
    assert token, text
    assert f"GraphiQL:  {url}/graphiql#token={token[1]}" in text  # signed in
    assert f"ws://127.0.0.1:{port}/graphql" in text
    assert f"Page:      {url}/#token={token[1]}" in text
    assert re.search(r"Sweeper:   on \(pid \d+\)", text)
    assert "warning: JWT_SECRET is not set" in text
    assert "embedded" in text
    data = Path(embedded_env["PUNCHCARD_DATA_DIR"])
    assert (data / "pg" / "PG_VERSION").exists()
    assert not list(data.glob("pg.init-*"))  # the temporary initdb dir was renamed


def sweeper_children(pid: int) -> list[psutil.Process]:
    return [c for c in psutil.Process(pid).children() if "sweep" in c.cmdline()]


CREATE_PAST = """
mutation($c: ID!, $p: ID!, $start: DateTime!, $end: DateTime!) {
  createBooking(input: {clientId: $c, purchaseId: $p, startsAt: $start, endsAt: $end}) { id }
}"""


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(epoch))


def gql(url: str, bearer: str, query: str, **variables: object) -> dict[str, object]:
    answer = httpx.post(
        f"{url}/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=30,
    ).json()
    assert "errors" not in answer, answer
    data: dict[str, object] = answer["data"]
    return data


def test_serve_restarts_a_sweeper_child_that_died(tmp_path: Path, db_url: str) -> None:
    env = child_env(DATABASE_URL=db_url, JWT_SECRET=JWT_SECRET, PUNCHCARD_SWEEP_GRACE_MINUTES="0")
    log = tmp_path / "serve.log"
    with server(env, log, "--sweeper") as url:
        deadline = time.monotonic() + TIMEOUT
        while not (first := sweeper_children(server_pid(url))):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        (child,) = first
        child.kill()  # SIGKILL: no goodbye
        child.wait(30)
        while not (again := [c for c in sweeper_children(server_pid(url)) if c.pid != child.pid]):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert "exited with -9; starting another" in log.read_text()
        # the new one works: a booking that has ended is completed by it
        bearer = token("restart-trainer")
        client = gql(url, bearer, 'mutation { createClient(input: {name: "Ada"}) { id } }')
        cid = client["createClient"]["id"]  # type: ignore[index]
        sold = gql(
            url,
            bearer,
            "mutation($c: ID!) { sellPackage(input: {clientId: $c, sessionsTotal: 5}) { id } }",
            c=cid,
        )
        pid = sold["sellPackage"]["id"]  # type: ignore[index]
        ended = time.time() - 60
        made = gql(url, bearer, CREATE_PAST, c=cid, p=pid, start=iso(ended - 3600), end=iso(ended))
        booking = made["createBooking"]["id"]  # type: ignore[index]
        query = f'{{ booking(id: "{booking}") {{ status completedBy }} }}'
        while gql(url, bearer, query)["booking"] != {
            "status": "COMPLETED",
            "completedBy": "SWEEPER",
        }:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert again[0].is_running()
    assert not again[0].is_running() or again[0].status() == psutil.STATUS_ZOMBIE


_pids: dict[str, int] = {}


def server_pid(url: str) -> int:
    """The pid of the ``punchcard serve`` listening at ``url``."""
    if url not in _pids:
        port = int(url.rsplit(":", 1)[1])
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                assert conn.pid is not None
                _pids[url] = conn.pid
    return _pids[url]


# -- readiness -------------------------------------------------------------------------------


async def test_readyz_names_what_failed(settings: Settings, db: asyncpg.Connection) -> None:
    async with in_process(settings) as (_, http):
        async with asyncio.timeout(TIMEOUT):
            while (ready := await http.get("/readyz")).status_code != 200:  # LISTEN connects
                await asyncio.sleep(0.05)
        assert ready.json() == {
            "status": "ok",
            "database": True,
            "migrations": True,
            "listener": True,
        }
        await db.execute("UPDATE alembic_version SET version_num = '0003'")
        stale = await http.get("/readyz")
        assert stale.status_code == 503
        body = stale.json()
        assert body["status"] == "unavailable" and body["failed"] == ["migrations"]
        assert "punchcard migrate" in body["detail"]["migrations"]
        assert body["database"] is True and body["listener"] is True
        await db.execute("UPDATE alembic_version SET version_num = $1", head())
        assert (await http.get("/readyz")).status_code == 200


async def test_readyz_is_503_when_the_pool_cannot_answer(settings: Settings) -> None:
    tight = replace(settings, pool_min_size=1, pool_max_size=1, pool_acquire_timeout_seconds=0.2)
    async with in_process(tight) as (app, http):
        async with app.state.services.pool.acquire():
            busy = await http.get("/readyz")
        assert busy.status_code == 503
        assert busy.json()["failed"] == ["database", "migrations"]


# -- metrics and logs ------------------------------------------------------------------------

USE = "mutation Use($p: ID!) { useSession(purchaseId: $p) { sessionsUsed } }"
SELL = "mutation Sell($c: ID!) { sellPackage(input: {clientId: $c, sessionsTotal: 3}) { id } }"
REQUESTS = "punchcard_graphql_requests_total"
ERRORS = "punchcard_graphql_errors_total"


def samples(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


@contextmanager
def serving(tmp_path: Path, db_url: str, **env: str) -> Iterator[tuple[str, Path]]:
    log = tmp_path / "serve.log"
    with server(child_env(DATABASE_URL=db_url, JWT_SECRET=JWT_SECRET, **env), log) as url:
        yield url, log


def test_metrics_count_operations_errors_and_requests_exactly(tmp_path: Path, db_url: str) -> None:
    with serving(tmp_path, db_url) as (url, _):
        bearer = token("metrics-trainer")
        cid = gql(url, bearer, 'mutation { createClient(input: {name: "Ada"}) { id } }')
        sold = gql(
            url,
            bearer,
            SELL,
            c=cid["createClient"]["id"],  # type: ignore[index]
        )
        purchase = sold["sellPackage"]["id"]  # type: ignore[index]
        headers = {"Authorization": f"Bearer {bearer}"}
        codes = []
        for _ in range(4):  # three sessions, then the refusal
            body = httpx.post(
                f"{url}/graphql",
                json={"query": USE, "variables": {"p": purchase}, "operationName": "Use"},
                headers=headers,
                timeout=30,
            ).json()
            codes.append(body["errors"][0]["extensions"]["code"] if "errors" in body else None)
        assert codes == [None, None, None, "NO_SESSIONS_REMAINING"]
        broken = httpx.post(f"{url}/graphql", json={"query": "{ nope"}, headers=headers)
        assert broken.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
        for i in range(120):  # more names than the label budget: the rest are "other"
            httpx.post(f"{url}/graphql", json={"query": f"query Q{i} {{ me {{ id }} }}"})
        page = httpx.get(f"{url}/metrics", timeout=30)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/plain")
        got = samples(page.text)
    assert got['punchcard_graphql_requests_total{operation="Use",type="mutation"}'] == 4
    assert got['punchcard_graphql_errors_total{code="NO_SESSIONS_REMAINING",operation="Use"}'] == 1
    assert not any("Use" in k and "errors" in k and "NO_SESSIONS" not in k for k in got)
    assert got['punchcard_graphql_duration_seconds_count{operation="Use"}'] == 4
    assert got['punchcard_graphql_requests_total{operation="Sell",type="mutation"}'] == 1
    assert got['punchcard_graphql_requests_total{operation="anonymous",type="mutation"}'] == 1
    assert (
        got['punchcard_graphql_errors_total{code="GRAPHQL_PARSE_FAILED",operation="invalid"}'] == 1
    )
    operations = {k for k in got if k.startswith("punchcard_graphql_requests_total")}
    assert len(operations) <= 100 + 3  # the budget, "anonymous" and "invalid" / "other"
    assert got['punchcard_graphql_requests_total{operation="other",type="query"}'] > 0
    assert (
        got['punchcard_http_requests_total{route="/graphql",status="200"}'] == 1 + 1 + 4 + 1 + 120
    )
    for name in (
        "punchcard_websockets_open",
        "punchcard_subscriptions_active",
        'punchcard_db_pool_connections_in_use{pool="api"}',
        'punchcard_sweeper_lag_seconds{kind="bookings"}',
        'punchcard_sweeper_lag_seconds{kind="reminders"}',
        "punchcard_reminders_failing",
        "punchcard_live_fanout_seconds_count",
    ):
        assert name in got, name


def test_request_ids_are_echoed_and_logged(tmp_path: Path, db_url: str) -> None:
    with serving(tmp_path, db_url, PUNCHCARD_LOG_FORMAT="json") as (url, log):
        mine = httpx.get(f"{url}/healthz", headers={"X-Request-Id": "req-42.a"})
        assert mine.headers["x-request-id"] == "req-42.a"
        insane = httpx.get(f"{url}/healthz", headers={"X-Request-Id": "no spaces<script>"})
        made = insane.headers["x-request-id"]
        assert made != "no spaces<script>" and re.fullmatch(r"[0-9a-f]{16}", made)
        deadline = time.monotonic() + TIMEOUT
        while made not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    records = [json.loads(line) for line in log.read_text().splitlines()]  # all JSON
    access = {r["request_id"]: r for r in records if r["logger"] == "punchcard.access"}
    expected = {"path": "/healthz", "status": 200, "method": "GET"}
    assert expected.items() <= access["req-42.a"].items()
    assert access[made]["path"] == "/healthz"
    assert any(r["message"] == "ready" and "banner" in r for r in records)
    assert not any(r["logger"].startswith(("alembic", "asyncpg", "uvicorn")) for r in records)


def test_the_sweeper_serves_its_own_metrics(tmp_path: Path, db_url: str) -> None:
    port = free_port()
    env = child_env(
        DATABASE_URL=db_url,
        PUNCHCARD_SWEEPER_METRICS_PORT=str(port),
        PUNCHCARD_SWEEP_POLL_SECONDS="60",
    )
    log = tmp_path / "sweep.log"
    process = start(["sweep"], env, log)
    try:
        deadline = time.monotonic() + TIMEOUT
        while "waiting for work" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        got = samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    assert got['punchcard_sweeper_batch_size_count{kind="completions"}'] >= 1  # empty batches
    assert got['punchcard_sweeper_batch_size_sum{kind="completions"}'] == 0
    assert got["punchcard_sweeper_reminder_failures_total"] == 0
    assert got["punchcard_sweeper_last_pass_timestamp_seconds"] > 0
