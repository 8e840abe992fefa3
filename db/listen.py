"""A process's one LISTEN connection, for the API's live-update hub and the sweeper alike:
dedicated (not from a pool, which resets and recycles its connections), reconnected with
backoff whenever it is lost.

A notification is only a wake-up: ``on_notify(notice, pid)`` gets the parsed payload
(``db/notify.py``) and the sending backend's pid. After every (re)connect, LISTEN is
issued first and ``on_listen()`` second: the listener's owner then re-reads everything
it may have missed, and whatever commits later arrives as a notification, so a dropped
connection or a restarted PostgreSQL loses nothing. A periodic ``SELECT 1`` finds
connections that died without a word (a half-open TCP connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from punchcard.db.notify import CHANNEL, Notice
from punchcard.tasks import cancel

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 5.0


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _conn: event.set()


class Listener:
    def __init__(
        self,
        dsn: str,
        *,
        on_notify: Callable[[Notice, int], None],
        on_listen: Callable[[], None],
        health_seconds: float = 5.0,
        name: str = "listener",
    ) -> None:
        self._dsn = dsn
        self._name = name
        self._on_notify = on_notify
        self._on_listen = on_listen
        self._health_seconds = health_seconds
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.connects = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel([task])

    def stats(self) -> dict[str, Any]:
        return {"listener_connected": self.connected, "listener_connects": self.connects}

    def _notified(self, _conn: Any, pid: int, _channel: str, payload: str) -> None:
        self._on_notify(Notice.parse(payload), pid)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10)
                lost = asyncio.Event()
                conn.add_termination_listener(_setter(lost))
                await conn.add_listener(CHANNEL, self._notified)
                self.connected = True
                self.connects += 1
                delay = 0.1
                self._on_listen()
                await self._watch(conn, lost)
                log.warning("LISTEN connection lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("LISTEN connection failed (%r); retrying in %.1fs", error, delay)
            finally:
                self.connected = False
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)

    async def _watch(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Return when the connection is gone (closed, or not answering a health check)."""
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self._health_seconds)
                return
            await asyncio.wait_for(conn.fetchval("SELECT 1"), self._health_seconds)
