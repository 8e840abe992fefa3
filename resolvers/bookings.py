"""The calendar: ``bookings``, ``createBooking`` and the charging state transitions."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.types.nodes import SelectedField

from punchcard.db import bookings
from punchcard.db.idempotency import check_key, fingerprint
from punchcard.db.types import Row
from punchcard.gql.context import Info
from punchcard.gql.ids import Kind, decode, lookup
from punchcard.gql.loaders import prefetch
from punchcard.gql.types import Booking, BookingStatus, Client, Purchase

MAX_CALENDAR = 2000


@strawberry.input
class CreateBookingInput:
    client_id: strawberry.ID
    starts_at: datetime
    ends_at: datetime
    purchase_id: strawberry.ID | None = None
    auto_assign_package: bool | None = None
    allow_overbook: bool | None = strawberry.field(
        default=None,
        description="Book on the named package even when none of its sessions is available: "
        "it holds one anyway and the booking is flagged overbooked.",
    )


@strawberry.type
class Query:
    @strawberry.field(description="The calendar: bookings overlapping [from, to).")
    async def bookings(
        self,
        info: Info,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        status: list[BookingStatus] | None = None,
    ) -> list[Booking]:
        rows = await bookings.calendar(
            info.context.pool,
            trainer_id=info.context.trainer_id,
            start=from_,
            end=to,
            statuses=[s.value for s in status] if status else None,
            limit=MAX_CALENDAR,
        )
        return await with_related(info, rows)

    @strawberry.field
    async def booking(self, info: Info, id: strawberry.ID) -> Booking | None:
        loader = info.context.loaders.booking
        row_id = lookup(Kind.BOOKING, id)
        row = await loader.load(row_id) if row_id is not None else None
        return Booking.from_row(row) if row is not None else None


async def with_related(info: Info, rows: Sequence[Row]) -> list[Booking]:
    """Bookings with the clients and packages the query asks for loaded ahead, one
    statement each (``loaders.prefetch``), so the nested fields resolve without awaiting."""
    wanted = _subfields(info)
    loaders = info.context.loaders
    # Each distinct id once: a month names each client and package many times.
    client_ids = list(dict.fromkeys(r["client_id"] for r in rows)) if "client" in wanted else []
    purchase_ids = (
        list(dict.fromkeys(r["purchase_id"] for r in rows if r["purchase_id"]))
        if "purchase" in wanted
        else []
    )
    client_rows, purchase_rows = await asyncio.gather(
        prefetch(loaders.client, client_ids), prefetch(loaders.purchase, purchase_ids)
    )
    # One object per distinct client and package, shared by every booking naming it (a
    # month names each client several times; building one per booking repeated the work).
    client_of = {i: Client.from_row(c) for i, c in client_rows.items()}
    purchase_of = {i: Purchase.from_row(p) for i, p in purchase_rows.items()}
    return [
        Booking.from_row(
            row,
            client=client_of.get(row["client_id"]),
            purchase=purchase_of.get(row["purchase_id"]),
        )
        for row in rows
    ]


def _subfields(info: Info) -> set[str]:
    """Names selected under this field; a fragment could select anything: all."""
    names: set[str] = set()
    for selection in info.selected_fields[0].selections:
        if not isinstance(selection, SelectedField):
            return {"client", "purchase"}
        names.add(selection.name)
    return names


async def _move(
    info: Info,
    booking_id: strawberry.ID,
    *,
    allowed_from: tuple[str, ...],
    to_status: str,
    late_cancel: bool | None = False,
    key: str | None = None,
    operation: str,
) -> Booking:
    writer = info.context.writer()
    row = await bookings.transition(
        info.context.pool,
        trainer_id=writer.trainer_id,
        booking_id=decode(Kind.BOOKING, booking_id),
        allowed_from=allowed_from,
        to_status=to_status,
        late_cancel=late_cancel,
        source=writer.calendar_source,
        actor=writer.actor,
        key=check_key(key),
        request=fingerprint(operation, id=booking_id),
    )
    return Booking.from_row(row)


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Book a session holding one session of the named package or "
        "(autoAssignPackage) of the client's ACTIVE package with a session available at its "
        "start that expires soonest, then has the fewest available (assignedReason says why)."
    )
    async def create_booking(self, info: Info, input: CreateBookingInput) -> Booking:
        writer = info.context.writer()
        row = await bookings.create_booking(
            info.context.pool,
            trainer_id=writer.trainer_id,
            client_id=decode(Kind.CLIENT, input.client_id),
            purchase_id=(
                None if input.purchase_id is None else decode(Kind.PURCHASE, input.purchase_id)
            ),
            auto_assign=bool(input.auto_assign_package),
            allow_overbook=bool(input.allow_overbook),
            starts_at=input.starts_at,
            ends_at=input.ends_at,
            actor=writer.actor,
            source=writer.calendar_source,
        )
        return Booking.from_row(row)

    @strawberry.mutation(
        description="CONFIRMED -> COMPLETED, charging its package once (however many tabs ask); "
        "a booking that has not started is BOOKING_NOT_STARTED."
    )
    async def complete_booking(
        self, info: Info, id: strawberry.ID, idempotency_key: str | None = None
    ) -> Booking:
        return await _move(
            info,
            id,
            allowed_from=("CONFIRMED",),
            to_status="COMPLETED",
            key=idempotency_key,
            operation="completeBooking",
        )

    @strawberry.mutation(
        description="CONFIRMED -> NO_SHOW; a no-show uses its session (once it has started)."
    )
    async def mark_no_show(self, info: Info, id: strawberry.ID) -> Booking:
        return await _move(
            info, id, allowed_from=("CONFIRMED",), to_status="NO_SHOW", operation="markNoShow"
        )

    @strawberry.mutation(
        description="Cancel. A late cancel uses the session; cancelling a charged booking "
        "(not late) refunds it. lateCancel omitted: late iff the trainer's lateCancelHours is "
        "set and the booking is CONFIRMED and starts within that many hours (or has started)."
    )
    async def cancel_booking(
        self, info: Info, id: strawberry.ID, late_cancel: bool | None = None
    ) -> Booking:
        return await _move(
            info,
            id,
            allowed_from=("CONFIRMED", "COMPLETED", "NO_SHOW"),
            to_status="CANCELLED",
            late_cancel=late_cancel,
            operation="cancelBooking",
        )

    @strawberry.mutation(
        description="Back to CONFIRMED, refunding its session if charged, and holding one "
        "again (overbooked when the package has none available)."
    )
    async def reopen_booking(self, info: Info, id: strawberry.ID) -> Booking:
        return await _move(
            info,
            id,
            allowed_from=("COMPLETED", "NO_SHOW", "CANCELLED"),
            to_status="CONFIRMED",
            operation="reopenBooking",
        )
