"""Payments: ``stripeAccounts``, ``stripeEvents``, ``connectStripeAccount``,
``disconnectStripeAccount``. The events themselves arrive at ``POST /webhooks/stripe``."""

from __future__ import annotations

import strawberry

from punchcard.db import stripe
from punchcard.db.errors import bad_input
from punchcard.gql.context import Info
from punchcard.gql.payments import StripeAccount, StripeEvent, check_account_id

MAX_EVENTS = 200


@strawberry.type
class Query:
    @strawberry.field(description="The Stripe accounts bound to the trainer.")
    async def stripe_accounts(self, info: Info) -> list[StripeAccount]:
        rows = await stripe.accounts_of(info.context.pool, trainer_id=info.context.trainer_id)
        return [StripeAccount.from_row(row) for row in rows]

    @strawberry.field(description="The trainer's processed Stripe events, newest first.")
    async def stripe_events(self, info: Info, first: int = 50) -> list[StripeEvent]:
        if not 1 <= first <= MAX_EVENTS:
            raise bad_input(f"first must be between 1 and {MAX_EVENTS}")
        rows = await stripe.events_of(
            info.context.pool, trainer_id=info.context.trainer_id, limit=first
        )
        return [StripeEvent.from_row(row) for row in rows]


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Bind a Stripe account: its checkout payments sell this trainer's "
        "packages. Errors: STRIPE_ACCOUNT_TAKEN (bound to another trainer), BAD_USER_INPUT."
    )
    async def connect_stripe_account(self, info: Info, account_id: str) -> StripeAccount:
        writer = info.context.writer()
        row = await stripe.connect_account(
            info.context.pool, trainer_id=writer.trainer_id, account_id=check_account_id(account_id)
        )
        return StripeAccount.from_row(row)

    @strawberry.mutation(description="Unbind a Stripe account. Errors: NOT_FOUND.")
    async def disconnect_stripe_account(self, info: Info, account_id: str) -> StripeAccount:
        writer = info.context.writer()
        row = await stripe.disconnect_account(
            info.context.pool, trainer_id=writer.trainer_id, account_id=check_account_id(account_id)
        )
        return StripeAccount.from_row(row)
