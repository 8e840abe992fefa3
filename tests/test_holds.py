"""Held sessions: every CONFIRMED booking on a package holds one of its sessions, taken
and given back by guarded statements, whatever else acts at the same time."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg

from punchcard.db import bookings, roles
from punchcard.settings import Settings
from tests.conftest import Api
from tests.helpers import (
    CANCEL,
    COMPLETE,
    CREATE_BOOKING,
    NO_SHOW,
    RELEASE,
    REOPEN,
    USE,
    at,
    booking,
    client,
    iso,
    package,
    row_id,
)
from tests.refusals import CREATE_KEY, refused, unchanged
from tests.test_sessions import outcomes

HELD = "query($id: ID!) { purchase(id: $id) { sessionsUsed sessionsHeld sessionsAvailable } }"
BOOKED = """
query($id: ID!) { booking(id: $id) { id status charged unpaid overbooked assignedReason
                                     purchase { id } } }"""


async def assert_books_balance(db: asyncpg.Connection) -> None:
    """Every package's counts are its ledger's: used = sum(delta), held = sum(held_delta) =
    its CONFIRMED bookings, revisions 1..n without gaps, each entry's counts after replay;
    every booking's net delta is 0 or 1 and says whether it is charged."""
    for purchase in await db.fetch("SELECT * FROM purchases ORDER BY id"):
        entries = await db.fetch(
            "SELECT * FROM session_ledger WHERE purchase_id = $1 ORDER BY revision",
            purchase["id"],
        )
        assert [e["revision"] for e in entries] == list(range(1, len(entries) + 1))
        assert purchase["revision"] == len(entries)
        used = held = 0
        for entry in entries:
            used, held = used + entry["delta"], held + entry["held_delta"]
            assert (entry["sessions_used_after"], entry["sessions_held_after"]) == (used, held)
        confirmed = await db.fetchval(
            "SELECT count(*) FROM bookings WHERE purchase_id = $1 AND status = 'CONFIRMED'",
            purchase["id"],
        )
        assert (purchase["sessions_used"], purchase["sessions_held"]) == (used, held)
        assert held == confirmed
    rows = await db.fetch(
        """
        SELECT b.id, b.charged, coalesce(sum(e.delta), 0) AS net,
               (SELECT e2.delta FROM session_ledger AS e2 WHERE e2.id = b.charge_entry_id) AS owed
          FROM bookings AS b LEFT JOIN session_ledger AS e ON e.booking_id = b.id
         GROUP BY b.id
        """
    )
    for row in rows:
        assert row["net"] in (0, 1), dict(row)
        assert row["charged"] == (row["net"] == 1), dict(row)
        assert row["owed"] == (1 if row["charged"] else None), dict(row)


def create_call(
    api: Api, client_id: str, purchase: str | None = None, **extra: Any
) -> Any:  # the awaitable of one createBooking
    start = extra.pop("start", at(days=3))
    return api.post(
        CREATE_BOOKING,
        client=client_id,
        purchase=purchase,
        start=iso(start),
        end=iso(start + timedelta(hours=1)),
        **extra,
    )


async def test_twenty_bookings_on_three_available_sessions_hold_exactly_three(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=5)
    await api.data(USE, id=sold["id"])
    await api.data(USE, id=sold["id"])
    results = await asyncio.gather(
        *(create_call(api, cid, sold["id"], start=at(days=1 + i)) for i in range(20))
    )
    assert outcomes(results) == {"ok": 3, "NO_SESSIONS_AVAILABLE": 17}
    assert await db.fetchval("SELECT count(*) FROM bookings") == 3
    counts = (await api.data(HELD, id=sold["id"]))["purchase"]
    assert counts == {"sessionsUsed": 2, "sessionsHeld": 3, "sessionsAvailable": 0}
    assert await db.fetchval("SELECT count(*) FROM bookings WHERE overbooked") == 0
    await assert_books_balance(db)


