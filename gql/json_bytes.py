"""HTTP response bodies as JSON bytes, encoded by orjson (about 12x faster than ``json``
on a calendar page: benchmarks/encoding.py).

The same JSON in meaning as ``json.dumps(body, separators=(",", ":"))``: keys in their
order, no whitespace, floats in their shortest round-trip form, non-ASCII as UTF-8 rather
than ``\\u`` escapes (both are the same string to any JSON parser). What orjson refuses
(a lone surrogate, an integer beyond 64 bits, a non-string key) is encoded by ``json``
instead, ASCII-escaped as before.

A ``datetime`` (a planned answer leaves UTC ones in its data, ``gql/planned.py``) is
written as its ``isoformat()``, as graphql-core's DateTime serializer would: orjson's own
RFC 3339 text is that same string for an aware UTC value.

HTTP only: WebSocket frames are text and are encoded where they are sent (``live/``),
never here (``results.websocket_text``, with ``isoformat`` as ``json``'s ``default``).
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import orjson


def dumps(body: Any) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(body, separators=(",", ":"), default=isoformat).encode()


def isoformat(value: Any) -> str:
    """``json``'s ``default`` for an engine's answer: a date or datetime (a planned answer
    leaves those) as its ``isoformat()``; anything else is refused as ``json`` would."""
    if isinstance(value, date):  # a datetime is a date
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
