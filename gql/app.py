"""The Starlette app factory: the lifespan owns the asyncpg pool, the live-update hub and
its LISTEN connection; ``/graphql`` serves queries and mutations (POST), GraphiQL (GET)
and subscriptions (WebSocket, gql/websocket.py).

Plain JSON POSTs to ``/graphql`` skip Starlette's middleware and router and go to the
fast path (gql/fastpath.py), and so do WebSockets on ``/graphql`` (the endpoint gets the
server's own ``send``, which lets gql/outbox.py write frames directly); everything else
takes the usual route."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import psutil
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from db.notify import CHANNEL
from gql.auth import Authenticator
from gql.context import Context
from gql.fastpath import FastGraphQL
from gql.hub import Hub
from gql.listener import Listener
from gql.schema import schema
from gql.settings import Settings
from gql.websocket import GraphQLWebSocket, Sockets

LOOPBACK = frozenset({"127.0.0.1", "::1"})


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
    live = GraphQLWebSocket()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/graphql":
            scope["app"] = self
            await self.live(scope, receive, send)
            return
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
        # Live updates: the hub fans out what the one LISTEN connection wakes it for.
        assert settings.database_url
        hub = app.state.hub = Hub(pool, settings, naive=settings.live_naive)
        listener = app.state.listener = Listener(
            settings.database_url,
            CHANNEL,
            hub.notify,
            hub.refresh,
            health_seconds=settings.live_health_seconds,
        )
        sockets = app.state.sockets = Sockets(settings)
        hub.start()
        listener.start()
        sockets.start()
        # Everything built so far (schema, modules, pool) lives as long as the process:
        # keep it out of the collector's scans. Requests make short-lived reference
        # cycles (DataLoader futures), and full collections over the whole heap cost a
        # calendar request about a third of its time.
        gc.collect()
        gc.freeze()
        # Young collections every 50,000 allocations instead of 700, full ones after
        # 1,000 of those: with 16 calendar requests in flight the default thresholds
        # ran a full collection several times a second and halved throughput
        # (benchmarks/http_api.py; 22 -> 30 requests/s in-process, 38 with no GC).
        gc.set_threshold(50_000, 50, 1_000)
        try:
            yield
        finally:
            await sockets.stop()
            await listener.stop()
            await hub.stop()
            await pool.close()

    async def health(request: Request) -> Response:
        await request.app.state.pool.fetchval("SELECT 1")
        return JSONResponse({"status": "ok"})

    async def live_stats(request: Request) -> Response:
        """Live-update counters, for tests and benchmarks (PUNCHCARD_DEBUG_STATS, loopback)."""
        client = request.client.host if request.client else ""
        if not settings.debug_stats or client not in LOOPBACK:
            return JSONResponse({"error": "not found"}, status_code=404)
        state = request.app.state
        body = {
            **state.hub.stats(),
            **state.sockets.stats(),
            **state.listener.stats(),
            "tasks": len(asyncio.all_tasks()),
            "rss_bytes": psutil.Process().memory_info().rss,
        }
        if request.query_params.get("samples"):
            body["fanout_seconds"] = list(state.hub.fanout)
        if request.query_params.get("reset"):
            state.hub.fanout.clear()
        return JSONResponse(body)

    graphql = PunchcardGraphQL(schema, allow_queries_via_get=False)
    app = PunchcardApp(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            Route("/healthz", health),
            Route("/debug/live", live_stats),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    if settings.fast_path:
        app.fast = FastGraphQL(fallback=graphql)
    return app
