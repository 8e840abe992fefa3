"""How a result reaches a client, the same on every path (HTTP, WebSocket, live fan-out):
``{"data": ..., "errors": [...]}`` with internal errors masked."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from graphql import ExecutionResult, GraphQLError, GraphQLFormattedError

from punchcard.gql import json_bytes
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
    """The response as a WebSocket frame's text (``websocket_text``)."""
    return websocket_text(response(result))


def websocket_text(body: Any) -> bytes:
    """``body`` as compact UTF-8 JSON for a WebSocket frame (text, so ``json``, never
    orjson's bytes); an engine answer's datetimes (a planned query's, ``gql/planned.py``)
    as their ``isoformat()``."""
    return json.dumps(
        body, separators=(",", ":"), ensure_ascii=False, default=json_bytes.isoformat
    ).encode()
