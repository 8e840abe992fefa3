"""The GraphQL types of payments: a trainer's Stripe accounts and what their events did."""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum

import strawberry

from punchcard.db.errors import bad_input
from punchcard.db.types import Row
from punchcard.gql.context import Info
from punchcard.gql.types import Purchase

# Stripe's account ids: acct_ and letters or digits.
_ACCOUNT = re.compile(r"acct_[A-Za-z0-9]{1,100}")


def check_account_id(value: str) -> str:
    """A Stripe account id as sent, or BAD_USER_INPUT."""
    if not _ACCOUNT.fullmatch(value):
        raise bad_input(f"{value[:40]!r} is not a Stripe account id (acct_...)")
    return value


@strawberry.type(description="A Stripe account whose payments sell this trainer's packages.")
class StripeAccount:
    account_id: str
    connected_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> StripeAccount:
        return cls(account_id=row["account_id"], connected_at=row["created_at"])


@strawberry.enum(description="What punchcard did with a verified Stripe event.")
class StripeEventOutcome(Enum):
    RECEIVED = "RECEIVED"
    SOLD = "SOLD"
    REFUNDED = "REFUNDED"
    REFUND_PENDING = "REFUND_PENDING"
    DUPLICATE = "DUPLICATE"
    IGNORED = "IGNORED"
    REJECTED = "REJECTED"


@strawberry.type(description="A Stripe event POST /webhooks/stripe processed, and why.")
class StripeEvent:
    event_id: str
    type: str
    account_id: str | None
    outcome: StripeEventOutcome
    reason: str | None
    payment_intent: str | None
    sessions_cancelled: int | None = strawberry.field(
        description="A refund: the package's unused sessions it cancelled."
    )
    received_at: datetime
    purchase_id: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: Row) -> StripeEvent:
        return cls(
            event_id=row["event_id"],
            type=row["type"],
            account_id=row["account_id"],
            outcome=StripeEventOutcome(row["outcome"]),
            reason=row["reason"],
            payment_intent=row["payment_intent"],
            sessions_cancelled=row["sessions_cancelled"],
            received_at=row["received_at"],
            purchase_id=row["purchase_id"],
        )

    @strawberry.field(description="The package it sold or cancelled.")
    async def purchase(self, info: Info) -> Purchase | None:
        if self.purchase_id is None:
            return None
        row = await info.context.loaders.purchase.load(self.purchase_id)
        return Purchase.from_row(row) if row is not None else None
