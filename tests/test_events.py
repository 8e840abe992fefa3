"""The outbox: every committed change writes exactly one event in its own transaction (a
rolled-back or refused one none), numbered per trainer in an order ``events(after:)`` can
resume from without missing a late commit, whatever runs concurrently."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from punchcard.db import events as db_events
from punchcard.db import purchases
from punchcard.db.pool import Pool
from punchcard.settings import Settings
from punchcard.sweeper.senders import LogSender
from punchcard.sweeper.worker import Sweeper
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
    lapsed_package,
    package,
    row_id,
)
from tests.refusals import CREATE_KEY, EVENTS, refused, unchanged


async def feed(api: Api, after: str | None = None, first: int = 500, **extra: Any) -> list[Any]:
    """Every event after ``after``, paging ``first`` at a time."""
    nodes: list[Any] = []
    while True:
        page = (await api.data(EVENTS, after=after, first=first, **extra))["events"]
        nodes += page["nodes"]
        after = page["pageInfo"]["endCursor"]
        if not page["pageInfo"]["hasNextPage"]:
            return nodes


async def sweep_once(settings: Settings) -> None:
    await Sweeper(settings, LogSender()).run(once=True)


async def test_every_committed_change_writes_exactly_one_event(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=3)
    await api.data(USE, id=sold["id"])
    await api.data(RELEASE, id=sold["id"])
    first = await booking(api, cid, sold["id"])
    await api.data(COMPLETE, id=first["id"])
    await api.data(REOPEN, id=first["id"])
    second = await booking(api, cid, sold["id"])
    await api.data(NO_SHOW, id=second["id"])
    third = await booking(api, cid, sold["id"], start=at(days=2))
    await api.data(CANCEL, id=third["id"])
    due = await booking(api, cid, sold["id"], start=at(hours=-3))  # the sweeper completes it
    expiring = await lapsed_package(api, cid, total=2)
    reminded = await booking(api, cid, start=at(hours=2))  # due for its 24 h reminder
    await sweep_once(settings)

    got = await feed(api)
    assert [e["type"] for e in got] == [
        "purchase.created",
        "session.used",
        "session.released",
        "booking.created",
        "session.held",  # a booking on a package holds one of its sessions
        "session.used",  # the hold becomes the use
        "booking.completed",
        "session.released",  # the refund, and the hold taken again, in one entry
        "booking.reopened",
        "booking.created",
        "session.held",
        "session.used",
        "booking.no_show",
        "booking.created",
        "session.held",
        "session.unheld",
        "booking.cancelled",
        "booking.created",
        "session.held",
        "purchase.created",
        "booking.created",
        # the sweeper completes `due` and the reopened `first` (both past): one statement
        # charges both, 2 then 3 of 3 used
        "session.used",
        "purchase.low_balance",
        "session.used",
        "purchase.low_balance",
        "booking.completed",
        "booking.completed",
        "reminder.due",
        "purchase.expired",
    ]
    assert [e["sequence"] for e in got] == list(range(1, len(got) + 1))
    assert await db.fetchval("SELECT count(*) FROM events") == len(got)
    by_type = {e["type"]: e["data"] for e in got}
    swept = {e["data"]["booking"]["id"]: e["data"] for e in got[-4:-2]}
    assert swept.keys() == {due["id"], first["id"]}
    for completed in swept.values():  # the body is the booking as committed: charged
        assert completed["booking"]["charged"] is True
        assert completed["booking"]["completedBy"] == "SWEEPER"
        assert (completed["actor"], completed["source"]) == ("sweeper", "SWEEPER")
    lows = [e["data"] for e in got if e["type"] == "purchase.low_balance"]
    assert [low["sessionsRemaining"] for low in lows] == [1, 0]
    assert [low["purchase"]["sessionsUsed"] for low in lows] == [2, 3]
    assert {low["purchase"]["id"] for low in lows} == {sold["id"]}
    assert {low["entry"]["bookingId"] for low in lows} == {due["id"], first["id"]}
    assert by_type["purchase.expired"]["purchase"]["id"] == expiring["id"]
    assert by_type["reminder.due"]["booking"]["id"] == reminded["id"]
    assert by_type["reminder.due"]["client"]["id"] == cid
    used = got[1]["data"]
    assert used["purchase"]["sessionsUsed"] == 1 and used["purchase"]["sessionsRemaining"] == 2
    assert (used["actor"], used["source"]) == ("trainer:trainer-a", "MANUAL")
    assert used["entry"]["id"].startswith("led_")
    assert got[0]["id"].startswith("evt_")

    await sweep_once(settings)  # nothing changed: nothing new (expiry is announced once)
    assert await feed(api, after=got[-1]["cursor"]) == []


async def test_changes_through_an_api_key_are_integration_events(api: Api) -> None:
    secret = (await api.data(CREATE_KEY, name="zap"))["createApiKey"]["secret"]
    key = api.with_token(secret)
    sold = await package(key, total=5)
    await key.data(USE, id=sold["id"])
    got = await feed(key)
    assert [(e["type"], e["data"]["source"]) for e in got] == [
        ("purchase.created", "INTEGRATION"),
        ("session.used", "INTEGRATION"),
    ]
    assert got[1]["data"]["actor"].startswith("api_key:")


async def test_a_refused_or_rolled_back_change_writes_no_event(
    api: Api, db: asyncpg.Connection
) -> None:
    sold = await package(api, total=1)
    await api.data(USE, id=sold["id"])
    before = await feed(api)
    async with unchanged(db):
        assert await refused(api, USE, id=sold["id"]) == "NO_SESSIONS_REMAINING"
    trainer_id = await db.fetchval("SELECT trainer_id FROM purchases WHERE id = $1", 1)
    other = await package(api, total=5)
    async with unchanged(db):
        transaction = db.transaction()
        await transaction.start()
        await purchases.use_session(
            db,
            trainer_id=trainer_id,
            purchase_id=row_id(other["id"]),
            source="MANUAL",
            actor="test",
            reason=None,
            key=None,
            request="rolled back",
        )
        written = await db.fetchval("SELECT count(*) FROM events WHERE data->>'actor' = 'test'")
        assert written == 1  # inside the transaction, the event is there...
        await transaction.rollback()  # ...and goes with it
    after = await feed(api)
    assert after[: len(before)] == before
    assert [e["type"] for e in after[len(before) :]] == ["purchase.created"]  # `other`'s


async def test_a_late_commit_is_not_skipped_by_the_cursor(
    api: Api, db: asyncpg.Connection, db_url: str
) -> None:
    """A transaction that took its event id first and commits last is numbered after the
    others, so a reader who already read past their cursor still gets it."""
    held_package = await package(api, total=10)
    busy_package = await package(api, total=50)
    trainer_id = await db.fetchval("SELECT trainer_id FROM purchases LIMIT 1")
    read = await feed(api)
    held = await asyncpg.connect(db_url)
    try:
        transaction = held.transaction()
        await transaction.start()
        await purchases.use_session(
            held,
            trainer_id=trainer_id,
            purchase_id=row_id(held_package["id"]),
            source="MANUAL",
            actor="late",
            reason=None,
            key=None,
            request="late",
        )
        held_id = await held.fetchval("SELECT max(id) FROM events")
        await asyncio.gather(*(api.data(USE, id=busy_package["id"]) for _ in range(10)))
        seen = await feed(api, after=read[-1]["cursor"])
        assert len(seen) == 10 and all(row_id(e["id"]) > held_id for e in seen)
        await transaction.commit()
    finally:
        await held.close()
    late = await feed(api, after=seen[-1]["cursor"])
    assert [(row_id(e["id"]), e["data"]["actor"]) for e in late] == [(held_id, "late")]
    everything = await feed(api)
    assert [e["sequence"] for e in everything] == list(range(1, len(everything) + 1))
    for i, event in enumerate(everything):  # from every cursor: exactly what follows
        assert await feed(api, after=event["cursor"], first=7) == everything[i + 1 :]


async def test_concurrent_writers_and_readers_see_a_gapless_prefix(
    api: Api, db: asyncpg.Connection
) -> None:
    """40 useSession calls on one package race 20 readers (each one also sequences): every
    read is the start of the final feed, numbered 1..n, and every change is in it once."""
    sold = await package(api, total=40)
    calls: list[Any] = []
    for i in range(60):
        calls.append(feed(api) if i % 3 == 1 else api.data(USE, id=sold["id"]))
    results = await asyncio.gather(*calls)
    final = await feed(api)
    reads = [r for r in results if isinstance(r, list)]
    assert len(reads) == 20
    for read in reads:
        assert read == final[: len(read)]
    assert [e["sequence"] for e in final] == list(range(1, len(final) + 1))
    assert Counter(e["type"] for e in final) == {
        "purchase.created": 1,
        "session.used": 40,
        "purchase.low_balance": 2,
    }
    assert len({e["id"] for e in final}) == len(final)


async def test_concurrent_sequencers_number_each_event_once(api: Api, settings: Settings) -> None:
    """Twenty sequencers of one trainer at once (the sweeper's and readers' alike)."""
    sold = await package(api, total=200)
    await asyncio.gather(*(api.data(USE, id=sold["id"]) for _ in range(60)))
    trainer_id = row_id((await api.data("{ me { id } }"))["me"]["id"])
    raw = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=20)
    try:
        pool = Pool(raw, acquire_timeout=30)
        results = await asyncio.gather(
            *(db_events.sequence(pool, trainer_id=trainer_id) for _ in range(10)),
            *(db_events.sequence_all(pool) for _ in range(10)),
        )
        rows = await raw.fetch("SELECT seq FROM events ORDER BY seq")
    finally:
        await raw.close()
    assert sum(numbered for numbered, _ in results) == 61
    assert [r["seq"] for r in rows] == list(range(1, 62))


async def test_events_are_the_callers_own_and_types_filter(api: Api, other: Api) -> None:
    sold = await package(api, total=2)
    await api.data(USE, id=sold["id"])
    await package(other, total=2)
    mine, theirs = await feed(api), await feed(other)
    assert {e["id"] for e in mine}.isdisjoint(e["id"] for e in theirs)
    assert [e["type"] for e in theirs] == ["purchase.created"]
    assert [e["sequence"] for e in theirs] == [1]  # each trainer's sequence starts at 1
    used = await feed(api, types=["session.used"])
    assert [e["type"] for e in used] == ["session.used"]


async def test_bad_feed_arguments_are_bad_input(api: Api, db: asyncpg.Connection) -> None:
    await package(api, total=2)
    async with unchanged(db):
        for variables in (
            {"first": 0},
            {"first": 501},
            {"after": "x"},
            {"after": "-1"},
            {"types": ["session.exploded"]},
        ):
            assert await refused(api, EVENTS, **variables) == "BAD_USER_INPUT", variables
    assert await refused(api.with_token(None), EVENTS) == "UNAUTHENTICATED"


def test_event_types_named_in_the_migration_are_the_documented_ones(repo_root: Path) -> None:
    root = repo_root
    migration = "".join(
        (root / "db/migrations/versions" / name).read_text()
        for name in (
            "0006_events_and_webhooks.py",
            "0008_booking_charges.py",  # session.held / session.unheld
            "0009_lifecycle.py",  # lifecycle events
        )
    )
    readme = (root / "README.md").read_text()
    for kind in db_events.TYPES:
        assert f"`{kind}`" in readme, kind
        assert f"'{kind}'" in migration or kind == "purchase.expired", kind


async def test_a_cancelled_package_writes_one_event(api: Api, db: asyncpg.Connection) -> None:
    """No mutation cancels a package yet (the payments work will): the trigger covers any
    statement that does, once, and not a second UPDATE of a cancelled one."""
    sold = await package(api, total=4)
    for _ in range(2):
        await db.execute(
            "UPDATE purchases SET status = 'CANCELLED', changed_by = 'stripe', "
            "change_source = 'INTEGRATION' WHERE id = $1",
            row_id(sold["id"]),
        )
    got = await feed(api)
    assert [e["type"] for e in got] == ["purchase.created", "purchase.cancelled"]
    cancelled = got[1]["data"]
    assert (cancelled["actor"], cancelled["source"]) == ("stripe", "INTEGRATION")
    assert cancelled["purchase"]["status"] == "CANCELLED"
