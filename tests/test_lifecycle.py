"""cancelPackage, freezePackage, unfreezePackage, extendPackage, transferSessions: each a
ledger entry per package changed with an event, refusals that change nothing, and the
races that matter (twenty transfers for the same sessions, cancel or freeze against
useSession). Every test ends with the ledger replaying every package."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import Api
from tests.helpers import (
    CREATE_CLIENT,
    RELEASE,
    SELL,
    USE,
    at,
    booking,
    client,
    iso,
    package,
    row_id,
)
from tests.lifecycle import (
    CANCEL_PACKAGE,
    EXTEND,
    FREEZE,
    TRANSFER,
    UNFREEZE,
    assert_ledger_replays,
    entries,
    event_types,
)
from tests.live import http_client, serve_env, servers, socket, token
from tests.refusals import ME, refused, unchanged

ACTOR = "trainer:trainer-a"


async def lapse(db: asyncpg.Connection, purchase: str) -> None:
    """Setup: the package's expiry passed a day ago, and no sweeper has marked it yet."""
    await db.execute(
        "UPDATE purchases SET expires_at = now() - interval '1 day' WHERE id = $1",
        row_id(purchase),
    )


# --- cancel -------------------------------------------------------------------------------


async def test_cancel_unlinks_confirmed_bookings_keeps_used_and_records_the_forfeit(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=5)
    await api.data(USE, id=sold["id"])
    future = await booking(api, cid, sold["id"], start=at(days=2))
    cancelled = (await api.data(CANCEL_PACKAGE, id=sold["id"], reason="moved away"))[
        "cancelPackage"
    ]
    assert (cancelled["status"], cancelled["cancelReason"]) == ("CANCELLED", "moved away")
    # revisions: the use, the booking's hold, the cancel (which gives the hold back)
    assert (cancelled["sessionsUsed"], cancelled["sessionsHeld"], cancelled["revision"]) == (
        1,
        0,
        3,
    )
    assert (
        await db.fetchval("SELECT purchase_id FROM bookings WHERE id = $1", row_id(future["id"]))
        is None
    )
    *_, entry = await entries(db, sold["id"])
    assert (
        entry["kind"],
        entry["delta"],
        entry["held_delta"],
        entry["total_delta"],
        entry["revision"],
    ) == ("CANCEL", 0, -1, 0, 3)
    assert (entry["actor"], entry["source"], entry["reason"]) == (ACTOR, "MANUAL", "moved away")
    assert entry["detail"]["sessionsForfeited"] == 4
    assert entry["detail"]["bookingsUnlinked"] == 1
    assert entry["detail"]["statusBefore"] == "ACTIVE"
    assert (await event_types(db, sold["id"]))[-1] == "purchase.cancelled"
    async with unchanged(db):  # cancelling twice is refused, and nothing can use it
        assert await refused(api, CANCEL_PACKAGE, id=sold["id"]) == "PURCHASE_CANCELLED"
        assert await refused(api, USE, id=sold["id"]) == "PURCHASE_CANCELLED"
    await assert_ledger_replays(db)


