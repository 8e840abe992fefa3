"""Stripe: the account binding, and what a verified Stripe event does, once per event id.

Every statement that touches ``stripe_accounts``, ``stripe_payments`` and ``stripe_events``
is here (migration 0005). The webhook (``server/stripe_webhook.py``) verifies and parses
an event, then calls ``process`` with it; ``process`` runs one transaction as
``punchcard_worker``, because the event names no trainer until its account's binding is
read, and every statement after that is bounded by the bound trainer's id:

1. The event id is claimed in ``stripe_events`` (its primary key): a redelivery, however
   many arrive at once, waits for the first to commit and then changes nothing. Only an
   event recorded as REJECTED may be claimed again (the trainer fixed the binding and
   resent it from Stripe's dashboard).
2. A sale or a refund takes the payment intent's lock (``LOCK_PAYMENT``), then its row in
   ``stripe_payments``: the sale only if no other event sold that payment (the same
   checkout under another event id sells nothing), the refund only if none refunded it
   yet. Whichever arrives first, the second waits on that lock and sees what the first
   did: a refund with no sale yet is kept there (REFUND_PENDING) and the sale that
   arrives later cancels the new package.
3. The package is sold with ``db.purchases.sell_package`` (its NOTIFY included), and a
   refund cancels it through ``db.lifecycle.cancel_in``, the statement ``cancelPackage``
   runs: a CANCEL ledger entry (actor ``stripe:<event id>``, source INTEGRATION) gives
   its holds back, its CONFIRMED bookings become unpackaged, the revision moves with the
   entry and the package is notified. ``useSession`` refuses a cancelled package in its
   own guard, so a session counted at the same moment is either counted before the cancel
   (and stays, with its ledger row) or refused with PURCHASE_CANCELLED: counts and ledger
   agree. The event's row keeps how many unused sessions were cancelled. A package already
   cancelled, or expired, is left as it is (the outcome's reason says so).
4. The event's outcome and reason are written last, in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from punchcard.db import lifecycle, purchases
from punchcard.db.errors import Code, DomainError, not_found
from punchcard.db.types import Acquirer, Connection, Executor, Row

# --- the binding --------------------------------------------------------------------------

ACCOUNT_COLUMNS = "account_id, trainer_id, created_at"

CONNECT = f"""
WITH bound AS (
    INSERT INTO stripe_accounts (account_id, trainer_id) VALUES ($1, $2)
    ON CONFLICT (account_id) DO NOTHING
    RETURNING {ACCOUNT_COLUMNS}
)
SELECT {ACCOUNT_COLUMNS} FROM bound
UNION ALL
SELECT {ACCOUNT_COLUMNS} FROM stripe_accounts WHERE account_id = $1 AND trainer_id = $2
"""
OWN_ACCOUNT = f"""
SELECT {ACCOUNT_COLUMNS} FROM stripe_accounts WHERE account_id = $1 AND trainer_id = $2
"""
DISCONNECT = f"""
DELETE FROM stripe_accounts WHERE account_id = $1 AND trainer_id = $2 RETURNING {ACCOUNT_COLUMNS}
"""
ACCOUNTS_OF = f"""
SELECT {ACCOUNT_COLUMNS} FROM stripe_accounts WHERE trainer_id = $1 ORDER BY created_at, account_id
"""
TRAINER_OF_ACCOUNT = "SELECT trainer_id FROM stripe_accounts WHERE account_id = $1"
TRAINER_BY_SUBJECT = "SELECT id FROM trainers WHERE subject = $1"


async def connect_account(db: Executor, *, trainer_id: int, account_id: str) -> Row:
    """Bind ``account_id`` to the trainer (again: the same row); another trainer's account
    is STRIPE_ACCOUNT_TAKEN. Two trainers binding one account at once: one wins."""
    row = await db.fetchrow(CONNECT, account_id, trainer_id)
    if row is None:  # taken, or bound by a concurrent call of the same trainer: look again
        row = await db.fetchrow(OWN_ACCOUNT, account_id, trainer_id)
    if row is None:
        raise DomainError(
            Code.STRIPE_ACCOUNT_TAKEN, f"Stripe account {account_id} is bound to another trainer"
        )
    return row


async def disconnect_account(db: Executor, *, trainer_id: int, account_id: str) -> Row:
    row = await db.fetchrow(DISCONNECT, account_id, trainer_id)
    if row is None:
        raise not_found("Stripe account")
    return row


async def accounts_of(db: Executor, *, trainer_id: int) -> list[Row]:
    return list(await db.fetch(ACCOUNTS_OF, trainer_id))


# --- what a trainer sees of the events ----------------------------------------------------

EVENT_COLUMNS = (
    "event_id, trainer_id, account_id, type, outcome, reason, payment_intent, purchase_id, "
    "sessions_cancelled, received_at"
)
EVENTS_OF = f"""
SELECT {EVENT_COLUMNS} FROM stripe_events
 WHERE trainer_id = $1
 ORDER BY received_at DESC, event_id DESC
 LIMIT $2
