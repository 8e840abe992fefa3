"""Bookings are charged by their state transition: once, whoever completes them."""

from __future__ import annotations

import asyncio

import asyncpg

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
from tests.test_sessions import ledger_of, outcomes


async def used(db: asyncpg.Connection, purchase_id: str) -> int:
    value: int = await db.fetchval(
        "SELECT sessions_used FROM purchases WHERE id = $1", row_id(purchase_id)
    )
    return value


async def test_twenty_tabs_completing_one_booking_charge_it_once(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=10)
    made = await booking(api, cid, sold["id"])
    results = await asyncio.gather(*(api.post(COMPLETE, id=made["id"]) for _ in range(20)))
    assert outcomes(results) == {"ok": 20}
    for result in results:
        done = result["data"]["completeBooking"]
        assert (done["status"], done["charged"], done["completedBy"]) == (
            "COMPLETED",
            True,
            "CALENDAR",
        )
    ledger = await ledger_of(db, sold["id"])
    assert [(e["kind"], e["delta"], e["held_delta"]) for e in ledger] == [
        ("HOLD", 0, 1),
        ("USE", 1, -1),
    ]
    assert {e["booking_id"] for e in ledger} == {row_id(made["id"])}
    assert ledger[1]["source"] == "CALENDAR"
    assert await used(db, sold["id"]) == 1


async def test_booking_without_package_completes_without_charge(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=3)
    made = await booking(api, cid)  # no package named, no auto-assign: pay-as-you-go
    assert made["purchase"] is None
    done = (await api.data(COMPLETE, id=made["id"]))["completeBooking"]
    assert (done["status"], done["charged"], done["unpaid"]) == ("COMPLETED", False, False)
    assert await used(db, sold["id"]) == 0
    assert await db.fetchval("SELECT count(*) FROM session_ledger") == 0


async def test_booking_on_empty_package_completes_flagged_unpaid(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=1)
    await api.data(USE, id=sold["id"])
    made = await booking(api, cid, sold["id"], overbook=True)  # nothing available: overbooked
    done = (await api.data(COMPLETE, id=made["id"]))["completeBooking"]
    assert (done["status"], done["charged"], done["unpaid"]) == ("COMPLETED", False, True)
    assert await used(db, sold["id"]) == 1
    kinds = [e["kind"] for e in await ledger_of(db, sold["id"])]
    assert kinds == ["USE", "HOLD", "UNHOLD"]  # the hold is given back: nothing to use


async def test_no_show_and_late_cancel_charge_plain_cancel_does_not(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=10)
    no_show = await booking(api, cid, sold["id"])
    late = await booking(api, cid, sold["id"], start=at(hours=2))
    early = await booking(api, cid, sold["id"], start=at(days=3))
    assert (await api.data(NO_SHOW, id=no_show["id"]))["markNoShow"]["charged"] is True
    late_done = (await api.data(CANCEL, id=late["id"], late=True))["cancelBooking"]
    assert (late_done["status"], late_done["charged"], late_done["lateCancel"]) == (
        "CANCELLED",
        True,
        True,
    )
    early_done = (await api.data(CANCEL, id=early["id"]))["cancelBooking"]
    assert (early_done["status"], early_done["charged"]) == ("CANCELLED", False)
    assert await used(db, sold["id"]) == 2


async def test_reopen_and_cancel_refund_through_the_ledger(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=5)
    made = await booking(api, cid, sold["id"])
    await api.data(COMPLETE, id=made["id"])
    reopened = (await api.data(REOPEN, id=made["id"]))["reopenBooking"]
    assert (reopened["status"], reopened["charged"], reopened["completedBy"]) == (
        "CONFIRMED",
        False,
        None,
    )
    assert await used(db, sold["id"]) == 0
    await api.data(COMPLETE, id=made["id"])
    cancelled = (await api.data(CANCEL, id=made["id"]))["cancelBooking"]
    assert (cancelled["status"], cancelled["charged"]) == ("CANCELLED", False)
    ledger = await ledger_of(db, sold["id"])
    assert [e["delta"] for e in ledger] == [0, 1, -1, 1, -1]  # HOLD, USE, RELEASE (+hold), ...
    assert {e["booking_id"] for e in ledger} == {row_id(made["id"])}
    assert await used(db, sold["id"]) == 0


