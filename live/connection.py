"""One GraphQL WebSocket connection, whichever protocol it speaks: ``graphql-transport-ws``
or the legacy ``graphql-ws`` (subscriptions-transport-ws); the differences between the two
are data (``live/protocols/``), the state machine is this one.

Credentials come from the ``connection_init`` payload (``Authorization``/``authorization``,
``token``, or ``headers.Authorization``; "Bearer " is optional) or else the upgrade
request's ``Authorization`` header. The socket closes at the token's expiry.

Close codes: 4400 bad message, 4401 subscribe before ``connection_ack`` or token expired
("token expired"), 4403 credentials refused at ``connection_init`` or the API key revoked
while the socket was open (on any server process: see ``Sockets.revoked``), 4406 unknown
subprotocol, 4408 no ``connection_init`` in time, 4409 duplicate operation id
(graphql-transport-ws; the legacy protocol replaces the operation), 4429 second
``connection_init``.

Subscriptions go to the hub (served per group, see ``live/hub.py``); queries and
mutations sent over the socket run through the same engine as HTTP ones and answer
once, then complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from graphql import GraphQLError, OperationType

from punchcard.db.errors import Code, DomainError
from punchcard.gql.auth import Principal
from punchcard.gql.context import authenticate
from punchcard.gql.documents import Operation
from punchcard.gql.http import header
from punchcard.gql.payloads import PayloadError, loads
from punchcard.gql.results import formatted_errors, response, websocket_text
from punchcard.live.hub import Hub, OperationErrors, Subscriber, as_graphql_error
from punchcard.live.outbox import Outbox
from punchcard.live.protocols import Vocabulary
from punchcard.settings import Settings

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 128
CLOSE_TIMEOUT = 5.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Refused(Exception):
    """Close the socket with this code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason[:120]


