"""Lock order: a booking, then its package. Every transition takes them in that order, so
cancelPackage and the sweeper's expiry, which change a package's bookings, must too, or a
tab's transition and a cancel deadlock (PostgreSQL kills one of them: a 500 for someone).

Each test plays the transition's part by hand on its own connection (the booking locked,
then its package, as ``db.bookings.TRANSITION`` does), so the interleaving that deadlocked
before is forced, not hoped for."""

from __future__ import annotations

import asyncio

import asyncpg

from punchcard.db import lifecycle
from tests.conftest import Api
from tests.helpers import at, booking, client, package, row_id
from tests.lifecycle import CANCEL_PACKAGE, assert_ledger_replays, worker_pool

__all__ = ["worker_pool"]  # the fixture, used by name


async def lock_booking(conn: asyncpg.Connection, booking_id: int) -> None:
    await conn.execute("SELECT 1 FROM bookings WHERE id = $1 FOR UPDATE", booking_id)


async def lock_package(conn: asyncpg.Connection, purchase_id: int) -> None:
    await conn.execute("SELECT 1 FROM purchases WHERE id = $1 FOR UPDATE", purchase_id)


async def waiting_for_a_lock(db: asyncpg.Connection) -> bool:
    return bool(
        await db.fetchval(
            "SELECT count(*) > 0 FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
    )


async def until(condition: object, db: asyncpg.Connection) -> None:
    for _ in range(200):
        if await waiting_for_a_lock(db):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"nobody waited for a lock: {condition}")


async def test_a_cancel_waits_for_a_transition_holding_one_of_its_bookings(
    api: Api, db: asyncpg.Connection, db_url: str
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=5)
    made = await booking(api, cid, sold["id"], start=at(days=2))
    tab = await asyncpg.connect(db_url)
    try:
        async with tab.transaction():
            await lock_booking(tab, row_id(made["id"]))  # a tab's transition, halfway
            cancel = asyncio.create_task(api.post(CANCEL_PACKAGE, id=sold["id"], reason="r"))
            await until("the cancel waits for the booking", db)
            await lock_package(tab, row_id(sold["id"]))  # deadlocked here before
        body = await cancel
    finally:
        await tab.close()
    assert "errors" not in body, body
    assert body["data"]["cancelPackage"]["status"] == "CANCELLED"
    assert await db.fetchval(
        "SELECT purchase_id IS NULL FROM bookings WHERE id = $1", row_id(made["id"])
    )
    await assert_ledger_replays(db)


async def test_expiry_leaves_a_package_whose_booking_a_tab_holds_for_the_next_pass(
    api: Api, db: asyncpg.Connection, db_url: str, worker_pool: asyncpg.Pool
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=5, expires=at(days=5))
    after = await booking(api, cid, sold["id"], start=at(days=3))
    # A booking from before expiry guards: it starts after its package's (earlier) expiry.
    await db.execute(
        "UPDATE purchases SET expires_at = $2 WHERE id = $1", row_id(sold["id"]), at(days=1)
    )
    tab = await asyncpg.connect(db_url)
    try:
        async with tab.transaction():
            await lock_booking(tab, row_id(after["id"]))
            # The sweeper does not wait for the booking, nor lock the package under it (it
            # waited for the tab here before, and the tab for it: a hang, hence the bound).
            claimed, expired = await asyncio.wait_for(
                lifecycle.expire_batch(worker_pool, limit=10, now=at(days=2)), timeout=30
            )
            assert (claimed, expired) == (1, 0)
            await lock_package(tab, row_id(sold["id"]))
    finally:
        await tab.close()
    assert await lifecycle.expire_batch(worker_pool, limit=10, now=at(days=2)) == (1, 1)
    row = await db.fetchrow(
        "SELECT status, sessions_held FROM purchases WHERE id = $1", row_id(sold["id"])
    )
    assert (row["status"], row["sessions_held"]) == ("EXPIRED", 0)
    await assert_ledger_replays(db)
