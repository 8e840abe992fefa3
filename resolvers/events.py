"""The event feed: ``events(after, first, types)``, in sequence order."""

from __future__ import annotations

import strawberry

from punchcard.db import events
from punchcard.db.errors import bad_input
from punchcard.gql.context import Info
from punchcard.gql.types import Event, EventConnection, PageInfo, parse_cursor

MAX_PAGE = 500


@strawberry.type
class Query:
    @strawberry.field(
        description="The trainer's events after the cursor `after` (an Event's cursor or a "
        "page's endCursor), oldest first: resume from the last cursor seen and nothing is "
        "missed or repeated. `types` filters by event type."
    )
    async def events(
        self,
        info: Info,
        after: str | None = None,
        first: int = 100,
        types: list[str] | None = None,
    ) -> EventConnection:
        trainer_id = info.context.trainer_id
        if not 1 <= first <= MAX_PAGE:
            raise bad_input(f"first must be between 1 and {MAX_PAGE}")
        cursor = parse_cursor(after)
        if types is not None:
            unknown = [t for t in types if t not in events.TYPES]
            if unknown:
                raise bad_input(f"unknown event type {unknown[0][:60]!r}")
        # Number what has committed since the sweeper last did, so the feed is current
        # whether or not a sweeper is running.
        await events.sequence(info.context.pool, trainer_id=trainer_id)
        rows = await events.page(
            info.context.pool, trainer_id=trainer_id, after=cursor, types=types, limit=first + 1
        )
        nodes = [Event.from_row(row) for row in rows[:first]]
        return EventConnection(
            nodes=nodes,
            page_info=PageInfo(
                has_next_page=len(rows) > first, end_cursor=nodes[-1].cursor if nodes else after
            ),
        )