def _bearer(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    return value if " " in value else f"Bearer {value}"


def credentials(payload: dict[str, Any] | None, upgrade_header: str | None) -> str | None:
    """The ``Authorization`` value to check: from the init payload, else the upgrade."""
    if payload:
        headers = payload.get("headers")
        nested = headers if isinstance(headers, dict) else {}
        for source, key in (
            (payload, "Authorization"),
            (payload, "authorization"),
            (payload, "token"),
            (payload, "authToken"),
            (nested, "Authorization"),
            (nested, "authorization"),
        ):
            if key in source:
                return _bearer(source[key]) or "invalid"
    return upgrade_header


class Connection:
    """One socket: its protocol state, operations and outbox."""

    __slots__ = (
        "_closer",
        "_expiry",
        "_receive",
        "_revoked_keys",
        "_scope",
        "_send",
        "acked",
        "closing",
        "hub",
        "init_received",
        "outbox",
        "principal",
        "protocol",
        "revoked",
        "settings",
        "subscribers",
        "tasks",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        protocol: Vocabulary,
        *,
        hub: Hub,
        outbox: Outbox,
        revoked: Collection[int] = (),
    ) -> None:
        self.hub = hub
        self._revoked_keys = revoked
        self.settings: Settings = hub.services.settings
        self._scope = scope
        self._receive = receive
        self._send = send
        self.protocol = protocol
        self.outbox = outbox
        self.principal: Principal | None = None
        self.init_received = False
        self.acked = False
        self.closing = False
        self.revoked = False
        self.subscribers: dict[str, Subscriber | None] = {}  # None: still starting / a query
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._expiry: asyncio.TimerHandle | None = None
        self._closer: asyncio.Task[None] | None = None

    # -- the receive loop -----------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.timeout(self.settings.ws_init_timeout_seconds):
                while not self.init_received:
                    if not await self._step():
                        return
        except TimeoutError:
            await self.close(4408, "Connection initialisation timeout")
            return
        while not self.closing:
            if not await self._step():
                return

    async def _step(self) -> bool:
        """Handle one message; False when the socket is done."""
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            self.closing = True
            return False
        try:
            data = self._parse(message)
            await self._handle(data)
        except Refused as refused:
            await self.close(refused.code, refused.reason)
            return False
        return not self.closing

    @staticmethod
    def _parse(message: Message) -> dict[str, Any]:
        text = message.get("text")
        if text is None:
            raise Refused(4400, "WebSocket messages must be text")
        try:
            data = loads(text)
        except PayloadError as error:
            raise Refused(4400, f"Invalid message: it {error}") from None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise Refused(4400, "Invalid message: no type")
        return data

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        protocol = self.protocol
        if kind == "connection_init":
            await self._init(message.get("payload"))
        elif kind == protocol.start:
            self._start(message)
        elif kind == protocol.stop:
            self._stop(message.get("id"))
        elif kind == protocol.ping:
            self.put("pong", {"type": protocol.pong})
        elif kind == protocol.pong:
            pass
        elif kind == protocol.terminate:
            await self.close(1000, "")
        else:
            raise Refused(4400, f"Unknown message type: {kind[:40]}")

    # -- connection_init ------------------------------------------------------------

    async def _init(self, payload: object) -> None:
        if self.init_received:
            raise Refused(4429, "Too many initialisation requests")
        self.init_received = True
        if payload is not None and not isinstance(payload, dict):
            raise Refused(4400, "Invalid connection init payload")
        authorization = header(self._scope, b"authorization")
        caller = await authenticate(self.hub.services, credentials(payload, authorization))
        if isinstance(caller, DomainError):
            if caller.code is Code.SERVICE_UNAVAILABLE:  # 1013: try again later
                raise Refused(1013, caller.message)
            await self._reject(caller.message)
            return
        principal = caller
        if principal is not None and principal.api_key_id in self._revoked_keys:
            await self._reject("unknown or revoked API key")  # revoked while it was checked
            return
        if principal is None:
            await self._reject("send a token in the connection_init payload (Authorization)")
            return
        if principal.expires_at is not None and principal.expires_at <= time.time():
            await self._reject("token expired")
            return
        self.principal = principal
        if principal.expires_at is not None:
            delay = principal.expires_at - time.time()
            self._expiry = asyncio.get_running_loop().call_later(delay, self._expired)
        self.acked = True
        self.put("ack", {"type": "connection_ack"})
        self.keepalive()

    async def _reject(self, reason: str) -> None:
        if self.protocol.rejects_with_message:
            self.put("error", {"type": "connection_error", "payload": {"message": reason}})
        await self.close(4403, f"Forbidden: {reason}")

    def _expired(self) -> None:
        self._expiry = None
        if self._closer is None:
            self._closer = asyncio.ensure_future(self.close(4401, "token expired"))

    def revoke(self) -> None:
        """Its API key was revoked: refuse what comes in from now on and close."""
        self.revoked = True  # a subscribe or mutation still in the buffer is refused
        for op_id in list(self.subscribers):
            self._forget(op_id)
        if self._closer is None:
            self._closer = asyncio.ensure_future(self.close(4403, "Forbidden: API key revoked"))

    def keepalive(self) -> None:
        """The protocol's keep-alive (legacy ``ka``: after the ack, then periodically)."""
        kind = self.protocol.keepalive
        if kind is not None and self.acked and not self.closing:
            self.put(kind, {"type": kind})

    # -- operations -----------------------------------------------------------------

    def _start(self, message: dict[str, Any]) -> None:
        if self.revoked:
            raise Refused(4403, "Forbidden: API key revoked")
        if not self.acked:
            raise Refused(4401, "Unauthorized")
        op_id, payload = message.get("id"), message.get("payload")
        if not isinstance(op_id, str) or not 0 < len(op_id) <= MAX_ID_LENGTH:
            raise Refused(4400, "Invalid message: operation id")
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            raise Refused(4400, "Invalid message: payload.query")
        variables = payload.get("variables")
        operation_name = payload.get("operationName")
        if variables is not None and not isinstance(variables, dict):
            raise Refused(4400, "Invalid message: payload.variables")
        if operation_name is not None and not isinstance(operation_name, str):
            raise Refused(4400, "Invalid message: payload.operationName")
        if op_id in self.subscribers:
            if self.protocol.duplicate_id_closes:
                raise Refused(4409, f"Subscriber for {op_id[:60]} already exists")
            self._forget(op_id)
        if len(self.subscribers) >= self.settings.ws_max_operations:
            self._error(op_id, [GraphQLError("Subscription limit reached")])
            return
        self.subscribers[op_id] = None
        task = asyncio.ensure_future(
            self._operation(op_id, payload["query"], variables, operation_name)
        )
        self.tasks[op_id] = task
        task.add_done_callback(lambda _: self._finished(op_id, task))

    def _finished(self, op_id: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(op_id) is task:
            del self.tasks[op_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("operation %s failed", op_id, exc_info=task.exception())

    async def _operation(
        self, op_id: str, query: str, variables: dict[str, Any] | None, name: str | None
    ) -> None:
        op = self.hub.engine.documents.operation(query, name)
        if isinstance(op, list):
            self._done(op_id, errors=op)
            return
        if op.type is not OperationType.SUBSCRIPTION:
            await self._execute(op_id, op, variables)
            return
        assert self.principal is not None
        try:
            sub = await self.hub.subscribe(
                op, variables, self.principal, self.outbox, self.protocol.result_prefix(op_id)
            )
        except OperationErrors as refused:
            self._done(op_id, errors=refused.errors)
            return
        if self.subscribers.get(op_id, False) is not None:  # stopped meanwhile
            self.hub.unsubscribe(sub)
            return
        self.subscribers[op_id] = sub
        try:
            await self.hub.join(sub)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.hub.unsubscribe(sub)
            self._done(op_id, errors=[as_graphql_error(error)])

    async def _execute(self, op_id: str, op: Operation, variables: dict[str, Any] | None) -> None:
        result = await self.hub.engine.execute(op, variables, self.hub.services, self.principal)
        if op_id not in self.subscribers:
            return
        message = {"id": op_id, "type": self.protocol.result, "payload": response(result)}
        self.put(("next", op_id), message)
        self._done(op_id)

    def _done(self, op_id: str, errors: list[GraphQLError] | None = None) -> None:
        """The operation ended on its own: answer with its errors, or complete."""
        if self.subscribers.pop(op_id, False) is False:
            return
        if errors is None:
            self.put(("complete", op_id), {"id": op_id, "type": "complete"})
        else:
            self._error(op_id, errors)

    def _error(self, op_id: str, errors: list[GraphQLError]) -> None:
        payload = self.protocol.error_payload(formatted_errors(errors))
        self.put(("error", op_id), {"id": op_id, "type": "error", "payload": payload})

    def _stop(self, op_id: object) -> None:
        if not isinstance(op_id, str):
            raise Refused(4400, "Invalid message: operation id")
        if op_id in self.subscribers:
            self._forget(op_id)
            if self.protocol.completes_on_stop:
                self.put(("complete", op_id), {"id": op_id, "type": "complete"})

    def _forget(self, op_id: str) -> None:
        sub = self.subscribers.pop(op_id, None)
        if sub is not None:
            self.hub.unsubscribe(sub)
        task = self.tasks.pop(op_id, None)
        if task is not None:
            task.cancel()

    # -- output ---------------------------------------------------------------------

    def put(self, key: object, message: dict[str, Any]) -> None:
        self.outbox.put(key, websocket_text(message), direct=False)

    async def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.outbox.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._send({"type": "websocket.close", "code": code, "reason": reason}),
                CLOSE_TIMEOUT,
            )

    async def cleanup(self) -> None:
        """The socket is gone: release every subscription, task and timer it held."""
        self.closing = True
        self.outbox.close()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for op_id in list(self.subscribers):
            self._forget(op_id)
        tasks = [*self.tasks.values(), *([self._closer] if self._closer else [])]
        self.tasks.clear()
        for task in tasks:
            if task is not asyncio.current_task():
                task.cancel()
        for task in tasks:
            if task is not asyncio.current_task():
                with contextlib.suppress(BaseException):
                    await task
