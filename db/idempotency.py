"""Idempotency keys: a retry with the same key gets the first result and changes nothing.

Every statement that reads or writes ``idempotency_keys`` is here: the standalone ones
(claim a key, store a result, look one up) and the fragments the one-statement session
changes embed (``db/purchases.py``), so the key is checked, the change made and the
result remembered in the same round trip.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from punchcard.db import checks
from punchcard.db.errors import Code, DomainError
from punchcard.db.types import Executor, Row

MAX_KEY_LENGTH = 255
MIN_RETENTION_SECONDS = 24 * 3600  # a key is kept at least a day (integrity rule 4)

# One batch of keys past their retention, oldest first; keys a writer holds are skipped,
# so a purge never waits for (or blocks) a change that uses one.
PURGE = """
WITH old AS (
    SELECT trainer_id, key FROM idempotency_keys
     WHERE created_at < coalesce($3::timestamptz, now()) - make_interval(secs => $1)
     ORDER BY created_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
DELETE FROM idempotency_keys AS k USING old
 WHERE k.trainer_id = old.trainer_id AND k.key = old.key
"""

LOOKUP = "SELECT request, result FROM idempotency_keys WHERE trainer_id = $1 AND key = $2"

CLAIM = """
INSERT INTO idempotency_keys (trainer_id, key, request, result) VALUES ($1, $2, $3, '{}')
ON CONFLICT DO NOTHING RETURNING true
"""

STORE = "UPDATE idempotency_keys SET result = to_jsonb($3::json) WHERE trainer_id = $1 AND key = $2"


def unused_sql(*, trainer: str, key: str) -> str:
    """A guard for an UPDATE's WHERE clause: ``key`` has not been used by ``trainer``."""
    return (
        "NOT EXISTS (SELECT 1 FROM idempotency_keys AS k "
        f"WHERE k.trainer_id = {trainer} AND k.key = {key})"
    )


def remember_sql(*, changed: str, key: str, request: str) -> str:
    """An INSERT for a CTE: store the ``changed`` row as the key's result (when a key
    was given). ``changed`` names a CTE with a ``trainer_id`` column."""
    return (
        "INSERT INTO idempotency_keys (trainer_id, key, request, result)\n"
        f"    SELECT c.trainer_id, {key}, {request}, to_jsonb(c) FROM {changed} AS c "
        f"WHERE {key}::text IS NOT NULL"
    )


def stored_join_sql(*, alias: str, unless: str, trainer: str, key: str) -> str:
    """A LEFT JOIN that brings the stored request/result when ``unless`` is false."""
    return (
        f"LEFT JOIN idempotency_keys AS {alias} "
        f"ON {unless} AND {alias}.trainer_id = {trainer} AND {alias}.key = {key}"
    )


async def purge(
    db: Executor, *, retention_seconds: float, limit: int, now: datetime | None = None
) -> int:
    """Delete up to ``limit`` keys older than the retention (never under a day)."""
    keep = max(retention_seconds, MIN_RETENTION_SECONDS)
    status = await db.execute(PURGE, keep, limit, now)
    return int(status.rsplit(" ", 1)[-1])


def check_key(key: str | None) -> str | None:
    if key is not None:
        checks.text("idempotencyKey", key, min_length=1, max_length=MAX_KEY_LENGTH)
    return key


def fingerprint(operation: str, **arguments: object) -> str:
    """What a key is bound to: the operation and every argument that shapes its result."""
    return json.dumps([operation, arguments], sort_keys=True, default=str)


async def claim(db: Executor, *, trainer_id: int, key: str, request: str) -> bool:
    """Take ``key`` for ``request`` (inside the change's transaction); False if it is taken."""
    return bool(await db.fetchval(CLAIM, trainer_id, key, request))


async def store(db: Executor, *, trainer_id: int, key: str, result: Row) -> None:
    """Record the change's result under a claimed key (same transaction)."""
    await db.execute(STORE, trainer_id, key, _json(result))


async def first_result(db: Executor, *, trainer_id: int, key: str, request: str) -> Row | None:
    """The first result stored under ``key`` (see ``replay``)."""
    return replay(await db.fetchrow(LOOKUP, trainer_id, key), request)


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


def _json(row: Row) -> str:
    return json.dumps(
        {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in dict(row).items()}
    )
