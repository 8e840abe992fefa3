"""POST /webhooks/stripe: verified Stripe events sell packages once per event id, a
refund cancels a package's unused sessions, and anything unverified changes nothing.

Events are signed here with Stripe's scheme (``t=<unix time>,v1=<hex HMAC-SHA256 of
"t.body">``), computed with hmac; the first test checks that ``stripe``'s own verifier
accepts it and that it is what ``stripe`` itself would send.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import stripe

from punchcard.db.notify import CHANNEL, Notice
from punchcard.server import stripe_webhook
from punchcard.settings import Settings
from tests.conftest import JWT_SECRET, Api, in_process
from tests.helpers import CREATE_CLIENT, PURCHASE_FIELDS, USE, client, row_id
from tests.live import http_client, serve_env, servers, socket, token
from tests.refusals import (
    CONNECT_STRIPE,
    CREATE_KEY,
    CREATE_OFFER,
    DISCONNECT_STRIPE,
    STRIPE_ACCOUNTS,
    STRIPE_EVENTS,
    refused,
    unchanged,
)

SECRET = "whsec_test_0123456789abcdef"
ACCOUNT = "acct_AdaStudio"
WEBHOOK = "/webhooks/stripe"
PURCHASE = f"query($id: ID!) {{ purchase(id: $id) {{ {PURCHASE_FIELDS} }} }}"
_ids = itertools.count(1)


@pytest.fixture
def settings(db_url: str) -> Settings:
    """The suite's settings, with a Stripe webhook secret (this module's ``api`` uses them)."""
    return Settings(
        database_url=db_url, jwt_secret=JWT_SECRET, pool_max_size=20, stripe_webhook_secret=SECRET
    )


def sign(payload: str, *, secret: str = SECRET, at: int | None = None) -> str:
    stamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{stamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


async def deliver(
    http: httpx.AsyncClient, event: dict[str, Any] | str, *, header: str | None = None
) -> httpx.Response:
    """POST an event as Stripe does: signed correctly unless ``header`` says otherwise."""
    payload = event if isinstance(event, str) else json.dumps(event)
    signature = sign(payload) if header is None else header
    headers = {"content-type": "application/json"}
    if signature:
        headers["stripe-signature"] = signature
    return await http.post(WEBHOOK, content=payload.encode(), headers=headers)


async def accepted(http: httpx.AsyncClient, event: dict[str, Any]) -> dict[str, Any]:
    response = await deliver(http, event)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["received"] is True
    return body


def event_id() -> str:
    return f"evt_test_{next(_ids)}"


def checkout(
    *,
    client_id: str | None,
    offer_id: str | None,
    event: str | None = None,
    session: str = "cs_test_1",
    intent: str | None = "pi_test_1",
    account: str | None = ACCOUNT,
    paid: bool = True,
    type: str = "checkout.session.completed",
) -> dict[str, Any]:
    metadata = {
        k: v
        for k, v in (("punchcard_client_id", client_id), ("punchcard_offer_id", offer_id))
        if v is not None
    }
    body: dict[str, Any] = {
        "id": event or event_id(),
        "object": "event",
        "type": type,
        "livemode": False,
        "created": int(time.time()),
        "data": {
            "object": {
                "id": session,
                "object": "checkout.session",
                "mode": "payment",
                "payment_status": "paid" if paid else "unpaid",
                "payment_intent": intent,
                "amount_total": 50000,
                "currency": "eur",
                "metadata": metadata,
            }
        },
    }
    if account is not None:
        body["account"] = account
    return body


def refunded(
    *,
    event: str | None = None,
    intent: str = "pi_test_1",
    full: bool = True,
    account: str | None = ACCOUNT,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": event or event_id(),
        "object": "event",
        "type": "charge.refunded",
        "data": {
            "object": {
                "id": f"ch_{intent}",
                "object": "charge",
                "payment_intent": intent,
                "amount": 50000,
                "amount_refunded": 50000 if full else 10000,
                "refunded": full,
            }
        },
    }
    if account is not None:
        body["account"] = account
    return body


@dataclass(frozen=True)
class Shop:
    """Trainer A with Stripe account ACCOUNT bound, a client and a 10-session offer."""

    api: Api
    http: httpx.AsyncClient
    client: str
    offer: str


@pytest.fixture
async def shop(api: Api, app_client: httpx.AsyncClient) -> Shop:
    await api.data(CONNECT_STRIPE, account=ACCOUNT)
    cid = await client(api, "Ada")
    offer = await api.data(CREATE_OFFER, name="Ten pack", total=10, days=90, price=50000)
    return Shop(api, app_client, cid, offer["createOffer"]["id"])


def sale(shop: Shop, **fields: Any) -> dict[str, Any]:
    return checkout(client_id=shop.client, offer_id=shop.offer, **fields)


async def purchases_of(db: asyncpg.Connection, client_id: str) -> list[asyncpg.Record]:
    return list(
        await db.fetch(
            "SELECT * FROM purchases WHERE client_id = $1 ORDER BY id", row_id(client_id)
        )
    )


async def outcomes(db: asyncpg.Connection) -> dict[str, str]:
    return dict(await db.fetch("SELECT event_id, outcome FROM stripe_events"))


# --- the signature ---------------------------------------------------------------------------


def test_the_tests_sign_as_stripe_does() -> None:
    payload = json.dumps({"id": "evt_1", "type": "ping"})
    header = sign(payload)
    assert stripe.WebhookSignature.verify_header(payload, header, SECRET, tolerance=300)
    stamp = int(header.split(",")[0].removeprefix("t="))
    assert header == stripe.WebhookSignature.generate_signature_header(payload, SECRET, stamp)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(payload, sign(payload, secret="whsec_x"), SECRET)
    assert stripe_webhook.TOLERANCE_SECONDS == stripe.Webhook.DEFAULT_TOLERANCE == 300
    assert stripe_webhook.verify(payload, header, SECRET) is None
    assert "tolerance" in str(stripe_webhook.verify(payload, _stale(payload), SECRET))


def _stale(payload: str) -> str:
    return sign(payload, at=int(time.time()) - 301)  # older than the 300 s tolerance


def _tampered(payload: str) -> str:
    return sign(payload.replace("cs_test_1", "cs_test_2"))


BAD_SIGNATURES = {
    "wrong secret": lambda p: sign(p, secret="whsec_someone_else"),
    "stale timestamp": _stale,
    "signed another body": _tampered,
    "missing header": lambda p: "",
    "no v1 signature": lambda p: f"t={int(time.time())},v0=abc",
    "not a header": lambda p: "nonsense",
    "empty v1": lambda p: f"t={int(time.time())},v1=",
}


@pytest.mark.parametrize("variant", BAD_SIGNATURES)
async def test_a_bad_signature_is_refused_and_changes_nothing(
    shop: Shop, db: asyncpg.Connection, variant: str
) -> None:
    payload = json.dumps(sale(shop))
    async with unchanged(db):
        response = await deliver(shop.http, payload, header=BAD_SIGNATURES[variant](payload))
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "STRIPE_SIGNATURE_INVALID"
    assert await purchases_of(db, shop.client) == []
    # the control: the same event, signed correctly, sells
    response = await deliver(shop.http, payload)
    assert response.json()["outcome"] == "SOLD"


MALFORMED = {
    "not JSON": "{not json",
    "not an object": "[1, 2]",
    "no id": json.dumps({"type": "checkout.session.completed", "data": {"object": {}}}),
    "no data.object": json.dumps({"id": "evt_x", "type": "checkout.session.completed"}),
    "no session id": json.dumps(
        {"id": "evt_x", "type": "checkout.session.completed", "data": {"object": {"a": 1}}}
    ),
    "account not a string": json.dumps(
        {"id": "evt_x", "type": "charge.refunded", "account": 7, "data": {"object": {}}}
    ),
    "lone surrogate": '{"id": "evt_\\ud800", "type": "charge.refunded"}',
}


@pytest.mark.parametrize("variant", MALFORMED)
async def test_a_signed_but_malformed_body_is_refused(
    shop: Shop, db: asyncpg.Connection, variant: str
) -> None:
    async with unchanged(db):
        response = await deliver(shop.http, MALFORMED[variant])
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_a_body_that_is_not_utf8_is_refused(shop: Shop, db: asyncpg.Connection) -> None:
    async with unchanged(db):
        response = await shop.http.post(
            WEBHOOK, content=b'{"id": "\xff"}', headers={"stripe-signature": "t=1,v1=00"}
        )
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_a_body_over_the_limit_is_refused_unread(shop: Shop, db: asyncpg.Connection) -> None:
    event = sale(shop)
    event["padding"] = "x" * (512 * 1024)
    async with unchanged(db):
        response = await deliver(shop.http, event)  # correctly signed, but too large
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_without_a_secret_the_endpoint_is_unavailable(
    settings: Settings, db: asyncpg.Connection
) -> None:
    async with in_process(replace(settings, stripe_webhook_secret=None)) as (_, http):
        body = json.dumps(checkout(client_id="cli_1", offer_id="ofr_1"))
        async with unchanged(db):
            response = await deliver(http, body)
        assert response.status_code == 503
        assert response.json()["errors"][0]["extensions"]["code"] == "STRIPE_NOT_CONFIGURED"
        assert (await http.get(WEBHOOK)).status_code == 405


# --- selling, once -----------------------------------------------------------------------


async def test_a_paid_checkout_sells_once_when_sent_five_times_at_once(
    shop: Shop, db: asyncpg.Connection
) -> None:
    event = sale(shop)
    payload = json.dumps(event)
    responses = await asyncio.gather(*(deliver(shop.http, payload) for _ in range(5)))
    assert [r.status_code for r in responses] == [200] * 5
    answers = sorted(r.json()["outcome"] for r in responses)
    assert answers == ["DUPLICATE"] * 4 + ["SOLD"]
    (sold,) = await purchases_of(db, shop.client)
    assert (sold["sessions_total"], sold["sessions_used"], sold["status"]) == (10, 0, "ACTIVE")
    assert sold["offer_id"] == row_id(shop.offer)
    assert await db.fetchval(
        "SELECT $1::timestamptz - $2::timestamptz = interval '90 days'",
        sold["expires_at"],
        sold["created_at"],
    )
    assert await outcomes(db) == {event["id"]: "SOLD"}
    payment = await db.fetchrow("SELECT * FROM stripe_payments")
    assert (payment["payment_intent"], payment["checkout_session_id"]) == ("pi_test_1", "cs_test_1")
    assert payment["purchase_id"] == sold["id"]
    assert payment["sold_by_event"] == event["id"]
    # The trainer sees it: the package on the client, the event in stripeEvents.
    (seen,) = (await shop.api.data(STRIPE_EVENTS))["stripeEvents"]
    assert seen["outcome"] == "SOLD" and seen["paymentIntent"] == "pi_test_1"
    assert seen["purchase"]["id"] == f"pur_{sold['id']}"
    # A later redelivery still changes nothing.
    async with unchanged(db):
        assert (await accepted(shop.http, event))["outcome"] == "DUPLICATE"


async def test_the_same_checkout_under_two_event_ids_sells_once(
    shop: Shop, db: asyncpg.Connection
) -> None:
    first, second = sale(shop), sale(shop)
    answers = await asyncio.gather(accepted(shop.http, first), accepted(shop.http, second))
    assert sorted(a["outcome"] for a in answers) == ["DUPLICATE", "SOLD"]
    assert len(await purchases_of(db, shop.client)) == 1
    recorded = await outcomes(db)
    assert sorted(recorded.values()) == ["DUPLICATE", "SOLD"]
    assert recorded.keys() == {first["id"], second["id"]}


async def test_async_payments_sell_when_paid(shop: Shop, db: asyncpg.Connection) -> None:
    waiting = await accepted(shop.http, sale(shop, paid=False))
    assert waiting["outcome"] == "IGNORED" and "not paid" in waiting["reason"]
    assert await purchases_of(db, shop.client) == []
    paid = await accepted(shop.http, sale(shop, type="checkout.session.async_payment_succeeded"))
    assert paid["outcome"] == "SOLD"
    assert len(await purchases_of(db, shop.client)) == 1


async def test_a_checkout_without_a_payment_intent_sells_nothing(
    shop: Shop, db: asyncpg.Connection
) -> None:
    answer = await accepted(shop.http, sale(shop, intent=None))
    assert answer["outcome"] == "REJECTED" and "payment_intent" in answer["reason"]
    assert await purchases_of(db, shop.client) == []


async def test_a_payment_link_names_the_client_in_client_reference_id(
    shop: Shop, db: asyncpg.Connection
) -> None:
    event = checkout(client_id=None, offer_id=shop.offer)
    event["data"]["object"]["client_reference_id"] = shop.client
    assert (await accepted(shop.http, event))["outcome"] == "SOLD"
    assert len(await purchases_of(db, shop.client)) == 1


async def test_unknown_event_types_are_acknowledged_and_ignored(
    shop: Shop, db: asyncpg.Connection
) -> None:
    async with unchanged(db):
        for kind in ("payment_intent.succeeded", "customer.created", "invoice.paid"):
            event = {"id": event_id(), "type": kind, "data": {"object": {"id": "x"}}}
            answer = await accepted(shop.http, event)
            assert answer["outcome"] == "IGNORED"


# --- who sells: the binding and the metadata ---------------------------------------------


async def test_metadata_must_name_the_bound_trainers_client_and_offer(
    shop: Shop, other: Api, db: asyncpg.Connection
) -> None:
    their_client = await client(other, "Bea")
    theirs = await other.data(CREATE_OFFER, name="Bea's pack", total=5, days=30)
    their_offer = theirs["createOffer"]["id"]
    cases = {
        "another trainer's client": (their_client, shop.offer, "client"),
        "another trainer's offer": (shop.client, their_offer, "offer"),
        "both another trainer's": (their_client, their_offer, "offer"),
        "no client": (None, shop.offer, "missing"),
        "no offer": (shop.client, None, "missing"),
        "unknown client": ("cli_999999", shop.offer, "client"),
        "a purchase id as client": ("pur_1", shop.offer, "not a client id"),
        "malformed offer": (shop.client, "ofr_01", "not a offer id"),
    }
    for name, (cid, oid, why) in cases.items():
        before = await db.fetchval("SELECT count(*) FROM purchases")
        event = checkout(
            client_id=cid, offer_id=oid, intent=f"pi_{len(name)}_{row_id(shop.client)}"
        )
        answer = await accepted(shop.http, event)
        assert answer["outcome"] == "REJECTED", name
        assert why in answer["reason"], (name, answer)
        assert await db.fetchval("SELECT count(*) FROM purchases") == before, name
        assert await db.fetchval("SELECT count(*) FROM stripe_payments") == 0, name
    rejected = (await shop.api.data(STRIPE_EVENTS, first=50))["stripeEvents"]
    assert len(rejected) == len(cases)
    assert {e["outcome"] for e in rejected} == {"REJECTED"}
    assert (await other.data(STRIPE_EVENTS))["stripeEvents"] == []


async def test_an_unbound_account_sells_nothing_until_bound_and_resent(
    shop: Shop, db: asyncpg.Connection
) -> None:
    event = sale(shop, account="acct_Unbound")
    answer = await accepted(shop.http, event)
    assert answer["outcome"] == "REJECTED" and "acct_Unbound" in answer["reason"]
    assert await purchases_of(db, shop.client) == []
    row = await db.fetchrow("SELECT trainer_id, outcome FROM stripe_events")
    assert (row["trainer_id"], row["outcome"]) == (None, "REJECTED")
    await shop.api.data(CONNECT_STRIPE, account="acct_Unbound")
    # Resent from Stripe's dashboard: the same event id, processed this time.
    assert (await accepted(shop.http, event))["outcome"] == "SOLD"
    assert len(await purchases_of(db, shop.client)) == 1
    assert (await accepted(shop.http, event))["outcome"] == "DUPLICATE"


async def test_a_disconnected_account_sells_nothing(shop: Shop, db: asyncpg.Connection) -> None:
    await shop.api.data(DISCONNECT_STRIPE, account=ACCOUNT)
    assert (await accepted(shop.http, sale(shop)))["outcome"] == "REJECTED"
    assert await purchases_of(db, shop.client) == []


async def test_platform_events_go_to_the_configured_trainer(
    shop: Shop, settings: Settings, db: asyncpg.Connection
) -> None:
    unset = await accepted(shop.http, sale(shop, account=None))
    assert unset["outcome"] == "REJECTED" and "PUNCHCARD_STRIPE_PLATFORM_TRAINER" in unset["reason"]
    platform = replace(settings, stripe_platform_trainer="trainer-a")
    async with in_process(platform) as (_, http):
        answer = await accepted(http, sale(shop, account=None, intent="pi_platform"))
    assert answer["outcome"] == "SOLD"
    assert len(await purchases_of(db, shop.client)) == 1


# --- refunds ---------------------------------------------------------------------------------


async def test_a_refund_cancels_the_unused_sessions(
    shop: Shop, db: asyncpg.Connection, db_url: str
) -> None:
    sold = await accepted(shop.http, sale(shop))
    package = sold["purchaseId"]
    for _ in range(3):
        await shop.api.data(USE, id=package)
    listener = await asyncpg.connect(db_url)
    notices: asyncio.Queue[Notice] = asyncio.Queue()
    await listener.add_listener(CHANNEL, lambda *args: notices.put_nowait(Notice.parse(args[3])))
    try:
        refund = refunded()
        answer = await accepted(shop.http, refund)
        notice = await asyncio.wait_for(notices.get(), timeout=30)
    finally:
        await listener.close()
    assert (notice.kind, notice.row_id) == ("purchase", row_id(package))
    assert answer["outcome"] == "REFUNDED" and answer["purchaseId"] == package
    after = (await shop.api.data(PURCHASE, id=package))["purchase"]
    assert after["status"] == "CANCELLED"
    assert (after["sessionsUsed"], after["sessionsTotal"], after["revision"]) == (3, 10, 4)
    row = await db.fetchrow("SELECT * FROM stripe_events WHERE event_id = $1", refund["id"])
    assert (row["sessions_cancelled"], row["purchase_id"]) == (7, row_id(package))
    assert await shop.api.error(USE, id=package) == "PURCHASE_CANCELLED"
    ledger = await db.fetch(
        "SELECT kind, revision, actor, source FROM session_ledger WHERE purchase_id = $1"
        " ORDER BY id",
        row_id(package),
    )
    # the refund's cancel is the ledger's fourth entry (revisions have no gap)
    assert [(e["kind"], e["revision"]) for e in ledger] == [
        ("USE", 1),
        ("USE", 2),
        ("USE", 3),
        ("CANCEL", 4),
    ]
    assert (ledger[-1]["actor"], ledger[-1]["source"]) == (f"stripe:{refund['id']}", "INTEGRATION")
    # The outbox names Stripe's events as who sold and who cancelled, once each.
    changes = await db.fetch(
        "SELECT type, data->>'actor' AS actor, data->>'source' AS source FROM events"
        " WHERE type IN ('purchase.created', 'purchase.cancelled') ORDER BY id"
    )
    assert [tuple(c) for c in changes] == [
        ("purchase.created", f"stripe:{sold['event']}", "INTEGRATION"),
        ("purchase.cancelled", f"stripe:{refund['id']}", "INTEGRATION"),
    ]
    # Another event id for the same refund changes nothing more (but is recorded).
    before = await db.fetch("SELECT * FROM purchases ORDER BY id")
    again = await accepted(shop.http, refunded())
    assert again["outcome"] == "DUPLICATE" and refund["id"] in again["reason"]
    assert await db.fetch("SELECT * FROM purchases ORDER BY id") == before


async def test_a_refund_racing_use_session_keeps_counts_and_ledger_true(
    shop: Shop, db: asyncpg.Connection
) -> None:
    for round_ in range(3):
        intent = f"pi_race_{round_}"
        package = (await accepted(shop.http, sale(shop, intent=intent, session=f"cs_{round_}")))[
            "purchaseId"
        ]
        uses = [shop.api.post(USE, id=package) for _ in range(12)]
        results = await asyncio.gather(accepted(shop.http, refunded(intent=intent)), *uses)
        refund, used = results[0], results[1:]
        ok = [r for r in used if "errors" not in r]
        codes = {r["errors"][0]["extensions"]["code"] for r in used if "errors" in r}
        assert codes <= {"PURCHASE_CANCELLED", "NO_SESSIONS_REMAINING"}
        row = await db.fetchrow("SELECT * FROM purchases WHERE id = $1", row_id(package))
        ledger = await db.fetchval(
            "SELECT count(*) FROM session_ledger WHERE purchase_id = $1 AND kind = 'USE'",
            row["id"],
        )
        assert row["status"] == "CANCELLED"
        assert row["sessions_used"] == len(ok) == ledger
        assert row["revision"] == len(ok) + 1
        cancelled = await db.fetchval(
            "SELECT sessions_cancelled FROM stripe_events WHERE event_id = $1", refund["event"]
        )
        assert cancelled == 10 - len(ok)


async def test_a_refund_before_its_sale_cancels_the_package_when_it_arrives(
    shop: Shop, db: asyncpg.Connection
) -> None:
    refund = refunded()
    early = await accepted(shop.http, refund)
    assert early["outcome"] == "REFUND_PENDING"
    assert await purchases_of(db, shop.client) == []
    late = await accepted(shop.http, sale(shop))
    assert late["outcome"] == "SOLD" and "refunded before" in late["reason"]
    (package,) = await purchases_of(db, shop.client)
    assert (package["status"], package["sessions_used"], package["revision"]) == (
        "CANCELLED",
        0,
        1,
    )
    row = await db.fetchrow("SELECT * FROM stripe_events WHERE event_id = $1", refund["id"])
    assert (row["outcome"], row["purchase_id"], row["sessions_cancelled"]) == (
        "REFUNDED",
        package["id"],
        10,
    )
    async with unchanged(db):  # the refund's retry, and the sale's
        assert (await accepted(shop.http, refund))["outcome"] == "DUPLICATE"


async def test_a_sale_and_its_refund_at_once_end_cancelled_in_either_order(
    shop: Shop, db: asyncpg.Connection
) -> None:
    for round_ in range(4):
        intent = f"pi_both_{round_}"
        events = [sale(shop, intent=intent, session=f"cs_both_{round_}"), refunded(intent=intent)]
        if round_ % 2:
            events.reverse()
        answers = await asyncio.gather(*(accepted(shop.http, e) for e in events))
        assert {a["outcome"] for a in answers} <= {"SOLD", "REFUNDED", "REFUND_PENDING"}
        packages = await purchases_of(db, shop.client)
        assert len(packages) == round_ + 1
        assert [p["status"] for p in packages] == ["CANCELLED"] * (round_ + 1)
        refund = await db.fetchrow(
            "SELECT outcome, sessions_cancelled FROM stripe_events WHERE event_id = $1",
            events[0 if round_ % 2 else 1]["id"],
        )
        assert (refund["outcome"], refund["sessions_cancelled"]) == ("REFUNDED", 10)


async def test_a_partial_refund_leaves_the_package(shop: Shop, db: asyncpg.Connection) -> None:
    package = (await accepted(shop.http, sale(shop)))["purchaseId"]
    answer = await accepted(shop.http, refunded(full=False))
    assert answer["outcome"] == "IGNORED" and "partial" in answer["reason"]
    assert (await shop.api.data(PURCHASE, id=package))["purchase"]["status"] == "ACTIVE"
    assert (await accepted(shop.http, refunded()))["outcome"] == "REFUNDED"
    assert (await shop.api.data(PURCHASE, id=package))["purchase"]["status"] == "CANCELLED"


async def test_a_refund_from_another_trainers_account_cancels_nothing(
    shop: Shop, other: Api, db: asyncpg.Connection
) -> None:
    package = (await accepted(shop.http, sale(shop)))["purchaseId"]
    await other.data(CONNECT_STRIPE, account="acct_BeaStudio")
    answer = await accepted(shop.http, refunded(account="acct_BeaStudio"))
    assert answer["outcome"] == "REJECTED" and "another trainer" in answer["reason"]
    # ...and a checkout of B's for a payment of A's sells nothing either
    their_sale = sale(shop, account="acct_BeaStudio", session="cs_other")
    assert (await accepted(shop.http, their_sale))["outcome"] == "REJECTED"
    assert (await shop.api.data(PURCHASE, id=package))["purchase"]["status"] == "ACTIVE"


LIVE_PURCHASE = """
subscription($id: ID!) {
  purchaseUpdated(purchaseId: $id) { revision snapshot purchase { status sessionsUsed } }
}"""


async def test_open_tabs_see_the_refund_through_a_real_server(db_url: str, tmp_path: Path) -> None:
    """Two ``punchcard serve`` processes: Stripe posts to both at once, a tab watches one."""
    # No polling to rescue a missing NOTIFY: the refund must wake the other process.
    env = serve_env(
        db_url, PUNCHCARD_STRIPE_WEBHOOK_SECRET=SECRET, PUNCHCARD_LIVE_POLL_SECONDS="600"
    )
    bearer = token("trainer-a")
    with servers(env, tmp_path, 2) as (a, b):
        async with http_client(a, bearer) as stripe_side, http_client(b, bearer) as tab_side:
            await tab_side.data(CONNECT_STRIPE, account=ACCOUNT)
            cid = (await tab_side.data(CREATE_CLIENT, name="Ada"))["createClient"]["id"]
            offer = await tab_side.data(CREATE_OFFER, name="Ten", total=10, days=90)
            event = checkout(client_id=cid, offer_id=offer["createOffer"]["id"])
            # Stripe retrying at once, through both processes: one sale.
            sides = [stripe_side.http, tab_side.http] * 3
            answers = await asyncio.gather(*(accepted(side, event) for side in sides))
            assert sorted(a["outcome"] for a in answers) == ["DUPLICATE"] * 5 + ["SOLD"]
            (sold,) = {a["purchaseId"] for a in answers if "purchaseId" in a}
            async with socket(b, bearer) as tab:
                await tab.subscribe("p", LIVE_PURCHASE, id=sold)
                first = (await tab.data("p"))["purchaseUpdated"]
                assert (first["revision"], first["purchase"]["status"]) == (0, "ACTIVE")
                await stripe_side.data(USE, id=sold)  # the tab is live: it sees this first
                used = (await tab.data("p"))["purchaseUpdated"]
                assert (used["revision"], used["purchase"]["sessionsUsed"]) == (1, 1)
                assert (await accepted(stripe_side.http, refunded()))["outcome"] == "REFUNDED"
                update = (await tab.data("p"))["purchaseUpdated"]
                assert (update["revision"], update["snapshot"]) == (2, False)
                assert update["purchase"] == {"status": "CANCELLED", "sessionsUsed": 1}


# --- connectStripeAccount / disconnectStripeAccount ----------------------------------------


async def test_connect_is_idempotent_and_listed(api: Api) -> None:
    first = (await api.data(CONNECT_STRIPE, account=ACCOUNT))["connectStripeAccount"]
    again = (await api.data(CONNECT_STRIPE, account=ACCOUNT))["connectStripeAccount"]
    assert first == again and first["accountId"] == ACCOUNT
    assert (await api.data(STRIPE_ACCOUNTS))["stripeAccounts"] == [first]


async def test_an_account_bound_to_another_trainer_cannot_be_taken(
    api: Api, other: Api, db: asyncpg.Connection
) -> None:
    await api.data(CONNECT_STRIPE, account=ACCOUNT)
    await other.data(STRIPE_ACCOUNTS)  # B signs in (provisioned) before the snapshot
    async with unchanged(db):
        assert await refused(other, CONNECT_STRIPE, account=ACCOUNT) == "STRIPE_ACCOUNT_TAKEN"
        assert await refused(other, DISCONNECT_STRIPE, account=ACCOUNT) == "NOT_FOUND"
    assert (await other.data(STRIPE_ACCOUNTS))["stripeAccounts"] == []


async def test_two_trainers_binding_one_account_at_once_one_wins(
    api: Api, other: Api, db: asyncpg.Connection
) -> None:
    for n in range(5):
        account = f"acct_Race{n}"
        calls = [caller.post(CONNECT_STRIPE, account=account) for caller in (api, other) * 4]
        bodies = await asyncio.gather(*calls)
        won = {i % 2 for i, b in enumerate(bodies) if "errors" not in b}
        assert len(won) == 1, bodies
        codes = {b["errors"][0]["extensions"]["code"] for b in bodies if "errors" in b}
        assert codes == {"STRIPE_ACCOUNT_TAKEN"}
        assert (
            await db.fetchval("SELECT count(*) FROM stripe_accounts WHERE account_id = $1", account)
            == 1
        )


@pytest.mark.parametrize(
    "account", ["", "acct_", "acct_ab-c", "ACCT_1", "acct_1 ", " acct_1", "ch_123", "a" * 5000]
)
async def test_a_malformed_account_id_is_bad_input(
    api: Api, db: asyncpg.Connection, account: str
) -> None:
    await api.data(STRIPE_ACCOUNTS)  # signed in (provisioned) before the snapshot
    async with unchanged(db):
        assert await refused(api, CONNECT_STRIPE, account=account) == "BAD_USER_INPUT"
        assert await refused(api, DISCONNECT_STRIPE, account=account) == "BAD_USER_INPUT"


async def test_disconnect_needs_a_bound_account(api: Api, db: asyncpg.Connection) -> None:
    await api.data(STRIPE_ACCOUNTS)  # signed in (provisioned) before the snapshot
    async with unchanged(db):
        assert await refused(api, DISCONNECT_STRIPE, account="acct_Nobody") == "NOT_FOUND"
    await api.data(CONNECT_STRIPE, account=ACCOUNT)
    gone = (await api.data(DISCONNECT_STRIPE, account=ACCOUNT))["disconnectStripeAccount"]
    assert gone == {"accountId": ACCOUNT}
    assert (await api.data(STRIPE_ACCOUNTS))["stripeAccounts"] == []


async def test_read_only_keys_and_no_token_are_refused(api: Api, db: asyncpg.Connection) -> None:
    await api.data(CONNECT_STRIPE, account=ACCOUNT)
    created = (await api.data(CREATE_KEY, name="reader", scopes=["READ"]))["createApiKey"]
    reader = api.with_token(created["secret"])
    async with unchanged(db):
        for caller, code in ((reader, "FORBIDDEN"), (api.with_token(None), "UNAUTHENTICATED")):
            assert await refused(caller, CONNECT_STRIPE, account="acct_New") == code
            assert await refused(caller, DISCONNECT_STRIPE, account=ACCOUNT) == code
    assert (await reader.data(STRIPE_ACCOUNTS))["stripeAccounts"][0]["accountId"] == ACCOUNT


async def test_stripe_events_first_is_bounded(api: Api) -> None:
    for first in (0, -1, 201):
        assert await api.error(STRIPE_EVENTS, first=first) == "BAD_USER_INPUT"
