"""The resolvers, one module per domain; ``ROOTS`` is what ``gql.schema`` assembles."""

from __future__ import annotations

from strawberry.tools import merge_types

from punchcard.gql.limits import ListSizes
from punchcard.gql.schema import Roots
from punchcard.gql.types import LEDGER_MAX_PAGE
from punchcard.resolvers import (
    api_keys,
    bookings,
    clients,
    events,
    ledger,
    lifecycle,
    offers,
    payments,
    policies,
    purchases,
    reports,
    subscriptions,
    webhooks,
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
            payments.Query,
            events.Query,
            webhooks.Query,
            reports.Query,
        ),
    ),
    mutation=merge_types(
        "Mutation",
        (
            clients.Mutation,
            offers.Mutation,
            purchases.Mutation,
            lifecycle.Mutation,
            bookings.Mutation,
            api_keys.Mutation,
            payments.Mutation,
            webhooks.Mutation,
            policies.Mutation,
        ),
    ),
    subscription=subscriptions.Subscription,
    # The query cost (gql/limits.py): paged fields assume their largest page when `first`
    # is a variable; plain lists assume a busy trainer's size (a month's calendar of ~500
    # bookings, though up to MAX_CALENDAR come back; 5 packages per client). An estimate,
    # not a bound: it refuses the shapes that multiply, not a long list of one level.
    list_sizes=ListSizes(
        pages={
            "Query.clients": clients.MAX_PAGE,
            "Query.ledger": LEDGER_MAX_PAGE,
            "Purchase.ledger": LEDGER_MAX_PAGE,
            "Query.events": events.MAX_PAGE,
            "Query.webhookDeliveries": webhooks.MAX_PAGE,
        },
        lists={"Query.bookings": 500, "Client.purchases": 5, "PackageReport.packages": 500},
    ),
)
