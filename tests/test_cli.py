"""The console script as a user runs it: serve on the embedded database, restart, stop."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import JWT_SECRET
from tests.processes import child_env, free_port, punchcard_command, start, stop, wait_healthy

QUERY = "{ clients(first: 10) { nodes { name purchases { sessionsUsed } } } }"


def graphql(url: str, token: str, query: str) -> dict[str, object]:
    response = httpx.post(
        f"{url}/graphql",
        json={"query": query},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    body: dict[str, object] = response.json()
    return body


def postmaster_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "pg" / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def running(pid: int | None, wait: float = 10) -> bool:
    """Is ``pid`` still alive after up to ``wait`` seconds? (A zombie is not alive.)"""
    deadline = time.monotonic() + wait
    while pid is not None and time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            return False
        time.sleep(0.05)
    return pid is not None


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*punchcard_command(), *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    env = child_env(PUNCHCARD_DATA_DIR=str(tmp_path / "data"), JWT_SECRET=JWT_SECRET)
    env.pop("DATABASE_URL", None)
    return env


def test_serve_demo_on_embedded_database_survives_restart_and_stops_cleanly(
    tmp_path: Path, embedded_env: dict[str, str]
) -> None:
    data_dir = Path(embedded_env["PUNCHCARD_DATA_DIR"])
    log = tmp_path / "serve.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(["serve", "--demo", "--port", str(port)], embedded_env, log)
    wait_healthy(process, url, log)
    token = next(
        line.split()[1] for line in log.read_text().splitlines() if line.startswith("Token:")
    )
    body = graphql(url, token, QUERY)
    names = [c["name"] for c in body["data"]["clients"]["nodes"]]  # type: ignore[index]
    assert "Ada Lovelace" in names
    use = graphql(url, token, 'mutation { useSession(purchaseId: "pur_1") { sessionsUsed } }')
    assert use == {"data": {"useSession": {"sessionsUsed": 1}}}
    pg_pid = postmaster_pid(data_dir)
    assert pg_pid is not None and running(pg_pid, wait=0.01)

    assert stop(process) == 0  # SIGTERM: graceful, exit 0 ...
    assert not running(pg_pid)  # ... and the embedded server stopped with it

    process = start(["serve", "--demo", "--port", str(port)], embedded_env, log)
    try:
        wait_healthy(process, url, log)
        again = graphql(url, token, 'query { purchase(id: "pur_1") { sessionsUsed } }')
        assert again == {"data": {"purchase": {"sessionsUsed": 1}}}  # data survived, no reseed
    finally:
        assert stop(process) == 0


def test_ctrl_c_stops_server_and_database(tmp_path: Path, embedded_env: dict[str, str]) -> None:
    data_dir = Path(embedded_env["PUNCHCARD_DATA_DIR"])
    log = tmp_path / "serve.log"
    port = free_port()
    process = start(["serve", "--port", str(port)], embedded_env, log)
    wait_healthy(process, f"http://127.0.0.1:{port}", log)
    pg_pid = postmaster_pid(data_dir)
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert pg_pid is not None and not running(pg_pid)


def test_a_crashed_sharer_does_not_keep_the_database_running(
    tmp_path: Path, embedded_env: dict[str, str]
) -> None:
    data_dir = Path(embedded_env["PUNCHCARD_DATA_DIR"])
    log = tmp_path / "serve.log"
    first_port, second_port = free_port(), free_port()
    first = start(["serve", "--port", str(first_port)], embedded_env, log)
    wait_healthy(first, f"http://127.0.0.1:{first_port}", log)
    first.kill()  # SIGKILL: its PID stays in .handle_pids.json
    first.wait()
    pids = json.loads((data_dir / "pg" / ".handle_pids.json").read_text())
    assert first.pid in pids
    second = start(["serve", "--port", str(second_port)], embedded_env, log)
    wait_healthy(second, f"http://127.0.0.1:{second_port}", log)
    pg_pid = postmaster_pid(data_dir)
    assert stop(second) == 0
    assert pg_pid is not None and not running(pg_pid)


def test_token_command_issues_a_working_jwt(tmp_path: Path, embedded_env: dict[str, str]) -> None:
    result = run("token", "--trainer", "cli-trainer", env=embedded_env)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    log = tmp_path / "serve.log"
    port = free_port()
    process = start(["serve", "--port", str(port)], embedded_env, log)
    try:
        wait_healthy(process, f"http://127.0.0.1:{port}", log)
        body = graphql(f"http://127.0.0.1:{port}", token, "{ me { id } }")
        assert body["data"] == {"me": {"id": "trn_1"}}
    finally:
        stop(process)


def test_migrate_command_is_repeatable(embedded_env: dict[str, str]) -> None:
    for _ in range(2):
        result = run("migrate", env=embedded_env)
        assert result.returncode == 0, result.stderr
