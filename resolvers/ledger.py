"""The audit trail: ``ledger(purchaseId, first, after)``."""

from __future__ import annotations

import strawberry

from punchcard.gql.context import Info
from punchcard.gql.ids import Kind, lookup
from punchcard.gql.types import LedgerConnection, ledger_connection


@strawberry.type
class Query:
    @strawberry.field(description="Ledger rows oldest first; all packages when no purchaseId.")
    async def ledger(
        self,
        info: Info,
        purchase_id: strawberry.ID | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> LedgerConnection:
        pid = None
        if purchase_id is not None:
            # An id of another kind names no purchase: an empty ledger (row ids start at 1).
            pid = lookup(Kind.PURCHASE, purchase_id) or 0
        return await ledger_connection(info, purchase_id=pid, first=first, after=after)
