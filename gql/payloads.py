"""JSON from clients (an HTTP body, a WebSocket message), decoded with the checks every
path needs: valid JSON, not nested past the decoder's recursion limit, and no unpaired
UTF-16 surrogate (``"\\ud800"`` is valid JSON but no UTF-8 text: PostgreSQL, asyncpg and
the JSON sent back would fail on it later, as an internal error)."""

from __future__ import annotations

import json


class PayloadError(ValueError):
    """Not a payload punchcard can read; the message says why."""


def loads(text: bytes | str) -> object:
    try:
        data = json.loads(text)
    except RecursionError:
        raise PayloadError("is nested too deeply") from None
    except ValueError:
        raise PayloadError("is not valid JSON") from None
    if _may_hold_surrogates(text) and _has_lone_surrogate(data):
        raise PayloadError("holds an unpaired UTF-16 surrogate (such as \\ud800)")
    return data


def _may_hold_surrogates(text: bytes | str) -> bool:
    """The cheap test first: a lone surrogate only arrives as a ``\\uD8xx``..``\\uDFxx``
    escape (raw bytes that are not UTF-8 already fail to decode)."""
    if isinstance(text, str):
        return "\\ud" in text or "\\uD" in text
    return b"\\ud" in text or b"\\uD" in text


def _has_lone_surrogate(value: object) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
