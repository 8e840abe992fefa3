"""``POST /webhooks/stripe``: Stripe's events, verified with ``stripe``'s own verifier.

The endpoint never calls Stripe. It checks ``Stripe-Signature`` against
``PUNCHCARD_STRIPE_WEBHOOK_SECRET`` (HMAC-SHA256 of ``t.body``, at most 300 s old, the
``stripe`` package's default tolerance), reads the event, and hands what it understood
to ``db.stripe.process``, which does it once per event id. Answers:

- 200 with ``{"received": true, "outcome": ..., "reason": ...}`` for every verified
  event, also the ones that sold nothing (REJECTED: metadata naming no client or offer
  of the bound trainer, an unbound account; IGNORED: an unpaid checkout, a partial
  refund, an event type punchcard does not act on; DUPLICATE: a redelivery). Stripe then
  stops retrying; the trainer sees why in ``stripeEvents``.
- 400 (``STRIPE_SIGNATURE_INVALID`` or ``BAD_REQUEST``): a missing, wrong or stale
  signature, a body that is not UTF-8 JSON, an event without the fields it needs; 413
  over 512 KiB, 408 when the body does not arrive in ``PUNCHCARD_BODY_TIMEOUT_SECONDS``.
  Nothing is written.
- 503: no secret configured (``STRIPE_NOT_CONFIGURED``), or the database not answering
  (``SERVICE_UNAVAILABLE``): Stripe retries for three days, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from punchcard.db import stripe as stripe_db
from punchcard.db.errors import DomainError
from punchcard.db.pool import UNAVAILABLE
from punchcard.gql.context import Services
from punchcard.gql.errors import refusal_body
from punchcard.gql.ids import Kind, encode, lookup
from punchcard.gql.payloads import PayloadError, loads

MAX_BODY = 512 * 1024  # Stripe's events are a few kilobytes
# stripe.Webhook.DEFAULT_TOLERANCE (tests/test_stripe.py checks they agree). The stripe
# package is imported on the first event, not with the app: it brings its HTTP client
# along (about 0.3 s of start-up), which punchcard never uses.
TOLERANCE_SECONDS = 300
SALE_TYPES = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})
REFUND_TYPES = frozenset({"charge.refunded"})
CLIENT_KEY, OFFER_KEY = "punchcard_client_id", "punchcard_offer_id"
log = logging.getLogger("punchcard.stripe")


class Malformed(ValueError):
    """A verified event without the fields punchcard needs (400)."""


def _refusal(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(refusal_body(message, code), status_code=status)


async def stripe_webhook(request: Request) -> Response:
    settings = request.app.state.settings
    secret = settings.stripe_webhook_secret
    if not secret:
        return _refusal(
            503,
            "STRIPE_NOT_CONFIGURED",
            "Stripe payments are not set up here: set PUNCHCARD_STRIPE_WEBHOOK_SECRET",
        )
    body = bytearray()
    try:
        async with asyncio.timeout(settings.body_timeout_seconds):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY:
                    return _refusal(413, "PAYLOAD_TOO_LARGE", f"larger than {MAX_BODY} bytes")
    except TimeoutError:
        return _refusal(408, "REQUEST_TIMEOUT", "the body did not arrive in time")
    except ClientDisconnect:
        return _refusal(400, "BAD_REQUEST", "the body did not arrive")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return _refusal(400, "BAD_REQUEST", "the body is not UTF-8")
    problem = verify(text, request.headers.get("stripe-signature"), secret)
    if problem is not None:
        return _refusal(400, "STRIPE_SIGNATURE_INVALID", problem)
    try:
        event = parse_event(loads(text))
    except (PayloadError, Malformed) as error:
        return _refusal(400, "BAD_REQUEST", f"the event {error}")
    if event is None:
        return JSONResponse({"received": True, "outcome": "IGNORED", "reason": "not acted on"})
    services: Services = request.app.state.services
    try:
        outcome = await stripe_db.process(
            services.internal,
            event,
            platform_subject=settings.stripe_platform_trainer,
        )
    except UNAVAILABLE as error:
        return _refusal(
            503, "SERVICE_UNAVAILABLE", f"the database is not answering ({type(error).__name__})"
        )
    log.info("stripe event %s (%s): %s %s", event.id, event.type, outcome.outcome, outcome.reason)
    answer: dict[str, Any] = {
        "received": True,
        "event": event.id,
        "outcome": outcome.outcome,
        "reason": outcome.reason,
    }
    if outcome.purchase_id is not None:
        answer["purchaseId"] = encode(Kind.PURCHASE, outcome.purchase_id)
    return JSONResponse(answer)


def verify(payload: str, header: str | None, secret: str) -> str | None:
    """Why ``header`` does not sign ``payload`` with ``secret`` now, or None: the stripe
    package's ``WebhookSignature.verify_header``, with its default tolerance."""
    import stripe  # on first use, see TOLERANCE_SECONDS

    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError as error:
        return str(error)
    return None


