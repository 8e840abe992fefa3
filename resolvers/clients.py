"""Clients: ``me``, ``client``, ``clients`` and ``createClient``."""

from __future__ import annotations

import strawberry

from punchcard.db import clients, trainers
from punchcard.db.errors import bad_input
from punchcard.gql.context import Info
from punchcard.gql.ids import Kind, lookup
from punchcard.gql.timezones import check_timezone
from punchcard.gql.types import Client, ClientConnection, PageInfo, Trainer

MAX_PAGE = 200


@strawberry.input
class CreateClientInput:
    name: str
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None


def _cursor(after: str | None) -> int | None:
    """A ``clients`` cursor is the last client's id; any other id is a malformed cursor."""
    if not after:
        return None
    row_id = lookup(Kind.CLIENT, after)
    if row_id is None:
        raise bad_input("malformed cursor")
    return row_id


@strawberry.type
class Query:
    @strawberry.field
    async def me(self, info: Info) -> Trainer:
        row = await trainers.by_id(info.context.pool, info.context.trainer_id)
        assert row is not None  # provisioned when the token was verified
        return Trainer.from_row(row)

    @strawberry.field
    async def client(self, info: Info, id: strawberry.ID) -> Client | None:
        loader = info.context.loaders.client
        row_id = lookup(Kind.CLIENT, id)
        row = await loader.load(row_id) if row_id is not None else None
        return Client.from_row(row) if row is not None else None

    @strawberry.field(description="Clients by name; `search` matches name or email.")
    async def clients(
        self,
        info: Info,
        search: str | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> ClientConnection:
        if not 1 <= first <= MAX_PAGE:
            raise bad_input(f"first must be between 1 and {MAX_PAGE}")
        rows = await clients.search(
            info.context.pool,
            trainer_id=info.context.trainer_id,
            text=search,
            after=_cursor(after),
            limit=first + 1,
        )
        nodes = [Client.from_row(row) for row in rows[:first]]
        return ClientConnection(
            nodes=nodes,
            page_info=PageInfo(
                has_next_page=len(rows) > first, end_cursor=nodes[-1].id if nodes else after
            ),
        )


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_client(self, info: Info, input: CreateClientInput) -> Client:
        writer = info.context.writer()
        if input.timezone is not None:
            check_timezone(input.timezone)
        row = await clients.create_client(
            info.context.pool,
            trainer_id=writer.trainer_id,
            name=input.name,
            email=input.email,
            phone=input.phone,
            timezone=input.timezone,
        )
        return Client.from_row(row)