async def test_cancel_moves_bookings_to_another_package_which_holds_them(
    api: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    old = await package(api, cid, total=5)
    new = await package(api, cid, total=4)
    moved = [await booking(api, cid, old["id"], start=at(days=d)) for d in (1, 2, 3)]
    await api.data(CANCEL_PACKAGE, id=old["id"], to=new["id"])
    target = (
        await api.data(
            "query($id: ID!) { purchase(id: $id) { sessionsHeld sessionsAvailable revision } }",
            id=new["id"],
        )
    )["purchase"]
    assert target == {"sessionsHeld": 3, "sessionsAvailable": 1, "revision": 1}
    linked = await db.fetch(
        "SELECT purchase_id FROM bookings WHERE id = ANY($1::bigint[])",
        [row_id(b["id"]) for b in moved],
    )
    assert {r["purchase_id"] for r in linked} == {row_id(new["id"])}
    (hold,) = await entries(db, new["id"])
    assert (hold["kind"], hold["held_delta"], hold["sessions_held_after"]) == ("HOLD", 3, 3)
    assert hold["related_purchase_id"] == row_id(old["id"])
    *holds, cancel = await entries(db, old["id"])
    assert [h["kind"] for h in holds] == ["HOLD"] * 3
    assert (cancel["kind"], cancel["held_delta"]) == ("CANCEL", -3)
    assert cancel["related_purchase_id"] == row_id(new["id"])
    assert (cancel["detail"]["bookingsMoved"], cancel["detail"]["movedTo"]) == (3, new["id"])
    # the moved holds are given back when that package is cancelled in turn
    await api.data(CANCEL_PACKAGE, id=new["id"])
    *_, released = await entries(db, new["id"])
    assert (released["kind"], released["held_delta"], released["sessions_held_after"]) == (
        "CANCEL",
        -3,
        0,
    )
    assert released["detail"]["bookingsUnlinked"] == 3
    await assert_ledger_replays(db)


async def test_cancel_refuses_a_target_without_room_or_of_the_wrong_kind(
    api: Api, other: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    old = await package(api, cid, total=5)
    for d in (1, 2, 3):
        await booking(api, cid, old["id"], start=at(days=d))
    small = await package(api, cid, total=2)
    someone_else = await package(api, await client(api, "Bo"), total=9)
    frozen = await package(api, cid, total=9)
    await api.data(FREEZE, id=frozen["id"])
    gone = await package(api, cid, total=9)
    await api.data(CANCEL_PACKAGE, id=gone["id"])
    theirs = await package(other, total=9)
    async with unchanged(db):
        for target, code in [
            (small["id"], "NO_SESSIONS_AVAILABLE"),
            (someone_else["id"], "BAD_USER_INPUT"),
            (old["id"], "BAD_USER_INPUT"),
            (frozen["id"], "PURCHASE_FROZEN"),
            (gone["id"], "PURCHASE_CANCELLED"),
            (theirs["id"], "NOT_FOUND"),
            ("bkg_1", "NOT_FOUND"),
            ("nonsense", "BAD_USER_INPUT"),
        ]:
            assert await refused(api, CANCEL_PACKAGE, id=old["id"], to=target) == code, target
        assert await refused(api, CANCEL_PACKAGE, id=old["id"], reason="x" * 1001) == (
            "BAD_USER_INPUT"
        )
        assert await refused(other, CANCEL_PACKAGE, id=old["id"]) == "NOT_FOUND"
    lapsed = await package(api, cid, total=3, expires=at(days=1))
    await lapse(db, lapsed["id"])
    async with unchanged(db):
        assert await refused(api, CANCEL_PACKAGE, id=lapsed["id"]) == "PURCHASE_EXPIRED"
        assert await refused(api, FREEZE, id=lapsed["id"]) == "PURCHASE_EXPIRED"
        assert await refused(api, CANCEL_PACKAGE, id=old["id"], to=lapsed["id"]) == (
            "PURCHASE_EXPIRED"
        )
    await assert_ledger_replays(db)


async def test_two_cancels_moving_bookings_into_one_package_never_overfill_it(
    api: Api, db: asyncpg.Connection
) -> None:
    """Each locks its package and the target in id order: no deadlock, and the target's
    room (3) takes one package's bookings (2), never both (4)."""
    cid = await client(api)
    first, second = await package(api, cid, total=5), await package(api, cid, total=5)
    target = await package(api, cid, total=3)
    for each in (first, second):
        for d in (1, 2):
            await booking(api, cid, each["id"], start=at(days=d))
    results = await asyncio.gather(
        *(api.post(CANCEL_PACKAGE, id=p["id"], to=target["id"]) for p in (second, first))
    )
    done = [r for r in results if "errors" not in r]
    assert len(done) == 1
    (failed,) = [r for r in results if "errors" in r]
    assert failed["errors"][0]["extensions"]["code"] == "NO_SESSIONS_AVAILABLE"
    held = await db.fetchval(
        "SELECT sessions_held FROM purchases WHERE id = $1", row_id(target["id"])
    )
    linked = await db.fetchval(
        "SELECT count(*) FROM bookings WHERE purchase_id = $1", row_id(target["id"])
    )
    assert held == linked == 2
    await assert_ledger_replays(db)


async def test_cancel_racing_use_session_counts_each_session_once(
    api: Api, db: asyncpg.Connection
) -> None:
    sold = await package(api, total=30)
    calls = [api.post(USE, id=sold["id"]) for _ in range(20)]
    calls.insert(10, api.post(CANCEL_PACKAGE, id=sold["id"]))
    results = await asyncio.gather(*calls)
    uses = [r for i, r in enumerate(results) if i != 10]
    assert "errors" not in results[10], results[10]
    counted = sum(1 for r in uses if "errors" not in r)
    codes = {r["errors"][0]["extensions"]["code"] for r in uses if "errors" in r}
    assert codes <= {"PURCHASE_CANCELLED"}
    row = await db.fetchrow(
        "SELECT sessions_used, status FROM purchases WHERE id = $1", row_id(sold["id"])
    )
    assert (row["sessions_used"], row["status"]) == (counted, "CANCELLED")
    kinds = [e["kind"] for e in await entries(db, sold["id"])]
    assert kinds[-1] == "CANCEL" and kinds.count("USE") == counted
    await assert_ledger_replays(db)


# --- freeze / unfreeze --------------------------------------------------------------------


async def test_freeze_stops_use_and_unfreeze_moves_the_expiry_by_the_frozen_time(
    api: Api, db: asyncpg.Connection
) -> None:
    sold = await package(api, total=5, expires=at(days=30))
    frozen = (await api.data(FREEZE, id=sold["id"]))["freezePackage"]
    assert (frozen["status"], frozen["frozenUntil"], frozen["revision"]) == ("FROZEN", None, 1)
    target = await client(api, "Cy")
    async with unchanged(db):
        assert await refused(api, USE, id=sold["id"]) == "PURCHASE_FROZEN"
        assert await refused(api, FREEZE, id=sold["id"]) == "PURCHASE_FROZEN"
        code = await refused(api, TRANSFER, **{"from": sold["id"], "to": target, "sessions": 1})
        assert code == "PURCHASE_FROZEN"
    thawed = (await api.data(UNFREEZE, id=sold["id"]))["unfreezePackage"]
    assert (thawed["status"], thawed["revision"]) == ("ACTIVE", 2)
    freeze, unfreeze = await entries(db, sold["id"])
    assert (freeze["kind"], unfreeze["kind"]) == ("FREEZE", "UNFREEZE")
    assert freeze["detail"]["frozenUntil"] is None
    detail = unfreeze["detail"]
    before, after = (
        datetime.fromisoformat(detail[k]) for k in ("expiresAtBefore", "expiresAtAfter")
    )
    unfrozen_at = await db.fetchval(
        "SELECT created_at FROM session_ledger WHERE purchase_id = $1 AND kind = 'UNFREEZE'",
        row_id(sold["id"]),
    )
    assert after - before == unfrozen_at - datetime.fromisoformat(detail["frozenAt"])
    assert datetime.fromisoformat(thawed["expiresAt"]) == after
    assert (await event_types(db, sold["id"]))[-2:] == ["purchase.frozen", "purchase.unfrozen"]
    await api.data(USE, id=sold["id"])  # usable again
    await assert_ledger_replays(db)


async def test_freeze_until_a_moment_and_a_package_without_expiry(
    api: Api, db: asyncpg.Connection
) -> None:
    sold = await package(api, total=5)  # never expires
    until = at(days=7)
    frozen = (await api.data(FREEZE, id=sold["id"], until=iso(until)))["freezePackage"]
    assert datetime.fromisoformat(frozen["frozenUntil"]) == until
    thawed = (await api.data(UNFREEZE, id=sold["id"]))["unfreezePackage"]
    assert (thawed["expiresAt"], thawed["frozenUntil"]) == (None, None)
    await assert_ledger_replays(db)


async def test_freeze_and_unfreeze_refusals_change_nothing(
    api: Api, other: Api, db: asyncpg.Connection
) -> None:
    cid = await client(api)
    active = await package(api, cid, total=5)
    gone = await package(api, cid, total=5)
    await api.data(CANCEL_PACKAGE, id=gone["id"])
    await other.data(ME)  # trainer B exists before the snapshot
    async with unchanged(db):
        assert await refused(api, FREEZE, id=active["id"], until=iso(at(hours=-1))) == (
            "BAD_USER_INPUT"
        )
        assert await refused(api, FREEZE, id=active["id"], until="2030-01-01T10:00:00") == (
            "BAD_USER_INPUT"
        )
        assert await refused(api, FREEZE, id=gone["id"]) == "PURCHASE_CANCELLED"
        assert await refused(api, UNFREEZE, id=gone["id"]) == "PURCHASE_CANCELLED"
        assert await refused(api, UNFREEZE, id=active["id"]) == "INVALID_TRANSITION"
        assert await refused(other, FREEZE, id=active["id"]) == "NOT_FOUND"
        assert await refused(api, FREEZE, id=cid) == "NOT_FOUND"
    await api.data(FREEZE, id=active["id"])
    async with unchanged(db):
        assert await refused(other, UNFREEZE, id=active["id"]) == "NOT_FOUND"


async def test_freeze_racing_use_session(api: Api, db: asyncpg.Connection) -> None:
    sold = await package(api, total=30)
    calls = [api.post(USE, id=sold["id"]) for _ in range(20)]
    calls.insert(7, api.post(FREEZE, id=sold["id"]))
    results = await asyncio.gather(*calls)
    assert "errors" not in results[7], results[7]
    uses = [r for i, r in enumerate(results) if i != 7]
    counted = sum(1 for r in uses if "errors" not in r)
    assert {r["errors"][0]["extensions"]["code"] for r in uses if "errors" in r} <= {
        "PURCHASE_FROZEN"
    }
    row = await db.fetchrow(
        "SELECT sessions_used, status FROM purchases WHERE id = $1", row_id(sold["id"])
    )
    assert (row["sessions_used"], row["status"]) == (counted, "FROZEN")
    await assert_ledger_replays(db)


# --- extend -------------------------------------------------------------------------------


async def test_extend_records_before_and_after(api: Api, db: asyncpg.Connection) -> None:
    sold = await package(api, total=5, expires=at(days=10))
    later = at(days=40)
    extended = (await api.data(EXTEND, id=sold["id"], expires=iso(later)))["extendPackage"]
    assert (datetime.fromisoformat(extended["expiresAt"]), extended["revision"]) == (later, 1)
    (entry,) = await entries(db, sold["id"])
    assert entry["kind"] == "EXTEND"
    assert datetime.fromisoformat(entry["detail"]["expiresAtBefore"]) == datetime.fromisoformat(
        sold["expiresAt"]
    )
    assert datetime.fromisoformat(entry["detail"]["expiresAtAfter"]) == later
    assert (await event_types(db, sold["id"]))[-1] == "purchase.extended"
    await assert_ledger_replays(db)


async def test_extend_refusals_change_nothing(api: Api, other: Api, db: asyncpg.Connection) -> None:
    cid = await client(api)
    sold = await package(api, cid, total=5, expires=at(days=10))
    forever = await package(api, cid, total=5)
    gone = await package(api, cid, total=5, expires=at(days=10))
    await api.data(CANCEL_PACKAGE, id=gone["id"])
    await other.data(ME)  # trainer B exists before the snapshot
    async with unchanged(db):
        for purchase, moment, code in [
            (sold["id"], at(days=5), "BAD_USER_INPUT"),  # earlier than the current expiry
            (sold["id"], datetime.fromisoformat(sold["expiresAt"]), "BAD_USER_INPUT"),
            (sold["id"], at(days=-1), "BAD_USER_INPUT"),
            (forever["id"], at(days=50), "BAD_USER_INPUT"),  # nothing to extend
            (gone["id"], at(days=50), "PURCHASE_CANCELLED"),
        ]:
            assert await refused(api, EXTEND, id=purchase, expires=iso(moment)) == code
        assert await refused(other, EXTEND, id=sold["id"], expires=iso(at(days=50))) == (
            "NOT_FOUND"
        )


# --- transfer -----------------------------------------------------------------------------


async def test_transfer_is_a_double_entry_into_a_new_package(
    api: Api, db: asyncpg.Connection
) -> None:
    giver, taker = await client(api, "Giver"), await client(api, "Taker")
    sold = await package(api, giver, total=10, expires=at(days=60))
    await api.data(USE, id=sold["id"])
    done = (await api.data(TRANSFER, **{"from": sold["id"], "to": taker, "sessions": 4}))[
        "transferSessions"
    ]
    source, target = done["fromPurchase"], done["toPurchase"]
    assert (source["sessionsTotal"], source["sessionsUsed"], source["revision"]) == (6, 1, 2)
    assert (target["sessionsTotal"], target["sessionsUsed"], target["revision"]) == (4, 0, 1)
    assert target["client"]["id"] == taker and target["expiresAt"] == source["expiresAt"]
    *_, out = await entries(db, sold["id"])
    (into,) = await entries(db, target["id"])
    assert (out["kind"], out["total_delta"], out["sessions_total_after"]) == ("TRANSFER_OUT", -4, 6)
    assert (into["kind"], into["total_delta"], into["sessions_total_after"]) == (
        "TRANSFER_IN",
        4,
        4,
    )
    assert out["related_purchase_id"] == row_id(target["id"])
    assert into["related_purchase_id"] == row_id(sold["id"])
    assert out["actor"] == into["actor"] == ACTOR
    assert (await event_types(db, sold["id"]))[-1] == "sessions.transferred"
    assert await event_types(db, target["id"]) == ["purchase.created"]
    await assert_ledger_replays(db)


async def test_transfer_refusals_change_nothing(
    api: Api, other: Api, db: asyncpg.Connection
) -> None:
    cid, taker = await client(api), await client(api, "Taker")
    sold = await package(api, cid, total=5)
    await api.data(USE, id=sold["id"])
    fresh = await package(api, cid, total=3)
    lapsed = await package(api, cid, total=3, expires=at(days=1))
    await lapse(db, lapsed["id"])
    gone = await package(api, cid, total=3)
    await api.data(CANCEL_PACKAGE, id=gone["id"])
    their_client = (await other.data('mutation { createClient(input: {name: "Z"}) { id } }'))[
        "createClient"
    ]["id"]

    def call(purchase: str, to: str, sessions: int) -> dict[str, object]:
        return {"from": purchase, "to": to, "sessions": sessions}

    async with unchanged(db):
        for variables, code in [
            (call(sold["id"], taker, 0), "BAD_USER_INPUT"),
            (call(sold["id"], taker, -2), "BAD_USER_INPUT"),
            (call(sold["id"], taker, 1001), "BAD_USER_INPUT"),
            (call(sold["id"], taker, 5), "NO_SESSIONS_AVAILABLE"),  # 4 available
            (call(fresh["id"], taker, 3), "BAD_USER_INPUT"),  # all of it: keeps at least one
            (call(lapsed["id"], taker, 1), "PURCHASE_EXPIRED"),
            (call(gone["id"], taker, 1), "PURCHASE_CANCELLED"),
            (call(sold["id"], their_client, 1), "NOT_FOUND"),
            (call(sold["id"], sold["id"], 1), "NOT_FOUND"),  # an id of the wrong kind
        ]:
            assert await refused(api, TRANSFER, **variables) == code, variables
        assert await refused(other, TRANSFER, **call(sold["id"], their_client, 1)) == "NOT_FOUND"
    await api.data(TRANSFER, **call(sold["id"], taker, 3))  # used 1, so 3 of 4 may go: 2 left
    await assert_ledger_replays(db)


@pytest.mark.parametrize("sessions", [1, 2])
async def test_twenty_transfers_racing_for_the_same_sessions_never_over_transfer(
    api: Api, db: asyncpg.Connection, sessions: int
) -> None:
    cid, taker = await client(api), await client(api, "Taker")
    sold = await package(api, cid, total=10)
    await api.data(USE, id=sold["id"])  # 9 available; the package keeps total >= used
    results = await asyncio.gather(
        *(
            api.post(TRANSFER, **{"from": sold["id"], "to": taker, "sessions": sessions})
            for _ in range(20)
        )
    )
    done = [r for r in results if "errors" not in r]
    assert len(done) == 9 // sessions
    assert {r["errors"][0]["extensions"]["code"] for r in results if "errors" in r} == {
        "NO_SESSIONS_AVAILABLE"
    }
    row = await db.fetchrow(
        "SELECT sessions_total, sessions_used FROM purchases WHERE id = $1", row_id(sold["id"])
    )
    assert row["sessions_total"] == 10 - sessions * len(done) >= row["sessions_used"] == 1
    received = await db.fetchval(
        "SELECT coalesce(sum(sessions_total), 0) FROM purchases WHERE client_id = $1",
        row_id(taker),
    )
    assert received == sessions * len(done)
    await assert_ledger_replays(db)


async def test_lifecycle_changes_through_an_api_key_are_integration(
    api: Api, db: asyncpg.Connection
) -> None:
    created = await api.data('mutation { createApiKey(name: "zap") { secret apiKey { id } } }')
    key = api.with_token(created["createApiKey"]["secret"])
    sold = await package(api, total=4, expires=at(days=3))
    await key.data(EXTEND, id=sold["id"], expires=iso(at(days=9)))
    (entry,) = await entries(db, sold["id"])
    assert entry["source"] == "INTEGRATION"
    assert entry["actor"] == f"api_key:{row_id(created['createApiKey']['apiKey']['id'])}"


# --- open tabs ----------------------------------------------------------------------------

LIVE_PACKAGE = """
subscription($id: ID!, $after: Int) {
  purchaseUpdated(purchaseId: $id, afterRevision: $after) {
    revision snapshot purchase { sessionsTotal sessionsUsed sessionsAvailable status revision }
  }
}"""


async def test_open_tabs_see_each_lifecycle_change_with_the_counts_as_of_it(
    db_url: str, tmp_path: Path
) -> None:
    """A real server: a subscriber to the package gets one message per entry, the
    transfer's new total and the freeze's status included."""
    bearer = token("trainer-a")
    with servers(serve_env(db_url), tmp_path, 1) as (url,):
        async with http_client(url, bearer) as http:
            giver = (await http.data(CREATE_CLIENT, name="Giver"))["createClient"]["id"]
            taker = (await http.data(CREATE_CLIENT, name="Taker"))["createClient"]["id"]
            sold = (await http.data(SELL, client=giver, total=10, expires=iso(at(days=30))))[
                "sellPackage"
            ]["id"]
            async with socket(url, bearer) as sock:
                await sock.subscribe("p", LIVE_PACKAGE, id=sold)
                first = (await sock.data("p"))["purchaseUpdated"]
                assert (first["revision"], first["snapshot"]) == (0, True)
                await http.data(TRANSFER, **{"from": sold, "to": taker, "sessions": 3})
                moved = (await sock.data("p"))["purchaseUpdated"]
                await http.data(FREEZE, id=sold)
                frozen = (await sock.data("p"))["purchaseUpdated"]
            await http.data(UNFREEZE, id=sold)
            await http.data(TRANSFER, **{"from": sold, "to": taker, "sessions": 2})
            async with socket(url, bearer) as sock:  # a tab coming back replays the gap
                await sock.subscribe("p", LIVE_PACKAGE, id=sold, after=0)
                replayed = [(await sock.data("p"))["purchaseUpdated"] for _ in range(4)]
    # each message has the counts as of its entry (the total before the second transfer)
    assert [(u["revision"], u["purchase"]["sessionsTotal"]) for u in replayed] == [
        (1, 7),
        (2, 7),
        (3, 7),
        (4, 5),
    ]
    assert (moved["revision"], frozen["revision"]) == (1, 2)
    assert moved["purchase"] == {
        "sessionsTotal": 7,
        "sessionsUsed": 0,
        "sessionsAvailable": 7,
        "status": "ACTIVE",
        "revision": 1,
    }
    assert (frozen["purchase"]["sessionsTotal"], frozen["purchase"]["status"]) == (7, "FROZEN")


# --- what stays closed, and what the ledger says --------------------------------------------


async def test_a_package_cannot_be_sold_already_expired(api: Api, db: asyncpg.Connection) -> None:
    cid = await client(api)
    async with unchanged(db):
        assert (
            await refused(api, SELL, client=cid, total=5, expires=iso(at(days=-1)))
            == "BAD_USER_INPUT"
        )
    sold = await package(api, cid, total=5, expires=at(hours=1))  # a future one sells
    assert sold["status"] == "ACTIVE"


async def test_a_cancelled_package_gives_nothing_back_either(
    api: Api, db: asyncpg.Connection
) -> None:
    """Reinstate on a cancelled package would leave it with sessions nobody can use: its
    counts are final, like useSession's."""
    cid = await client(api)
    sold = await package(api, cid, total=5)
    await api.data(USE, id=sold["id"])
    await api.data(CANCEL_PACKAGE, id=sold["id"])
    async with unchanged(db):
        assert await refused(api, RELEASE, id=sold["id"]) == "PURCHASE_CANCELLED"
    await assert_ledger_replays(db)


LEDGER = """
query($id: ID!) { purchase(id: $id) { ledger(first: 20) { nodes {
  kind delta heldDelta totalDelta sessionsUsedAfter sessionsHeldAfter sessionsTotalAfter
  revision detail relatedPurchase { id }
} } } }"""


async def test_the_ledger_names_each_entrys_kind_and_counts(api: Api) -> None:
    cid, bea = await client(api), await client(api, "Bea")
    sold = await package(api, cid, total=6, expires=at(days=30))
    made = await booking(api, cid, sold["id"], start=at(days=2))
    await api.data(USE, id=sold["id"])
    moved = (await api.data(TRANSFER, **{"from": sold["id"], "to": bea, "sessions": 2}))[
        "transferSessions"
    ]
    await api.data(EXTEND, id=sold["id"], expires=iso(at(days=60)))
    nodes = (await api.data(LEDGER, id=sold["id"]))["purchase"]["ledger"]["nodes"]
    rows = [(n["kind"], n["delta"], n["heldDelta"], n["totalDelta"], n["revision"]) for n in nodes]
    assert rows == [
        ("HOLD", 0, 1, 0, 1),
        ("USE", 1, 0, 0, 2),
        ("TRANSFER_OUT", 0, 0, -2, 3),
        ("EXTEND", 0, 0, 0, 4),
    ]
    assert [
        (n["sessionsUsedAfter"], n["sessionsHeldAfter"], n["sessionsTotalAfter"]) for n in nodes
    ] == [
        (0, 1, 6),
        (1, 1, 6),
        (1, 1, 4),
        (1, 1, 4),
    ]
    assert nodes[2]["relatedPurchase"] == {"id": moved["toPurchase"]["id"]}
    assert nodes[0]["relatedPurchase"] is None
    assert set(nodes[3]["detail"]) >= {"expiresAtBefore", "expiresAtAfter"}
    assert made["purchase"]["id"] == sold["id"]