def parse_event(data: object) -> stripe_db.Event | None:
    """The event punchcard acts on, or None for a type it ignores."""
    if not isinstance(data, dict):
        raise Malformed("is not a JSON object")
    event_id, kind = _text(data, "id"), _text(data, "type")
    account = data.get("account")
    if account is not None and not isinstance(account, str):
        raise Malformed("has an account that is not a string")
    if kind not in SALE_TYPES | REFUND_TYPES:
        return None
    inner = data.get("data")
    thing = inner.get("object") if isinstance(inner, dict) else None
    if not isinstance(thing, dict):
        raise Malformed("has no data.object")
    action = _sale(thing) if kind in SALE_TYPES else _refund(thing)
    return stripe_db.Event(id=event_id, type=kind, account=account, action=action)


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= 255:
        raise Malformed(f"has no {key}")
    return value


def _optional_text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if isinstance(value, dict):  # an expanded object
        value = value.get("id")
    return value if isinstance(value, str) and 0 < len(value) <= 255 else None


def _sale(session: dict[str, Any]) -> stripe_db.Sale:
    metadata = session.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    # The client: the metadata's, else client_reference_id (a Payment Link's URL can set it).
    client_ref = metadata.get(CLIENT_KEY) or session.get("client_reference_id")
    offer_ref = metadata.get(OFFER_KEY)
    client_id, offer_id, problem = None, None, None
    try:
        client_id = _row_id(Kind.CLIENT, client_ref, f"metadata.{CLIENT_KEY}")
        offer_id = _row_id(Kind.OFFER, offer_ref, f"metadata.{OFFER_KEY}")
    except Malformed as error:
        problem = str(error)
    return stripe_db.Sale(
        checkout_session=_text(session, "id"),
        payment_intent=_optional_text(session, "payment_intent"),
        paid=session.get("payment_status") == "paid",
        client_id=client_id,
        offer_id=offer_id,
        client_ref=str(client_ref)[:40],
        offer_ref=str(offer_ref)[:40],
        problem=problem,
    )


def _row_id(kind: Kind, value: object, name: str) -> int:
    """A global id from the metadata as a row id; what names no row of ``kind`` is a
    problem to record (the event is still acknowledged)."""
    if not isinstance(value, str) or not value:
        raise Malformed(f"{name} is missing")
    try:
        row_id = lookup(kind, value)
    except DomainError:  # BAD_USER_INPUT: a malformed id
        row_id = None
    if row_id is None:
        raise Malformed(f"{name} {value[:40]!r} is not a {kind.name.lower()} id")
    return row_id


def _refund(charge: dict[str, Any]) -> stripe_db.Refund:
    amount, refunded = charge.get("amount"), charge.get("amount_refunded")
    return stripe_db.Refund(
        charge=_text(charge, "id"),
        payment_intent=_optional_text(charge, "payment_intent"),
        full=charge.get("refunded") is True,
        amount=amount if isinstance(amount, int) else 0,
        amount_refunded=refunded if isinstance(refunded, int) else 0,
    )
