"""``POST /graphql`` without the detours: the same schema, rules, context and error
masking as strawberry's view, minus its per-request machinery.

Each distinct document is parsed and validated once (a bounded LRU keyed by the query
text) and executed straight through graphql-core on strawberry's schema. Anything out
of the ordinary (GET, batches, other content types, subscriptions, a missing or
ambiguous operation, a body that is not a JSON object) is handed to strawberry's view,
so every answer is one the normal path would give; tests/test_fast_path.py runs the
same documents through both and compares.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    OperationType,
    execute,
    get_operation_ast,
    parse,
)
from strawberry.execution import optimized_is_awaitable
from strawberry.schema.schema import validate_document

from gql.errors import masked
from gql.schema import MAX_TOKENS, VALIDATION_RULES, schema

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ContextFactory = Callable[[str | None], Awaitable[Any]]

CACHE_SIZE = 1024
MAX_BODY = 1 << 20
_HEADERS = [(b"content-type", b"application/json")]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A parsed and validated document, or the errors that stop it."""

    document: DocumentNode | None
    errors: list[GraphQLError]


class DocumentCache:
    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[str, Prepared] = OrderedDict()

    def get(self, query: str) -> Prepared:
        entry = self._entries.get(query)
        if entry is not None:
            self._entries.move_to_end(query)
            return entry
        entry = self._prepare(query)
        self._entries[query] = entry
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return entry

    @staticmethod
    def _prepare(query: str) -> Prepared:
        try:
            document = parse(query, max_tokens=MAX_TOKENS)
        except GraphQLError as error:
            return Prepared(None, [error])
        return Prepared(document, validate_document(schema._schema, document, VALIDATION_RULES))


class FastGraphQL:
    """Answers plain JSON POSTs itself; everything else goes to ``fallback``."""

    def __init__(self, fallback: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._fallback = fallback
        self._documents = DocumentCache()
        self._graphql_schema = schema._schema
        self._executor_class = schema.execution_context_class

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, context: ContextFactory
    ) -> None:
        body, more = await _read_body(receive)
        request = _plain_request(scope, body) if not more else None
        if request is None:
            await self._fallback(scope, _replay(body, more, receive), send)
            return
        query, variables, operation_name = request
        prepared = self._documents.get(query)
        if prepared.document is not None and not prepared.errors:
            operation = get_operation_ast(prepared.document, operation_name)
            if operation is None or operation.operation is OperationType.SUBSCRIPTION:
                await self._fallback(scope, _replay(body, more, receive), send)
                return
        authorization = _header(scope, b"authorization")
        result = await self._run(prepared, variables, operation_name, await context(authorization))
        response: dict[str, Any] = {"data": result.data}
        if result.errors:
            response["errors"] = [masked(error).formatted for error in result.errors]
        payload = json.dumps(response, separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_HEADERS, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _run(
        self,
        prepared: Prepared,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Any,
    ) -> ExecutionResult:
        if prepared.document is None or prepared.errors:
            return ExecutionResult(data=None, errors=prepared.errors)
        result = execute(
            self._graphql_schema,
            prepared.document,
            variable_values=variables,
            operation_name=operation_name,
            context_value=context,
            is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]
            executor_class=self._executor_class,
        )
        if optimized_is_awaitable(result):
            result = await result  # type: ignore[misc]
        assert isinstance(result, ExecutionResult)
        return result


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
