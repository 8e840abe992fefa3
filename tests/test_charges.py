"""A booking's ``charged`` is its own ledger entries: a Reinstate (``releaseSession``) that
gives a booking's session back uncharges that booking, so nothing is refunded twice."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from punchcard.db import bookings, roles
from punchcard.db.migrate import upgrade
from punchcard.settings import Settings
from tests.conftest import Api
from tests.helpers import (
    CANCEL,
    COMPLETE,
    NO_SHOW,
    RELEASE,
    REOPEN,
    USE,
    at,
    booking,
    client,
    package,
    row_id,
)
from tests.test_holds import assert_books_balance
from tests.test_migrations import downgrade, empty_url  # noqa: F401 (a fixture)
from tests.test_sessions import ledger_of, outcomes


async def state(db: asyncpg.Connection, booking_id: str) -> tuple[str, bool]:
    row = await db.fetchrow(
        "SELECT status, charged FROM bookings WHERE id = $1", row_id(booking_id)
    )
    return row["status"], row["charged"]


async def counts(db: asyncpg.Connection, purchase_id: str) -> tuple[int, int]:
    row = await db.fetchrow(
        "SELECT sessions_used, sessions_held FROM purchases WHERE id = $1", row_id(purchase_id)
    )
    return row["sessions_used"], row["sessions_held"]


async def kinds(db: asyncpg.Connection, purchase_id: str) -> list[tuple[str, int | None]]:
    return [(e["kind"], e["booking_id"]) for e in await ledger_of(db, purchase_id)]


async def test_complete_reinstate_reopen_cancel_leaves_nothing_charged(
    api: Api, db: asyncpg.Connection
) -> None:
    """The known bug: this left a CONFIRMED, then CANCELLED, booking charged."""
    cid = await client(api)
    sold = await package(api, cid, total=5)
    made = await booking(api, cid, sold["id"])
    await api.data(COMPLETE, id=made["id"])
    released = (await api.data(RELEASE, id=sold["id"]))["releaseSession"]
    assert released["sessionsUsed"] == 0
    assert await state(db, made["id"]) == ("COMPLETED", False)  # its charge was released
    reopened = (await api.data(REOPEN, id=made["id"]))["reopenBooking"]
    assert (reopened["status"], reopened["charged"]) == ("CONFIRMED", False)
    assert await counts(db, sold["id"]) == (0, 1)  # nothing refunded again; it holds
    cancelled = (await api.data(CANCEL, id=made["id"]))["cancelBooking"]
    assert (cancelled["status"], cancelled["charged"]) == ("CANCELLED", False)
    assert await counts(db, sold["id"]) == (0, 0)
    b = row_id(made["id"])
    assert await kinds(db, sold["id"]) == [
        ("HOLD", b),
        ("USE", b),
        ("RELEASE", b),  # the Reinstate names the booking whose charge it gave back
        ("HOLD", b),
        ("UNHOLD", b),
    ]
    await assert_books_balance(db)


async def test_complete_reinstate_reopen_complete_charges_once(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=5)
    made = await booking(api, cid, sold["id"])
    await api.data(COMPLETE, id=made["id"])
    await api.data(RELEASE, id=sold["id"])
    await api.data(REOPEN, id=made["id"])
    done = (await api.data(COMPLETE, id=made["id"]))["completeBooking"]
    assert (done["status"], done["charged"]) == ("COMPLETED", True)
    assert await counts(db, sold["id"]) == (1, 0)
    await assert_books_balance(db)


async def test_reinstate_gives_back_a_manual_use_before_a_booking_charge(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=5)
    made = await booking(api, cid, sold["id"])
    await api.data(USE, id=sold["id"])
    await api.data(COMPLETE, id=made["id"])
    await api.data(RELEASE, id=sold["id"])
    assert await state(db, made["id"]) == ("COMPLETED", True)  # the manual use went back
    last = (await ledger_of(db, sold["id"]))[-1]
    assert (last["kind"], last["booking_id"]) == ("RELEASE", None)
    await api.data(RELEASE, id=sold["id"])  # now only the booking's charge is left
    assert await state(db, made["id"]) == ("COMPLETED", False)
    assert await api.error(RELEASE, id=sold["id"]) == "NOTHING_TO_RELEASE"
    await assert_books_balance(db)


async def test_reinstate_releases_the_most_recently_charged_booking(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=5)
    older = await booking(api, cid, sold["id"], start=at(hours=-2))
    newer = await booking(api, cid, sold["id"], start=at(hours=-30))  # earlier, charged later
    await api.data(COMPLETE, id=older["id"])
    await api.data(NO_SHOW, id=newer["id"])
    await api.data(RELEASE, id=sold["id"])
    assert await state(db, newer["id"]) == ("NO_SHOW", False)
    assert await state(db, older["id"]) == ("COMPLETED", True)
    # a plain cancel of the released no-show refunds nothing; of the other, its charge
    await api.data(CANCEL, id=newer["id"], late=False)
    await api.data(CANCEL, id=older["id"], late=False)
    assert await counts(db, sold["id"]) == (0, 0)
    await assert_books_balance(db)


async def test_late_cancel_then_reinstate_then_reopen_and_no_show(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=2)
    made = await booking(api, cid, sold["id"])
    late = (await api.data(CANCEL, id=made["id"], late=True))["cancelBooking"]
    assert late["charged"] is True
    await api.data(RELEASE, id=sold["id"])
    assert await state(db, made["id"]) == ("CANCELLED", False)
    await api.data(REOPEN, id=made["id"])
    assert (await api.data(NO_SHOW, id=made["id"]))["markNoShow"]["charged"] is True
    assert await counts(db, sold["id"]) == (1, 0)
    await assert_books_balance(db)


async def test_sweeper_charge_then_reinstate_then_reopen_is_charged_once_by_the_sweeper(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=3)
    made = await booking(api, cid, sold["id"], start=at(hours=-3))
    pool = await asyncpg.create_pool(roles.worker_url(settings), min_size=1, max_size=2)
    assert pool is not None
    try:
        (swept,) = await bookings.sweep_batch(pool, grace_minutes=15, batch_size=10)
        assert (swept["status"], swept["charged"]) == ("COMPLETED", True)
        await api.data(RELEASE, id=sold["id"])
        await api.data(REOPEN, id=made["id"])
        (again,) = await bookings.sweep_batch(pool, grace_minutes=15, batch_size=10)
        assert again["charged"] is True
        assert await bookings.sweep_batch(pool, grace_minutes=15, batch_size=10) == []
    finally:
        await pool.close()
    assert await counts(db, sold["id"]) == (1, 0)
    assert [k for k, _ in await kinds(db, sold["id"])] == [
        "HOLD",
        "USE",
        "RELEASE",
        "HOLD",
        "USE",
    ]
    await assert_books_balance(db)


async def test_reinstates_racing_completes_and_reopens_keep_every_booking_charged_once(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=6)
    made = [await booking(api, cid, sold["id"], start=at(hours=-2 - i)) for i in range(6)]
    calls: list[Any] = []
    for round_ in range(4):
        for i, b in enumerate(made):
            calls.append(api.post(COMPLETE, id=b["id"]))
            calls.append(api.post(RELEASE, id=sold["id"]))
            if (i + round_) % 3 == 0:
                calls.append(api.post(REOPEN, id=b["id"]))
            if (i + round_) % 4 == 0:
                calls.append(api.post(USE, id=sold["id"]))
    results = await asyncio.gather(*calls)
    assert set(outcomes(results)) <= {
        "ok",
        "NOTHING_TO_RELEASE",
        "NO_SESSIONS_REMAINING",
        "NO_SESSIONS_AVAILABLE",
    }
    await assert_books_balance(db)


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE bookings SET charged = NOT charged WHERE id = $1",
        "UPDATE bookings SET charge_entry_id = NULL WHERE id = $1",
        "UPDATE bookings SET charge_entry_id = (SELECT min(id) FROM session_ledger"
        " WHERE booking_id IS DISTINCT FROM $1) WHERE id = $1",
        "UPDATE bookings SET charge_entry_id = (SELECT charge_entry_id FROM bookings"
        " WHERE id = $1) WHERE id <> $1",
    ],
    ids=["flag without entry", "entry without flag", "someone else's entry", "one entry twice"],
)
async def test_the_schema_refuses_a_charge_that_is_not_the_bookings_own_entry(
    api: Api, db: asyncpg.Connection, tamper: str
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=3)
    await api.data(USE, id=sold["id"])  # an entry with no booking
    charged = await booking(api, cid, sold["id"])
    await booking(api, cid, sold["id"], start=at(hours=-5))
    await api.data(COMPLETE, id=charged["id"])
    with pytest.raises(
        (
            asyncpg.CheckViolationError,
            asyncpg.ForeignKeyViolationError,
            asyncpg.UniqueViolationError,
        )
    ):
        await db.execute(tamper, row_id(charged["id"]))


SEED_0007 = """
WITH t AS (INSERT INTO trainers (subject) VALUES ('trainer-a') RETURNING id),
c AS (INSERT INTO clients (trainer_id, name) SELECT id, 'Ann' FROM t RETURNING id, trainer_id),
p AS (
    INSERT INTO purchases (trainer_id, client_id, sessions_total, sessions_used, revision)
    SELECT trainer_id, id, 10, 1, 1 FROM c RETURNING id, trainer_id, client_id
)
INSERT INTO bookings (trainer_id, client_id, purchase_id, starts_at, ends_at, status, charged)
SELECT p.trainer_id, p.client_id, p.id, now() - make_interval(days => k),
       now() - make_interval(days => k) + interval '1 hour', 'COMPLETED', true
  FROM p, generate_series(1, 2) AS k
