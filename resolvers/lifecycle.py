"""A package's lifecycle: ``cancelPackage``, ``freezePackage``, ``unfreezePackage``,
``extendPackage``, ``transferSessions``. Each is one transaction with one ledger entry
per package changed (``db/lifecycle.py``); none edits a balance."""

from __future__ import annotations

from datetime import datetime

import strawberry

from punchcard.db import lifecycle
from punchcard.gql.context import Info
from punchcard.gql.ids import Kind, decode
from punchcard.gql.types import Purchase


@strawberry.type(description="Both sides of a transfer.")
class TransferredSessions:
    from_purchase: Purchase = strawberry.field(description="The package the sessions left.")
    to_purchase: Purchase = strawberry.field(
        description="The receiving client's new package (same offer and expiry)."
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Cancel a package: its holds are given back, used sessions stay used, "
        "unused ones are forfeited. Its CONFIRMED bookings become unpackaged, or move to "
        "`moveBookingsTo` (another ACTIVE package of the same client with room for all). "
        "Errors: NOT_FOUND, PURCHASE_CANCELLED (already cancelled), PURCHASE_EXPIRED, "
        "PURCHASE_FROZEN (the target), NO_SESSIONS_AVAILABLE (the target), BAD_USER_INPUT."
    )
    async def cancel_package(
        self,
        info: Info,
        id: strawberry.ID,
        reason: str | None = None,
        move_bookings_to: strawberry.ID | None = None,
    ) -> Purchase:
        writer = info.context.writer()
        row = await lifecycle.cancel_package(
            info.context.pool,
            trainer_id=writer.trainer_id,
            purchase_id=decode(Kind.PURCHASE, id),
            reason=reason,
            move_to=decode(Kind.PURCHASE, move_bookings_to)
            if move_bookings_to is not None
            else None,
            actor=writer.actor,
            source=writer.manual_source,
        )
        return Purchase.from_row(row)

    @strawberry.mutation(
        description="Freeze an ACTIVE package until `until` (in the future; null: until "
        "unfrozen). No session can be used while frozen; its expiry moves later by the "
        "frozen time. Errors: NOT_FOUND, PURCHASE_FROZEN, PURCHASE_CANCELLED, "
        "PURCHASE_EXPIRED, BAD_USER_INPUT."
    )
    async def freeze_package(
        self, info: Info, id: strawberry.ID, until: datetime | None = None
    ) -> Purchase:
        writer = info.context.writer()
        row = await lifecycle.freeze_package(
            info.context.pool,
            trainer_id=writer.trainer_id,
            purchase_id=decode(Kind.PURCHASE, id),
            until=until,
            actor=writer.actor,
            source=writer.manual_source,
        )
        return Purchase.from_row(row)

    @strawberry.mutation(
        description="Unfreeze a FROZEN package: ACTIVE again, its expiry later by the time "
        "it was frozen. Errors: NOT_FOUND, INVALID_TRANSITION (not frozen), "
        "PURCHASE_CANCELLED, PURCHASE_EXPIRED."
    )
    async def unfreeze_package(self, info: Info, id: strawberry.ID) -> Purchase:
        writer = info.context.writer()
        row = await lifecycle.unfreeze_package(
            info.context.pool,
            trainer_id=writer.trainer_id,
            purchase_id=decode(Kind.PURCHASE, id),
            actor=writer.actor,
            source=writer.manual_source,
        )
        return Purchase.from_row(row)

    @strawberry.mutation(
        description="Move a package's expiry later (in the future, after the current one); "
        "an EXPIRED package becomes ACTIVE again. Errors: NOT_FOUND, PURCHASE_CANCELLED, "
        "BAD_USER_INPUT (no expiry to extend, not later, not in the future)."
    )
    async def extend_package(self, info: Info, id: strawberry.ID, expires_at: datetime) -> Purchase:
        writer = info.context.writer()
        row = await lifecycle.extend_package(
            info.context.pool,
            trainer_id=writer.trainer_id,
            purchase_id=decode(Kind.PURCHASE, id),
            expires_at=expires_at,
            actor=writer.actor,
            source=writer.manual_source,
        )
        return Purchase.from_row(row)

    @strawberry.mutation(
        description="Move `sessions` available sessions of an ACTIVE package to a new "
        "package of `toClientId` (same trainer, offer and expiry), in one transaction. "
        "Errors: NOT_FOUND, NO_SESSIONS_AVAILABLE (more than available), PURCHASE_FROZEN, "
        "PURCHASE_CANCELLED, PURCHASE_EXPIRED, BAD_USER_INPUT (not 1..available, or all "
        "of a package's sessions: a package keeps at least one)."
    )
    async def transfer_sessions(
        self,
        info: Info,
        from_purchase_id: strawberry.ID,
        to_client_id: strawberry.ID,
        sessions: int,
    ) -> TransferredSessions:
        writer = info.context.writer()
        source, target = await lifecycle.transfer_sessions(
            info.context.pool,
            trainer_id=writer.trainer_id,
            purchase_id=decode(Kind.PURCHASE, from_purchase_id),
            client_id=decode(Kind.CLIENT, to_client_id),
            sessions=sessions,
            actor=writer.actor,
            source=writer.manual_source,
        )
        return TransferredSessions(
            from_purchase=Purchase.from_row(source), to_purchase=Purchase.from_row(target)
        )