async def test_concurrent_reopens_refund_once(api: Api, db: asyncpg.Connection) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=5)
    made = await booking(api, cid, sold["id"])
    await api.data(COMPLETE, id=made["id"])
    results = await asyncio.gather(*(api.post(REOPEN, id=made["id"]) for _ in range(15)))
    assert outcomes(results) == {"ok": 15}
    assert [e["delta"] for e in await ledger_of(db, sold["id"])] == [0, 1, -1]


async def test_invalid_transitions_are_refused_and_change_nothing(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=5)
    made = await booking(api, cid, sold["id"])
    await api.data(CANCEL, id=made["id"])
    assert await api.error(COMPLETE, id=made["id"]) == "INVALID_TRANSITION"
    assert await api.error(NO_SHOW, id=made["id"]) == "INVALID_TRANSITION"
    assert await used(db, sold["id"]) == 0
    status = await db.fetchval("SELECT status FROM bookings WHERE id = $1", row_id(made["id"]))
    assert status == "CANCELLED"


async def test_auto_assign_picks_the_soonest_expiring_package_with_sessions(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    later = await package(api, cid, total=5, expires=at(days=60))
    sooner = await package(api, cid, total=5, expires=at(days=10))
    empty = await package(api, cid, total=1, expires=at(days=5))
    await api.data(USE, id=empty["id"])
    await package(api, await client(api, "Someone else"), total=5, expires=at(days=1))
    made = await booking(api, cid, auto=True)
    assert made["purchase"]["id"] == sooner["id"]
    assert later["id"] != made["purchase"]["id"]


async def test_auto_assign_without_a_usable_package_leaves_booking_unpackaged(api: Api) -> None:
    cid = await client(api)
    made = await booking(api, cid, auto=True)
    assert made["purchase"] is None


async def test_complete_with_idempotency_key_is_not_redone_after_reopen(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=5)
    made = await booking(api, cid, sold["id"])
    first = (await api.data(COMPLETE, id=made["id"], key="webhook-77"))["completeBooking"]
    await api.data(REOPEN, id=made["id"])
    retry = (await api.data(COMPLETE, id=made["id"], key="webhook-77"))["completeBooking"]
    assert retry["status"] == first["status"] == "COMPLETED"
    status = await db.fetchval("SELECT status FROM bookings WHERE id = $1", row_id(made["id"]))
    assert status == "CONFIRMED"  # the retry changed nothing
    assert [e["delta"] for e in await ledger_of(db, sold["id"])] == [0, 1, -1]
    other_booking = await booking(api, cid, sold["id"])
    assert await api.error(COMPLETE, id=other_booking["id"], key="webhook-77") == (
        "IDEMPOTENCY_KEY_REUSED"
    )


async def test_concurrent_completes_with_one_key_change_once(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=5)
    made = await booking(api, cid, sold["id"])
    results = await asyncio.gather(
        *(api.post(COMPLETE, id=made["id"], key="same") for _ in range(10))
    )
    assert outcomes(results) == {"ok": 10}
    assert [e["kind"] for e in await ledger_of(db, sold["id"])] == ["HOLD", "USE"]


async def test_mixed_storm_keeps_sessions_used_equal_to_ledger_sum(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=8)
    bookings_made = [
        await booking(api, cid, sold["id"], start=at(hours=-30 + i), overbook=True)
        for i in range(12)
    ]
    calls = []
    for i in range(120):
        match i % 6:
            case 0 | 1:
                calls.append(api.post(USE, id=sold["id"]))
            case 2:
                calls.append(api.post(RELEASE, id=sold["id"]))
            case 3:
                calls.append(api.post(COMPLETE, id=bookings_made[i % 12]["id"]))
            case 4:
                calls.append(api.post(REOPEN, id=bookings_made[(i + 5) % 12]["id"]))
            case _:
                calls.append(api.post(NO_SHOW, id=bookings_made[(i + 7) % 12]["id"]))
    await asyncio.gather(*calls)
    ledger = await ledger_of(db, sold["id"])
    row = await db.fetchrow(
        "SELECT sessions_used, revision FROM purchases WHERE id = $1", row_id(sold["id"])
    )
    assert row["sessions_used"] == sum(e["delta"] for e in ledger)
    assert row["revision"] == len(ledger)
    assert [e["revision"] for e in ledger] == list(range(1, len(ledger) + 1))
    # every charged booking has exactly one more charge than refund in the ledger
    for made in bookings_made:
        state = await db.fetchrow("SELECT charged FROM bookings WHERE id = $1", row_id(made["id"]))
        net = sum(e["delta"] for e in ledger if e["booking_id"] == row_id(made["id"]))
        assert net == (1 if state["charged"] else 0)
