"""Shared by the refusal suites (bad input, auth, API keys, isolation): a database
snapshot to prove a refused call changed nothing, a trainer's "world" of rows in every
state, and tables of every operation with the arguments that name rows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from tests.conftest import Api
from tests.helpers import (
    CANCEL,
    COMPLETE,
    CREATE_BOOKING,
    CREATE_CLIENT,
    NO_SHOW,
    PURCHASE_FIELDS,
    RELEASE,
    REOPEN,
    USE,
    at,
    booking,
    client,
    iso,
    lapsed_package,
    package,
)
from tests.lifecycle import CANCEL_PACKAGE, EXTEND, FREEZE, FREEZE_THEN_UNFREEZE, TRANSFER

# --- "changes nothing": every row of every table, compared before and after ---------------

# Every table but Alembic's (new tables are covered as they come). api_keys.last_used_at
# is bookkeeping of a successful authentication, not a change.
TABLES = """
SELECT table_name FROM information_schema.tables
 WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> 'alembic_version'
 ORDER BY table_name
"""


async def snapshot(db: asyncpg.Connection) -> dict[str, list[str]]:
    """Every row (as JSON) of every table: counts, sessions_used, revision, statuses..."""
    state: dict[str, list[str]] = {}
    for (table,) in await db.fetch(TABLES):
        rows = await db.fetch(
            f"SELECT (to_jsonb(t) - 'last_used_at')::text AS r FROM {table} AS t ORDER BY r"
        )
        state[table] = [row["r"] for row in rows]
    assert {"purchases", "session_ledger", "idempotency_keys"} <= state.keys()
    return state


@asynccontextmanager
async def unchanged(db: asyncpg.Connection) -> AsyncIterator[None]:
    """Asserts that the block changed no row of any table."""
    before = await snapshot(db)
    yield
    after = await snapshot(db)
    assert after == before


async def refused(caller: Api, document: str, **variables: Any) -> str:
    """The ``extensions.code`` of a refused call, which must have returned no data."""
    body = await caller.post(document, **variables)
    assert body.get("errors"), body
    assert not any((body.get("data") or {}).values()), body
    code: str = body["errors"][0]["extensions"]["code"]
    return code


async def invalid(caller: Api, document: str, **variables: Any) -> str:
    """The first message of a request refused by parsing or validation (no resolver ran)."""
    body = await caller.post(document, **variables)
    assert body.get("data") is None, body
    assert body["errors"], body
    for error in body["errors"]:
        assert "path" not in error, error
    message: str = body["errors"][0]["message"]
    return message


# --- documents not in tests.helpers --------------------------------------------------------

SELL_OFFER = f"""
mutation($client: ID!, $total: Int!, $offer: ID) {{
  sellPackage(input: {{clientId: $client, sessionsTotal: $total, offerId: $offer}}) {{
    {PURCHASE_FIELDS}
  }}
}}"""
CREATE_KEY = """
mutation($name: String!, $scopes: [ApiKeyScope!]) {
  createApiKey(name: $name, scopes: $scopes) { secret apiKey { id name prefix scopes } }
}"""
REVOKE_KEY = "mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }"
CREATE_OFFER = """
mutation($name: String!, $total: Int!, $days: Int, $price: Int) {
  createOffer(input: {name: $name, sessionsTotal: $total, validDays: $days, priceCents: $price}) {
    id name sessionsTotal validDays priceCents
  }
}"""
OFFERS = "{ offers { id name } }"
CONNECT_STRIPE = """
mutation($account: String!) {
  connectStripeAccount(accountId: $account) { accountId connectedAt }
}"""
DISCONNECT_STRIPE = """
mutation($account: String!) { disconnectStripeAccount(accountId: $account) { accountId } }"""
STRIPE_ACCOUNTS = "{ stripeAccounts { accountId connectedAt } }"
STRIPE_EVENTS = """
query($first: Int) {
  stripeEvents(first: $first) {
    eventId type accountId outcome reason paymentIntent sessionsCancelled purchase { id status }
  }
}"""
API_KEYS = "{ apiKeys { id name prefix scopes revokedAt lastUsedAt } }"
ME = "{ me { id name email } }"
CLIENT = "query($id: ID!) { client(id: $id) { id name purchases { id } } }"
CLIENTS = """
query($search: String, $first: Int, $after: String) {
  clients(search: $search, first: $first, after: $after) {
    nodes { id name } pageInfo { hasNextPage endCursor }
  }
}"""
PURCHASE = """
query($id: ID!) {
  purchase(id: $id) {
    id sessionsUsed revision client { id } offer { id } ledger { nodes { id } }
  }
}"""
BOOKING = "query($id: ID!) { booking(id: $id) { id status client { id } purchase { id } } }"
BOOKINGS = """
query($from: DateTime!, $to: DateTime!) {
  bookings(from: $from, to: $to) { id client { id } purchase { id } }
}"""
# A public address (no DNS needed): endpoints must not point at private ones.
PUBLIC_URL = "https://93.184.215.14/punchcard-hooks"
ENDPOINT_FIELDS = "id url description eventTypes enabled disabledReason"
CREATE_ENDPOINT = f"""
mutation($url: String!, $types: [String!], $description: String) {{
  createWebhookEndpoint(input: {{url: $url, eventTypes: $types, description: $description}}) {{
    secret endpoint {{ {ENDPOINT_FIELDS} }}
  }}
}}"""
UPDATE_ENDPOINT = f"""
mutation($id: ID!, $url: String, $types: [String!], $description: String, $enabled: Boolean) {{
  updateWebhookEndpoint(id: $id, input: {{url: $url, eventTypes: $types,
                                          description: $description, enabled: $enabled}}) {{
    {ENDPOINT_FIELDS}
  }}
}}"""
DELETE_ENDPOINT = f"mutation($id: ID!) {{ deleteWebhookEndpoint(id: $id) {{ {ENDPOINT_FIELDS} }} }}"
ROTATE_SECRET = f"""
mutation($id: ID!) {{
  rotateWebhookSecret(id: $id) {{ secret endpoint {{ {ENDPOINT_FIELDS} }} }}
}}"""
DELIVERY_FIELDS = """
id cursor eventId eventType status attempt nextAttemptAt deliveredAt statusCode error
attempts { id attempt statusCode latencyMs error }"""
REDELIVER = f"""
mutation($event: ID!, $endpoint: ID!) {{
  redeliverEvent(eventId: $event, endpointId: $endpoint) {{ {DELIVERY_FIELDS} }}
}}"""
ENDPOINTS = f"{{ webhookEndpoints {{ {ENDPOINT_FIELDS} }} }}"
EVENTS = """
query($after: String, $first: Int, $types: [String!]) {
  events(after: $after, first: $first, types: $types) {
    nodes { id sequence cursor type createdAt data } pageInfo { hasNextPage endCursor }
  }
}"""
DELIVERIES = f"""
query($endpoint: ID!, $first: Int, $after: String) {{
  webhookDeliveries(endpointId: $endpoint, first: $first, after: $after) {{
    nodes {{ {DELIVERY_FIELDS} }} pageInfo {{ hasNextPage endCursor }}
  }}
}}"""
LEDGER = """
query($purchase: ID, $first: Int, $after: String) {
  ledger(purchaseId: $purchase, first: $first, after: $after) {
    nodes { id cursor source actor purchase { id } booking { id } }
    pageInfo { hasNextPage endCursor }
  }
}"""

UPDATE_TRAINER = """
mutation($name: String, $timezone: String, $hours: Int, $late: Int) {
  updateTrainer(input: {name: $name, timezone: $timezone, reminderHoursBefore: $hours,
                        lateCancelHours: $late}) {
    id name timezone reminderHoursBefore lateCancelHours
  }
}"""
UPDATE_CLIENT = """
mutation($id: ID!, $name: String, $email: String, $phone: String, $timezone: String) {
  updateClient(id: $id, input: {name: $name, email: $email, phone: $phone, timezone: $timezone}) {
    id name email phone timezone
  }
}"""
SESSIONS_AS_OF = """
query($id: ID!, $at: DateTime!) {
  sessionsAsOf(purchaseId: $id, at: $at) {
    at revision sessionsTotal sessionsUsed sessionsHeld sessionsRemaining sessionsAvailable
    status expiresAt purchase { id }
  }
}"""
LATER = "2100-01-01T00:00:00+00:00"  # after every package the tests sell
SESSIONS_AS_OF_LATER = f"""
query($id: ID!) {{
  sessionsAsOf(purchaseId: $id, at: "{LATER}") {{ revision purchase {{ id }} }}
}}"""
PACKAGE_REPORT = """
query($asOf: DateTime) {
  packageReport(asOf: $asOf) {
    asOf
    packages {
      purchase { id } client { id name } offer { id } soldAt revision status expiresAt
      sessionsTotal sessionsUsed sessionsHeld sessionsRemaining sessionsAvailable
      expiringWithin30Days unitPriceCents unusedValueCents
    }
    totals {
      packages sessionsTotal sessionsUsed sessionsHeld sessionsRemaining sessionsAvailable
      expiringWithin30Days unusedValueCents
    }
  }
}"""


# --- a trainer's rows, in every state the refusals need ------------------------------------


@dataclass(frozen=True)
class World:
    trainer: str  # trn_...
    client: str  # with all the packages and bookings below
    other_client: str  # same trainer, no packages
    purchase: str  # sold from `offer`: 5 sessions, 1 used (key `use_key`), 1 charged booking
    untouched: str  # 2 sessions, none used
    used_up: str  # 1 session, used
    expired: str  # expired yesterday, none used
    offer: str
    confirmed: str  # booking on `purchase`, in two days (it holds one of its sessions)
    started: str  # CONFIRMED, started an hour ago, no package (completeBooking / markNoShow)
    completed: str  # charged to `purchase` (idempotency key `complete_key`)
    cancelled: str
    api_key: str
    secret: str  # the API key's secret (READ + WRITE)
    use_key: str
    complete_key: str
    stripe_account: str  # bound to this trainer (connectStripeAccount)
    endpoint: str  # a webhook endpoint (never called: no sweeper runs), with deliveries
    event: str  # the trainer's first event


async def build_world(api: Api, name: str = "Ada") -> World:
    trainer = (await api.data(ME))["me"]["id"]
    cid = await client(api, name)
    other_client = await client(api, f"{name} Junior")
    offer = await api.data(CREATE_OFFER, name=f"{name}'s ten pack", total=10, days=90)
    sold = (await api.data(SELL_OFFER, client=cid, total=5, offer=offer["createOffer"]["id"]))[
        "sellPackage"
    ]
    use_key, complete_key = f"use-{name}", f"complete-{name}"
    await api.data(USE, id=sold["id"], key=use_key)
    untouched = await package(api, cid, total=2)
    used_up = await package(api, cid, total=1)
    await api.data(USE, id=used_up["id"])
    expired = await lapsed_package(api, cid, total=3)
    confirmed = await booking(api, cid, sold["id"], start=at(days=2))
    completed = await booking(api, cid, sold["id"])
    await api.data(COMPLETE, id=completed["id"], key=complete_key)
    cancelled = await booking(api, cid, sold["id"], start=at(days=3))
    await api.data(CANCEL, id=cancelled["id"])
    started = await booking(api, other_client, start=at(hours=-1))
    created = (await api.data(CREATE_KEY, name=f"{name}'s widget"))["createApiKey"]
    stripe_account = f"acct_{name}Studio"
    await api.data(CONNECT_STRIPE, account=stripe_account)
    endpoint = (await api.data(CREATE_ENDPOINT, url=PUBLIC_URL))["createWebhookEndpoint"]
    first_event = (await api.data(EVENTS, first=1))["events"]["nodes"][0]
    return World(
        trainer=trainer,
        client=cid,
        other_client=other_client,
        purchase=sold["id"],
        untouched=untouched["id"],
        used_up=used_up["id"],
        expired=expired["id"],
        offer=offer["createOffer"]["id"],
        confirmed=confirmed["id"],
        started=started["id"],
        completed=completed["id"],
        cancelled=cancelled["id"],
        api_key=created["apiKey"]["id"],
        secret=created["secret"],
        use_key=use_key,
        complete_key=complete_key,
        stripe_account=stripe_account,
        endpoint=endpoint["endpoint"]["id"],
        event=first_event["id"],
    )


# A new booking's times (bookings may be anywhere in time; this one is in the packages'
# validity, so naming `purchase` takes a hold).
WINDOW = {"start": iso(at(days=7)), "end": iso(at(days=7, hours=1))}


# --- every mutation and query, with arguments that work for the world's owner ---------------

Variables = Callable[[World], dict[str, Any]]

MUTATIONS: dict[str, tuple[str, Variables]] = {
    "createClient": (CREATE_CLIENT, lambda w: {"name": "Zed"}),
    "createOffer": (CREATE_OFFER, lambda w: {"name": "Five pack", "total": 5}),
    "sellPackage": (SELL_OFFER, lambda w: {"client": w.client, "total": 5, "offer": w.offer}),
    "useSession": (USE, lambda w: {"id": w.purchase}),
    "releaseSession": (RELEASE, lambda w: {"id": w.purchase}),
    "createBooking": (
        CREATE_BOOKING,
        lambda w: {"client": w.client, "purchase": w.purchase, **WINDOW},
    ),
    "completeBooking": (COMPLETE, lambda w: {"id": w.started}),
    "markNoShow": (NO_SHOW, lambda w: {"id": w.started}),
    "cancelBooking": (CANCEL, lambda w: {"id": w.confirmed}),
    "reopenBooking": (REOPEN, lambda w: {"id": w.completed}),
    "createApiKey": (CREATE_KEY, lambda w: {"name": "zap"}),
    "revokeApiKey": (REVOKE_KEY, lambda w: {"id": w.api_key}),
    "connectStripeAccount": (CONNECT_STRIPE, lambda w: {"account": "acct_NewStudio"}),
    "disconnectStripeAccount": (DISCONNECT_STRIPE, lambda w: {"account": w.stripe_account}),
    "createWebhookEndpoint": (CREATE_ENDPOINT, lambda w: {"url": PUBLIC_URL + "/2"}),
    "updateWebhookEndpoint": (UPDATE_ENDPOINT, lambda w: {"id": w.endpoint, "description": "x"}),
    "deleteWebhookEndpoint": (DELETE_ENDPOINT, lambda w: {"id": w.endpoint}),
    "rotateWebhookSecret": (ROTATE_SECRET, lambda w: {"id": w.endpoint}),
    "redeliverEvent": (REDELIVER, lambda w: {"event": w.event, "endpoint": w.endpoint}),
    "updateTrainer": (UPDATE_TRAINER, lambda w: {"name": "Renamed", "late": 12}),
    "updateClient": (UPDATE_CLIENT, lambda w: {"id": w.client, "phone": "+44 20 7946 0000"}),
    # the package lifecycle (tests/test_lifecycle.py)
    "cancelPackage": (CANCEL_PACKAGE, lambda w: {"id": w.purchase, "reason": "refunded"}),
    "freezePackage": (FREEZE, lambda w: {"id": w.purchase}),
    "unfreezePackage": (FREEZE_THEN_UNFREEZE, lambda w: {"id": w.purchase}),
    "extendPackage": (EXTEND, lambda w: {"id": w.purchase, "expires": iso(at(days=400))}),
    "transferSessions": (
        TRANSFER,
        lambda w: {"from": w.purchase, "to": w.other_client, "sessions": 1},
    ),
}

QUERIES: dict[str, tuple[str, Variables]] = {
    "me": (ME, lambda w: {}),
    "offers": (OFFERS, lambda w: {}),
    "client": (CLIENT, lambda w: {"id": w.client}),
    "clients": (CLIENTS, lambda w: {}),
    "purchase": (PURCHASE, lambda w: {"id": w.purchase}),
    "booking": (BOOKING, lambda w: {"id": w.confirmed}),
    "bookings": (BOOKINGS, lambda w: {"from": iso(at(days=-30)), "to": iso(at(days=30))}),
    "ledger": (LEDGER, lambda w: {}),
    "apiKeys": (API_KEYS, lambda w: {}),
    "stripeAccounts": (STRIPE_ACCOUNTS, lambda w: {}),
    "stripeEvents": (STRIPE_EVENTS, lambda w: {}),
    "webhookEndpoints": (ENDPOINTS, lambda w: {}),
    "events": (EVENTS, lambda w: {}),
    "webhookDeliveries": (DELIVERIES, lambda w: {"endpoint": w.endpoint}),
    "sessionsAsOf": (SESSIONS_AS_OF, lambda w: {"id": w.purchase, "at": LATER}),
    "packageReport": (PACKAGE_REPORT, lambda w: {"asOf": LATER}),
}


# --- every argument that names a row ------------------------------------------------------


@dataclass(frozen=True)
class IdSlot:
    """One ID argument of one mutation: ``variables(world, value)`` fills the call with the
    caller's own rows and ``value`` in this slot; ``valid(world)`` is a row it accepts."""

    name: str
    document: str
    kind: str  # the id prefix this slot expects
    valid: Callable[[World], str]
    variables: Callable[[World, str], dict[str, Any]]

    def __str__(self) -> str:
        return self.name


