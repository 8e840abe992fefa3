"""A trainer never sees or changes another trainer's rows, through any operation.

Trainer B (by token and by API key) aims every mutation and query at trainer A's rows:
each must behave exactly as for an id that does not exist (NOT_FOUND, null, absent from
lists) and change nothing.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
import pytest

from punchcard.settings import Settings
from tests.conftest import JWT_SECRET, Api
from tests.helpers import COMPLETE, CREATE_BOOKING, RELEASE, USE, row_id
from tests.refusals import (
    API_KEYS,
    BOOKINGS,
    CLIENTS,
    ID_SLOTS,
    LEDGER,
    ME,
    OFFERS,
    QUERY_SLOTS,
    REVOKE_KEY,
    WINDOW,
    IdSlot,
    QuerySlot,
    World,
    build_world,
    refused,
    snapshot,
    unchanged,
)
from tests.test_sessions import outcomes


@pytest.fixture
def settings(db_url: str) -> Settings:
    """GRAPH below reaches everything a trainer has, on purpose: far over the query cost
    limit (tested in tests/test_limits.py), which is raised here."""
    return Settings(
        database_url=db_url, jwt_secret=JWT_SECRET, pool_max_size=20, max_query_cost=10**9
    )


@pytest.fixture
async def world(api: Api) -> World:
    """Trainer A's rows."""
    return await build_world(api, "Ada")


@pytest.fixture
async def their_world(other: Api) -> World:
    """Trainer B's rows, in the same states."""
    return await build_world(other, "Bea")


@pytest.fixture(params=["token", "api key"])
def intruder(request: pytest.FixtureRequest, other: Api, their_world: World) -> Api:
    """Trainer B, signed in with a JWT or acting through one of B's own API keys."""
    return other if request.param == "token" else other.with_token(their_world.secret)


def rows_of(world: World, kind: str) -> list[str]:
    """Every row of a kind in a world: packages and bookings in all their states."""
    return {
        "cli": [world.client, world.other_client],
        "pur": [world.purchase, world.untouched, world.used_up, world.expired],
        "bkg": [world.confirmed, world.completed, world.cancelled, world.started],
        "ofr": [world.offer],
        "key": [world.api_key],
        "whe": [world.endpoint],
        "evt": [world.event],
    }[kind]


MUTATION_SLOTS = [slot for slot in ID_SLOTS if slot.name != "revokeApiKey.id"]


@pytest.mark.parametrize("slot", MUTATION_SLOTS, ids=str)
async def test_no_mutation_reaches_another_trainers_rows(
    intruder: Api,
    db: asyncpg.Connection,
    world: World,
    their_world: World,
    slot: IdSlot,
) -> None:
    """B's own rows fill the other arguments, so A's rows are also reached through B's:
    A's purchase as the package of a booking for B's client, A's offer sold to B's client."""
    async with unchanged(db):
        for theirs in rows_of(world, slot.kind):
            code = await refused(intruder, slot.document, **slot.variables(their_world, theirs))
            assert code == "NOT_FOUND", theirs
    # the control: the same call on B's own row goes through
    await intruder.data(slot.document, **slot.variables(their_world, slot.valid(their_world)))


async def test_another_trainers_api_key_cannot_be_revoked(
    other: Api, db: asyncpg.Connection, world: World, their_world: World
) -> None:
    async with unchanged(db):
        assert await refused(other, REVOKE_KEY, id=world.api_key) == "NOT_FOUND"
    await other.data(REVOKE_KEY, id=their_world.api_key)


async def test_auto_assign_never_picks_another_trainers_package(
    intruder: Api, db: asyncpg.Connection, world: World, their_world: World
) -> None:
    async with unchanged(db):
        code = await refused(intruder, CREATE_BOOKING, client=world.client, auto=True, **WINDOW)
        assert code == "NOT_FOUND"
    # B's client without packages stays unpackaged: A's packages are never candidates.
    made = await intruder.data(CREATE_BOOKING, client=their_world.other_client, auto=True, **WINDOW)
    assert made["createBooking"]["purchase"] is None


async def test_another_trainers_idempotency_keys_replay_nothing(
    intruder: Api, db: asyncpg.Connection, world: World, their_world: World
) -> None:
    """B sending the very calls A made with idempotency keys must not get A's stored
    results back: keys are per trainer."""
    async with unchanged(db):
        code = await refused(intruder, USE, id=world.purchase, key=world.use_key)
        assert code == "NOT_FOUND"
        code = await refused(intruder, COMPLETE, id=world.completed, key=world.complete_key)
        assert code == "NOT_FOUND"


@pytest.mark.parametrize("slot", QUERY_SLOTS, ids=str)
async def test_no_query_finds_another_trainers_rows(
    intruder: Api, db: asyncpg.Connection, world: World, their_world: World, slot: QuerySlot
) -> None:
    async with unchanged(db):
        for theirs in rows_of(world, slot.kind):
            assert not slot.answer(await intruder.data(slot.document, **{slot.variable: theirs}))
        assert slot.answer(
            await intruder.data(slot.document, **{slot.variable: slot.valid(their_world)})
        )