"""


async def events_of(db: Executor, *, trainer_id: int, limit: int) -> list[Row]:
    """The trainer's processed Stripe events, newest first."""
    return list(await db.fetch(EVENTS_OF, trainer_id, limit))


# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sale:
    """A paid checkout session; ``problem`` says why it cannot sell (bad metadata)."""

    checkout_session: str
    payment_intent: str | None
    paid: bool
    client_id: int | None
    offer_id: int | None
    client_ref: str  # the ids as the metadata spelled them, for the reasons
    offer_ref: str
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Refund:
    charge: str
    payment_intent: str | None
    full: bool  # the whole charge was refunded (partial refunds change nothing)
    amount: int
    amount_refunded: int


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    account: str | None  # Connect: the connected account; None: the platform's own
    action: Sale | Refund


@dataclass(frozen=True, slots=True)
class Outcome:
    outcome: str  # one of the stripe_events outcomes (DUPLICATE: this id was done before)
    reason: str | None = None
    purchase_id: int | None = None
    sessions_cancelled: int | None = None


CLAIM_EVENT = """
INSERT INTO stripe_events AS e (event_id, trainer_id, account_id, type, outcome)
VALUES ($1, $2, $3, $4, 'RECEIVED')
ON CONFLICT (event_id) DO UPDATE
   SET trainer_id = excluded.trainer_id, account_id = excluded.account_id,
       outcome = 'RECEIVED', reason = NULL, received_at = now()
 WHERE e.outcome = 'REJECTED'
RETURNING event_id
"""
RECORD_OUTCOME = """
UPDATE stripe_events
   SET outcome = $2, reason = $3, payment_intent = $4, purchase_id = $5, sessions_cancelled = $6
 WHERE event_id = $1
"""
OFFER_OF_TRAINER = """
SELECT o.sessions_total,
       EXISTS (SELECT FROM clients AS c WHERE c.id = $2 AND c.trainer_id = $3) AS client_found
  FROM (SELECT 1) AS one
  LEFT JOIN offers AS o ON o.id = $1 AND o.trainer_id = $3
"""
# Two events of one payment at once (a checkout under two event ids, a sale and its
# refund) take turns here before claiming its row: ON CONFLICT (payment_intent) settles a
# race on that key only, and a concurrent insert may instead trip the checkout session's
# unique index first, an error rather than a wait. Held to the end of the transaction.
LOCK_PAYMENT = "SELECT pg_advisory_xact_lock(hashtextextended('stripe_payment:' || $1, 0))"
CLAIM_SALE = """
INSERT INTO stripe_payments AS p (payment_intent, trainer_id, checkout_session_id, sold_by_event)
VALUES ($1, $2, $3, $4)
ON CONFLICT (payment_intent) DO UPDATE
   SET checkout_session_id = excluded.checkout_session_id,
       sold_by_event = excluded.sold_by_event, updated_at = now()
 WHERE p.sold_by_event IS NULL AND p.trainer_id = excluded.trainer_id
RETURNING refunded_at, refunded_by_event
"""
CLAIM_REFUND = """
INSERT INTO stripe_payments AS p (payment_intent, trainer_id, refunded_by_event, refunded_at)
VALUES ($1, $2, $3, now())
ON CONFLICT (payment_intent) DO UPDATE
   SET refunded_by_event = excluded.refunded_by_event, refunded_at = now(), updated_at = now()
 WHERE p.refunded_at IS NULL AND p.trainer_id = excluded.trainer_id
RETURNING purchase_id
"""
PAYMENT = """
SELECT trainer_id, sold_by_event, refunded_by_event FROM stripe_payments WHERE payment_intent = $1
"""
LINK_PURCHASE = """
UPDATE stripe_payments SET purchase_id = $3, updated_at = now()
 WHERE payment_intent = $1 AND trainer_id = $2
"""
REFUND_APPLIED = """
UPDATE stripe_events SET outcome = 'REFUNDED', purchase_id = $3, sessions_cancelled = $4
 WHERE event_id = $1 AND trainer_id = $2 AND outcome = 'REFUND_PENDING'
"""


