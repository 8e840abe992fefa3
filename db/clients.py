"""Clients: create, look up, search."""

from __future__ import annotations

from collections.abc import Sequence

from punchcard.db import checks
from punchcard.db.errors import bad_input
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
    name = checks.text("name", name.strip(), min_length=1, max_length=200)
    for label, value in (("email", email), ("phone", phone), ("timezone", timezone)):
        if value is not None:
            checks.text(label, value, max_length=320)
    if email is not None and "@" not in email:
        raise bad_input("email is not an email address")
    row = await db.fetchrow(CREATE, trainer_id, name, email, phone, timezone)
    assert row is not None
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
