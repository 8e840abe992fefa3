"""Offers: the package templates a trainer sells ("10 sessions, valid 90 days")."""

from __future__ import annotations

from collections.abc import Sequence

from punchcard.db import checks
from punchcard.db.errors import bad_input
from punchcard.db.types import Executor, Row

OFFER_COLUMNS = "id, trainer_id, name, sessions_total, valid_days, price_cents, created_at"
MAX_SESSIONS = 1000

CREATE = f"""
INSERT INTO offers (trainer_id, name, sessions_total, valid_days, price_cents)
VALUES ($1, $2, $3, $4, $5)
RETURNING {OFFER_COLUMNS}
"""
OF_TRAINER = f"SELECT {OFFER_COLUMNS} FROM offers WHERE trainer_id = $1 ORDER BY name, id"
BY_IDS = f"SELECT {OFFER_COLUMNS} FROM offers WHERE trainer_id = $1 AND id = ANY($2::bigint[])"


async def create_offer(
    db: Executor,
    *,
    trainer_id: int,
    name: str,
    sessions_total: int,
    valid_days: int | None,
    price_cents: int | None,
) -> Row:
    name = checks.text("name", name.strip(), min_length=1, max_length=200)
    if not 1 <= sessions_total <= MAX_SESSIONS:
        raise bad_input(f"sessionsTotal must be between 1 and {MAX_SESSIONS}")
    if valid_days is not None and not 1 <= valid_days <= 3650:
        raise bad_input("validDays must be between 1 and 3650")
    if price_cents is not None and not 0 <= price_cents <= 100_000_000:
        raise bad_input("priceCents must be between 0 and 100000000")
    row = await db.fetchrow(CREATE, trainer_id, name, sessions_total, valid_days, price_cents)
    assert row is not None
    return row


async def of_trainer(db: Executor, trainer_id: int) -> list[Row]:
    return await db.fetch(OF_TRAINER, trainer_id)


async def by_ids(db: Executor, *, trainer_id: int, ids: Sequence[int]) -> list[Row]:
    return await db.fetch(BY_IDS, trainer_id, list(ids))
