"""The types of packages as of a moment: ``SessionsAsOf`` and the ``PackageReport``
(rows from ``db.reports``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from punchcard.db.reports import Totals
from punchcard.db.types import Row
from punchcard.gql.context import Info
from punchcard.gql.types import Client, Offer, Purchase, PurchaseStatus, load_client, load_offer


@strawberry.type(description="A package's counts as of a moment, replayed from its ledger.")
class SessionsAsOf:
    at: datetime
    revision: int = strawberry.field(
        description="The revision of the last ledger entry at or before `at` (0: as sold)."
    )
    sessions_total: int
    sessions_used: int
    sessions_held: int
    sessions_remaining: int = strawberry.field(description="sessionsTotal - sessionsUsed.")
    sessions_available: int = strawberry.field(
        description="sessionsTotal - sessionsUsed - sessionsHeld."
    )
    status: PurchaseStatus = strawberry.field(
        description="As of `at`, from the ledger's CANCEL/FREEZE/UNFREEZE/EXPIRE/EXTEND "
        "entries and the expiry then."
    )
    expires_at: datetime | None = strawberry.field(description="The expiry as it stood at `at`.")
    purchase_id: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: Row, at: datetime) -> SessionsAsOf:
        return cls(**_counts(row, at))

    @strawberry.field(description="The package as it is now.")
    async def purchase(self, info: Info) -> Purchase:
        row = await info.context.loaders.purchase.load(self.purchase_id)
        assert row is not None  # the same trainer's: the report found it
        return Purchase.from_row(row)


@strawberry.type(description="One package in the package report, as of the report's `asOf`.")
class PackageReportRow(SessionsAsOf):
    sold_at: datetime
    expiring_within_30_days: int = strawberry.field(
        description="Sessions remaining if this ACTIVE package expires within 30 days of "
        "`asOf`, else 0."
    )
    unit_price_cents: int | None = strawberry.field(
        description="The offer's priceCents / its sessionsTotal, rounded half up (null: no "
        "offer or no price)."
    )
    unused_value_cents: int | None = strawberry.field(
        description="sessionsRemaining x the offer's priceCents / its sessionsTotal, rounded "
        "half up; 0 once CANCELLED or EXPIRED; null without a price."
    )
    client_id: strawberry.Private[int]
    offer_id: strawberry.Private[int | None]

    @classmethod
    def of(cls, row: Row, at: datetime) -> PackageReportRow:
        return cls(
            **_counts(row, at),
            sold_at=row["created_at"],
            expiring_within_30_days=row["expiring_within_30_days"],
            unit_price_cents=row["unit_price_cents"],
            unused_value_cents=row["unused_value_cents"],
            client_id=row["client_id"],
            offer_id=row["offer_id"],
        )

    @strawberry.field
    async def client(self, info: Info) -> Client:
        return await load_client(info, self.client_id)

    @strawberry.field(description="The offer it was sold from, if any.")
    async def offer(self, info: Info) -> Offer | None:
        return await load_offer(info, self.offer_id)


def _counts(row: Row, at: datetime) -> dict[str, Any]:
    """The fields of ``SessionsAsOf`` from a ``db.reports`` row."""
    return {
        "at": at,
        "revision": row["revision"],
        "sessions_total": row["sessions_total"],
        "sessions_used": row["sessions_used"],
        "sessions_held": row["sessions_held"],
        "sessions_remaining": row["sessions_remaining"],
        "sessions_available": row["sessions_available"],
        "status": PurchaseStatus(row["status"]),
        "expires_at": row["expires_at"],
        "purchase_id": row["id"],
    }


@strawberry.type(description="The package report's sums over its rows.")
class PackageReportTotals:
    packages: int
    sessions_total: int
    sessions_used: int
    sessions_held: int
    sessions_remaining: int
    sessions_available: int
    expiring_within_30_days: int
    unused_value_cents: int = strawberry.field(
        description="Over the packages with a price (the others' value is unknown)."
    )

    @classmethod
    def of(cls, totals: Totals) -> PackageReportTotals:
        return cls(
            packages=totals.packages,
            sessions_total=totals.sessions_total,
            sessions_used=totals.sessions_used,
            sessions_held=totals.sessions_held,
            sessions_remaining=totals.sessions_remaining,
            sessions_available=totals.sessions_available,
            expiring_within_30_days=totals.expiring_within_30_days,
            unused_value_cents=totals.unused_value_cents,
        )


@strawberry.type(description="Every package sold by `asOf`: what was sold, used, held and owed.")
class PackageReport:
    as_of: datetime
    packages: list[PackageReportRow] = strawberry.field(description="By client name, then sale.")
    totals: PackageReportTotals
