"""GraphQL over HTTP on ``/graphql``, as https://graphql.github.io/graphql-over-http/
says (graphql-http's audit checks it: tests/test_http_audit.py).

Every request is checked here, whichever path then runs it:

- POST with ``Content-Type: application/json``, or GET with ``query``, ``variables``,
  ``operationName`` and ``extensions`` in the URL (queries only: a mutation over GET is a
  405 with ``Allow: POST``). Any other method is a 405, another content type a 415, a
  body or URL that is no GraphQL request (not JSON, not an object, wrong types, unknown
  fields, a batch, unpaired surrogates, too large, too slow) a 400/413/408: always a JSON
  error with a code.
- ``Accept`` picks ``application/json`` or ``application/graphql-response+json``
  (``gql/media.py``: the status codes of each); nothing acceptable is a 406.
- A browser's GET without a ``query`` (``Accept: text/html``) is redirected to
  ``/graphiql`` when GraphiQL is on.
- A document that does not parse, validate or name one operation gets its coded errors;
  a subscription is refused (it runs over the WebSocket).

What is left runs on the engine (the fast path): each distinct document is parsed and
validated once (``gql/documents.py``) and executed straight through graphql-core
(``gql/engine.py``). With ``fast=False`` it runs on strawberry's view instead, on the same
schema, rules, context and error masking; tests/test_fast_path.py runs the same requests
through both and compares the answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from graphql import ExecutionResult, GraphQLError, OperationType, get_operation_ast
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from punchcard.gql import json_bytes
from punchcard.gql.context import Context, Services, authenticate, build_context
from punchcard.gql.documents import Documents
from punchcard.gql.engine import Engine
from punchcard.gql.errors import BAD_REQUEST
from punchcard.gql.media import GRAPHQL_RESPONSE, JSON, negotiate, shape
from punchcard.gql.payloads import PayloadError, loads
from punchcard.gql.results import response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 1 << 20  # bytes; a larger body is refused with 413
GRAPHIQL_PATH = "/graphiql"  # where a browser's GET of /graphql is sent when GraphiQL is on
_FIELDS = frozenset({"query", "variables", "operationName", "extensions"})
# Response headers, built once: the content type of each media type (JSON is UTF-8 by
# definition, RFC 8259; the newer type says so as the spec's examples do).
_TYPE_HEADER = {
    JSON: (b"content-type", b"application/json"),
    GRAPHQL_RESPONSE: (b"content-type", b"application/graphql-response+json; charset=utf-8"),
}
_VARY = (b"vary", b"Accept")  # GET answers: the media type depends on Accept
_ALLOW_POST = (b"allow", b"POST")
_ALLOW = (b"allow", b"GET, POST")
_SUBSCRIPTION = (
    "subscriptions run over a WebSocket at /graphql (graphql-transport-ws or graphql-ws), "
    "not over HTTP"
)


class Refusal(Exception):
    """Not a GraphQL request: answered with ``status`` and one error (``BAD_REQUEST``...)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str = BAD_REQUEST,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers


@dataclass(frozen=True, slots=True)
class GraphQLRequest:
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None


