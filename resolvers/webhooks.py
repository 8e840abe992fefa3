"""Webhook endpoints and deliveries: ``webhookEndpoints``, ``webhookDeliveries``,
``createWebhookEndpoint``, ``updateWebhookEndpoint``, ``deleteWebhookEndpoint``,
``rotateWebhookSecret``, ``redeliverEvent``. Mutations need a writer (a trainer's token
or a WRITE key); the sweeper does the sending (``sweeper/delivery.py``)."""

from __future__ import annotations

import base64
import secrets
from collections import defaultdict
from collections.abc import Sequence

import strawberry

from punchcard.db import checks, events, webhooks
from punchcard.db.errors import bad_input, not_found
from punchcard.gql.context import Info
from punchcard.gql.ids import Kind, decode, lookup
from punchcard.gql.types import (
    CreatedWebhookEndpoint,
    PageInfo,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryConnection,
    WebhookEndpoint,
    parse_cursor,
)
from punchcard.gql.webhook_urls import UnsafeUrl, check

MAX_PAGE = 100
MAX_DESCRIPTION = 500
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


async def _checked_url(info: Info, url: str) -> str:
    url = url.strip()
    try:
        await check(url, allow_private=info.context.settings.webhook_allow_private)
    except UnsafeUrl as error:
        raise bad_input(f"url: {error}") from None
    return url


def _checked_types(event_types: Sequence[str] | None) -> list[str]:
    """Known event types, deduplicated, in the order given; empty or None: all of them."""
    chosen = list(dict.fromkeys(event_types or ()))
    unknown = [t for t in chosen if t not in events.TYPES]
    if unknown:
        raise bad_input(f"unknown event type {unknown[0][:60]!r}; known: {', '.join(events.TYPES)}")
    return chosen


def _checked_description(description: str | None) -> str | None:
    if description is None:
        return None
    return checks.text("description", description, max_length=MAX_DESCRIPTION)


@strawberry.input
class CreateWebhookEndpointInput:
    url: str
    event_types: list[str] | None = None
    description: str | None = None


@strawberry.input(description="Fields left out stay as they are; enabled: true re-enables.")
class UpdateWebhookEndpointInput:
    url: str | None = None
    event_types: list[str] | None = None
    description: str | None = None
    enabled: bool | None = None


