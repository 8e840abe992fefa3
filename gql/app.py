"""The Starlette app factory: the lifespan owns the asyncpg pool; ``/graphql`` serves
queries and mutations (POST) and GraphiQL (GET).

Plain JSON POSTs to ``/graphql`` skip Starlette's middleware and router and go to the
fast path (gql/fastpath.py); everything else takes the usual route."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from gql.auth import Authenticator
from gql.context import Context
from gql.fastpath import FastGraphQL
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
        return await Context.build(
            state.pool, state.settings, state.authenticator, request.headers.get("authorization")
        )


class PunchcardApp(Starlette):
    """Starlette, with ``POST /graphql`` answered before the middleware stack."""

    fast: FastGraphQL | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.fast is not None
            and scope["type"] == "http"
            and scope["path"] == "/graphql"
            and scope["method"] == "POST"
        ):
            scope["app"] = self
            await self.fast(scope, receive, send, self._context)
            return
        await super().__call__(scope, receive, send)

    async def _context(self, authorization: str | None) -> Context:
        state = self.state
        return await Context.build(state.pool, state.settings, state.authenticator, authorization)


def create_app(settings: Settings, *, on_connect: ConnectionHook | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await create_pool(settings, on_connect)
        app.state.pool = pool
        app.state.authenticator = Authenticator(settings, pool)
        # Everything built so far (schema, modules, pool) lives as long as the process:
        # keep it out of the collector's scans. Requests make short-lived reference
        # cycles (DataLoader futures), and full collections over the whole heap cost a
        # calendar request about a third of its time.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await pool.close()

    async def health(request: Request) -> Response:
        await request.app.state.pool.fetchval("SELECT 1")
        return JSONResponse({"status": "ok"})

    graphql = PunchcardGraphQL(schema, allow_queries_via_get=False)
    app = PunchcardApp(
        routes=[Route("/graphql", graphql, methods=["GET", "POST"]), Route("/healthz", health)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    if settings.fast_path:
        app.fast = FastGraphQL(fallback=graphql)
    return app
