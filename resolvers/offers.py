"""Offers: ``offers`` and ``createOffer``."""

from __future__ import annotations

import strawberry

from punchcard.db import offers
from punchcard.gql.context import Info
from punchcard.gql.types import Offer


@strawberry.input
class CreateOfferInput:
    name: str
    sessions_total: int
    valid_days: int | None = None
    price_cents: int | None = None


@strawberry.type
class Query:
    @strawberry.field(description="The trainer's package templates, by name.")
    async def offers(self, info: Info) -> list[Offer]:
        rows = await offers.of_trainer(info.context.pool, info.context.trainer_id)
        return [Offer.from_row(row) for row in rows]


@strawberry.type
class Mutation:
    @strawberry.mutation(description="A package template; sellPackage(offerId) uses its validity.")
    async def create_offer(self, info: Info, input: CreateOfferInput) -> Offer:
        writer = info.context.writer()
        row = await offers.create_offer(
            info.context.pool,
            trainer_id=writer.trainer_id,
            name=input.name,
            sessions_total=input.sessions_total,
            valid_days=input.valid_days,
            price_cents=input.price_cents,
        )
        return Offer.from_row(row)
