"""What every benchmark needs: its own embedded PostgreSQL, server processes, and wrk.

Nothing here is shared with a running punchcard: each run starts a fresh database in a
temporary directory and stops it at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from punchcard.db.embedded import EmbeddedPostgres
from punchcard.db.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).with_name("wrk_post.lua")


@contextmanager
def fresh_database() -> Iterator[str]:
    """A migrated database on a new embedded server, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="punchcard-bench-") as tmp:
        embedded = EmbeddedPostgres(Path(tmp))
        url = embedded.start()
        try:
            upgrade(url)
            yield url
        finally:
            embedded.stop()


def ensure_wrk() -> str:
    """wrk from Debian's packages, installed on first use (the benchmark runs as root)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is missing: apt-get install wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
    return shutil.which("wrk") or "wrk"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bin_path(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@contextmanager
def serving(command: Sequence[str], env: dict[str, str], port: int) -> Iterator[str]:
    """Run a server process until the block ends; yields its base URL once healthy."""
    with tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False) as log:
        process = subprocess.Popen(
            list(command), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(Path(log.name).read_text())
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(Path(log.name).read_text())
            time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        os.unlink(log.name)


def listening_process(port: int) -> psutil.Process:
    """The process listening on ``port`` on this machine (a server ``serving`` started)."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    raise LookupError(f"nothing listens on port {port}")


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU time the process has used so far."""
    times = process.cpu_times()
    return float(times.user + times.system)


@dataclass(frozen=True)
class Load:
    requests: int
    ok: int
    failed: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.ok / self.seconds


def wrk(
    url: str,
    *,
    body_template: str,
    ids: Sequence[int],
    token: str = "",
    tokens: Sequence[str] = (),
    connections: int = 16,
    seconds: int = 10,
    origin: str = "",
) -> Load:
    """POST ``body_template % id`` (ids taken in turn; with ``tokens``, each id with its
    own token; with ``origin``, an ``Origin`` header on each) for ``seconds``; counts
    responses without GraphQL errors as ok (see wrk_post.lua)."""
    assert "\n" not in body_template and "\n" not in token
    with tempfile.NamedTemporaryFile("w", suffix=".spec", delete=False) as spec:
        lines = [f"{i} {t}" for i, t in zip(ids, tokens, strict=True)] if tokens else ids
        spec.write("\n".join([token, body_template, *map(str, lines)]) + "\n")
    try:
        result = subprocess.run(
            [
                ensure_wrk(),
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                "10s",
                "-s",
                str(LUA),
                url,
                "--",
                spec.name,
                *([origin] if origin else []),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(spec.name)
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    data = json.loads(line.removeprefix("RESULT "))
    return Load(
        requests=data["requests"],
        ok=data["ok"],
        failed=data["failed"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
    )
