"""The audit trail: ``ledger(purchaseId, first, after)``."""

from __future__ import annotations

import strawberry

from db import purchases
from db.errors import bad_input
from gql.context import Info
from gql.ids import Kind, lookup
from gql.types import LedgerConnection, LedgerEntry, PageInfo

MAX_PAGE = 500


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
    if not 1 <= first <= MAX_PAGE:
        raise bad_input(f"first must be between 1 and {MAX_PAGE}")
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
