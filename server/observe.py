"""Every HTTP request, observed once: its request id, one access-log line, its metrics.

A raw ASGI middleware (the outermost one ``create_app`` installs), so it sees every
route and costs a few dictionary operations per request. The request id is the client's
``X-Request-Id`` when it is sane (1-128 characters of ``A-Za-z0-9._:-``), else a new
random one; it is echoed in the response's ``X-Request-Id`` header and attached to every
log record logged while the request runs (``punchcard.logs.request_id``). WebSockets
pass through with the same id in their logs but no access line (a socket is not a
request; ``punchcard_websockets_open`` counts them).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from punchcard import metrics
from punchcard.logs import request_id

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = b"x-request-id"
_SANE = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
access = logging.getLogger("punchcard.access")


def new_request_id() -> str:
    return secrets.token_hex(8)


def _incoming(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == HEADER:
            return value.decode("ascii") if _SANE.fullmatch(value) else None
    return None


class Observe:
    """Request id, access log and HTTP metrics around ``app``; ``routes`` are the paths
    counted by name (anything else is ``other``, so scanners cannot add labels)."""

    def __init__(self, app: ASGIApp, *, routes: frozenset[str], access_log: bool = True) -> None:
        self.app = app
        self.routes = routes
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, send)
            return
        rid = _incoming(scope) or new_request_id()
        token = request_id.set(rid)
        try:
            if kind == "http":
                await self._http(scope, receive, send, rid)
            else:
                await self.app(scope, receive, send)
        finally:
            request_id.reset(token)

    async def _http(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        started = time.perf_counter()
        status = 500
        header = (HEADER, rid.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            took = time.perf_counter() - started
            path = scope.get("path", "")
            route = path if path in self.routes else "other"
            metrics.http_requests.labels(route, str(status)).inc()
            metrics.http_duration.labels(route).observe(took)
            if self.access_log:
                client = scope.get("client")
                method = scope.get("method", "?")
                fields = {
                    "method": method,
                    "path": path[:200],
                    "status": status,
                    "duration_ms": round(took * 1000, 2),
                    "client": client[0] if client else None,
                }
                access.info(
                    "%s %s %d %.1fms", method, fields["path"], status, took * 1000, extra=fields
                )
