"""The audit trail: ``ledger(purchaseId, first, after)``."""

from __future__ import annotations

import strawberry

from db import purchases
from db.errors import bad_input
from gql.context import Info
from gql.ids import Kind, decode
from gql.types import LedgerConnection, LedgerEntry, PageInfo

MAX_PAGE = 500


def parse_cursor(after: str | None) -> int:
    if after is None:
        return 0
    if not after.isdigit() or len(after) > 18:
        raise bad_input("malformed cursor")
    return int(after)


async def ledger_connection(
    info: Info, *, purchase_id: int | None, first: int, after: str | None
) -> LedgerConnection:
    if not 1 <= first <= MAX_PAGE:
        raise bad_input(f"first must be between 1 and {MAX_PAGE}")
    rows = await purchases.ledger_page(
        info.context.pool,
        trainer_id=info.context.trainer_id,
        purchase_id=purchase_id,
        after=parse_cursor(after),
        limit=first + 1,
    )
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
        pid = decode(Kind.PURCHASE, purchase_id) if purchase_id is not None else None
        return await ledger_connection(info, purchase_id=pid, first=first, after=after)
