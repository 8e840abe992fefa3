"""Trainers (the tenants), their settings, and the API keys integrations use to act for them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from punchcard.db import checks
from punchcard.db.errors import bad_input
from punchcard.db.notify import API_KEY, notify_sql
from punchcard.db.types import Executor, Row

TRAINER_COLUMNS = (
    "id, subject, name, email, timezone, reminder_hours_before, late_cancel_hours, created_at"
)
MAX_NAME = 200
# A week ahead at most: the sweeper's reminder scan widens with the largest setting
# (db/reminders.py); 0 sends no reminders.
MAX_REMINDER_HOURS = 168
MAX_LATE_CANCEL_HOURS = 720  # the CHECK of migration 0007

# An unknown JWT subject is provisioned on first use; the no-op update makes
# RETURNING yield the existing row too.
PROVISION = f"""
INSERT INTO trainers (subject, name, email) VALUES ($1, $2, $3)
ON CONFLICT (subject) DO UPDATE SET subject = EXCLUDED.subject
RETURNING {TRAINER_COLUMNS}
"""


async def provision(db: Executor, *, subject: str, name: str, email: str | None) -> Row:
    row = await db.fetchrow(PROVISION, subject, name, email)
    assert row is not None
    return row


BY_ID = f"SELECT {TRAINER_COLUMNS} FROM trainers WHERE id = $1"


async def by_id(db: Executor, trainer_id: int) -> Row | None:
    row: Row | None = await db.fetchrow(BY_ID, trainer_id)
    return row


# The columns updateTrainer may set, by their API names; of them only late_cancel_hours
# takes null (no policy).
LABELS = {
    "name": "name",
    "timezone": "timezone",
    "reminder_hours_before": "reminderHoursBefore",
    "late_cancel_hours": "lateCancelHours",
}
SETTINGS = tuple(LABELS)
LIMITS = {"reminder_hours_before": MAX_REMINDER_HOURS, "late_cancel_hours": MAX_LATE_CANCEL_HOURS}


def _update_sql(columns: Sequence[str]) -> str:
    """An UPDATE that sets exactly ``columns`` (names from SETTINGS, never from input):
    concurrent updates of different settings never undo each other."""
    sets = ", ".join(f"{column} = ${n}" for n, column in enumerate(columns, start=2))
    return f"UPDATE trainers SET {sets} WHERE id = $1 RETURNING {TRAINER_COLUMNS}"


def _checked_setting(column: str, value: object) -> object:
    label = LABELS[column]
    if value is None:
        if column == "late_cancel_hours":
            return None
        raise bad_input(f"{label} cannot be null")
    if column == "name":
        assert isinstance(value, str)
        return checks.text(label, value.strip(), max_length=MAX_NAME)
    if column == "timezone":
        assert isinstance(value, str)
        return value  # checked as an IANA zone by the resolver (gql.timezones)
    assert isinstance(value, int)
    if not 0 <= value <= LIMITS[column]:
        raise bad_input(f"{label} must be between 0 and {LIMITS[column]}")
    return value


async def update_trainer(db: Executor, *, trainer_id: int, changes: Mapping[str, object]) -> Row:
    """Set the given settings (column -> value) of the trainer, and only those; every
    value is checked before anything is written. No changes: the trainer as it is."""
    assert set(changes) <= set(SETTINGS), changes
    values = {column: _checked_setting(column, value) for column, value in changes.items()}
    if not values:
        row = await by_id(db, trainer_id)
    else:
        row = await db.fetchrow(_update_sql(list(values)), trainer_id, *values.values())
    assert row is not None  # the caller is this trainer (provisioned when authenticated)
    return row


def hash_secret(secret: str) -> str:
    """API key secrets are 256-bit random: a plain SHA-256 is a safe, fast lookup key."""
    return hashlib.sha256(secret.encode()).hexdigest()


API_KEY_COLUMNS = "id, trainer_id, name, prefix, scopes, revoked_at, last_used_at, created_at"

CREATE_KEY = f"""
INSERT INTO api_keys (trainer_id, name, secret_hash, prefix, scopes) VALUES ($1, $2, $3, $4, $5)
RETURNING {API_KEY_COLUMNS}
"""

# Revoking notifies every server process: each closes the sockets the key opened.
REVOKE_KEY = f"""
WITH revoked AS (
    UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
     WHERE id = $1 AND trainer_id = $2
    RETURNING {API_KEY_COLUMNS}
), notified AS (
    SELECT {notify_sql(trainer="r.trainer_id", kind=API_KEY, id="r.id")} FROM revoked AS r
)
SELECT r.* FROM (SELECT 1) AS one LEFT JOIN (revoked AS r CROSS JOIN notified) ON true
"""

REVOKED_AMONG = "SELECT id FROM api_keys WHERE id = ANY($1::bigint[]) AND revoked_at IS NOT NULL"

# Checked on every request (revocation takes effect at once); last_used_at is
# written at most once a minute per key.
KEY_BY_SECRET = """
WITH k AS (
    SELECT id, trainer_id, scopes, last_used_at FROM api_keys
     WHERE secret_hash = $1 AND revoked_at IS NULL
), touched AS (
    UPDATE api_keys AS a SET last_used_at = now() FROM k
     WHERE a.id = k.id AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute')
)
SELECT id, trainer_id, scopes FROM k
"""

KEYS_OF = f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE trainer_id = $1 ORDER BY id"


async def create_api_key(
    db: Executor,
    *,
    trainer_id: int,
    name: str,
    secret: str,
    scopes: Sequence[str],
) -> Row:
    row = await db.fetchrow(
        CREATE_KEY, trainer_id, name, hash_secret(secret), secret[:12], list(scopes)
    )
    assert row is not None
    return row


async def revoke_api_key(db: Executor, *, trainer_id: int, key_id: int) -> Row | None:
    row: Row | None = await db.fetchrow(REVOKE_KEY, key_id, trainer_id)
    return row if row is not None and row["id"] is not None else None


async def revoked_among(db: Executor, key_ids: Sequence[int]) -> set[int]:
    """Which of ``key_ids`` are revoked (after a missed notification)."""
    return {row["id"] for row in await db.fetch(REVOKED_AMONG, list(key_ids))}


async def api_key_by_secret(db: Executor, secret: str) -> Row | None:
    row: Row | None = await db.fetchrow(KEY_BY_SECRET, hash_secret(secret))
    return row


async def api_keys_of(db: Executor, trainer_id: int) -> list[Row]:
    return list(await db.fetch(KEYS_OF, trainer_id))
