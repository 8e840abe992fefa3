"""API keys for integrations: shown once, stored hashed, scoped, revoked at once, and
never able to manage keys; what they change is audited as INTEGRATION by ``api_key:<id>``."""

from __future__ import annotations

import hashlib

import asyncpg
import pytest

from tests.conftest import Api
from tests.helpers import COMPLETE, RELEASE, USE, booking, row_id
from tests.refusals import (
    API_KEYS,
    CREATE_KEY,
    ME,
    MUTATIONS,
    QUERIES,
    REVOKE_KEY,
    World,
    build_world,
    refused,
    unchanged,
)


@pytest.fixture
async def world(api: Api) -> World:
    return await build_world(api)


async def new_key(api: Api, *scopes: str) -> tuple[Api, str]:
    """A key of trainer ``api`` (all scopes unless named): a client using it, and its id."""
    made = (await api.data(CREATE_KEY, name="widget", scopes=list(scopes) or None))["createApiKey"]
    return api.with_token(made["secret"]), made["apiKey"]["id"]


async def test_the_secret_is_shown_once_and_stored_hashed(api: Api, db: asyncpg.Connection) -> None:
    first = (await api.data(CREATE_KEY, name=" Zapier "))["createApiKey"]
    second = (await api.data(CREATE_KEY, name="Widget", scopes=["READ"]))["createApiKey"]
    secret = first["secret"]
    assert secret.startswith("pc_") and len(secret) >= 40
    assert second["secret"] != secret
    assert first["apiKey"] == {
        "id": first["apiKey"]["id"],
        "name": "Zapier",
        "prefix": secret[:12],
        "scopes": ["READ", "WRITE"],
    }
    assert second["apiKey"]["scopes"] == ["READ"]
    listed = (await api.data(API_KEYS))["apiKeys"]
    assert [k["id"] for k in listed] == [first["apiKey"]["id"], second["apiKey"]["id"]]
    assert "secret" not in listed[0]  # and ApiKey has no such field: see test_bad_input
    row = await db.fetchrow("SELECT * FROM api_keys WHERE id = $1", row_id(first["apiKey"]["id"]))
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in {str(value) for value in row.values()}


async def test_a_key_acts_for_its_trainer(api: Api, world: World) -> None:
    key = api.with_token(world.secret)
    assert (await key.data(ME))["me"]["id"] == world.trainer
    assert (await api.data(API_KEYS))["apiKeys"][0]["lastUsedAt"] is not None
    for name in ("client", "clients", "purchase", "booking", "bookings", "ledger"):
        document, variables = QUERIES[name]
        arguments = variables(world)
        assert await key.data(document, **arguments) == await api.data(document, **arguments)


@pytest.mark.parametrize("operation", MUTATIONS)
async def test_a_read_only_key_cannot_change_anything(
    api: Api, db: asyncpg.Connection, world: World, operation: str
) -> None:
    reader, _ = await new_key(api, "READ")
    document, variables = MUTATIONS[operation]
    async with unchanged(db):
        assert await refused(reader, document, **variables(world)) == "FORBIDDEN"


@pytest.mark.parametrize("query", [q for q in QUERIES if q != "apiKeys"])
async def test_a_read_only_key_can_query(api: Api, world: World, query: str) -> None:
    reader, _ = await new_key(api, "READ")
    document, variables = QUERIES[query]
    arguments = variables(world)
    assert await reader.data(document, **arguments) == await api.data(document, **arguments)


@pytest.mark.parametrize("scope", ["READ", "WRITE"])
async def test_a_key_cannot_manage_keys(
    api: Api, db: asyncpg.Connection, world: World, scope: str
) -> None:
    key, key_id = await new_key(api, scope)
    async with unchanged(db):
        assert await refused(key, CREATE_KEY, name="escalate") == "FORBIDDEN"
        assert await refused(key, REVOKE_KEY, id=world.api_key) == "FORBIDDEN"
        assert await refused(key, REVOKE_KEY, id=key_id) == "FORBIDDEN"
        assert await refused(key, API_KEYS) == "FORBIDDEN"


async def test_a_revoked_key_is_refused_at_once(
    api: Api, db: asyncpg.Connection, world: World
) -> None:
    key = api.with_token(world.secret)
    await key.data(USE, id=world.untouched)
    revoked = (await api.data(REVOKE_KEY, id=world.api_key))["revokeApiKey"]
    assert revoked["revokedAt"] is not None
    async with unchanged(db):
        assert await refused(key, ME) == "UNAUTHENTICATED"
        assert await refused(key, USE, id=world.untouched) == "UNAUTHENTICATED"
        again = (await api.data(REVOKE_KEY, id=world.api_key))["revokeApiKey"]
    assert again == revoked  # revoking twice keeps the first revocation


async def test_changes_through_a_key_are_audited_as_integration(
    api: Api, db: asyncpg.Connection, world: World
) -> None:
    key = api.with_token(world.secret)
    actor = f"api_key:{row_id(world.api_key)}"
    await key.data(USE, id=world.untouched, reason="webhook")
    await key.data(RELEASE, id=world.untouched)
    started = await booking(api, world.client, world.purchase)  # began two hours ago
    done = (await key.data(COMPLETE, id=started["id"]))["completeBooking"]
    assert (done["status"], done["charged"], done["completedBy"]) == (
        "COMPLETED",
        True,
        "INTEGRATION",
    )
    rows = await db.fetch(
        "SELECT purchase_id, delta, source, actor, booking_id, reason FROM session_ledger"
        " WHERE actor LIKE 'api_key:%' ORDER BY id"
    )
    untouched, charged, booked = (
        row_id(world.untouched),
        row_id(world.purchase),
        row_id(started["id"]),
    )
    assert [tuple(r) for r in rows] == [
        (untouched, 1, "INTEGRATION", actor, None, "webhook"),
        (untouched, -1, "INTEGRATION", actor, None, None),
        (charged, 1, "INTEGRATION", actor, booked, "booking charged"),
    ]


async def test_another_trainers_key_cannot_be_revoked(
    api: Api, other: Api, db: asyncpg.Connection, world: World
) -> None:
    await other.data(ME)
    async with unchanged(db):
        assert await refused(other, REVOKE_KEY, id=world.api_key) == "NOT_FOUND"
    assert (await api.with_token(world.secret).data(ME))["me"]["id"] == world.trainer
