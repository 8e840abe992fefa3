"""The composition root: ``create_app(settings)`` builds the schema (with the settings'
limits), the engine and its caches, the routes and the lifespan that owns the asyncpg
pool, the live-update hub and its LISTEN connection.

Every route sits inside Starlette's middleware stack, ``/graphql`` included: HTTP goes
to ``gql/http.py`` (a raw ASGI endpoint, mounted with ``Route``), the WebSocket to
``live/endpoint.py``. ``middleware`` is the place to add CORS, metrics or request ids:
they see both. The only thing that passes the stack by is the server's own WebSocket
``send``, kept in the scope so that live fan-out can write frames straight to uvicorn's
transport (``live/outbox.py``; ``PUNCHCARD_WS_DIRECT_WRITES=0`` sends every frame through
the stack too).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import cache

import asyncpg
import psutil
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from punchcard import internals
from punchcard.db import roles
from punchcard.db.listen import Listener
from punchcard.db.notify import API_KEY, Notice
from punchcard.db.pool import UNAVAILABLE, Pool, TenantConnection, TenantPool
from punchcard.gql.auth import Authenticator
from punchcard.gql.context import Services
from punchcard.gql.engine import Engine
from punchcard.gql.http import GraphQLHTTP
from punchcard.gql.schema import Limits, PunchcardSchema, build_schema
from punchcard.live.endpoint import RAW_SEND, GraphQLWebSocket, Sockets
from punchcard.live.hub import Hub
from punchcard.resolvers import ROOTS
from punchcard.server import pages
from punchcard.settings import Settings

LOOPBACK = frozenset({"127.0.0.1", "::1"})
# Young collections every 50,000 allocations instead of 700: with 16 calendar requests in
# flight the default thresholds ran collections several times a second and halved
# throughput (benchmarks/http_api.py; 22 -> 30 requests/s in-process, 38 with no GC).
GC_THRESHOLDS = (50_000, 50, 1_000)
# Connections as punchcard_worker: sign-ins, API key checks and the live change feed.
INTERNAL_POOL = 4
log = logging.getLogger("punchcard.app")

ConnectionHook = Callable[[asyncpg.Connection], Awaitable[None]]


def schema_for(settings: Settings) -> PunchcardSchema:
    """The schema with the limits of ``settings`` (built once per distinct limits)."""
    return build_schema(ROOTS, Limits.of(settings))


@cache
def engine_for(schema: PunchcardSchema) -> Engine:
    """One engine (and document cache) per schema, shared by the apps built on it."""
    return Engine(schema)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool release hook that skips asyncpg's default RESET ALL round trip.

    The only session state punchcard sets on pooled connections is ``app.trainer_id``,
    which every checkout sets for its caller (``db.pool.TenantPool``); no LISTEN,
    advisory locks or cursors outside a transaction block, so nothing else to reset.
    """


async def create_pool(
    settings: Settings,
    on_connect: ConnectionHook | None = None,
    *,
    url: str | None = None,
    max_size: int | None = None,
) -> asyncpg.Pool:
    """The API's pool as ``punchcard_api`` (or another role's, at ``url``); ``on_connect``
    runs once per new connection (tracing, statement counting)."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url or roles.api_url(settings),
        min_size=min(settings.pool_min_size, max_size or settings.pool_max_size),
        max_size=max_size or settings.pool_max_size,
        statement_cache_size=settings.statement_cache_size,
        command_timeout=settings.command_timeout_seconds,
        server_settings={"statement_timeout": str(settings.statement_timeout_ms)},
        reset=_keep_session,
        init=on_connect,
        connection_class=TenantConnection,
    )
    return pool


class PunchcardApp(Starlette):
    """Starlette, keeping the server's own WebSocket ``send`` in the scope (see above)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[RAW_SEND] = send
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    on_connect: ConnectionHook | None = None,
    middleware: Sequence[Middleware] = (),
) -> Starlette:
    for line in settings.check():  # raises UnsafeSettings first, where production refuses
        log.info("%s", line)
    engine = engine_for(schema_for(settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        assert settings.database_url
        timeout = settings.pool_acquire_timeout_seconds
        pool = TenantPool(await create_pool(settings, on_connect), acquire_timeout=timeout)
        internal = Pool(
            await create_pool(settings, url=roles.worker_url(settings), max_size=INTERNAL_POOL),
            acquire_timeout=timeout,
        )
        authenticator = Authenticator(settings, internal)
        services = app.state.services = Services(pool, internal, settings, authenticator)
        # Live updates: the hub fans out what the one LISTEN connection wakes it for.
        hub = app.state.hub = Hub(services, engine, naive=settings.live_naive)
        sockets = app.state.sockets = Sockets(settings)

        def on_notify(notice: Notice, pid: int) -> None:
            if notice.kind == API_KEY and notice.row_id is not None:
                sockets.revoked(notice.row_id)
            else:
                hub.notify(notice, pid)

        def on_listen() -> None:
            hub.refresh()
            sockets.recheck_later(internal)

        listener = app.state.listener = Listener(
            roles.worker_url(settings),
            on_notify=on_notify,
            on_listen=on_listen,
            health_seconds=settings.live_health_seconds,
            name="live-listener",
        )
        hub.start()
        listener.start()
        sockets.start()
        # Everything built so far (schema, modules, pool) lives as long as the process:
        # keep it out of the collector's scans. Requests make short-lived reference
        # cycles (DataLoader futures), and full collections over the whole heap cost a
        # calendar request about a third of its time.
        if settings.gc_mode == "tuned":
            gc.collect()
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
        try:
            yield
        finally:
            await sockets.stop()
            await listener.stop()
            await hub.stop()
            await pool.close()
            await internal.close()

    async def health(request: Request) -> Response:
        """Liveness: the process answers (no database involved, so it never hangs on one)."""
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        """Readiness: PostgreSQL answers within the pool's timeout and LISTEN is up."""
        state = request.app.state
        checks = {"database": False, "listener": bool(state.listener.connected)}
        try:
            async with asyncio.timeout(settings.pool_acquire_timeout_seconds):
                checks["database"] = await state.services.pool.fetchval("SELECT true")
        except UNAVAILABLE:
            pass
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503
        )

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
            "internals": internals.probe_all(engine.schema),
        }
        if request.query_params.get("collect"):  # a full collection first (the soak)
            gc.collect()
            body["rss_bytes"] = psutil.Process().memory_info().rss
            body["gc_objects"] = len(gc.get_objects())
        if request.query_params.get("samples"):
            body["fanout_seconds"] = list(state.hub.fanout)
        if request.query_params.get("reset"):
            state.hub.fanout.clear()
        return JSONResponse(body)

    app = PunchcardApp(
        routes=[
            Route(
                "/graphql",
                GraphQLHTTP(
                    engine,
                    fast=settings.fast_path,
                    graphiql=settings.graphiql_on,
                    body_timeout=settings.body_timeout_seconds,
                ),
                methods=["GET", "POST"],
            ),
            WebSocketRoute("/graphql", GraphQLWebSocket()),
            Route("/healthz", health),
            Route("/readyz", ready),
            Route("/debug/live", live_stats),
            *pages.routes(settings),  # the live page at /, GraphiQL at /graphiql
        ],
        middleware=list(middleware),
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