async def test_auto_assign_race_moves_on_to_the_next_package_then_books_unpackaged(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sooner = await package(api, cid, total=2, expires=at(days=30))
    later = await package(api, cid, total=1, expires=at(days=60))
    results = await asyncio.gather(
        *(create_call(api, cid, auto=True, start=at(days=1, hours=i)) for i in range(20))
    )
    assert outcomes(results) == {"ok": 20}
    linked = [(r["data"]["createBooking"]["purchase"] or {}).get("id") for r in results]
    assert linked.count(sooner["id"]) == 2
    assert linked.count(later["id"]) == 1
    assert linked.count(None) == 17
    reasons = await db.fetch("SELECT assigned_reason FROM bookings WHERE purchase_id IS NULL")
    assert {r["assigned_reason"] for r in reasons} == {
        "no package of the client has a session available at its start"
    }
    await assert_books_balance(db)


async def test_auto_assign_rule_soonest_expiry_then_fewest_available(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    same_day = at(days=20)
    roomy = await package(api, cid, total=9, expires=same_day)
    tight = await package(api, cid, total=2, expires=same_day)
    await package(api, cid, total=5, expires=at(days=40))
    frozen = await package(api, cid, total=5, expires=at(days=2))
    await db.execute(
        "UPDATE purchases SET status = 'FROZEN', frozen_at = now() WHERE id = $1",
        row_id(frozen["id"]),
    )
    gone_by_then = await package(api, cid, total=5, expires=at(days=4))
    full = await package(api, cid, total=1, expires=at(days=3))
    await api.data(USE, id=full["id"])
    made = await booking(api, cid, auto=True, start=at(days=5))
    assert made["purchase"]["id"] == tight["id"]  # same expiry as `roomy`, fewer left
    reason = (await api.data(BOOKED, id=made["id"]))["booking"]["assignedReason"]
    assert reason.startswith("expires soonest (")
    assert "fewest sessions available (2)" in reason and "of 3 packages" in reason
    assert roomy["id"] != made["purchase"]["id"] != gone_by_then["id"]
    # Back-filled before `gone_by_then` expired, it is the soonest valid one then.
    early = await booking(api, cid, auto=True, start=at(days=-1))
    assert early["purchase"]["id"] == gone_by_then["id"]
    await assert_books_balance(db)


async def test_holds_racing_use_session_on_the_last_session_one_wins(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    for _ in range(3):
        sold = await package(api, cid, total=1)
        calls = [create_call(api, cid, sold["id"]) for _ in range(8)]
        calls += [api.post(USE, id=sold["id"]) for _ in range(8)]
        results = await asyncio.gather(*calls)
        counted = outcomes(results)
        assert counted["ok"] == 1, counted
        assert set(counted) <= {"ok", "NO_SESSIONS_AVAILABLE", "NO_SESSIONS_REMAINING"}
        row = await db.fetchrow(
            "SELECT sessions_used + sessions_held AS taken FROM purchases WHERE id = $1",
            row_id(sold["id"]),
        )
        assert row["taken"] == 1
    await assert_books_balance(db)


async def test_cancel_racing_complete_settles_once(api: Api, db: asyncpg.Connection) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=10)
    made = [await booking(api, cid, sold["id"], start=at(hours=-3 - i)) for i in range(6)]
    calls = []
    for b in made:
        calls += [api.post(COMPLETE, id=b["id"]) for _ in range(5)]
        calls += [api.post(CANCEL, id=b["id"]) for _ in range(5)]
        calls += [api.post(NO_SHOW, id=b["id"]) for _ in range(2)]
    results = await asyncio.gather(*calls)
    assert set(outcomes(results)) <= {"ok", "INVALID_TRANSITION"}
    for b in made:
        state = await db.fetchrow(
            "SELECT status, charged FROM bookings WHERE id = $1", row_id(b["id"])
        )
        # a plain cancel after a complete refunds it: cancelled bookings are never charged
        assert state["charged"] == (state["status"] != "CANCELLED")
    await assert_books_balance(db)


async def test_sweeper_and_tabs_racing_keep_the_books(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=6)
    await api.data(USE, id=sold["id"])
    made = [
        await booking(api, cid, sold["id"], start=at(hours=-5 - i), overbook=True) for i in range(8)
    ]
    pool = await asyncpg.create_pool(roles.worker_url(settings), min_size=1, max_size=3)
    assert pool is not None
    try:
        calls: list[Any] = []
        for i, b in enumerate(made):
            calls += [api.post(COMPLETE, id=b["id"]), api.post(REOPEN, id=b["id"])]
            calls.append(
                api.post(CANCEL, id=b["id"]) if i % 2 else api.post(RELEASE, id=sold["id"])
            )
            calls.append(bookings.sweep_batch(pool, grace_minutes=0, batch_size=3))
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert not [r for r in results if isinstance(r, BaseException)]
        while await bookings.sweep_batch(pool, grace_minutes=0, batch_size=50):
            pass
    finally:
        await pool.close()
    graphql = [r for r in results if isinstance(r, dict)]
    assert set(outcomes(graphql)) <= {"ok", "INVALID_TRANSITION", "NOTHING_TO_RELEASE"}
    assert await db.fetchval("SELECT count(*) FROM bookings WHERE status = 'CONFIRMED'") == 0
    await assert_books_balance(db)


async def test_completing_or_no_show_before_the_start_is_refused(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=5)
    future = await booking(api, cid, sold["id"], start=at(hours=1))
    async with unchanged(db):
        assert await refused(api, COMPLETE, id=future["id"]) == "BOOKING_NOT_STARTED"
        assert await refused(api, COMPLETE, id=future["id"], key="k-1") == "BOOKING_NOT_STARTED"
        assert await refused(api, NO_SHOW, id=future["id"]) == "BOOKING_NOT_STARTED"
    backfilled = await booking(api, cid, sold["id"], start=at(days=-40))
    assert (await api.data(COMPLETE, id=backfilled["id"]))["completeBooking"]["charged"]
    late = (await api.data(CANCEL, id=future["id"], late=True))["cancelBooking"]
    assert (late["status"], late["charged"]) == ("CANCELLED", True)
    await assert_books_balance(db)


async def test_cancel_without_late_cancel_follows_the_trainers_policy(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=10)
    soon, later, explicit_no, explicit_yes = [
        await booking(api, cid, sold["id"], start=start)
        for start in (at(hours=2), at(days=3), at(hours=1), at(days=4))
    ]
    done = await booking(api, cid, sold["id"], start=at(hours=-2))
    no_policy = await booking(api, cid, sold["id"], start=at(hours=1))
    await api.data(COMPLETE, id=done["id"])
    assert not (await api.data(CANCEL, id=no_policy["id"]))["cancelBooking"]["lateCancel"]
    await db.execute("UPDATE trainers SET late_cancel_hours = 24")
    cancelled = {
        name: (await api.data(CANCEL, id=b["id"], late=late))["cancelBooking"]
        for name, b, late in (
            ("soon", soon, None),
            ("later", later, None),
            ("explicit_no", explicit_no, False),
            ("explicit_yes", explicit_yes, True),
            ("done", done, None),
        )
    }
    flags = {name: (c["lateCancel"], c["charged"]) for name, c in cancelled.items()}
    assert flags == {
        "soon": (True, True),  # within 24 hours of its start: late, the session is used
        "later": (False, False),
        "explicit_no": (False, False),  # the caller's word wins
        "explicit_yes": (True, True),
        "done": (False, False),  # undoing a completed booking refunds it, never "late"
    }
    await assert_books_balance(db)


async def test_reopen_on_a_package_with_nothing_available_overbooks(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=1)
    first = await booking(api, cid, sold["id"], start=at(days=2))
    await api.data(CANCEL, id=first["id"])
    await booking(api, cid, sold["id"], start=at(days=3))  # takes the only session
    reopened = (await api.data(REOPEN, id=first["id"]))["reopenBooking"]
    assert reopened["status"] == "CONFIRMED"
    state = (await api.data(BOOKED, id=first["id"]))["booking"]
    assert state["overbooked"] is True
    counts = (await api.data(HELD, id=sold["id"]))["purchase"]
    assert counts == {"sessionsUsed": 0, "sessionsHeld": 2, "sessionsAvailable": -1}
    await assert_books_balance(db)


async def test_allow_overbook_books_a_full_package_and_flags_it(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=1)
    await api.data(USE, id=sold["id"])
    async with unchanged(db):
        assert await refused(api, CREATE_BOOKING, **window(cid, sold["id"])) == (
            "NO_SESSIONS_AVAILABLE"
        )
    made = await booking(api, cid, sold["id"], start=at(days=1), overbook=True)
    assert (await api.data(BOOKED, id=made["id"]))["booking"]["overbooked"] is True
    assert (await api.data(HELD, id=sold["id"]))["purchase"]["sessionsHeld"] == 1
    roomy = await package(api, cid, total=3)
    fits = await booking(api, cid, roomy["id"], start=at(days=1), overbook=True)
    assert (await api.data(BOOKED, id=fits["id"]))["booking"]["overbooked"] is False
    await assert_books_balance(db)


def window(cid: str, purchase: str | None = None, **extra: Any) -> dict[str, Any]:
    start = at(days=5)
    return {
        "client": cid,
        "purchase": purchase,
        "start": iso(start),
        "end": iso(start + timedelta(hours=1)),
        **extra,
    }


async def test_create_booking_bad_input_changes_nothing(
    api: Api, other: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sibling = await client(api, "Sibling")
    sold = await package(api, cid, total=3)
    theirs = await package(other, await client(other, "Theirs"), total=3)
    frozen, cancelled, expired = [await package(api, cid, total=3) for _ in range(3)]
    await db.execute(
        "UPDATE purchases SET status = 'FROZEN', frozen_at = now() WHERE id = $1",
        row_id(frozen["id"]),
    )
    await db.execute(
        "UPDATE purchases SET status = 'CANCELLED' WHERE id = $1", row_id(cancelled["id"])
    )
    await db.execute(
        "UPDATE purchases SET expires_at = now() - interval '1 day' WHERE id = $1",
        row_id(expired["id"]),
    )
    soon = await package(api, cid, total=3, expires=at(days=1))  # gone by the booking's start
    sibling_pkg = await package(api, sibling, total=3)
    reader = api.with_token(
        (await api.data(CREATE_KEY, name="ro", scopes=["READ"]))["createApiKey"]["secret"]
    )
    async with unchanged(db):
        cases = {
            "another trainer's package": (api, window(cid, theirs["id"])),
            "another client's package": (api, window(cid, sibling_pkg["id"])),
            "another trainer's client": (other, window(cid, None, auto=True)),
            "frozen": (api, window(cid, frozen["id"])),
            "cancelled": (api, window(cid, cancelled["id"], overbook=True)),
            "expired": (api, window(cid, expired["id"])),
            "expired by its start": (api, window(cid, soon["id"])),
            "both purchaseId and autoAssign": (api, window(cid, sold["id"], auto=True)),
            "allowOverbook without a package": (api, window(cid, None, overbook=True)),
            "allowOverbook with autoAssign": (api, window(cid, None, auto=True, overbook=True)),
            "read-only key": (reader, window(cid, sold["id"], overbook=True)),
            "no token": (api.with_token(None), window(cid, sold["id"])),
            "expired token": (api.as_trainer("trainer-a", exp=1), window(cid, sold["id"])),
            "malformed purchase id": (api, window(cid, "pur_x")),
        }
        codes = {
            name: await refused(caller, CREATE_BOOKING, **variables)
            for name, (caller, variables) in cases.items()
        }
    assert codes == {
        "another trainer's package": "NOT_FOUND",
        "another client's package": "NOT_FOUND",
        "another trainer's client": "NOT_FOUND",
        "frozen": "PURCHASE_FROZEN",
        "cancelled": "PURCHASE_CANCELLED",
        "expired": "PURCHASE_EXPIRED",
        "expired by its start": "PURCHASE_EXPIRED",
        "both purchaseId and autoAssign": "BAD_USER_INPUT",
        "allowOverbook without a package": "BAD_USER_INPUT",
        "allowOverbook with autoAssign": "BAD_USER_INPUT",
        "read-only key": "FORBIDDEN",
        "no token": "UNAUTHENTICATED",
        "expired token": "UNAUTHENTICATED",
        "malformed purchase id": "BAD_USER_INPUT",
    }


async def test_holds_are_events_and_notify_the_package(api: Api, db: asyncpg.Connection) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=3)
    made = await booking(api, cid, sold["id"], start=at(days=2))
    await api.data(CANCEL, id=made["id"])
    types = [
        r["type"]
        for r in await db.fetch("SELECT type FROM events WHERE type LIKE 'session.%' ORDER BY id")
    ]
    assert types == ["session.held", "session.unheld"]
    data = await db.fetchval("SELECT data FROM events WHERE type = 'session.held'")
    assert '"sessionsHeld": 1' in data and '"bookingId": "' + made["id"] + '"' in data
    await assert_books_balance(db)
