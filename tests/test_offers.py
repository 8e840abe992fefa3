"""Offers: package templates, and selling a package from one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from tests.conftest import Api
from tests.helpers import client

CREATE_OFFER = """
mutation($name: String!, $total: Int!, $days: Int) {
  createOffer(input: {name: $name, sessionsTotal: $total, validDays: $days, priceCents: 45000}) {
    id name sessionsTotal validDays priceCents
  }
}"""
SELL_FROM_OFFER = """
mutation($client: ID!, $offer: ID!, $total: Int!) {
  sellPackage(input: {clientId: $client, offerId: $offer, sessionsTotal: $total}) {
    id sessionsTotal expiresAt offer { id name }
  }
}"""


async def test_selling_from_an_offer_takes_its_validity(api: Api, db: asyncpg.Connection) -> None:
    offer = (await api.data(CREATE_OFFER, name="Ten pack", total=10, days=90))["createOffer"]
    assert (offer["name"], offer["validDays"], offer["priceCents"]) == ("Ten pack", 90, 45000)
    cid = await client(api)
    sold = (await api.data(SELL_FROM_OFFER, client=cid, offer=offer["id"], total=10))["sellPackage"]
    assert sold["offer"] == {"id": offer["id"], "name": "Ten pack"}
    expires = datetime.fromisoformat(sold["expiresAt"])
    now = datetime.now(UTC)
    assert now + timedelta(days=89) < expires <= now + timedelta(days=90)
    listed = await api.data("{ offers { id } }")
    assert listed == {"offers": [{"id": offer["id"]}]}


async def test_another_trainers_offer_is_not_found(
    api: Api, other: Api, db: asyncpg.Connection
) -> None:
    theirs = (await other.data(CREATE_OFFER, name="Theirs", total=5, days=None))["createOffer"]
    cid = await client(api)
    code = await api.error(SELL_FROM_OFFER, client=cid, offer=theirs["id"], total=5)
    assert code == "NOT_FOUND"
    assert await db.fetchval("SELECT count(*) FROM purchases") == 0
    assert await api.data("{ offers { id } }") == {"offers": []}


async def test_offer_input_is_checked(api: Api, db: asyncpg.Connection) -> None:
    assert await api.error(CREATE_OFFER, name="Zero", total=0, days=None) == "BAD_USER_INPUT"
    assert await api.error(CREATE_OFFER, name=" ", total=5, days=None) == "BAD_USER_INPUT"
    assert await api.error(CREATE_OFFER, name="Neg", total=5, days=-1) == "BAD_USER_INPUT"
    assert await db.fetchval("SELECT count(*) FROM offers") == 0
