"""Packages: ``purchase``, ``sellPackage``, ``useSession``, ``releaseSession``."""

from __future__ import annotations

from datetime import datetime

import strawberry

from punchcard.db import purchases
from punchcard.db.idempotency import check_key, fingerprint
from punchcard.gql.context import Info
from punchcard.gql.ids import Kind, decode, lookup
from punchcard.gql.types import Purchase


@strawberry.input
class SellPackageInput:
    client_id: strawberry.ID
    sessions_total: int
    expires_at: datetime | None = None
    offer_id: strawberry.ID | None = None


@strawberry.type
class Query:
    @strawberry.field
    async def purchase(self, info: Info, id: strawberry.ID) -> Purchase | None:
        loader = info.context.loaders.purchase
        row_id = lookup(Kind.PURCHASE, id)
        row = await loader.load(row_id) if row_id is not None else None
        return Purchase.from_row(row) if row is not None else None


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Sell a package of sessions to a client.")
    async def sell_package(self, info: Info, input: SellPackageInput) -> Purchase:
        writer = info.context.writer()
        row = await purchases.sell_package(
            info.context.pool,
            trainer_id=writer.trainer_id,
            client_id=decode(Kind.CLIENT, input.client_id),
            sessions_total=input.sessions_total,
            expires_at=input.expires_at,
            offer_id=decode(Kind.OFFER, input.offer_id) if input.offer_id is not None else None,
            actor=writer.actor,
            source=writer.manual_source,
        )
        return Purchase.from_row(row)

    @strawberry.mutation(
        description="Count one session. Errors: NO_SESSIONS_REMAINING, PURCHASE_EXPIRED, "
        "PURCHASE_CANCELLED, NOT_FOUND, IDEMPOTENCY_KEY_REUSED."
    )
    async def use_session(
        self,
        info: Info,
        purchase_id: strawberry.ID,
        idempotency_key: str | None = None,
        reason: str | None = None,
    ) -> Purchase:
        writer = info.context.writer()
        row = await purchases.use_session(
            info.context.pool,
            trainer_id=writer.trainer_id,
            purchase_id=decode(Kind.PURCHASE, purchase_id),
            source=writer.manual_source,
            actor=writer.actor,
            reason=reason,
            key=check_key(idempotency_key),
            request=fingerprint("useSession", purchase_id=purchase_id, reason=reason),
        )
        return Purchase.from_row(row)

    @strawberry.mutation(
        description="Give one session back (Reinstate). Errors: NOTHING_TO_RELEASE, NOT_FOUND, "
        "IDEMPOTENCY_KEY_REUSED."
    )
    async def release_session(
        self,
        info: Info,
        purchase_id: strawberry.ID,
        idempotency_key: str | None = None,
        reason: str | None = None,
    ) -> Purchase:
        writer = info.context.writer()
        row = await purchases.release_session(
            info.context.pool,
            trainer_id=writer.trainer_id,
            purchase_id=decode(Kind.PURCHASE, purchase_id),
            source=writer.manual_source,
            actor=writer.actor,
            reason=reason,
            key=check_key(idempotency_key),
            request=fingerprint("releaseSession", purchase_id=purchase_id, reason=reason),
        )
        return Purchase.from_row(row)
