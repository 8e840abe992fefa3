"""The composition root: ``create_app(settings)`` builds the schema (with the settings'
limits), the engine and its caches, the routes and the lifespan that owns the asyncpg
pool, the live-update hub and its LISTEN connection.

Every route sits inside Starlette's middleware stack, ``/graphql`` included: HTTP goes
to ``gql/http.py`` (a raw ASGI endpoint, mounted with ``Route``), the WebSocket to
``live/endpoint.py``. ``middleware`` is the place to add metrics or request ids: they
see both. CORS (``PUNCHCARD_CORS_ORIGINS``, ``server/cors.py``) sits outside them. The
only thing that passes the stack by is the server's own WebSocket ``send``, kept in the
scope so that live fan-out can write frames straight to uvicorn's transport
(``live/outbox.py``; ``PUNCHCARD_WS_DIRECT_WRITES=0`` sends every frame through the
stack too).
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
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from punchcard import internals, metrics
from punchcard.db import health as db_health
from punchcard.db import roles
from punchcard.db.listen import Listener
from punchcard.db.migrate import head
from punchcard.db.notify import API_KEY, Notice
from punchcard.db.pool import UNAVAILABLE, Pool, TenantConnection, TenantPool
from punchcard.gql.auth import Authenticator
from punchcard.gql.context import Services
from punchcard.gql.engine import Engine
from punchcard.gql.errors import refusal_body
from punchcard.gql.http import GraphQLHTTP
from punchcard.gql.schema import Limits, PunchcardSchema, build_schema
from punchcard.live.endpoint import RAW_SEND, GraphQLWebSocket, Sockets
from punchcard.live.hub import Hub
from punchcard.resolvers import ROOTS
from punchcard.server import pages, reports
from punchcard.server.cors import cors_middleware
from punchcard.server.observe import Observe
from punchcard.server.stripe_webhook import stripe_webhook
from punchcard.settings import Settings

LOOPBACK = frozenset({"127.0.0.1", "::1"})
# Young collections every 5,000 allocations instead of 700, after gc.freeze() (below).
# A young collection's pause grows with its threshold (about 0.4 us per object): each
# graphql-core execution leaves its executor in a reference cycle that takes the
# request's Context, loaders and field details with it (~40 objects a useSession), so
# at 50,000 a collection came every ~1,300 requests and stopped the loop for 17-60 ms,
# every request in flight then waiting for it: useSession's p99 tail. At 5,000 the
# pauses stay under ~10 ms (benchmarks/tail.py times them with gc.callbacks) at no
# measurable throughput cost; the default 700 collects in-flight calendar objects so
# often that they are promoted and rescanned (the reason the threshold was raised).
GC_THRESHOLDS = (5_000, 10, 100)
# Connections as punchcard_worker: sign-ins, API key checks and the live change feed.
INTERNAL_POOL = 4
HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
# Paths counted by name in punchcard_http_requests (anything else is "other").
ROUTES = frozenset(
    {"/graphql", "/healthz", "/readyz", "/metrics", "/graphiql", "/", "/webhooks/stripe"}
    | {reports.PATH}
)
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


async def json_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 4xx (an unknown path, a method a route does not take) as a JSON
    error with a code, like every refusal of the API, instead of ``text/plain``."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in {204, 304}:
        return Response(status_code=exc.status_code, headers=exc.headers)
    code = HTTP_CODES.get(exc.status_code, "BAD_REQUEST")
    body = refusal_body(exc.detail, code)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


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
        """Readiness: PostgreSQL answers within the pool's timeout, its migrations are at
        this code's head and LISTEN is up; else 503 naming what failed."""
        state = request.app.state
        checks = {"database": False, "migrations": False, "listener": False}
        detail: dict[str, str] = {}
        try:
            async with asyncio.timeout(settings.pool_acquire_timeout_seconds):
                at = await db_health.migration(state.services.pool)
            checks["database"] = True
            checks["migrations"] = at == head()
            if not checks["migrations"]:
                detail["migrations"] = (
                    f"at {at or 'nothing'}, code needs {head()}: run `punchcard migrate`"
                )
        except UNAVAILABLE as error:
            detail["database"] = f"not answering ({type(error).__name__})"
        checks["listener"] = bool(state.listener.connected)
        if not checks["listener"]:
            detail["listener"] = "the LISTEN connection is down (reconnecting)"
        ok = all(checks.values())
        body: dict[str, object] = {"status": "ok" if ok else "unavailable", **checks}
        if not ok:
            body["failed"] = [name for name, passed in checks.items() if not passed]
            body["detail"] = detail
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics_page(request: Request) -> Response:
        """Prometheus metrics: the process's counters, then what it has right now."""
        if not settings.metrics:
            return JSONResponse({"error": "not found"}, status_code=404)
        now = await _snapshot(request.app.state, settings)
        body = metrics.render() + generate_latest(now)
        return Response(body, media_type=metrics.CONTENT_TYPE)

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
                ),  # every method: the endpoint answers the ones it refuses itself (405)
            ),
            WebSocketRoute("/graphql", GraphQLWebSocket()),
            Route("/healthz", health),
            Route("/readyz", ready),
            Route("/metrics", metrics_page),
            Route("/debug/live", live_stats),
            Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
            Route(reports.PATH, reports.packages_csv, methods=["GET"]),
            *pages.routes(settings),  # the live page at /, GraphiQL at /graphiql
        ],
        # Observe outermost (request id, access line, metrics: preflights included), then
        # CORS, then the caller's: a preflight is answered before the caller's middleware
        # runs, and every response, a caller middleware's own refusals included, carries
        # the CORS headers a browser needs to read it.
        middleware=[
            Middleware(Observe, routes=ROUTES, access_log=settings.access_log),
            *cors_middleware(settings),
            *middleware,
        ],
        exception_handlers={HTTPException: json_http_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app


class _Families:
    """Metric families built for one scrape (``generate_latest`` takes any ``collect``)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def _gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


async def _snapshot(state: object, settings: Settings) -> _Families:
    """What the process has now: sockets, subscriptions, pool connections, LISTEN, and
    how late the sweeper is (one indexed query as the worker role, bounded in time)."""
    services: Services = state.services  # type: ignore[attr-defined]
    hub: Hub = state.hub  # type: ignore[attr-defined]
    sockets: Sockets = state.sockets  # type: ignore[attr-defined]
    listener: Listener = state.listener  # type: ignore[attr-defined]
    hub_stats, socket_stats = hub.stats(), sockets.stats()
    open_ws = _gauge("punchcard_websockets_open", "WebSockets open on this process")
    open_ws.add_metric([], socket_stats["sockets"])
    subs = _gauge("punchcard_subscriptions_active", "Live subscriptions on this process")
    subs.add_metric([], hub_stats["subscribers"])
    groups = _gauge(
        "punchcard_subscription_groups", "Distinct subscription documents (executed once each)"
    )
    groups.add_metric([], hub_stats["groups"])
    up = _gauge("punchcard_live_listener_up", "1 when the LISTEN connection is connected")
    up.add_metric([], 1 if listener.connected else 0)
    in_use = _gauge(
        "punchcard_db_pool_connections_in_use", "Pool connections checked out now", ["pool"]
    )
    opened = _gauge("punchcard_db_pool_connections_open", "Pool connections open", ["pool"])
    biggest = _gauge("punchcard_db_pool_connections_max", "Pool size limit", ["pool"])
    for name, pool, limit in (
        ("api", services.pool, settings.pool_max_size),
        ("internal", services.internal, INTERNAL_POOL),
    ):
        in_use.add_metric([name], pool.in_use())
        opened.add_metric([name], pool.get_size())
        biggest.add_metric([name], limit)
    families: list[Metric] = [open_ws, subs, groups, up, in_use, opened, biggest]
    database = _gauge("punchcard_database_up", "1 when the sweeper-lag query answered")
    try:
        async with asyncio.timeout(settings.pool_acquire_timeout_seconds):
            lag = await db_health.lag(services.internal, grace_minutes=settings.sweep_grace_minutes)
    except UNAVAILABLE:
        database.add_metric([], 0)
        return _Families([*families, database])
    database.add_metric([], 1)
    late = _gauge(
        "punchcard_sweeper_lag_seconds",
        "How late the oldest due work is: bookings past end + grace, reminders past due",
        ["kind"],
    )
    late.add_metric(["bookings"], lag.bookings)
    late.add_metric(["reminders"], lag.reminders)
    failing = _gauge(
        "punchcard_reminders_failing", "Reminders whose last send failed, waiting to be retried"
    )
    failing.add_metric([], lag.failing_reminders)
    return _Families([*families, database, late, failing])
