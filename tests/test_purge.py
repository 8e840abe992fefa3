"""The sweeper purges idempotency keys past their retention, in batches, and never one
younger than a day (hardening: idempotency keys are purged)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from punchcard.settings import Settings
from punchcard.sweeper.senders import LogSender
from punchcard.sweeper.worker import Sweeper

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool: asyncpg.Pool = await asyncpg.create_pool(db_url, min_size=1, max_size=3)
    yield pool
    await pool.close()


async def keys(db: asyncpg.Connection, ages_in_days: dict[str, float]) -> None:
    trainer = await db.fetchval(
        "INSERT INTO trainers (subject, name) VALUES ('t', 'T') RETURNING id"
    )
    for key, days in ages_in_days.items():
        await db.execute(
            "INSERT INTO idempotency_keys (trainer_id, key, request, result, created_at) "
            "VALUES ($1, $2, 'r', '{}', $3)",
            trainer,
            key,
            NOW - timedelta(days=days),
        )


async def left(db: asyncpg.Connection) -> set[str]:
    return {r["key"] for r in await db.fetch("SELECT key FROM idempotency_keys")}


async def test_keys_past_the_retention_go_in_batches_and_younger_ones_stay(
    db_url: str, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    old = {f"old-{i}": 8 + i / 100 for i in range(25)}
    await keys(db, {**old, "six-days": 6, "an-hour": 1 / 24})
    settings = Settings(database_url=db_url, sweep_batch_size=10)
    sweeper = Sweeper(settings, LogSender(), now=NOW)
    await sweeper.sweep_pass(pool)
    assert await left(db) == {"six-days", "an-hour"}
    assert sweeper.totals.purged == 25  # three batches: 10, 10, 5


async def test_a_retention_under_a_day_still_keeps_a_day(
    db_url: str, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    await keys(db, {"two-days": 2, "twelve-hours": 0.5})
    settings = Settings(database_url=db_url, idempotency_retention_days=0.01)
    await Sweeper(settings, LogSender(), now=NOW).sweep_pass(pool)
    assert await left(db) == {"twelve-hours"}


async def test_a_key_a_writer_holds_is_skipped_not_waited_for(
    db_url: str, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    await keys(db, {"held": 9, "free": 9})
    settings = replace(Settings(database_url=db_url), sweep_batch_size=10)
    async with db.transaction():
        await db.execute("SELECT 1 FROM idempotency_keys WHERE key = 'held' FOR UPDATE")
        sweeper = Sweeper(settings, LogSender(), now=NOW)
        await asyncio.wait_for(sweeper.sweep_pass(pool), 30)  # a hang guard, not a timing
    assert await left(db) == {"held"}
