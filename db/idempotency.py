"""Idempotency keys: a retry with the same key gets the first result and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from db import checks
from db.errors import Code, DomainError

MAX_KEY_LENGTH = 255


def check_key(key: str | None) -> str | None:
    if key is not None:
        checks.text("idempotencyKey", key, min_length=1, max_length=MAX_KEY_LENGTH)
    return key


def fingerprint(operation: str, **arguments: object) -> str:
    """What a key is bound to: the operation and every argument that shapes its result."""
    return json.dumps([operation, arguments], sort_keys=True, default=str)


def replay(stored: Mapping[str, Any] | None, request: str) -> dict[str, Any] | None:
    """The first result stored under a key, or None when the key is unused.

    The same key with other arguments is refused: it is a client bug, not a retry.
    """
    if stored is None:
        return None
    if stored["request"] != request:
        raise DomainError(
            Code.IDEMPOTENCY_KEY_REUSED,
            "this idempotencyKey was already used with different arguments",
        )
    result = stored["result"]
    row = dict(json.loads(result) if isinstance(result, str) else result)
    # Rows are stored with to_jsonb(): timestamps come back as ISO-8601 strings.
    for column, value in row.items():
        if column.endswith("_at") and isinstance(value, str):
            row[column] = datetime.fromisoformat(value)
    return row
