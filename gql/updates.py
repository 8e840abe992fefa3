"""The messages of the live subscriptions (``live/streams.py`` builds them)."""

from __future__ import annotations

import strawberry

from punchcard.gql.context import Info
from punchcard.gql.types import Booking, Client, LedgerEntry, Purchase, load_client


@strawberry.type(description="A package changed: one message per revision, in order.")
class PurchaseUpdate:
    revision: int = strawberry.field(description="The revision this message brings you to.")
    snapshot: bool = strawberry.field(
        description="The current state (first message, or your position was unknown); "
        "otherwise one change."
    )
    purchase: Purchase = strawberry.field(description="The package as of `revision`.")
    entry: LedgerEntry | None = strawberry.field(
        description="The ledger row that made `revision` (null in a snapshot)."
    )


@strawberry.type(description="A client's packages changed.")
class ClientUpdate:
    cursor: str = strawberry.field(description="Pass as `after` to resume after this message.")
    snapshot: bool = strawberry.field(
        description="`purchases` is all of the client's packages (replace what you have); "
        "otherwise only those that changed (update them by id)."
    )
    purchases: list[Purchase]
    entries: list[LedgerEntry] = strawberry.field(
        description="Ledger rows written since the previous message, per package oldest first."
    )
    client_id: strawberry.Private[int]

    @strawberry.field
    async def client(self, info: Info) -> Client:
        return await load_client(info, self.client_id)  # the trainer's, checked on subscribe


@strawberry.type(description="The calendar changed.")
class BookingsChange:
    cursor: str = strawberry.field(description="Pass as `after` to resume after this message.")
    snapshot: bool = strawberry.field(
        description="`bookings` is the whole range (replace what you have); otherwise only "
        "the bookings that changed (update them by id)."
    )
    bookings: list[Booking]
