"""Live updates: ``purchaseUpdated``, ``clientUpdated`` and ``bookingsChanged``.

Each resolver checks its arguments and returns a :class:`~punchcard.live.source.LiveSource`
over a stream of ``live/streams.py``, which says what the messages are and when they come;
the hub (``live/hub.py``) serves it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated

import strawberry

from punchcard.db.changes import Snapshot
from punchcard.db.checks import moment
from punchcard.db.errors import bad_input
from punchcard.gql.context import Info
from punchcard.gql.ids import Kind, decode
from punchcard.gql.updates import BookingsChange, ClientUpdate, PurchaseUpdate
from punchcard.live.source import LiveSource
from punchcard.live.streams import BookingsStream, ClientStream, PurchaseStream

MAX_RANGE = timedelta(days=366)


def _cursor(after: str | None) -> Snapshot | None:
    if after is None:
        return None
    try:
        return Snapshot.parse(after)
    except ValueError:
        raise bad_input("`after` is not a cursor from this stream") from None


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="A package's count, live: the current state, then one message per "
        "revision. With `afterRevision`, exactly the revisions after it first. A tab that "
        "cannot keep up skips to the newest revision (see the revision numbers)."
    )
    def purchase_updated(
        self, info: Info, purchase_id: strawberry.ID, after_revision: int | None = None
    ) -> AsyncIterator[PurchaseUpdate]:
        if after_revision is not None and after_revision < 0:
            raise bad_input("afterRevision must not be negative")
        return LiveSource(
            PurchaseStream(
                info.context.trainer_id, decode(Kind.PURCHASE, purchase_id), after_revision
            )
        )

    @strawberry.subscription(
        description="A client's packages, live: all of them, then what changed. With "
        "`after` (a message's cursor), exactly what changed since that message first."
    )
    def client_updated(
        self, info: Info, client_id: strawberry.ID, after: str | None = None
    ) -> AsyncIterator[ClientUpdate]:
        return LiveSource(
            ClientStream(info.context.trainer_id, decode(Kind.CLIENT, client_id), _cursor(after))
        )

    @strawberry.subscription(
        description="The calendar, live: the bookings overlapping [from, to), then the ones "
        "that changed. With `after` (a message's cursor), exactly what changed since first."
    )
    def bookings_changed(
        self,
        info: Info,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        after: str | None = None,
    ) -> AsyncIterator[BookingsChange]:
        start, end = moment("from", from_), moment("to", to)
        if end <= start:
            raise bad_input("`to` must be after `from`")
        if end - start > MAX_RANGE:
            raise bad_input(f"a live calendar spans at most {MAX_RANGE.days} days")
        return LiveSource(BookingsStream(info.context.trainer_id, start, end, _cursor(after)))
