"""Migrations on a database that already holds data: 0007 records what existed before it
(holds of CONFIRMED bookings, Stripe's ledger-less cancellations) as ledger entries, and
its downgrade gives back the 0006 schema."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from itertools import count

import asyncpg
import pytest
from alembic import command

from punchcard.db.migrate import alembic_config, upgrade
from tests.conftest import database_url

_numbers = count()


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


@pytest.fixture
async def empty_url(pg_server: str) -> AsyncIterator[str]:
    name = f"m_{os.getpid()}_{next(_numbers)}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    yield database_url(pg_server, name)
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


SEED_0006 = """
WITH t AS (INSERT INTO trainers (subject) VALUES ('trainer-a') RETURNING id),
c AS (INSERT INTO clients (trainer_id, name) SELECT id, 'Ann' FROM t RETURNING id, trainer_id),
p AS (
    INSERT INTO purchases (trainer_id, client_id, sessions_total, sessions_used, revision,
                           status)
    SELECT trainer_id, id, 10, least(n - 1, 1), n - 1,
           CASE WHEN n = 3 THEN 'CANCELLED' ELSE 'ACTIVE' END
      FROM c, generate_series(1, 3) AS n
    RETURNING id, trainer_id, client_id, sessions_total
), l AS (
    INSERT INTO session_ledger
        (trainer_id, purchase_id, delta, sessions_used_after, revision, source, actor)
    SELECT p.trainer_id, p.id, 1, 1, 1, 'MANUAL', 'test' FROM p WHERE p.id IN (
        SELECT id FROM p ORDER BY id OFFSET 1)
)
INSERT INTO bookings (trainer_id, client_id, purchase_id, starts_at, ends_at, status)
SELECT p.trainer_id, p.client_id, p.id, now() + make_interval(days => k),
       now() + make_interval(days => k, hours => 1),
       CASE WHEN k = 3 THEN 'CANCELLED' ELSE 'CONFIRMED' END
  FROM p, generate_series(1, 3) AS k
 WHERE p.id = (SELECT min(id) FROM p)
"""


async def test_0007_records_existing_holds_and_cancellations(empty_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_url, "0006")
    db = await asyncpg.connect(empty_url)
    try:
        # Three packages: the first with 2 CONFIRMED bookings (and a cancelled one), the
        # second used once, the third used once and then cancelled by Stripe (revision 2,
        # no entry for it).
        await db.execute(SEED_0006)
        await asyncio.to_thread(upgrade, empty_url, "0007")
        packages = await db.fetch(
            "SELECT id, status, sessions_used, sessions_held, revision FROM purchases ORDER BY id"
        )
        assert [(p["sessions_held"], p["revision"]) for p in packages] == [(2, 1), (0, 1), (0, 2)]
        entries = await db.fetch(
            "SELECT purchase_id, kind, delta, held_delta, revision, sessions_used_after,"
            " sessions_held_after, sessions_total_after FROM session_ledger"
            " ORDER BY purchase_id, revision"
        )
        first, second, third = (p["id"] for p in packages)
        assert [tuple(e) for e in entries] == [
            (first, "HOLD", 0, 2, 1, 0, 2, 10),
            (second, "USE", 1, 0, 1, 1, 0, 10),
            (third, "USE", 1, 0, 1, 1, 0, 10),
            (third, "CANCEL", 0, 0, 2, 1, 0, 10),
        ]
        # Every package now replays from its ledger.
        drift = await db.fetch(
            """
            SELECT p.id FROM purchases AS p
              LEFT JOIN session_ledger AS e ON e.purchase_id = p.id
             GROUP BY p.id
            HAVING p.sessions_used <> coalesce(sum(e.delta), 0)
                OR p.sessions_held <> coalesce(sum(e.held_delta), 0)
                OR p.revision <> count(e.id)
            """
        )
        assert drift == []

        await asyncio.to_thread(downgrade, empty_url, "0006")
        columns = await db.fetchval(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_name = 'session_ledger' AND column_name = 'kind'"
        )
        assert columns == 0
        assert await db.fetchval("SELECT count(*) FROM session_ledger") == 2
        await asyncio.to_thread(upgrade, empty_url, "head")
    finally:
        await db.close()
