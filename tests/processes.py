"""Real processes for tests: ``punchcard serve`` / ``punchcard sweep`` as subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def punchcard_command() -> list[str]:
    """The installed console script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("punchcard")
    if script.exists():
        return [str(script)]
    found = shutil.which("punchcard")
    return [found] if found else [sys.executable, "-m", "punchcard"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(overrides)
    return env


def start(args: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [*punchcard_command(), *args],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def wait_healthy(
    process: subprocess.Popen[bytes],
    url: str,
    log: Path,
    timeout: float = 60,
    *,
    path: str = "/healthz",
) -> None:
    """Until ``path`` answers 200 (``/readyz``: the database and LISTEN too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"server not answering {path} after {timeout}s:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM, then wait; returns the exit code (kills after ``timeout``)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextmanager
def server(env: Mapping[str, str], log: Path, *extra: str) -> Iterator[str]:
    """A running ``punchcard serve``; yields its base URL and stops it (SIGTERM) after."""
    port = free_port()
    process = start(["serve", "--port", str(port), *extra], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, url, log)
        yield url
    finally:
        stop(process)
