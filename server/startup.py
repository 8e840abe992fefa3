"""Starting up where a person can read it: checks that fail fast in one line each, the
banner once the server is ready, and the supervisor that restarts a dead sweeper child.

Each check raises ``Refused(exit_code, message)``; the CLI prints ``punchcard <command>:
<message>`` on stderr and exits with the code (README, "Exit codes").
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import asyncpg

from punchcard.db import roles
from punchcard.db.health import migration
from punchcard.db.migrate import head
from punchcard.server.pages import demo_links
from punchcard.settings import Settings, hide_password

log = logging.getLogger("punchcard")

EXIT_USAGE = 2  # a bad setting or argument (argparse uses 2 as well)
EXIT_DATABASE = 3  # PostgreSQL cannot be reached or refuses the role
EXIT_NOT_MIGRATED = 4  # the database is not at this code's migration head
EXIT_PORT = 5  # the port to listen on is taken (or not ours to take)
EXIT_DATA_DIR = 6  # the embedded data dir cannot be used as it is
CONNECT_TIMEOUT = 10.0
RESTART_MIN, RESTART_MAX = 1.0, 30.0  # the sweeper child's restart backoff
HEALTHY_RUN = 60.0  # a child that ran this long restarts without waiting


class Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def package_version() -> str:
    try:
        return version("punchcard")
    except PackageNotFoundError:
        return "unknown"


# -- checks before serving -----------------------------------------------------------------


def check_port(host: str, port: int, *, variable: str = "--port") -> None:
    """Bind ``host:port`` once (as uvicorn will, with SO_REUSEADDR) and let it go."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise Refused(EXIT_USAGE, f"cannot listen on {host!r}: {error.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise Refused(
                    EXIT_PORT,
                    f"{host}:{port} is already in use (another punchcard?): stop it or "
                    f"choose another port with {variable}",
                ) from None
            raise Refused(
                EXIT_PORT, f"cannot listen on {host}:{port}: {error.strerror} ({variable})"
            ) from None


def preflight(settings: Settings, *, api: bool) -> None:
    """Connect as each role this process uses and compare the migrations with the code."""
    asyncio.run(_preflight(settings, api=api))


async def _preflight(settings: Settings, *, api: bool) -> None:
    checks = [("punchcard_worker", roles.worker_url(settings), "PUNCHCARD_WORKER_DATABASE_URL")]
    if api:
        checks.insert(0, ("punchcard_api", roles.api_url(settings), "PUNCHCARD_API_DATABASE_URL"))
    for role, url, variable in checks:
        own = getattr(settings, variable.removeprefix("PUNCHCARD_").lower()) is not None
        named = variable if own else "DATABASE_URL"
        shown = hide_password(url)
        try:
            conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
        except asyncpg.InvalidAuthorizationSpecificationError as error:
            if "does not exist" in str(error) and not own:
                raise Refused(
                    EXIT_NOT_MIGRATED,
                    f"the database at {hide_password(settings.database_url or url)} has no "
                    f"role {role}: it is not migrated (this punchcard needs {head()}); "
                    "run `punchcard migrate`",
                ) from None
            raise Refused(EXIT_DATABASE, f"PostgreSQL refused {shown}: {error} ({named})") from None
        except asyncpg.InvalidCatalogNameError as error:
            raise Refused(EXIT_DATABASE, f"{error} at {shown} ({named})") from None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            why = str(error) or type(error).__name__
            raise Refused(
                EXIT_DATABASE,
                f"cannot reach PostgreSQL at {shown}: {why}; is it running? ({named})",
            ) from None
        try:
            at = await migration(conn)
        finally:
            await conn.close()
        if at != head():
            raise Refused(
                EXIT_NOT_MIGRATED,
                f"the database at {shown} is not migrated (it is at {at or 'no migration'}, "
                f"this punchcard needs {head()}): run `punchcard migrate`",
            )


# -- the banner ----------------------------------------------------------------------------


def banner(
    settings: Settings,
    host: str,
    port: int,
    *,
    embedded: bool,
    token: str | None,
    sweeper: int | None,
    workers: int,
) -> tuple[list[str], dict[str, object]]:
    """The lines a person reads once the server is ready, and the same as fields."""
    shown = "127.0.0.1" if host in {"0.0.0.0", ""} else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    base = f"http://{shown}:{port}"
    database = hide_password(settings.database_url or "")
    if embedded:
        database += f" (embedded, in {settings.data_dir})"
    links = (
        demo_links(base, token) if token else {"page": f"{base}/", "graphiql": f"{base}/graphiql"}
    )
    fields: dict[str, object] = {
        "version": package_version(),
        "env": settings.env,
        "api": f"{base}/graphql",
        "websocket": f"ws://{shown}:{port}/graphql",
        # With the demo token, the links sign the browser in (the token rides in the
        # fragment, which the browser never sends: server/pages.py).
        "graphiql": links["graphiql"] if settings.graphiql_on else None,
        "page": links["page"],
        "database": database,
        "sweeper": sweeper,
        "workers": workers,
    }
    workers_note = f", {workers} workers" if workers > 1 else ""
    running = f"on (pid {sweeper})" if sweeper else "off (serve --sweeper, or punchcard sweep)"
    lines = [
        f"punchcard {fields['version']} ready ({settings.env}{workers_note}, pid {os.getpid()})",
        f"API:       {fields['api']} (WebSocket {fields['websocket']})",
        f"GraphiQL:  {fields['graphiql'] or 'off (PUNCHCARD_GRAPHIQL=1 to turn it on)'}",
        f"Page:      {fields['page']}",
        f"Database:  {database}",
        f"Sweeper:   {running}",
    ]
    if token is not None:
        fields["token"] = token
        lines.append(f"Token:     {token}")
    if settings.dev_secret:
        fields["warning"] = "development JWT secret"
        lines.append(
            "warning: JWT_SECRET is not set: tokens are signed with the built-in development "
            "secret, which anyone can use; set JWT_SECRET before others can reach this server"
        )
    return lines, fields


def announce(settings: Settings, lines: Sequence[str], fields: dict[str, object]) -> None:
    """Print the banner (human) or log it as one record (``PUNCHCARD_LOG_FORMAT=json``)."""
    if settings.log_format == "json":
        log.info("ready", extra={"banner": fields})
        return
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()


# -- the sweeper child ---------------------------------------------------------------------


class SweeperChild:
    """``serve --sweeper``: ``punchcard sweep`` as a child process with this environment
    (which carries the embedded server's DATABASE_URL, so the child shares it), started
    again with backoff (1 s doubling to 30 s; at once after a minute's healthy run) when
    it dies, until ``stop``."""

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self.command = list(command or [sys.executable, "-m", "punchcard", "sweep"])
        self.child: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._since = 0.0
        self._watcher: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None else None

    def start(self) -> None:
        with self._lock:
            self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="sweeper-watch", daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        self.child = subprocess.Popen(self.command, env=dict(os.environ))
        self._since = time.monotonic()
        log.debug("started sweeper (pid %d)", self.child.pid)

    def _watch(self) -> None:
        delay = RESTART_MIN
        while not self._stopping.is_set():
            child = self.child
            assert child is not None
            code = child.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - self._since >= HEALTHY_RUN:
                delay = 0.0
            log.warning(
                "sweeper (pid %d) exited with %s; starting another in %gs",
                child.pid,
                code,
                delay,
            )
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._spawn()
                self.restarts += 1
            delay = min(max(delay * 2, RESTART_MIN), RESTART_MAX)

    def stop(self, timeout: float = 30) -> None:
        with self._lock:
            self._stopping.set()
            child = self.child
        if child is None:
            return
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)  # it finishes its current batch
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self._watcher is not None:
            with contextlib.suppress(RuntimeError):
                self._watcher.join(5)
        log.info("sweeper exited with %s", child.returncode)
