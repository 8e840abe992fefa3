"""GraphQL over HTTP on ``/graphql``: a fast path for plain JSON POSTs, strawberry's view
for the rest; both on the same schema, rules, context and error masking.

Each distinct document is parsed and validated once (``gql/documents.py``) and executed
straight through graphql-core (``gql/engine.py``). Anything out of the ordinary (GET,
batches, other content types, subscriptions, a missing or ambiguous operation, a body
that is not a JSON object) is handed to strawberry's view, so every answer is one the
normal path would give; tests/test_fast_path.py runs the same documents through both
and compares.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from graphql import ExecutionResult, OperationType, get_operation_ast
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from punchcard.gql.context import Context, Services, authenticate, build_context
from punchcard.gql.engine import Engine
from punchcard.gql.results import response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 1 << 20
_HEADERS = [(b"content-type", b"application/json")]


class GraphQLHTTP:
    """The ASGI endpoint of ``/graphql`` over HTTP, mounted as a route (so every middleware
    sees it): plain JSON POSTs are answered here; everything else goes to strawberry's view
    on the same schema (GraphiQL on GET, batches, other content types, subscriptions)."""

    def __init__(self, engine: Engine, *, fast: bool = True) -> None:
        self._engine = engine
        self._fast = fast
        self._fallback = StrawberryView(engine.schema, allow_queries_via_get=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._fast or scope["method"] != "POST":
            await self._fallback(scope, receive, send)
            return
        body, more = await _read_body(receive)
        request = _plain_request(scope, body) if not more else None
        if request is None:
            await self._fallback(scope, _replay(body, more, receive), send)
            return
        query, variables, operation_name = request
        documents = self._engine.documents
        prepared = documents.prepare(query)
        if prepared.document is not None and not prepared.errors:
            operation = get_operation_ast(prepared.document, operation_name)
            if operation is None or operation.operation is OperationType.SUBSCRIPTION:
                await self._fallback(scope, _replay(body, more, receive), send)
                return
        services: Services = scope["app"].state.services
        caller = await authenticate(services, _header(scope, b"authorization"))
        found = documents.operation(query, operation_name)
        if isinstance(found, list):
            result = ExecutionResult(data=None, errors=found)
        else:
            result = await self._engine.execute(found, variables, build_context(services, caller))
        payload = json.dumps(response(result), separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_HEADERS, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


class StrawberryView(GraphQL[Context, None]):
    """strawberry's own view, for what the fast path leaves to it."""

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        services: Services = request.app.state.services
        caller = await authenticate(services, request.headers.get("authorization"))
        return build_context(services, caller)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _plain_request(
    scope: Scope, body: bytes
) -> tuple[str, dict[str, Any] | None, str | None] | None:
    """(query, variables, operationName) of a plain JSON request, else None."""
    content_type = _header(scope, b"content-type") or ""
    if scope["method"] != "POST" or not content_type.startswith("application/json"):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or set(data) - {"query", "variables", "operationName"}:
        return None
    query, variables, operation_name = (
        data.get("query"),
        data.get("variables"),
        data.get("operationName"),
    )
    if not isinstance(query, str) or not query:
        return None
    if variables is not None and not isinstance(variables, dict):
        return None
    if operation_name is not None and not isinstance(operation_name, str):
        return None
    return query, variables, operation_name


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request body, up to MAX_BODY; ``more`` is True when it is larger."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False
        if size > MAX_BODY:
            return b"".join(chunks), True


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """A ``receive`` that yields the body already read, then the rest of the stream."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay
