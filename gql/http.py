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

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from graphql import ExecutionResult, GraphQLError, OperationType
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from punchcard.gql.context import Context, Services, authenticate, build_context
from punchcard.gql.engine import Engine
from punchcard.gql.errors import BAD_REQUEST
from punchcard.gql.payloads import PayloadError, loads
from punchcard.gql.results import response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 1 << 20  # bytes; a larger body is refused with 413
_HEADERS = [(b"content-type", b"application/json")]
_FIELDS = frozenset({"query", "variables", "operationName", "extensions"})


class Refusal(Exception):
    """Not a GraphQL request: answered with ``status`` and one error (``BAD_REQUEST``...)."""

    def __init__(self, status: int, message: str, code: str = BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class GraphQLRequest:
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None


class GraphQLHTTP:
    """The ASGI endpoint of ``/graphql`` over HTTP, mounted as a route (so every middleware
    sees it).

    A JSON POST is checked here whichever path runs it: a body that is not a GraphQL
    request (not JSON, not an object, wrong types, unpaired surrogates, a batch, too
    large) gets a JSON error with a code and a 4xx; a document that does not parse,
    validate or name one operation gets its coded errors; a subscription is refused
    (it runs over the WebSocket). What is left runs on the engine (the fast path) or,
    with ``fast=False``, strawberry's view. Everything else (GET: GraphiQL, other content
    types) goes to strawberry's view on the same schema."""

    def __init__(
        self,
        engine: Engine,
        *,
        fast: bool = True,
        graphiql: bool = True,
        body_timeout: float = 10.0,
    ) -> None:
        self._engine = engine
        self._fast = fast
        self._body_timeout = body_timeout
        self._fallback = StrawberryView(
            engine.schema, allow_queries_via_get=False, graphql_ide="graphiql" if graphiql else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = header(scope, b"content-type") or ""
        if scope["method"] != "POST" or not content_type.startswith("application/json"):
            await self._fallback(scope, receive, send)
            return
        try:
            try:
                async with asyncio.timeout(self._body_timeout):
                    body = await _read_body(scope, receive)
            except TimeoutError:
                raise Refusal(408, "the body did not arrive in time", "REQUEST_TIMEOUT") from None
            request = _graphql_request(body)
        except Refusal as refusal:
            refused = {"message": str(refusal), "extensions": {"code": refusal.code}}
            await _answer(send, refusal.status, {"errors": [refused]})
            return
        documents = self._engine.documents
        found = documents.operation(request.query, request.operation_name)
        if isinstance(found, list):
            await _answer(send, 200, response(ExecutionResult(data=None, errors=found)))
            return
        if found.type is OperationType.SUBSCRIPTION:
            over_http = GraphQLError(
                "subscriptions run over a WebSocket at /graphql (graphql-transport-ws or "
                "graphql-ws), not over HTTP",
                extensions={"code": BAD_REQUEST},
            )
            await _answer(send, 200, response(ExecutionResult(data=None, errors=[over_http])))
            return
        if not self._fast and not found.atomic:  # atomic mutations need the engine
            await self._fallback(scope, _replay(body, receive), send)
            return
        services: Services = scope["app"].state.services
        caller = await authenticate(services, header(scope, b"authorization"))
        result = await self._engine.execute(found, request.variables, services, caller)
        await _answer(send, 200, response(result))


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
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


def header(scope: Scope, name: bytes) -> str | None:
    """A request header (HTTP or WebSocket scope), by its lower-case name."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _graphql_request(body: bytes) -> GraphQLRequest:
    """The request in a JSON body, or the Refusal that says what is wrong with it."""
    try:
        data = loads(body)
    except PayloadError as error:
        raise Refusal(400, f"the body {error}") from None
    if isinstance(data, list):
        raise Refusal(400, "batched requests are not supported: send one operation per request")
    if not isinstance(data, dict):
        raise Refusal(400, "the body must be a JSON object with a `query`")
    unknown = set(data) - _FIELDS
    if unknown:
        raise Refusal(400, f"unknown request fields: {', '.join(sorted(unknown))[:200]}")
    query, variables = data.get("query"), data.get("variables")
    operation_name, extensions = data.get("operationName"), data.get("extensions")
    if not isinstance(query, str) or not query:
        raise Refusal(400, "`query` must be a non-empty string")
    if variables is not None and not isinstance(variables, dict):
        raise Refusal(400, "`variables` must be an object")
    if operation_name is not None and not isinstance(operation_name, str):
        raise Refusal(400, "`operationName` must be a string")
    if extensions is not None and not isinstance(extensions, dict):
        raise Refusal(400, "`extensions` must be an object")
    return GraphQLRequest(query, variables, operation_name)


async def _read_body(scope: Scope, receive: Receive) -> bytes:
    """The request body; larger than MAX_BODY is a 413 (refused before reading it all)."""
    length = header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise Refusal(413, f"the body is larger than {MAX_BODY} bytes", "PAYLOAD_TOO_LARGE")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            raise Refusal(413, f"the body is larger than {MAX_BODY} bytes", "PAYLOAD_TOO_LARGE")
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the body already read, then whatever comes after it."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
