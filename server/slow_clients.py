"""uvicorn's HTTP protocol with a header deadline and a connection cap that answers JSON.

Why this exists: uvicorn (0.55, pinned) has no timeout on reading a request's line and
headers. Its ``timeout_keep_alive`` timer runs only between a response and the next
request, and any byte that arrives cancels it without re-arming it. A fresh connection
has no timer at all. A client that sends one header byte every two seconds ("slowloris")
therefore keeps its connection for as long as it likes, and a few hundred such clients
exhaust the server (or, with ``PUNCHCARD_MAX_CONNECTIONS``, its connection slots).

What the subclasses change:

- **Header deadline** (``Settings.header_timeout_seconds``): a timer starts when a
  connection is made and again after each response on a kept-alive connection, and stops
  once a request's header block is complete (a new request/response cycle exists, or the
  connection upgrades to a WebSocket). On expiry the connection is closed: with a 408
  ``REQUEST_TIMEOUT`` JSON error if any byte of the request arrived, silently if none did
  (an idle keep-alive connection, which uvicorn's own keep-alive timer usually closes
  first). The body has its own deadline in the endpoint (``gql/http.py``).
- **Connection cap** (uvicorn's ``limit_concurrency``, from ``PUNCHCARD_MAX_CONNECTIONS``):
  uvicorn answers over its limit with a plain-text 503, counts the refused connection
  itself (so a limit of N serves N - 1 connections), and never refuses a WebSocket
  upgrade. Here the same setting allows exactly N open connections (HTTP and WebSocket)
  or N running requests; a request beyond that, WebSocket upgrades included, gets a 503
  ``SERVICE_UNAVAILABLE`` JSON error (``retryable: true``) and the connection is closed.

uvicorn's own check is switched off per connection (``limit_concurrency = None``) and
ours picks the app uvicorn runs next (``self.app``), so both parsers keep their code
path. The attributes used (``app``, ``cycle``, ``connections``, ``tasks``,
``limit_concurrency``, ``transport``, ``on_response_complete``,
``handle_websocket_upgrade``) are uvicorn internals: ``tests/test_slow_clients.py``
exercises them on real servers with the pinned version.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, ClassVar, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from punchcard.gql.errors import refusal_body
from punchcard.settings import Settings

log = logging.getLogger("punchcard.server")

Scope = dict[str, Any]


def _error(message: str, code: str, **extensions: object) -> bytes:
    """The JSON body of a refusal, shaped like the endpoint's (``gql/http.py``)."""
    return json.dumps(refusal_body(message, code, **extensions), separators=(",", ":")).encode()


def _raw_response(status: bytes, body: bytes) -> bytes:
    return b"".join(
        [
            b"HTTP/1.1 " + status + b"\r\n",
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


REQUEST_TIMEOUT = _raw_response(
    b"408 Request Timeout",
    _error("the request headers did not arrive in time", "REQUEST_TIMEOUT"),
)
_BUSY = _error("too many connections: retry shortly", "SERVICE_UNAVAILABLE", retryable=True)
SERVICE_UNAVAILABLE = _raw_response(b"503 Service Unavailable", _BUSY)


async def over_capacity(scope: Scope, receive: Any, send: Any) -> None:
    """The ASGI app uvicorn runs for a request over the cap (instead of its plain text)."""
    log.warning("refused a request: over the connection cap")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_BUSY)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": _BUSY})


class _Guard(asyncio.Protocol):
    """The deadline and the cap, before uvicorn's protocol class in the MRO."""

    header_timeout: ClassVar[float] = 10.0

    # uvicorn's, set in its __init__ / connection_made
    app: Any
    cycle: Any
    connections: Any
    tasks: Any
    limit_concurrency: int | None
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    _cap: int | None = None
    _served: Any = None  # the app uvicorn would run under the cap
    _deadline: asyncio.TimerHandle | None = None
    _awaited: object = None  # the cycle when the timer started: another one means headers done
    _heard = False  # a byte arrived since the timer started

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._cap, self.limit_concurrency = self.limit_concurrency, None
        self._served = self.app
        self._start_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._heard = True
        self.app = over_capacity if self._over_cap() else self._served
        super().data_received(data)
        if self.cycle is not self._awaited:  # a request's headers are complete
            self._stop_deadline()

    def _response_complete(self) -> None:
        """After uvicorn's ``on_response_complete``: wait for the next request's headers,
        unless a pipelined request already has them (its cycle awaits a response)."""
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._start_deadline()

    def _upgrade_refused(self) -> bool:
        """Before a WebSocket upgrade: refuse it over the cap, else stop the deadline."""
        self._stop_deadline()
        if not self._over_cap():
            return False
        log.warning(
            "refused a WebSocket: %d connections open (cap %s)", len(self.connections), self._cap
        )
        self.transport.write(SERVICE_UNAVAILABLE)
        self.transport.close()
        return True

    def _over_cap(self) -> bool:
        """More than the cap open (this connection included), or the cap already running."""
        cap = self._cap
        return cap is not None and (len(self.connections) > cap or len(self.tasks) >= cap)

    def _start_deadline(self) -> None:
        self._stop_deadline()
        self._awaited, self._heard = self.cycle, False
        self._deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._heard:
            log.info("closed a connection: no complete headers in %ss (408)", self.header_timeout)
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()


class HttpTools(_Guard, HttpToolsProtocol):
    """uvicorn's httptools protocol with the header deadline and the JSON cap."""

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._response_complete()

    def handle_websocket_upgrade(self) -> None:
        if not self._upgrade_refused():
            super().handle_websocket_upgrade()


class H11(_Guard, H11Protocol):
    """uvicorn's h11 protocol with the header deadline and the JSON cap."""

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._response_complete()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        if not self._upgrade_refused():
            super().handle_websocket_upgrade(event)


PARSERS: dict[str, type[_Guard]] = {"httptools": HttpTools, "h11": H11}


def http_protocol(settings: Settings, parser: str = "httptools") -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, with the settings' deadline."""
    base = PARSERS[parser]
    attributes = {"header_timeout": settings.header_timeout_seconds}
    return cast(type[asyncio.Protocol], type(base.__name__, (base,), attributes))
