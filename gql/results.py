"""How a result reaches a client, the same on every path (HTTP, WebSocket, live fan-out):
``{"data": ..., "errors": [...]}`` with internal errors masked."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from graphql import ExecutionResult, GraphQLError, GraphQLFormattedError

from punchcard.gql.errors import masked


def formatted_errors(errors: Sequence[GraphQLError]) -> list[GraphQLFormattedError]:
    """Errors as sent to clients, internal ones masked (and logged once)."""
    return [masked(error).formatted for error in errors]


def response(result: ExecutionResult) -> dict[str, Any]:
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = formatted_errors(result.errors)
    return body


def encode(result: ExecutionResult) -> bytes:
    """The response as compact UTF-8 JSON (text: WebSocket frames must stay text)."""
    return json.dumps(response(result), separators=(",", ":"), ensure_ascii=False).encode()
