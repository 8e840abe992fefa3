"""The GraphQL object types. Plain fields come straight from a row; nested ones load
through the request's DataLoaders."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON

from punchcard.db import purchases
from punchcard.db.errors import bad_input
from punchcard.gql.context import Info
from punchcard.gql.ids import Kind, encode
from punchcard.internals import PREFETCHED

Row = Mapping[str, Any]


@strawberry.enum(description="Which surface made a change.")
class Source(Enum):
    MANUAL = "MANUAL"
    CALENDAR = "CALENDAR"
    SWEEPER = "SWEEPER"
    INTEGRATION = "INTEGRATION"


SOURCE = {member.value: member for member in Source}


@strawberry.enum(description="What a ledger entry did to its package.")
class LedgerKind(Enum):
    USE = strawberry.enum_value("USE", description="A session used (+1 used).")
    RELEASE = strawberry.enum_value("RELEASE", description="A session given back (-1 used).")
    HOLD = strawberry.enum_value("HOLD", description="A CONFIRMED booking took a hold.")
    UNHOLD = strawberry.enum_value("UNHOLD", description="A booking gave its hold back.")
    CANCEL = "CANCEL"
    FREEZE = "FREEZE"
    UNFREEZE = "UNFREEZE"
    EXTEND = "EXTEND"
    EXPIRE = "EXPIRE"
    TRANSFER_OUT = strawberry.enum_value(
        "TRANSFER_OUT", description="Sessions left for another package (-total)."
    )
    TRANSFER_IN = strawberry.enum_value(
        "TRANSFER_IN", description="Sessions arrived from another package (+total)."
    )


@strawberry.enum
class BookingStatus(Enum):
    CONFIRMED = "CONFIRMED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    NO_SHOW = "NO_SHOW"


# A row's text to its member, by one dict lookup (calling the Enum class costs several).
BOOKING_STATUS = {member.value: member for member in BookingStatus}


@strawberry.enum(description="Derived: CANCELLED, then EXPIRED, then USED_UP, else ACTIVE.")
class PurchaseStatus(Enum):
    ACTIVE = "ACTIVE"
    USED_UP = "USED_UP"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    FROZEN = "FROZEN"


@strawberry.enum
class ApiKeyScope(Enum):
    READ = "READ"
    WRITE = "WRITE"


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type(description="The signed-in trainer.")
class Trainer:
    id: strawberry.ID
    name: str
    email: str | None
    timezone: str = strawberry.field(description="IANA zone: reminders follow its wall clock.")
    reminder_hours_before: int = strawberry.field(
        description="Reminders go out this many hours before a booking (0: none)."
    )
    late_cancel_hours: int | None = strawberry.field(
        description="A cancel closer than this to the start is late (null: no policy)."
    )

    @classmethod
    def from_row(cls, row: Row) -> Trainer:
        return cls(
            id=strawberry.ID(encode(Kind.TRAINER, row["id"])),
            name=row["name"],
            email=row["email"],
            timezone=row["timezone"],
            reminder_hours_before=row["reminder_hours_before"],
            late_cancel_hours=row["late_cancel_hours"],
        )


@strawberry.type
class Client:
    id: strawberry.ID
    name: str
    email: str | None
    phone: str | None
    timezone: str | None
    created_at: datetime
    row_id: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: Row) -> Client:
        return cls(
            id=strawberry.ID(encode(Kind.CLIENT, row["id"])),
            name=row["name"],
            email=row["email"],
            phone=row["phone"],
            timezone=row["timezone"],
            created_at=row["created_at"],
            row_id=row["id"],
        )

    @strawberry.field(description="The client's packages, soonest to expire first.")
    async def purchases(self, info: Info) -> list[Purchase]:
        rows = await info.context.loaders.purchases_of_client.load(self.row_id)
        return [Purchase.from_row(row) for row in rows]


@strawberry.type(description="A package template: what a trainer sells.")
class Offer:
    id: strawberry.ID
    name: str
    sessions_total: int
    valid_days: int | None
    price_cents: int | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> Offer:
        return cls(
            id=strawberry.ID(encode(Kind.OFFER, row["id"])),
            name=row["name"],
            sessions_total=row["sessions_total"],
            valid_days=row["valid_days"],
            price_cents=row["price_cents"],
            created_at=row["created_at"],
        )


@strawberry.type(description="A package of sessions sold to a client.")
class Purchase:
    id: strawberry.ID
    sessions_total: int
    sessions_used: int
    sessions_remaining: int = strawberry.field(description="sessionsTotal - sessionsUsed.")
    sessions_held: int = strawberry.field(
        description="Sessions held by this package's CONFIRMED bookings (each holds one)."
    )
    sessions_available: int = strawberry.field(
        description="sessionsTotal - sessionsUsed - sessionsHeld: what a new booking or a "
        "useSession can still take (below 0 only when bookings were overbooked)."
    )
    expires_at: datetime | None
    status: PurchaseStatus
    frozen_until: datetime | None = strawberry.field(
        description="While FROZEN: when it thaws by itself (null: until unfrozen)."
    )
    sessions_expired: int | None = strawberry.field(
        description="Once EXPIRED: the sessions it expired with, unused."
    )
    cancel_reason: str | None = strawberry.field(description="Why it was cancelled.")
    revision: int = strawberry.field(
        description="0 when sold, +1 with every change; strictly increasing."
    )
    created_at: datetime
    row_id: strawberry.Private[int]
    client_id: strawberry.Private[int]
    offer_id: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: Row) -> Purchase:
        return cls(
            id=strawberry.ID(encode(Kind.PURCHASE, row["id"])),
            sessions_total=row["sessions_total"],
            sessions_used=row["sessions_used"],
            sessions_remaining=row["sessions_total"] - row["sessions_used"],
            sessions_held=row["sessions_held"],
            sessions_available=row["sessions_total"] - row["sessions_used"] - row["sessions_held"],
            expires_at=row["expires_at"],
            status=_purchase_status(row),
            frozen_until=row["frozen_until"],
            sessions_expired=row["sessions_expired"],
            cancel_reason=row["cancel_reason"],
            revision=row["revision"],
            created_at=row["created_at"],
            row_id=row["id"],
            client_id=row["client_id"],
            offer_id=row["offer_id"],
        )

    @strawberry.field
    async def client(self, info: Info) -> Client:
        return await load_client(info, self.client_id)

    @strawberry.field(description="The offer it was sold from, if any.")
    async def offer(self, info: Info) -> Offer | None:
        return await load_offer(info, self.offer_id)

    @strawberry.field(description="This package's ledger, oldest first.")
    async def ledger(
        self, info: Info, first: int = 50, after: str | None = None
    ) -> LedgerConnection:
        return await ledger_connection(info, purchase_id=self.row_id, first=first, after=after)


def _purchase_status(row: Row) -> PurchaseStatus:
    if row["status"] == "CANCELLED":
        return PurchaseStatus.CANCELLED
    if row["status"] == "FROZEN":
        return PurchaseStatus.FROZEN
    if row["status"] == "EXPIRED":
        return PurchaseStatus.EXPIRED
    if row["expires_at"] is not None and row["expires_at"] <= datetime.now(UTC):
        return PurchaseStatus.EXPIRED
    if row["sessions_used"] >= row["sessions_total"]:
        return PurchaseStatus.USED_UP
    return PurchaseStatus.ACTIVE


@strawberry.type(description="A session in the calendar.")
class Booking:
    id: strawberry.ID
    starts_at: datetime
    ends_at: datetime
    status: BookingStatus
    charged: bool = strawberry.field(description="A session of its package was counted for it.")
    unpaid: bool = strawberry.field(
        description="It should have been charged but its package had nothing left."
    )
    late_cancel: bool
    overbooked: bool = strawberry.field(
        description="Booked with allowOverbook on a package that had no session available."
    )
    assigned_reason: str | None = strawberry.field(
        description="Why autoAssignPackage chose its package (null when named or unpackaged)."
    )
    completed_by: Source | None
    completed_at: datetime | None
    client_id: strawberry.Private[int]
    purchase_id: strawberry.Private[int | None]
    # Objects a list resolver loaded ahead for the whole list, one per distinct row and
    # shared by the bookings that name it (see resolvers/bookings.py); without them the
    # fields below load through the DataLoaders.
    prefetched_client: strawberry.Private[Client | None] = None
    prefetched_purchase: strawberry.Private[Purchase | None] = None

    @classmethod
    def from_row(
        cls, row: Row, *, client: Client | None = None, purchase: Purchase | None = None
    ) -> Booking:
        return cls(
            id=strawberry.ID(encode(Kind.BOOKING, row["id"])),
            starts_at=row["starts_at"],
            ends_at=row["ends_at"],
            status=BOOKING_STATUS[row["status"]],
            charged=row["charged"],
            unpaid=row["unpaid"],
            late_cancel=row["late_cancel"],
            overbooked=row["overbooked"],
            assigned_reason=row["assigned_reason"],
            completed_by=SOURCE[row["completed_by"]] if row["completed_by"] else None,
            completed_at=row["completed_at"],
            client_id=row["client_id"],
            purchase_id=row["purchase_id"],
            prefetched_client=client,
            prefetched_purchase=purchase,
        )

    # Plain (not async) resolvers: a prefetched row is answered at once, without the
    # task and future graphql-core spends on every awaited field (a calendar month has
    # hundreds); otherwise they hand graphql-core the DataLoader's awaitable. The planner
    # reads the prefetched attribute itself (``metadata``) and calls these only without it.
    @strawberry.field(graphql_type=Client, metadata={PREFETCHED: "prefetched_client"})
    def client(self, info: Info) -> Client | Awaitable[Client]:
        if self.prefetched_client is not None:
            return self.prefetched_client
        return load_client(info, self.client_id)

    @strawberry.field(graphql_type=Purchase | None, metadata={PREFETCHED: "prefetched_purchase"})
    def purchase(self, info: Info) -> Purchase | Awaitable[Purchase | None] | None:
        if self.purchase_id is None:
            return None
        if self.prefetched_purchase is not None:
            return self.prefetched_purchase
        return _load_purchase(info, self.purchase_id)


async def load_client(info: Info, client_id: int) -> Client:
    """A client of the caller's, through the request's DataLoader."""
    row = await info.context.loaders.client.load(client_id)
    assert row is not None  # same trainer, foreign key
    return Client.from_row(row)


async def load_offer(info: Info, offer_id: int | None) -> Offer | None:
    """The offer a package was sold from (None: none, or since deleted)."""
    if offer_id is None:
        return None
    row = await info.context.loaders.offer.load(offer_id)
    return Offer.from_row(row) if row is not None else None


async def _load_purchase(info: Info, purchase_id: int) -> Purchase | None:
    row = await info.context.loaders.purchase.load(purchase_id)
    return Purchase.from_row(row) if row is not None else None


@strawberry.type(description="One change of a package's count: the audit trail.")
class LedgerEntry:
    id: strawberry.ID
    cursor: str
    kind: LedgerKind
    delta: int = strawberry.field(description="The change of sessionsUsed (-1, 0 or +1).")
    held_delta: int = strawberry.field(description="The change of sessionsHeld.")
    total_delta: int = strawberry.field(description="The change of sessionsTotal (transfers).")
    sessions_used_after: int
    sessions_held_after: int
    sessions_total_after: int
    revision: int
    detail: JSON | None = strawberry.field(
        description="What a lifecycle entry changed (expiry before and after, frozen until, "
        "sessions forfeited or expired, bookings moved)."
    )
    source: Source
    actor: str
    reason: str | None
    idempotency_key: str | None
    created_at: datetime
    purchase_id: strawberry.Private[int]
    booking_id: strawberry.Private[int | None]
    related_purchase_id: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: Row) -> LedgerEntry:
        detail = row["detail"]
        return cls(
            id=strawberry.ID(encode(Kind.LEDGER, row["id"])),
            cursor=str(row["id"]),
            kind=LedgerKind(row["kind"]),
            delta=row["delta"],
            held_delta=row["held_delta"],
            total_delta=row["total_delta"],
            sessions_used_after=row["sessions_used_after"],
            sessions_held_after=row["sessions_held_after"],
            sessions_total_after=row["sessions_total_after"],
            revision=row["revision"],
            detail=json.loads(detail) if isinstance(detail, str) else detail,
            source=SOURCE[row["source"]],
            actor=row["actor"],
            reason=row["reason"],
            idempotency_key=row["idempotency_key"],
            created_at=row["created_at"],
            purchase_id=row["purchase_id"],
            booking_id=row["booking_id"],
            related_purchase_id=row["related_purchase_id"],
        )

    @strawberry.field
    async def purchase(self, info: Info) -> Purchase:
        row = await info.context.loaders.purchase.load(self.purchase_id)
        assert row is not None
        return Purchase.from_row(row)

    @strawberry.field(
        description="A transfer's other package; for a cancel, the package its bookings "
        "moved to (null otherwise)."
    )
    async def related_purchase(self, info: Info) -> Purchase | None:
        if self.related_purchase_id is None:
            return None
        row = await info.context.loaders.purchase.load(self.related_purchase_id)
        return Purchase.from_row(row) if row is not None else None

    @strawberry.field
    async def booking(self, info: Info) -> Booking | None:
        if self.booking_id is None:
            return None
        row = await info.context.loaders.booking.load(self.booking_id)
        return Booking.from_row(row) if row is not None else None


@strawberry.type
class LedgerConnection:
    nodes: list[LedgerEntry]
    page_info: PageInfo


@strawberry.type
class ClientConnection:
    nodes: list[Client]
    page_info: PageInfo


@strawberry.type
class ApiKey:
    id: strawberry.ID
    name: str
    prefix: str = strawberry.field(description="The secret's first characters, to tell keys apart.")
    scopes: list[ApiKeyScope]
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> ApiKey:
        return cls(
            id=strawberry.ID(encode(Kind.API_KEY, row["id"])),
            name=row["name"],
            prefix=row["prefix"],
            scopes=[ApiKeyScope(s) for s in row["scopes"]],
            revoked_at=row["revoked_at"],
            last_used_at=row["last_used_at"],
            created_at=row["created_at"],
        )


@strawberry.type
class CreatedApiKey:
    secret: str = strawberry.field(description="Shown once: store it now.")
    api_key: ApiKey


@strawberry.type(description="Where a trainer's events are POSTed (Standard Webhooks).")
class WebhookEndpoint:
    id: strawberry.ID
    url: str
    description: str | None
    event_types: list[str] = strawberry.field(description="Empty: every event type.")
    enabled: bool
    disabled_reason: str | None = strawberry.field(
        description="Why punchcard disabled it (every retry failed, or failing for days)."
    )
    failing_since: datetime | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> WebhookEndpoint:
        return cls(
            id=strawberry.ID(encode(Kind.WEBHOOK_ENDPOINT, row["id"])),
            url=row["url"],
            description=row["description"],
            event_types=list(row["event_types"]),
            enabled=row["enabled"],
            disabled_reason=row["disabled_reason"],
            failing_since=row["failing_since"],
            created_at=row["created_at"],
        )


@strawberry.type
class CreatedWebhookEndpoint:
    secret: str = strawberry.field(
        description="The signing secret (whsec_...), shown only here and by rotateWebhookSecret."
    )
    endpoint: WebhookEndpoint


@strawberry.type(description="One change, as integrators receive it (the outbox).")
class Event:
    id: strawberry.ID = strawberry.field(description="Also the webhook-id header.")
    sequence: int = strawberry.field(
        description="Per trainer, only grows, no gaps: the order to apply events in."
    )
    cursor: str
    type: str
    created_at: datetime
    data: JSON

    @classmethod
    def from_row(cls, row: Row) -> Event:
        return cls(
            id=strawberry.ID(encode(Kind.EVENT, row["id"])),
            sequence=row["seq"],
            cursor=str(row["seq"]),
            type=row["type"],
            created_at=row["created_at"],
            data=json.loads(row["data"]),
        )


@strawberry.type
class EventConnection:
    nodes: list[Event]
    page_info: PageInfo


@strawberry.enum
class DeliveryStatus(Enum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


@strawberry.type(description="One POST of an event to an endpoint.")
class WebhookAttempt:
    id: strawberry.ID
    attempt: int
    status_code: int | None
    latency_ms: int
    error: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> WebhookAttempt:
        return cls(
            id=strawberry.ID(encode(Kind.WEBHOOK_ATTEMPT, row["id"])),
            attempt=row["attempt"],
            status_code=row["status_code"],
            latency_ms=row["latency_ms"],
            error=row["error"],
            created_at=row["created_at"],
        )


@strawberry.type(description="An event to deliver to one endpoint, and its attempts so far.")
class WebhookDelivery:
    id: strawberry.ID
    cursor: str
    event_id: strawberry.ID
    event_type: str
    status: DeliveryStatus
    attempt: int = strawberry.field(description="Attempts made so far.")
    next_attempt_at: datetime | None = strawberry.field(description="While PENDING.")
    delivered_at: datetime | None
    status_code: int | None = strawberry.field(description="Of the last attempt.")
    error: str | None = strawberry.field(description="Of the last attempt.")
    created_at: datetime
    attempts: list[WebhookAttempt]

    @classmethod
    def from_row(cls, row: Row, attempts: list[WebhookAttempt]) -> WebhookDelivery:
        return cls(
            id=strawberry.ID(encode(Kind.WEBHOOK_DELIVERY, row["id"])),
            cursor=str(row["id"]),
            event_id=strawberry.ID(encode(Kind.EVENT, row["event_id"])),
            event_type=row["event_type"],
            status=DeliveryStatus(row["status"]),
            attempt=row["attempts"],
            next_attempt_at=row["next_attempt_at"] if row["status"] == "PENDING" else None,
            delivered_at=row["delivered_at"],
            status_code=row["last_status_code"],
            error=row["last_error"],
            created_at=row["created_at"],
            attempts=attempts,
        )


@strawberry.type
class WebhookDeliveryConnection:
    nodes: list[WebhookDelivery]
    page_info: PageInfo


LEDGER_MAX_PAGE = 500


def parse_cursor(after: str | None) -> int:
    if after is None:
        return 0
    if not (after.isascii() and after.isdigit()) or len(after) > 18:
        raise bad_input("malformed cursor")
    return int(after)


async def ledger_connection(
    info: Info, *, purchase_id: int | None, first: int, after: str | None
) -> LedgerConnection:
    """A page of one purchase's ledger (batched with its siblings through a DataLoader),
    or of the trainer's whole ledger when ``purchase_id`` is None."""
    if not 1 <= first <= LEDGER_MAX_PAGE:
        raise bad_input(f"first must be between 1 and {LEDGER_MAX_PAGE}")
    cursor = parse_cursor(after)
    if purchase_id is None:
        rows = await purchases.ledger_page(
            info.context.pool,
            trainer_id=info.context.trainer_id,
            purchase_id=None,
            after=cursor,
            limit=first + 1,
        )
    else:
        rows = await info.context.loaders.ledger_page.load((purchase_id, cursor, first + 1))
    nodes = [LedgerEntry.from_row(row) for row in rows[:first]]
    return LedgerConnection(
        nodes=nodes,
        page_info=PageInfo(
            has_next_page=len(rows) > first, end_cursor=nodes[-1].cursor if nodes else after
        ),
    )