def _actor(event_id: str) -> str:
    """Who a Stripe event's change is recorded as (events' ``actor``, the package's)."""
    return f"stripe:{event_id}"


async def trainer_for(
    db: Executor, *, account: str | None, platform_subject: str | None
) -> int | None:
    """The trainer an event's account is bound to; a platform event (no account) goes to
    the trainer ``PUNCHCARD_STRIPE_PLATFORM_TRAINER`` names, if any."""
    if account is not None:
        trainer: int | None = await db.fetchval(TRAINER_OF_ACCOUNT, account)
        return trainer
    if platform_subject is None:
        return None
    platform: int | None = await db.fetchval(TRAINER_BY_SUBJECT, platform_subject)
    return platform


async def process(pool: Acquirer, event: Event, *, platform_subject: str | None) -> Outcome:
    """Do what ``event`` asks, once per event id, in one transaction (see above)."""
    async with pool.acquire() as conn, conn.transaction():
        trainer_id = await trainer_for(
            conn, account=event.account, platform_subject=platform_subject
        )
        claimed = await conn.fetchval(CLAIM_EVENT, event.id, trainer_id, event.account, event.type)
        if claimed is None:
            return Outcome("DUPLICATE", f"event {event.id} was processed before")
        action = event.action
        if trainer_id is None:
            outcome = Outcome("REJECTED", _unbound(event.account))
        elif isinstance(action, Sale):
            outcome = await _sell(conn, event.id, trainer_id, action)
        else:
            outcome = await _refund(conn, event.id, trainer_id, action)
        await conn.execute(
            RECORD_OUTCOME,
            event.id,
            outcome.outcome,
            outcome.reason,
            action.payment_intent,
            outcome.purchase_id,
            outcome.sessions_cancelled,
        )
        return outcome


def _unbound(account: str | None) -> str:
    if account is None:
        return (
            "a platform-account event, and PUNCHCARD_STRIPE_PLATFORM_TRAINER names no trainer "
            "who has signed in"
        )
    return f"Stripe account {account} is bound to no trainer (connectStripeAccount)"


def _elsewhere(payment_intent: str) -> str:
    return f"payment {payment_intent} belongs to another trainer's Stripe account"


