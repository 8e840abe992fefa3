"""The ASGI endpoint of GraphQL over WebSocket on ``/graphql`` (mounted with
``WebSocketRoute``, inside the middleware stack), and this process's open sockets.

It picks the protocol from the offered subprotocols (``live/protocols/``), then hands
the socket to a ``Connection``. Frames go out through the socket's ``Outbox``: through
the ASGI ``send`` the middleware stack passed down, or, when the probe of uvicorn's
internals allows it and ``PUNCHCARD_WS_DIRECT_WRITES`` is on, straight to the
transport behind the server's own ``send`` (kept in the scope under ``RAW_SEND`` by the
app, ``server/app.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from punchcard.db import trainers
from punchcard.db.types import Executor
from punchcard.live.connection import Connection
from punchcard.live.hub import Hub
from punchcard.live.outbox import Outbox
from punchcard.live.protocols import choose
from punchcard.settings import Settings
from punchcard.tasks import cancel

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

RAW_SEND = "punchcard.raw_send"
REVOKED_KEYS_KEPT = 10_000
log = logging.getLogger(__name__)


class Sockets:
    """This process's open sockets: counted, kept alive (legacy ``ka``), all in one place."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.open: set[Connection] = set()
        self.accepted = 0
        self.revoked_keys: set[int] = set()  # revoked while this process ran
        self._task: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._keepalive(), name="ws-ka")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel([task, *self._checks])

    def revoked(self, key_id: int) -> int:
        """API key ``key_id`` was revoked (a NOTIFY from any process): close its sockets."""
        if len(self.revoked_keys) >= REVOKED_KEYS_KEPT:
            self.revoked_keys.clear()  # only a race window needs them; the database has all
        self.revoked_keys.add(key_id)
        closing = [c for c in self.open if c.principal and c.principal.api_key_id == key_id]
        for connection in closing:
            connection.revoke()
        return len(closing)

    def recheck_later(self, db: Executor) -> None:
        """After LISTEN (re)connects: a revocation may have been missed; ask the database."""
        task = asyncio.get_running_loop().create_task(self._recheck(db))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _recheck(self, db: Executor) -> None:
        keys = [k for c in self.open if c.principal and (k := c.principal.api_key_id) is not None]
        if not keys:
            return
        try:
            revoked = await trainers.revoked_among(db, keys)
        except Exception as error:  # the next reconnect checks again
            log.warning("re-checking API keys of open sockets failed: %r", error)
            return
        for key_id in revoked:
            self.revoked(key_id)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ws_keepalive_seconds)
            for connection in list(self.open):
                connection.keepalive()

    def stats(self) -> dict[str, Any]:
        return {
            "sockets": len(self.open),
            "sockets_accepted": self.accepted,
            "operations": sum(len(c.subscribers) for c in self.open),
            "operation_tasks": sum(len(c.tasks) for c in self.open),
        }


class GraphQLWebSocket:
    """The ASGI endpoint (``WebSocketRoute("/graphql", GraphQLWebSocket())``)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state
        sockets: Sockets = state.sockets
        hub: Hub = state.hub
        if (await receive())["type"] != "websocket.connect":
            return
        protocol = choose(scope.get("subprotocols") or [])
        await send({"type": "websocket.accept", "subprotocol": protocol.name if protocol else None})
        if protocol is None:
            await send(
                {"type": "websocket.close", "code": 4406, "reason": "Subprotocol not acceptable"}
            )
            return
        direct = sockets.settings.ws_direct_writes
        outbox = Outbox(send, raw_send=scope.get(RAW_SEND) if direct else None)
        connection = Connection(
            scope, receive, send, protocol, hub=hub, outbox=outbox, revoked=sockets.revoked_keys
        )
        sockets.open.add(connection)
        sockets.accepted += 1
        try:
            await connection.run()
        finally:
            sockets.open.discard(connection)
            await connection.cleanup()
