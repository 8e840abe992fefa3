"""The resolvers, one module per domain; ``ROOTS`` is what ``gql.schema`` assembles."""

from __future__ import annotations

from strawberry.tools import merge_types

from punchcard.gql.schema import Roots
from punchcard.resolvers import (
    api_keys,
    bookings,
    clients,
    ledger,
    offers,
    purchases,
    subscriptions,
)

ROOTS = Roots(
    query=merge_types(
        "Query",
        (
            clients.Query,
            offers.Query,
            purchases.Query,
            bookings.Query,
            ledger.Query,
            api_keys.Query,
        ),
    ),
    mutation=merge_types(
        "Mutation",
        (
            clients.Mutation,
            offers.Mutation,
            purchases.Mutation,
            bookings.Mutation,
            api_keys.Mutation,
        ),
    ),
    subscription=subscriptions.Subscription,
)