ID_SLOTS = [
    IdSlot(
        "sellPackage.clientId", SELL_OFFER, "cli", lambda w: w.client,
        lambda w, v: {"client": v, "total": 5},
    ),
    IdSlot(
        "sellPackage.offerId", SELL_OFFER, "ofr", lambda w: w.offer,
        lambda w, v: {"client": w.client, "total": 5, "offer": v},
    ),
    IdSlot("useSession.purchaseId", USE, "pur", lambda w: w.purchase, lambda w, v: {"id": v}),
    IdSlot(
        "releaseSession.purchaseId", RELEASE, "pur", lambda w: w.purchase,
        lambda w, v: {"id": v},
    ),
    IdSlot(
        "createBooking.clientId", CREATE_BOOKING, "cli", lambda w: w.client,
        lambda w, v: {"client": v, **WINDOW},
    ),
    IdSlot(
        "createBooking.purchaseId", CREATE_BOOKING, "pur", lambda w: w.purchase,
        lambda w, v: {"client": w.client, "purchase": v, **WINDOW},
    ),
    IdSlot("completeBooking.id", COMPLETE, "bkg", lambda w: w.started, lambda w, v: {"id": v}),
    IdSlot("markNoShow.id", NO_SHOW, "bkg", lambda w: w.started, lambda w, v: {"id": v}),
    IdSlot("cancelBooking.id", CANCEL, "bkg", lambda w: w.confirmed, lambda w, v: {"id": v}),
    IdSlot("reopenBooking.id", REOPEN, "bkg", lambda w: w.completed, lambda w, v: {"id": v}),
    IdSlot("revokeApiKey.id", REVOKE_KEY, "key", lambda w: w.api_key, lambda w, v: {"id": v}),
    IdSlot(
        "updateWebhookEndpoint.id", UPDATE_ENDPOINT, "whe", lambda w: w.endpoint,
        lambda w, v: {"id": v, "description": "x"},
    ),
    IdSlot(
        "deleteWebhookEndpoint.id", DELETE_ENDPOINT, "whe", lambda w: w.endpoint,
        lambda w, v: {"id": v},
    ),
    IdSlot(
        "rotateWebhookSecret.id", ROTATE_SECRET, "whe", lambda w: w.endpoint,
        lambda w, v: {"id": v},
    ),
    IdSlot(
        "redeliverEvent.eventId", REDELIVER, "evt", lambda w: w.event,
        lambda w, v: {"event": v, "endpoint": w.endpoint},
    ),
    IdSlot(
        "redeliverEvent.endpointId", REDELIVER, "whe", lambda w: w.endpoint,
        lambda w, v: {"event": w.event, "endpoint": v},
    ),
    IdSlot(
        "updateClient.id", UPDATE_CLIENT, "cli", lambda w: w.client,
        lambda w, v: {"id": v, "name": "Renamed"},
    ),
    # the package lifecycle
    IdSlot(
        "cancelPackage.id", CANCEL_PACKAGE, "pur", lambda w: w.purchase,
        lambda w, v: {"id": v},
    ),
    IdSlot(
        "cancelPackage.moveBookingsTo", CANCEL_PACKAGE, "pur", lambda w: w.untouched,
        lambda w, v: {"id": w.purchase, "to": v},
    ),
    IdSlot("freezePackage.id", FREEZE, "pur", lambda w: w.purchase, lambda w, v: {"id": v}),
    IdSlot(
        "unfreezePackage.id", FREEZE_THEN_UNFREEZE, "pur", lambda w: w.purchase,
        lambda w, v: {"id": v},
    ),
    IdSlot(
        "extendPackage.id", EXTEND, "pur", lambda w: w.purchase,
        lambda w, v: {"id": v, "expires": iso(at(days=400))},
    ),
    IdSlot(
        "transferSessions.fromPurchaseId", TRANSFER, "pur", lambda w: w.purchase,
        lambda w, v: {"from": v, "to": w.other_client, "sessions": 1},
    ),
    IdSlot(
        "transferSessions.toClientId", TRANSFER, "cli", lambda w: w.other_client,
        lambda w, v: {"from": w.purchase, "to": v, "sessions": 1},
    ),
]  # fmt: skip