@strawberry.type
class Query:
    @strawberry.field
    async def webhook_endpoints(self, info: Info) -> list[WebhookEndpoint]:
        rows = await webhooks.endpoints_of(info.context.pool, trainer_id=info.context.trainer_id)
        return [WebhookEndpoint.from_row(row) for row in rows]

    @strawberry.field(description="An endpoint's deliveries, newest first, with their attempts.")
    async def webhook_deliveries(
        self, info: Info, endpoint_id: strawberry.ID, first: int = 20, after: str | None = None
    ) -> WebhookDeliveryConnection:
        trainer_id = info.context.trainer_id
        if not 1 <= first <= MAX_PAGE:
            raise bad_input(f"first must be between 1 and {MAX_PAGE}")
        before = parse_cursor(after) if after is not None else None
        pool = info.context.pool
        rows = await webhooks.deliveries_page(
            pool,
            trainer_id=trainer_id,
            # An id of another kind names no endpoint: no deliveries (row ids start at 1).
            endpoint_id=lookup(Kind.WEBHOOK_ENDPOINT, endpoint_id) or 0,
            before=before,
            limit=first + 1,
        )
        page = rows[:first]
        attempts: dict[int, list[WebhookAttempt]] = defaultdict(list)
        if page:
            for row in await webhooks.attempts_of(
                pool, trainer_id=trainer_id, delivery_ids=[r["id"] for r in page]
            ):
                attempts[row["delivery_id"]].append(WebhookAttempt.from_row(row))
        nodes = [WebhookDelivery.from_row(row, attempts[row["id"]]) for row in page]
        return WebhookDeliveryConnection(
            nodes=nodes,
            page_info=PageInfo(
                has_next_page=len(rows) > first, end_cursor=nodes[-1].cursor if nodes else after
            ),
        )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="POST events to this URL, signed per Standard Webhooks; the secret is "
        "shown only here. Errors: BAD_USER_INPUT (URL not http(s), not public, unknown type)."
    )
    async def create_webhook_endpoint(
        self, info: Info, input: CreateWebhookEndpointInput
    ) -> CreatedWebhookEndpoint:
        writer = info.context.writer()
        event_types = _checked_types(input.event_types)
        description = _checked_description(input.description)
        url = await _checked_url(info, input.url)
        secret = new_secret()
        row = await webhooks.create_endpoint(
            info.context.pool,
            trainer_id=writer.trainer_id,
            url=url,
            description=description,
            event_types=event_types,
            secret=secret,
        )
        return CreatedWebhookEndpoint(secret=secret, endpoint=WebhookEndpoint.from_row(row))

    @strawberry.mutation
    async def update_webhook_endpoint(
        self, info: Info, id: strawberry.ID, input: UpdateWebhookEndpointInput
    ) -> WebhookEndpoint:
        writer = info.context.writer()
        endpoint_id = decode(Kind.WEBHOOK_ENDPOINT, id)
        event_types = _checked_types(input.event_types) if input.event_types is not None else None
        description = _checked_description(input.description)
        url = await _checked_url(info, input.url) if input.url is not None else None
        row = await webhooks.update_endpoint(
            info.context.pool,
            trainer_id=writer.trainer_id,
            endpoint_id=endpoint_id,
            url=url,
            description=description,
            set_description=input.description is not None,
            event_types=event_types,
            enabled=input.enabled,
        )
        if row is None:
            raise not_found("webhook endpoint")
        return WebhookEndpoint.from_row(row)

    @strawberry.mutation(description="Remove the endpoint and its delivery history.")
    async def delete_webhook_endpoint(self, info: Info, id: strawberry.ID) -> WebhookEndpoint:
        writer = info.context.writer()
        row = await webhooks.delete_endpoint(
            info.context.pool,
            trainer_id=writer.trainer_id,
            endpoint_id=decode(Kind.WEBHOOK_ENDPOINT, id),
        )
        if row is None:
            raise not_found("webhook endpoint")
        return WebhookEndpoint.from_row(row)

    @strawberry.mutation(description="A new signing secret (shown once); the old one stops now.")
    async def rotate_webhook_secret(self, info: Info, id: strawberry.ID) -> CreatedWebhookEndpoint:
        writer = info.context.writer()
        secret = new_secret()
        row = await webhooks.rotate_secret(
            info.context.pool,
            trainer_id=writer.trainer_id,
            endpoint_id=decode(Kind.WEBHOOK_ENDPOINT, id),
            secret=secret,
        )
        if row is None:
            raise not_found("webhook endpoint")
        return CreatedWebhookEndpoint(secret=secret, endpoint=WebhookEndpoint.from_row(row))

    @strawberry.mutation(
        description="Send an event to an endpoint again (a new delivery, the same webhook-id). "
        "Errors: NOT_FOUND, BAD_USER_INPUT (the endpoint is disabled)."
    )
    async def redeliver_event(
        self, info: Info, event_id: strawberry.ID, endpoint_id: strawberry.ID
    ) -> WebhookDelivery:
        writer = info.context.writer()
        event = decode(Kind.EVENT, event_id)
        endpoint = decode(Kind.WEBHOOK_ENDPOINT, endpoint_id)
        row = await webhooks.redeliver(
            info.context.pool, trainer_id=writer.trainer_id, event_id=event, endpoint_id=endpoint
        )
        if row["id"] is None:
            if not row["event_found"]:
                raise not_found("event")
            if not row["endpoint_found"]:
                raise not_found("webhook endpoint")
            raise bad_input("the endpoint is disabled; enable it (updateWebhookEndpoint) first")
        return WebhookDelivery.from_row(row, [])