"""


async def test_0008_points_charged_bookings_at_their_use_entry(empty_url: str) -> None:  # noqa: F811
    await asyncio.to_thread(upgrade, empty_url, "0007")
    db = await asyncpg.connect(empty_url)
    try:
        # Two bookings flagged charged; only the first has a USE entry of its own.
        await db.execute(SEED_0007)
        first, second = [r["id"] for r in await db.fetch("SELECT id FROM bookings ORDER BY id")]
        entry = await db.fetchval(
            "INSERT INTO session_ledger (trainer_id, purchase_id, kind, delta,"
            " sessions_used_after, sessions_held_after, sessions_total_after, revision, source,"
            " booking_id, actor) SELECT trainer_id, purchase_id, 'USE', 1, 1, 0, 10, 1,"
            " 'CALENDAR', id, 'test' FROM bookings WHERE id = $1 RETURNING id",
            first,
        )
        await asyncio.to_thread(upgrade, empty_url, "0008")
        rows = await db.fetch("SELECT id, charged, charge_entry_id FROM bookings ORDER BY id")
        assert [tuple(r) for r in rows] == [(first, True, entry), (second, False, None)]
        await asyncio.to_thread(downgrade, empty_url, "0007")
        gone = await db.fetchval(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_name = 'bookings' AND column_name = 'charge_entry_id'"
        )
        assert gone == 0
    finally:
        await db.close()