async def test_lists_hold_only_the_callers_rows(
    intruder: Api, world: World, their_world: World
) -> None:
    me = (await intruder.data(ME))["me"]
    assert me["id"] == their_world.trainer
    clients = (await intruder.data(CLIENTS, first=200))["clients"]["nodes"]
    assert {c["id"] for c in clients} == {their_world.client, their_world.other_client}
    assert (await intruder.data(CLIENTS, search="Ada"))["clients"]["nodes"] == []
    assert (await intruder.data(CLIENTS, after=world.client))["clients"]["nodes"] == []
    window = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    bookings = (await intruder.data(BOOKINGS, **window))["bookings"]
    assert {b["id"] for b in bookings} == set(rows_of(their_world, "bkg"))
    ledger = (await intruder.data(LEDGER, first=500))["ledger"]["nodes"]
    assert {e["purchase"]["id"] for e in ledger} <= set(rows_of(their_world, "pur"))
    # B's keyed use, B's used-up package, B's confirmed booking's hold, B's charged
    # booking's hold and use, B's cancelled booking's hold and its release
    assert len(ledger) == 7


async def test_keys_are_listed_for_their_trainer_only(
    other: Api, world: World, their_world: World
) -> None:
    assert [k["id"] for k in (await other.data(API_KEYS))["apiKeys"]] == [their_world.api_key]


async def test_offers_are_listed_for_their_trainer_only(
    intruder: Api, world: World, their_world: World
) -> None:
    assert [o["id"] for o in (await intruder.data(OFFERS))["offers"]] == [their_world.offer]


# Everything a trainer can reach, through every nested field.
GRAPH = """
query($from: DateTime!, $to: DateTime!) {
  me { id }
  offers { id }
  clients(first: 200) {
    nodes { id purchases { id client { id } offer { id }
      ledger(first: 500) { nodes { id purchase { id } booking { id client { id } } } } } }
  }
  bookings(from: $from, to: $to) {
    id client { id purchases { id } } purchase { id client { id } ledger { nodes { id } } }
  }
  ledger(first: 500) { nodes { id purchase { id client { id } } booking { id purchase { id } } } }
}"""

TABLES = {
    "cli": "clients",
    "ofr": "offers",
    "pur": "purchases",
    "bkg": "bookings",
    "led": "session_ledger",
}


def ids_in(data: Any) -> set[str]:
    if isinstance(data, dict):
        found = {data["id"]} if isinstance(data.get("id"), str) else set()
        return found.union(*(ids_in(value) for value in data.values()))
    if isinstance(data, list):
        return set().union(*(ids_in(item) for item in data))
    return set()


async def owned_by(db: asyncpg.Connection, trainer: str) -> set[str]:
    """The ids of every row of the trainer that GRAPH can reach, read from the database."""
    owned = {trainer}
    for kind, table in TABLES.items():
        rows = await db.fetch(f"SELECT id FROM {table} WHERE trainer_id = $1", row_id(trainer))
        owned |= {f"{kind}_{r['id']}" for r in rows}
    return owned


@pytest.mark.parametrize("who", ["A", "B"])
async def test_the_whole_reachable_graph_is_the_callers_own(
    api: Api,
    other: Api,
    db: asyncpg.Connection,
    world: World,
    their_world: World,
    who: str,
) -> None:
    caller, mine = (api, world) if who == "A" else (other, their_world)
    data = await caller.data(
        GRAPH, **{"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    )
    assert ids_in(data) == await owned_by(db, mine.trainer)


async def test_concurrent_attacks_on_another_trainers_package_change_nothing(
    api: Api, other: Api, db: asyncpg.Connection, world: World, their_world: World
) -> None:
    async with unchanged(db):
        results = await asyncio.gather(*(other.post(USE, id=world.purchase) for _ in range(30)))
    assert outcomes(results) == {"NOT_FOUND": 30}

    # ...and while A works on the same package, B's calls still reach nothing of A's.
    before = await snapshot(db)
    calls = [
        *(other.post(USE, id=world.purchase) for _ in range(15)),
        *(other.post(RELEASE, id=world.purchase) for _ in range(15)),
        *(other.post(COMPLETE, id=world.confirmed) for _ in range(15)),
    ]
    # 5 sessions: 2 used, 1 held by the confirmed booking, so A's 2 uses take the rest
    revision = await db.fetchval(
        "SELECT revision FROM purchases WHERE id = $1", row_id(world.purchase)
    )
    mine = [api.post(USE, id=world.purchase) for _ in range(2)]
    results = await asyncio.gather(*mine, *calls)
    assert outcomes(results[:2]) == {"ok": 2}
    assert outcomes(results[2:]) == {"NOT_FOUND": 45}
    row = await db.fetchrow(
        "SELECT sessions_used, revision FROM purchases WHERE id = $1", row_id(world.purchase)
    )
    assert (row["sessions_used"], row["revision"]) == (2 + 2, revision + 2)
    after = await snapshot(db)
    assert len(after["session_ledger"]) == len(before["session_ledger"]) + 2
    actors = await db.fetch(
        "SELECT actor FROM session_ledger WHERE purchase_id = $1", row_id(world.purchase)
    )
    assert Counter(r["actor"] for r in actors) == {"trainer:trainer-a": revision + 2}
    mine = ("purchases", "session_ledger", "events")  # the 2 uses and their events:
    # 2 session.used, and purchase.low_balance at 1 left (4 of 5 used)
    assert len(after["events"]) == len(before["events"]) + 3
    assert {k: v for k, v in after.items() if k not in mine} == {
        k: v for k, v in before.items() if k not in mine
    }