class GraphQLHTTP:
    """The ASGI endpoint of ``/graphql`` over HTTP, mounted as a route (so every middleware
    sees it); see the module's docstring."""

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
        self._graphiql = graphiql
        self._body_timeout = body_timeout
        # strawberry's view only ever runs a checked JSON POST of one query or mutation
        # (fast=False); its own GraphiQL (from a CDN) is never served: /graphiql is ours.
        self._fallback = StrawberryView(
            engine.schema, allow_queries_via_get=False, graphql_ide=None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = accept = authorization = length = None
        for key, value in scope["headers"]:  # one pass over the headers
            if key == b"content-type":
                content_type = value
            elif key == b"accept":
                accept = value
            elif key == b"authorization":
                authorization = value
            elif key == b"content-length":
                length = value
        method = scope["method"]
        accepted = None if accept is None else bytes(accept).decode("latin-1")
        media = negotiate(accepted)
        extra: tuple[tuple[bytes, bytes], ...] = ()
        body = b""
        try:
            if method == "POST":
                if content_type != b"application/json" and not _is_json(content_type):
                    raise Refusal(
                        415, "send the request as a JSON body (Content-Type: application/json)"
                    )
                try:
                    async with asyncio.timeout(self._body_timeout):
                        body = await _read_body(length, receive)
                except TimeoutError:
                    raise Refusal(
                        408, "the body did not arrive in time", "REQUEST_TIMEOUT"
                    ) from None
                request = _graphql_request(body)
            elif method == "GET":
                extra = (_VARY,)
                fields = _url_fields(bytes(scope.get("query_string", b"")))
                if "query" not in fields and self._graphiql and "text/html" in (accepted or ""):
                    location = f"{scope.get('root_path', '')}{GRAPHIQL_PATH}".encode()
                    redirect = ((b"location", location), _VARY, (b"content-length", b"0"))
                    await _send(send, 302, b"", redirect)
                    return
                request = _url_request(fields)
            else:
                raise Refusal(
                    405,
                    f"{method} is not supported: use GET or POST",
                    "METHOD_NOT_ALLOWED",
                    (_ALLOW,),
                )
            if media is None:  # a well-formed request that no answer could satisfy
                raise _not_acceptable()
        except Refusal as refusal:
            refused = {"message": str(refusal), "extensions": {"code": refusal.code}}
            await _answer(
                send,
                refusal.status,
                {"errors": [refused]},
                media or JSON,
                (*extra, *refusal.headers),
            )
            return
        documents = self._engine.documents
        found = documents.operation(request.query, request.operation_name)
        if isinstance(found, list):
            if method == "GET" and _is_mutation(documents, request):
                await _refuse_mutation(send, media, extra)
                return
            await _result(send, media, response(ExecutionResult(data=None, errors=found)), extra)
            return
        if found.type is not OperationType.QUERY:
            if found.type is OperationType.MUTATION and method == "GET":
                await _refuse_mutation(send, media, extra)
                return
            if found.type is OperationType.SUBSCRIPTION:
                over_http = GraphQLError(_SUBSCRIPTION, extensions={"code": BAD_REQUEST})
                await _result(
                    send, media, response(ExecutionResult(data=None, errors=[over_http])), extra
                )
                return
        if not self._fast and not found.atomic:  # atomic mutations need the engine
            await self._standard(scope, request, body, media, extra, receive, send)
            return
        services: Services = scope["app"].state.services
        caller = await authenticate(
            services, None if authorization is None else bytes(authorization).decode("latin-1")
        )
        result = await self._engine.execute(found, request.variables, services, caller)
        await _result(send, media, response(result), extra)

    async def _standard(
        self,
        scope: Scope,
        request: GraphQLRequest,
        body: bytes,
        media: str,
        extra: tuple[tuple[bytes, bytes], ...],
        receive: Receive,
        send: Send,
    ) -> None:
        """Run a checked request on strawberry's view: as the JSON POST it is (a GET's
        fields become one), answered in ``media`` with its status."""
        if scope["method"] != "POST":
            fields = {"query": request.query, "variables": request.variables}
            fields["operationName"] = request.operation_name
            body = json.dumps(fields).encode()
        headers = [
            (k, v) for k, v in scope["headers"] if k not in {b"content-type", b"content-length"}
        ]
        headers.append((b"content-type", b"application/json"))  # as checked, in one spelling
        scope = {**scope, "method": "POST", "headers": headers, "query_string": b""}
        chunks: list[bytes] = []
        started: Message = {}

        async def keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            answer = b"".join(chunks)
            content_type = dict(started.get("headers", ())).get(b"content-type", b"")
            if started["status"] == 200 and content_type.startswith(b"application/json"):
                decoded = json.loads(answer)
                await _result(send, media, decoded, extra)
                return
            await _send(send, started["status"], answer, started.get("headers", ()))

        await self._fallback(scope, _replay(body, receive), keep)


async def _result(
    send: Send, media: str, body: dict[str, Any], extra: tuple[tuple[bytes, bytes], ...]
) -> None:
    status, shaped = shape(media, body)
    await _answer(send, status, shaped, media, extra)


async def _refuse_mutation(
    send: Send, media: str | None, extra: tuple[tuple[bytes, bytes], ...]
) -> None:
    refused = {
        "message": "mutations must be sent with POST, not GET",
        "extensions": {"code": "METHOD_NOT_ALLOWED"},
    }
    await _answer(send, 405, {"errors": [refused]}, media or JSON, (*extra, _ALLOW_POST))


def _is_mutation(documents: Documents, request: GraphQLRequest) -> bool:
    """Whether a document that failed (to validate, say) names a mutation: over GET that
    is refused as a mutation, whatever else is wrong with it."""
    node = documents.prepare(request.query).document
    if node is None:
        return False
    operation = get_operation_ast(node, request.operation_name)
    return operation is not None and operation.operation is OperationType.MUTATION


def _not_acceptable() -> Refusal:
    return Refusal(
        406,
        "the Accept header allows neither application/graphql-response+json nor application/json",
        "NOT_ACCEPTABLE",
    )


def _is_json(content_type: bytes | None) -> bool:
    """``application/json``, in any case, with no charset or UTF-8's."""
    if content_type is None:
        return False
    media_type, *parameters = bytes(content_type).decode("latin-1").lower().split(";")
    if media_type.strip() != "application/json":
        return False
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in {"utf-8", "utf8"}:
            return False
    return True


async def _answer(
    send: Send,
    status: int,
    body: dict[str, Any],
    media: str = JSON,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    payload = json_bytes.dumps(body)
    headers = [_TYPE_HEADER[media], *extra, (b"content-length", str(len(payload)).encode())]
    await _send(send, status, payload, headers)


async def _send(send: Send, status: int, payload: bytes, headers: Any) -> None:
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
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


def _url_fields(query_string: bytes) -> dict[str, str]:
    """The fields of a GET's URL (percent-decoded UTF-8), or the Refusal saying what is
    wrong with them: the same four fields a POST body may hold, each at most once."""
    try:
        pairs = parse_qsl(query_string.decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise Refusal(400, "the URL's parameters are not UTF-8") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise Refusal(400, f"the URL gives `{key[:50]}` more than once")
        fields[key] = value
    unknown = set(fields) - _FIELDS
    if unknown:
        raise Refusal(400, f"unknown request fields: {', '.join(sorted(unknown))[:200]}")
    return fields


def _url_request(fields: dict[str, str]) -> GraphQLRequest:
    """The request in a GET's URL fields: ``variables`` and ``extensions`` are JSON."""
    query = fields.get("query")
    if not query:
        raise Refusal(400, "a GET needs a non-empty `query` parameter (the GraphQL document)")
    decoded: dict[str, Any] = {}
    for name in ("variables", "extensions"):
        text = fields.get(name)
        if not text:
            continue
        try:
            value = loads(text)
        except PayloadError as error:
            raise Refusal(400, f"`{name}` {error}") from None
        if value is not None and not isinstance(value, dict):
            raise Refusal(400, f"`{name}` must be a JSON object")
        decoded[name] = value
    return GraphQLRequest(query, decoded.get("variables"), fields.get("operationName") or None)


async def _read_body(length: bytes | None, receive: Receive) -> bytes:
    """The request body; larger than MAX_BODY is a 413 (refused before reading it all)."""
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
