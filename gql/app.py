"""The Starlette app factory: the lifespan owns the asyncpg pool; ``/graphql`` serves
queries and mutations (POST) and GraphiQL (GET)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from db.errors import DomainError
from gql.auth import Authenticator
from gql.context import Context
from gql.schema import schema
from gql.settings import Settings


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool release hook that skips asyncpg's default RESET ALL round trip.

    punchcard never changes session state on pooled connections (no SET, LISTEN,
    advisory locks or cursors outside a transaction block), so there is nothing to reset.
    """


ConnectionHook = Callable[[asyncpg.Connection], Awaitable[None]]


async def create_pool(settings: Settings, on_connect: ConnectionHook | None = None) -> asyncpg.Pool:
    """The pool; ``on_connect`` runs once per new connection (tracing, statement counting)."""
    assert settings.database_url, "DATABASE_URL is resolved before the app starts"
    pool: asyncpg.Pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        statement_cache_size=settings.statement_cache_size,
        reset=_keep_session,
        init=on_connect,
    )
    return pool


class PunchcardGraphQL(GraphQL[Context, None]):
    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        state = request.app.state
        context = Context(pool=state.pool, settings=state.settings)
        try:
            context._principal = await state.authenticator.authenticate(
                request.headers.get("authorization")
            )
        except DomainError as error:
            context._auth_error = error
        return context


def create_app(settings: Settings, *, on_connect: ConnectionHook | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await create_pool(settings, on_connect)
        app.state.pool = pool
        app.state.authenticator = Authenticator(settings, pool)
        try:
            yield
        finally:
            await pool.close()

    async def health(request: Request) -> Response:
        await request.app.state.pool.fetchval("SELECT 1")
        return JSONResponse({"status": "ok"})

    graphql = PunchcardGraphQL(schema, allow_queries_via_get=False)
    app = Starlette(
        routes=[Route("/graphql", graphql, methods=["GET", "POST"]), Route("/healthz", health)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