@dataclass(frozen=True)
class QuerySlot:
    """The ID argument of a single-object query (or the ledger's filter): ``answer`` picks
    what it found out of the data, falsy when "no such row" (null, no ledger rows)."""

    name: str
    document: str
    variable: str
    kind: str
    valid: Callable[[World], str]
    answer: Callable[[dict[str, Any]], Any]

    def __str__(self) -> str:
        return self.name


QUERY_SLOTS = [
    QuerySlot("client", CLIENT, "id", "cli", lambda w: w.client, lambda d: d["client"]),
    QuerySlot("purchase", PURCHASE, "id", "pur", lambda w: w.purchase, lambda d: d["purchase"]),
    QuerySlot("booking", BOOKING, "id", "bkg", lambda w: w.confirmed, lambda d: d["booking"]),
    QuerySlot(
        "ledger.purchaseId", LEDGER, "purchase", "pur", lambda w: w.purchase,
        lambda d: d["ledger"]["nodes"],
    ),
    QuerySlot(
        "webhookDeliveries.endpointId", DELIVERIES, "endpoint", "whe", lambda w: w.endpoint,
        lambda d: d["webhookDeliveries"]["nodes"],
    ),
    QuerySlot(
        "sessionsAsOf.purchaseId", SESSIONS_AS_OF_LATER, "id", "pur", lambda w: w.purchase,
        lambda d: d["sessionsAsOf"],
    ),
]  # fmt: skip

OTHER_KIND = {
    "cli": "pur",
    "pur": "bkg",
    "bkg": "pur",
    "ofr": "cli",
    "key": "cli",
    "whe": "evt",
    "evt": "whe",
}


def of_other_kind(opaque: str) -> str:
    """The same row number behind another kind's prefix: it names no row of this kind."""
    kind, _, number = opaque.partition("_")
    return f"{OTHER_KIND[kind]}_{number}"


def malformed(kind: str) -> list[str]:
    return [
        "",
        "42",
        f"{kind}_",
        f"{kind}_0",
        f"{kind}_-1",
        f"{kind}_01",
        f"{kind.upper()}_1",
        f" {kind}_1",
        f"{kind}_1 ",
        f"{kind}_1.0",
        f"{kind}_1\x00",
        f"{kind}_{'9' * 19}",
        "x" * 5000,
    ]
