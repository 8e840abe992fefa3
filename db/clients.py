"""Clients: create, update, look up, search."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from punchcard.db import checks
from punchcard.db.errors import bad_input, not_found
from punchcard.db.types import Executor, Row

CLIENT_COLUMNS = "id, trainer_id, name, email, phone, timezone, created_at"
MAX_SEARCH = 320

CREATE = f"""
INSERT INTO clients (trainer_id, name, email, phone, timezone) VALUES ($1, $2, $3, $4, $5)
RETURNING {CLIENT_COLUMNS}
"""


async def create_client(
    db: Executor,
    *,
    trainer_id: int,
    name: str,
    email: str | None,
    phone: str | None,
    timezone: str | None,
) -> Row:
    fields = {"name": name, "email": email, "phone": phone, "timezone": timezone}
    values = [_checked(column, value) for column, value in fields.items()]
    row = await db.fetchrow(CREATE, trainer_id, *values)
    assert row is not None
    return row


def _checked(column: str, value: str | None) -> str | None:
    """A client's field as stored: the name stripped and required, the rest optional."""
    if column == "name":
        if value is None:
            raise bad_input("name cannot be null")
        return checks.text("name", value.strip(), min_length=1, max_length=200)
    if value is not None:
        checks.text(column, value, max_length=320)
        if column == "email" and "@" not in value:
            raise bad_input("email is not an email address")
    return value


# The columns updateClient may set (names never come from input); null clears all but name.
FIELDS = ("name", "email", "phone", "timezone")


def _update_sql(columns: Sequence[str]) -> str:
    sets = ", ".join(f"{column} = ${n}" for n, column in enumerate(columns, start=3))
    return f"UPDATE clients SET {sets} WHERE id = $1 AND trainer_id = $2 RETURNING {CLIENT_COLUMNS}"


async def update_client(
    db: Executor, *, trainer_id: int, client_id: int, changes: Mapping[str, str | None]
) -> Row:
    """Set the given fields (column -> value) of one of the trainer's clients, and only
    those, every value checked first. No changes: the client as it is. NOT_FOUND for
    another trainer's client."""
    assert set(changes) <= set(FIELDS), changes
    values = {column: _checked(column, value) for column, value in changes.items()}
    if values:
        row = await db.fetchrow(_update_sql(list(values)), client_id, trainer_id, *values.values())
    else:
        found = await by_ids(db, trainer_id=trainer_id, ids=[client_id])
        row = found[0] if found else None
    if row is None:
        raise not_found("client")
    return row


BY_IDS = f"SELECT {CLIENT_COLUMNS} FROM clients WHERE trainer_id = $1 AND id = ANY($2::bigint[])"


async def by_ids(db: Executor, *, trainer_id: int, ids: Sequence[int]) -> list[Row]:
    return list(await db.fetch(BY_IDS, trainer_id, list(ids)))


# Keyset pagination on (name, id); the cursor is the last row's id.
SEARCH = f"""
SELECT {CLIENT_COLUMNS} FROM clients AS c
 WHERE c.trainer_id = $1
   AND ($2::text IS NULL OR c.name ILIKE '%' || $2 || '%' OR c.email ILIKE '%' || $2 || '%')
   AND ($3::bigint IS NULL OR (c.name, c.id) > (
        SELECT a.name, a.id FROM clients AS a WHERE a.id = $3 AND a.trainer_id = $1))
 ORDER BY c.name, c.id
 LIMIT $4
"""


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search(
    db: Executor,
    *,
    trainer_id: int,
    text: str | None,
    after: int | None,
    limit: int,
) -> list[Row]:
    if text is not None:
        checks.text("search", text, max_length=MAX_SEARCH)
    pattern = _like_escape(text.strip()) if text and text.strip() else None
    return list(await db.fetch(SEARCH, trainer_id, pattern, after, limit))