async def _sell(conn: Connection, event_id: str, trainer_id: int, sale: Sale) -> Outcome:
    if not sale.paid:
        return Outcome("IGNORED", "not paid yet: sold on checkout.session.async_payment_succeeded")
    if sale.problem is not None:
        return Outcome("REJECTED", sale.problem)
    if sale.payment_intent is None:
        return Outcome("REJECTED", "no payment_intent: only one-time payments sell packages")
    assert sale.client_id is not None and sale.offer_id is not None
    found = await conn.fetchrow(OFFER_OF_TRAINER, sale.offer_id, sale.client_id, trainer_id)
    assert found is not None
    if found["sessions_total"] is None:
        return Outcome("REJECTED", f"offer {sale.offer_ref} is not one of this trainer's offers")
    if not found["client_found"]:
        return Outcome("REJECTED", f"client {sale.client_ref} is not one of this trainer's clients")
    await conn.execute(LOCK_PAYMENT, sale.payment_intent)
    claim = await conn.fetchrow(
        CLAIM_SALE, sale.payment_intent, trainer_id, sale.checkout_session, event_id
    )
    if claim is None:
        payment = await conn.fetchrow(PAYMENT, sale.payment_intent)
        assert payment is not None  # the conflict that refused the claim is this row
        if payment["trainer_id"] != trainer_id:
            return Outcome("REJECTED", _elsewhere(sale.payment_intent))
        by = payment["sold_by_event"]
        return Outcome("DUPLICATE", f"payment {sale.payment_intent} was already sold by event {by}")
    sold = await purchases.sell_package(
        conn,
        trainer_id=trainer_id,
        client_id=sale.client_id,
        sessions_total=found["sessions_total"],
        expires_at=None,  # from the offer's valid_days
        offer_id=sale.offer_id,
        actor=_actor(event_id),
        source="INTEGRATION",
    )
    await conn.execute(LINK_PURCHASE, sale.payment_intent, trainer_id, sold["id"])
    if claim["refunded_at"] is None:
        return Outcome("SOLD", purchase_id=sold["id"])
    unused = await _cancel(conn, trainer_id, sold["id"], claim["refunded_by_event"])
    await conn.execute(REFUND_APPLIED, claim["refunded_by_event"], trainer_id, sold["id"], unused)
    return Outcome(
        "SOLD",
        f"refunded before this sale arrived (event {claim['refunded_by_event']}): cancelled",
        purchase_id=sold["id"],
        sessions_cancelled=unused,
    )


async def _refund(conn: Connection, event_id: str, trainer_id: int, refund: Refund) -> Outcome:
    if refund.payment_intent is None:
        return Outcome("IGNORED", f"charge {refund.charge} has no payment intent")
    if not refund.full:
        return Outcome(
            "IGNORED",
            f"partial refund ({refund.amount_refunded} of {refund.amount}): the package is "
            "unchanged; a refund of the whole charge cancels its unused sessions",
        )
    await conn.execute(LOCK_PAYMENT, refund.payment_intent)
    claim = await conn.fetchrow(CLAIM_REFUND, refund.payment_intent, trainer_id, event_id)
    if claim is None:
        payment = await conn.fetchrow(PAYMENT, refund.payment_intent)
        assert payment is not None  # the conflict that refused the claim is this row
        if payment["trainer_id"] != trainer_id:
            return Outcome("REJECTED", _elsewhere(refund.payment_intent))
        by = payment["refunded_by_event"]
        return Outcome(
            "DUPLICATE", f"payment {refund.payment_intent} was already refunded by event {by}"
        )
    purchase_id = claim["purchase_id"]
    if purchase_id is None:
        return Outcome(
            "REFUND_PENDING",
            f"no sale of payment {refund.payment_intent} yet: its package is cancelled when "
            "the sale arrives",
        )
    try:
        unused = await _cancel(conn, trainer_id, purchase_id, event_id)
    except DomainError as refused:
        if refused.code is Code.PURCHASE_CANCELLED:
            reason = "the package was already cancelled"
        elif refused.code is Code.PURCHASE_EXPIRED:
            reason = "the package had expired: nothing was left to cancel"
        else:  # pragma: no cover - cancel_in refuses a package for these reasons only
            raise
        return Outcome("REFUNDED", reason, purchase_id=purchase_id)
    return Outcome("REFUNDED", purchase_id=purchase_id, sessions_cancelled=unused)


async def _cancel(conn: Connection, trainer_id: int, purchase_id: int, event_id: str) -> int:
    """Cancel a refunded package (``cancelPackage``'s statement); its unused sessions."""
    cancelled = await lifecycle.cancel_in(
        conn,
        trainer_id=trainer_id,
        purchase_id=purchase_id,
        reason=f"refunded in Stripe (event {event_id})",
        move_to=None,
        actor=_actor(event_id),
        source="INTEGRATION",
    )
    forfeited: int = cancelled["forfeited"]
    return forfeited
