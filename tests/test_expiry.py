"""Expiry and thaw as the sweeper's events: packages past ``expiresAt`` become EXPIRED in
set-based batches with an EXPIRE entry (and one ``purchase.expired``), bookings that can
never be charged are unlinked, frozen packages thaw when ``frozen_until`` passes. The
sweeper takes its clock as a parameter; a real ``punchcard sweep`` races the tabs."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import datetime, timedelta

import asyncpg

from punchcard.db import lifecycle
from punchcard.settings import Settings
from punchcard.sweeper.senders import LogSender
from punchcard.sweeper.worker import Sweeper
from tests.conftest import Api
from tests.helpers import COMPLETE, USE, at, booking, client, iso, lapsed_package, package, row_id
from tests.lifecycle import (
    EXTEND,
    FREEZE,
    UNFREEZE,
    assert_ledger_replays,
    entries,
    event_types,
    worker_pool,
)
from tests.processes import child_env, punchcard_command
from tests.refusals import refused, unchanged

__all__ = ["worker_pool"]  # the fixture, used by name

PURCHASE = """query($id: ID!) { purchase(id: $id) {
  status sessionsUsed sessionsHeld sessionsExpired expiresAt frozenUntil revision } }"""


async def current(api: Api, purchase: str) -> dict[str, object]:
    found: dict[str, object] = (await api.data(PURCHASE, id=purchase))["purchase"]
    return found


async def test_expiry_records_the_unused_sessions_and_unlinks_bookings_after_it(
    api: Api, db: asyncpg.Connection, worker_pool: asyncpg.Pool
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=6, expires=at(days=5))
    await api.data(USE, id=sold["id"])
    before = await booking(api, cid, sold["id"], start=at(hours=-3))  # started before expiry
    after = await booking(api, cid, sold["id"], start=at(days=2))  # can never be charged
    # A booking after its package's expiry cannot be made any more (PURCHASE_EXPIRED); data
    # from before that guard can hold one: bring the expiry forward behind the API's back
    # (expiresAt is no count, the ledger does not replay it).
    await db.execute(
        "UPDATE purchases SET expires_at = $2 WHERE id = $1", row_id(sold["id"]), at(days=1)
    )
    sold["expiresAt"] = (await current(api, sold["id"]))["expiresAt"]
    claimed, expired = await lifecycle.expire_batch(worker_pool, limit=10, now=at(days=3))
    assert (claimed, expired) == (1, 1)
    got = await current(api, sold["id"])
    # 6 sold, 1 used, 1 held by the booking that started before: 4 expire unused.
    assert (got["status"], got["sessionsExpired"], got["revision"]) == ("EXPIRED", 4, 4)
    links = dict(
        await db.fetch(
            "SELECT id, purchase_id FROM bookings WHERE id = ANY($1::bigint[])",
            [row_id(before["id"]), row_id(after["id"])],
        )
    )
    assert links == {row_id(before["id"]): row_id(sold["id"]), row_id(after["id"]): None}
    *_, entry = await entries(db, sold["id"])
    assert (
        entry["kind"],
        entry["actor"],
        entry["source"],
        entry["revision"],
        entry["held_delta"],
    ) == ("EXPIRE", "sweeper", "SWEEPER", 4, -1)
    assert (entry["detail"]["sessionsExpired"], entry["detail"]["bookingsUnlinked"]) == (4, 1)
    assert datetime.fromisoformat(entry["detail"]["expiresAt"]) == datetime.fromisoformat(
        sold["expiresAt"]
    )
    async with unchanged(db):
        assert await refused(api, USE, id=sold["id"]) == "PURCHASE_EXPIRED"
        assert await lifecycle.expire_batch(worker_pool, limit=10, now=at(days=3)) == (0, 0)
    # the booking that started before the expiry still charges its package
    done = (await api.data(COMPLETE, id=before["id"]))["completeBooking"]
    assert (done["charged"], done["purchase"]["sessionsUsed"]) == (True, 2)
    assert (await event_types(db, sold["id"])).count("purchase.expired") == 1
    await assert_ledger_replays(db)


async def test_an_expired_package_extended_into_the_future_is_active_again(
    api: Api, db: asyncpg.Connection, worker_pool: asyncpg.Pool
) -> None:
    sold = await lapsed_package(api, total=3, days_ago=2)
    await lifecycle.expire_batch(worker_pool, limit=10)
    assert (await current(api, sold["id"]))["status"] == "EXPIRED"
    back = (await api.data(EXTEND, id=sold["id"], expires=iso(at(days=30))))["extendPackage"]
    assert (back["status"], back["sessionsExpired"], back["revision"]) == ("ACTIVE", None, 2)
    *_, entry = await entries(db, sold["id"])
    assert (entry["detail"]["statusBefore"], entry["detail"]["sessionsExpiredBefore"]) == (
        "EXPIRED",
        3,
    )
    await api.data(USE, id=sold["id"])
    await assert_ledger_replays(db)


async def test_the_sweeper_expires_in_batches_and_announces_each_package_once(
    api: Api, db: asyncpg.Connection, db_url: str, worker_pool: asyncpg.Pool
) -> None:
    cid = await client(api)
    sold = [await package(api, cid, total=2, expires=at(days=1)) for _ in range(25)]
    keep = await package(api, cid, total=2, expires=at(days=9))
    settings = Settings(database_url=db_url, sweep_batch_size=10)
    sweeper = Sweeper(settings, LogSender(), now=at(days=2))
    await sweeper.sweep_pass(worker_pool)
    assert sweeper.totals.expired == 25  # three batches: 10, 10, 5
    statuses = await db.fetch("SELECT status, count(*) FROM purchases GROUP BY status")
    assert dict(statuses) == {"EXPIRED": 25, "ACTIVE": 1}
    await Sweeper(settings, LogSender(), now=at(days=2)).sweep_pass(worker_pool)
    announced = await db.fetchval("SELECT count(*) FROM events WHERE type = 'purchase.expired'")
    assert announced == 25
    for each in sold[:3]:
        assert (await event_types(db, each["id"]))[-1] == "purchase.expired"
    assert (await current(api, keep["id"]))["status"] == "ACTIVE"
    await assert_ledger_replays(db)


async def test_a_package_a_tab_holds_is_skipped_then_expired_by_the_next_pass(
    api: Api, db: asyncpg.Connection, worker_pool: asyncpg.Pool
) -> None:
    held = await package(api, total=2, expires=at(days=1))
    free = await package(api, total=2, expires=at(days=1))
    async with db.transaction():
        await db.execute("SELECT 1 FROM purchases WHERE id = $1 FOR UPDATE", row_id(held["id"]))
        # a hang guard, not a timing: SKIP LOCKED never waits
        done = await asyncio.wait_for(
            lifecycle.expire_batch(worker_pool, limit=10, now=at(days=2)), 30
        )
    assert done == (1, 1)
    assert (await current(api, free["id"]))["status"] == "EXPIRED"
    assert (await current(api, held["id"]))["status"] == "ACTIVE"
    assert await lifecycle.expire_batch(worker_pool, limit=10, now=at(days=2)) == (1, 1)
    await assert_ledger_replays(db)


async def test_the_sweeper_thaws_packages_whose_freeze_ended(
    api: Api, db: asyncpg.Connection, db_url: str, worker_pool: asyncpg.Pool
) -> None:
    timed = await package(api, total=4, expires=at(days=20))
    await api.data(FREEZE, id=timed["id"], until=iso(at(hours=5)))
    open_ended = await package(api, total=4, expires=at(days=20))
    await api.data(FREEZE, id=open_ended["id"])
    sweeper = Sweeper(Settings(database_url=db_url), LogSender(), now=at(hours=6))
    await sweeper.sweep_pass(worker_pool)
    assert sweeper.totals.thawed == 1
    thawed = await current(api, timed["id"])
    assert (thawed["status"], thawed["frozenUntil"], thawed["revision"]) == ("ACTIVE", None, 2)
    assert (await current(api, open_ended["id"]))["status"] == "FROZEN"
    _, unfreeze = await entries(db, timed["id"])
    assert (unfreeze["kind"], unfreeze["actor"], unfreeze["source"]) == (
        "UNFREEZE",
        "sweeper",
        "SWEEPER",
    )
    detail = unfreeze["detail"]
    moved = datetime.fromisoformat(detail["expiresAtAfter"]) - datetime.fromisoformat(
        detail["expiresAtBefore"]
    )
    frozen_for = datetime.fromisoformat(detail["frozenUntil"]) - datetime.fromisoformat(
        detail["frozenAt"]
    )
    assert moved == frozen_for > timedelta(0)
    assert datetime.fromisoformat(str(thawed["expiresAt"])) == datetime.fromisoformat(
        detail["expiresAtAfter"]
    )
    assert (await event_types(db, timed["id"]))[-1] == "purchase.unfrozen"
    await api.data(USE, id=timed["id"])
    await assert_ledger_replays(db)


async def test_an_expiry_announced_before_or_long_past_writes_no_second_event(
    api: Api, db: asyncpg.Connection, worker_pool: asyncpg.Pool
) -> None:
    """After the upgrade: a package the old sweeper already announced (its dedupe key) and
    one that expired 40 days ago are recorded EXPIRED, with no new event."""
    announced = await package(api, total=2, expires=at(days=1))
    stale = await package(api, total=2, expires=at(days=1))
    trainer = await db.fetchval(
        "SELECT trainer_id FROM purchases WHERE id = $1", row_id(stale["id"])
    )
    await db.execute(
        "UPDATE purchases SET expires_at = now() - interval '40 days' WHERE id = $1",
        row_id(stale["id"]),
    )
    await db.execute(
        "INSERT INTO events (trainer_id, type, data, dedupe_key) VALUES ($1, 'purchase.expired',"
        " '{}', 'purchase.expired:' || $2::bigint)",
        trainer,
        row_id(announced["id"]),
    )
    assert await lifecycle.expire_batch(worker_pool, limit=10, now=at(days=2)) == (2, 2)
    assert await db.fetchval("SELECT count(*) FROM events WHERE type = 'purchase.expired'") == 1
    for each in (announced, stale):
        assert [e["kind"] for e in await entries(db, each["id"])] == ["EXPIRE"]
    await assert_ledger_replays(db)


async def test_a_sweeper_process_expiring_packages_races_the_tabs(
    api: Api, db: asyncpg.Connection, db_url: str
) -> None:
    """Tabs use sessions of packages the sweeper (a real process, its clock two days
    ahead) is expiring: each use lands before the expiry or is refused after it."""
    cid = await client(api)
    sold = [await package(api, cid, total=30, expires=at(days=1)) for _ in range(10)]
    env = child_env(DATABASE_URL=db_url, PUNCHCARD_SWEEP_BATCH_SIZE="3")
    sweeping = asyncio.create_task(
        asyncio.to_thread(
            subprocess.run,
            [*punchcard_command(), "sweep", "--once", "--now", iso(at(days=2))],
            env=env,
            capture_output=True,
            timeout=120,
        )
    )
    results = await asyncio.gather(*(api.post(USE, id=p["id"]) for p in sold for _ in range(8)))
    swept = await sweeping
    assert swept.returncode == 0, swept.stderr.decode()
    codes = {r["errors"][0]["extensions"]["code"] for r in results if "errors" in r}
    assert codes <= {"PURCHASE_EXPIRED"}
    counted = sum(1 for r in results if "errors" not in r)
    rows = await db.fetch("SELECT status, sessions_used, sessions_expired FROM purchases")
    assert {r["status"] for r in rows} == {"EXPIRED"}
    assert sum(r["sessions_used"] for r in rows) == counted
    assert all(r["sessions_expired"] == 30 - r["sessions_used"] for r in rows)
    for each in sold:
        kinds = [e["kind"] for e in await entries(db, each["id"])]
        assert kinds[-1] == "EXPIRE" and kinds.count("EXPIRE") == 1
        assert (await event_types(db, each["id"])).count("purchase.expired") == 1
    await assert_ledger_replays(db)


async def test_a_sweeper_process_thawing_packages_races_tabs_unfreezing_them(
    api: Api, db: asyncpg.Connection, db_url: str
) -> None:
    """Each package thaws once, by the sweeper (a real process, its clock two hours ahead)
    or by a tab's unfreezePackage, whichever locks it first; the other finds it thawed."""
    sold = [await package(api, total=5, expires=at(days=30)) for _ in range(10)]
    for each in sold:
        await api.data(FREEZE, id=each["id"], until=iso(at(hours=1)))
    env = child_env(DATABASE_URL=db_url, PUNCHCARD_SWEEP_BATCH_SIZE="2")
    sweeping = asyncio.create_task(
        asyncio.to_thread(
            subprocess.run,
            [*punchcard_command(), "sweep", "--once", "--now", iso(at(hours=2))],
            env=env,
            capture_output=True,
            timeout=120,
        )
    )
    results = await asyncio.gather(
        *(api.post(UNFREEZE, id=p["id"]) for p in sold for _ in range(2)),
        *(api.post(USE, id=p["id"]) for p in sold),
    )
    swept = await sweeping
    assert swept.returncode == 0, swept.stderr.decode()
    unfreezes, uses = results[:20], results[20:]
    assert sum(1 for r in unfreezes if "errors" not in r) <= 10
    assert {r["errors"][0]["extensions"]["code"] for r in unfreezes if "errors" in r} <= {
        "INVALID_TRANSITION"
    }
    assert {r["errors"][0]["extensions"]["code"] for r in uses if "errors" in r} <= {
        "PURCHASE_FROZEN"
    }
    for each in sold:
        ledger = await entries(db, each["id"])
        (thaw,) = [e for e in ledger if e["kind"] == "UNFREEZE"]
        assert (await current(api, each["id"]))["status"] == "ACTIVE"
        detail = thaw["detail"]
        moved = datetime.fromisoformat(detail["expiresAtAfter"]) - datetime.fromisoformat(
            detail["expiresAtBefore"]
        )
        frozen_at = datetime.fromisoformat(detail["frozenAt"])
        if thaw["actor"] == "sweeper":
            assert moved == datetime.fromisoformat(detail["frozenUntil"]) - frozen_at
        else:  # a tab, before the hour was up: frozen from frozenAt to its commit
            assert thaw["actor"] == "trainer:trainer-a"
            unfrozen_at = await db.fetchval(
                "SELECT created_at FROM session_ledger WHERE purchase_id = $1"
                " AND kind = 'UNFREEZE'",
                row_id(each["id"]),
            )
            assert moved == unfrozen_at - frozen_at
    await assert_ledger_replays(db)
