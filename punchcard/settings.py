"""The one settings object, read from the environment once."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DEV_JWT_SECRET = "punchcard-dev-secret-change-me-0123456789"


class UnsafeSettings(ValueError):
    """Settings production must not run with; the message says what to set."""


class BadSetting(ValueError):
    """An environment variable that cannot be used; the message names it and its value."""


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("human", "json")


@dataclass(frozen=True, slots=True)
class Settings:
    env: str = "development"  # PUNCHCARD_ENV; "production" turns on the checks below
    introspection: bool | None = None  # None: on, except in production
    graphiql: bool | None = None  # None: on, except in production
    database_url: str | None = None  # the owner: migrations (db/roles.py)
    api_database_url: str | None = None  # the API's role; None: DATABASE_URL as punchcard_api
    worker_database_url: str | None = None  # cross-trainer work; None: as punchcard_worker
    data_dir: Path = Path(".punchcard")
    jwt_secret: str = DEV_JWT_SECRET
    jwt_audience: str | None = None  # required ``aud`` when set (HS256 and JWKS tokens)
    jwt_issuer: str | None = None  # required ``iss`` when set (HS256 and JWKS tokens)
    jwt_jwks_url: str | None = None  # RS256/ES256 keys: http(s) URL, file:// URL or path
    jwt_jwks_refresh_seconds: float = 30.0  # an unknown kid re-reads the keys at most this often
    jwt_jwks_timeout_seconds: float = 5.0  # fetching the JWKS URL gives up after this
    jwt_leeway_seconds: float = 30.0  # clock skew allowed on a JWT's iat, nbf and exp
    host: str = "127.0.0.1"
    port: int = 8000
    pool_min_size: int = 2
    pool_max_size: int = 20
    statement_cache_size: int = 100
    pool_acquire_timeout_seconds: float = 5.0  # waiting for a free connection
    statement_timeout_ms: int = 10_000  # PostgreSQL's statement_timeout on API connections
    command_timeout_seconds: float = 15.0  # asyncpg gives up on a query after this
    header_timeout_seconds: float = 10.0  # request line + headers must arrive within this
    body_timeout_seconds: float = 10.0  # a request body must arrive within this (else 408)
    max_connections: int | None = None  # connections served at once (503 over it); None: off
    max_query_depth: int = 10
    max_aliases: int = 30
    max_tokens: int = 2000
    max_query_cost: int = 100_000  # nodes an answer may hold, estimated (gql/limits.py)
    token_cache_seconds: float = 60.0
    fast_path: bool = True  # plain JSON POSTs skip strawberry's view (gql/http.py)
    planner: bool = True  # queries run on their plan (gql/planned.py); off: graphql-core
    # Tests: every planned query also runs on graphql-core in the same snapshot, and any
    # difference fails the request (gql/differential.py).
    planner_differential: bool = False
    planner_mismatches: Path | None = None  # differential mismatches appended here (JSON lines)
    # Browser origins allowed to call the API (CORS, server/cors.py); () = same origin only.
    cors_origins: tuple[str, ...] = ()
    sweep_grace_minutes: int = 15
    sweep_batch_size: int = 500
    sweep_poll_seconds: float = 30.0
    reminder_webhook_url: str | None = None  # unset: reminders go to the log
    reminder_webhook_secret: str | None = None  # HMAC-SHA256 key; required with the URL
    reminder_batch_size: int = 100
    reminder_retry_seconds: float = 30.0  # first retry after a failed send; doubles, max 1 h
    idempotency_retention_days: float = 7.0  # the sweeper purges older keys (at least 1 day)
    reminder_lease_seconds: float = 300.0  # a claimed reminder is retried after this if unmarked
    live_poll_seconds: float = 30.0  # re-read live subscriptions' changes even without NOTIFY
    live_health_seconds: float = 5.0  # the LISTEN connection's health check
    live_naive: bool = False  # execute each event per subscriber (the benchmark's baseline)
    ws_init_timeout_seconds: float = 10.0  # connection_init must arrive within this
    ws_keepalive_seconds: float = 15.0  # the legacy graphql-ws protocol's "ka" interval
    ws_max_operations: int = 100  # per socket
    debug_stats: bool = False  # GET /debug/live (loopback clients only): hub counters
    ws_direct_writes: bool = True  # fan-out frames straight to uvicorn's transport (live/outbox.py)
    live_writer_threads: int = 1  # threads writing a large fan-out beside the event loop
    gc_mode: str = "tuned"  # "tuned": freeze the startup heap, fewer young collections
    log_level: str = "info"  # punchcard's loggers; "debug" also lets the libraries' through
    log_format: str = "human"  # or "json": one JSON object per line, every logger
    access_log: bool = True  # one log line per HTTP request (with its request id)
    metrics: bool = True  # GET /metrics (Prometheus text format)
    sweeper_metrics_port: int | None = None  # the sweeper's own /metrics port; None: off
    stripe_webhook_secret: str | None = None  # whsec_...: POST /webhooks/stripe; None: 503
    stripe_platform_trainer: str | None = None  # a trainer's subject: the platform's events
    webhook_allow_private: bool = False  # deliver to loopback/private/link-local (dev, tests)
    webhook_timeout_seconds: float = 15.0  # one delivery attempt gives up after this
    webhook_retry_seconds: float = 5.0  # the first retry's delay (the schedule's 5 s)
    webhook_retry_scale: float = 1.0  # multiplies the later delays (5 min ... 10 h)
    webhook_lease_seconds: float = 60.0  # a claimed delivery is retried after this if unmarked
    webhook_disable_after_days: float = 5.0  # an endpoint failing this long is disabled
    webhook_batch_size: int = 100  # deliveries claimed at once
    webhook_concurrency: int = 16  # deliveries sent at once
    check_interval_seconds: float = 3600.0  # the sweeper's ledger check (db/integrity.py); 0: off

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        default = cls()

        def get_int(name: str, fallback: int) -> int:
            value = env.get(name)
            if not value:
                return fallback
            try:
                return int(value)
            except ValueError:
                raise BadSetting(f"{name}={value} is not a whole number") from None

        def get_float(name: str, fallback: float) -> float:
            value = env.get(name)
            if not value:
                return fallback
            try:
                number = float(value)
            except ValueError:
                raise BadSetting(f"{name}={value} is not a number") from None
            if number != number or number in (float("inf"), float("-inf")):
                raise BadSetting(f"{name}={value} is not a finite number")
            return number

        def get_choice(name: str, fallback: str, choices: tuple[str, ...]) -> str:
            value = (env.get(name) or fallback).lower()
            if value not in choices:
                raise BadSetting(f"{name}={env.get(name)} is not one of: {', '.join(choices)}")
            return value

        def get_flag(name: str) -> bool | None:
            value = env.get(name)
            return None if not value else value.lower() in {"1", "true", "yes", "on"}

        return cls(
            env=(env.get("PUNCHCARD_ENV") or default.env).lower(),
            introspection=get_flag("PUNCHCARD_INTROSPECTION"),
            graphiql=get_flag("PUNCHCARD_GRAPHIQL"),
            database_url=env.get("DATABASE_URL") or None,
            api_database_url=env.get("PUNCHCARD_API_DATABASE_URL") or None,
            worker_database_url=env.get("PUNCHCARD_WORKER_DATABASE_URL") or None,
            data_dir=Path(env.get("PUNCHCARD_DATA_DIR") or default.data_dir),
            jwt_secret=env.get("JWT_SECRET") or default.jwt_secret,
            jwt_audience=env.get("JWT_AUDIENCE") or None,
            jwt_issuer=env.get("JWT_ISSUER") or None,
            jwt_jwks_url=env.get("JWT_JWKS_URL") or None,
            jwt_jwks_refresh_seconds=get_float(
                "PUNCHCARD_JWKS_REFRESH_SECONDS", default.jwt_jwks_refresh_seconds
            ),
            jwt_jwks_timeout_seconds=get_float(
                "PUNCHCARD_JWKS_TIMEOUT_SECONDS", default.jwt_jwks_timeout_seconds
            ),
            jwt_leeway_seconds=get_float(
                "PUNCHCARD_JWT_LEEWAY_SECONDS", default.jwt_leeway_seconds
            ),
            host=env.get("PUNCHCARD_HOST") or default.host,
            port=get_int("PUNCHCARD_PORT", default.port),
            pool_min_size=get_int("PUNCHCARD_POOL_MIN", default.pool_min_size),
            pool_max_size=get_int("PUNCHCARD_POOL_MAX", default.pool_max_size),
            statement_cache_size=get_int(
                "PUNCHCARD_STATEMENT_CACHE_SIZE", default.statement_cache_size
            ),
            pool_acquire_timeout_seconds=get_float(
                "PUNCHCARD_POOL_ACQUIRE_TIMEOUT_SECONDS", default.pool_acquire_timeout_seconds
            ),
            statement_timeout_ms=get_int(
                "PUNCHCARD_STATEMENT_TIMEOUT_MS", default.statement_timeout_ms
            ),
            command_timeout_seconds=get_float(
                "PUNCHCARD_COMMAND_TIMEOUT_SECONDS", default.command_timeout_seconds
            ),
            header_timeout_seconds=get_float(
                "PUNCHCARD_HEADER_TIMEOUT_SECONDS", default.header_timeout_seconds
            ),
            body_timeout_seconds=get_float(
                "PUNCHCARD_BODY_TIMEOUT_SECONDS", default.body_timeout_seconds
            ),
            max_connections=get_int("PUNCHCARD_MAX_CONNECTIONS", 0) or None,
            max_query_depth=get_int("PUNCHCARD_MAX_QUERY_DEPTH", default.max_query_depth),
            max_aliases=get_int("PUNCHCARD_MAX_ALIASES", default.max_aliases),
            max_tokens=get_int("PUNCHCARD_MAX_TOKENS", default.max_tokens),
            max_query_cost=get_int("PUNCHCARD_MAX_QUERY_COST", default.max_query_cost),
            token_cache_seconds=get_float(
                "PUNCHCARD_TOKEN_CACHE_SECONDS", default.token_cache_seconds
            ),
            fast_path=env.get("PUNCHCARD_FAST_PATH", "1") not in {"0", "false", "no"},
            planner=env.get("PUNCHCARD_PLANNER", "1") not in {"0", "false", "no"},
            planner_differential=env.get("PUNCHCARD_PLANNER_DIFFERENTIAL", "0")
            in {"1", "true", "yes"},
            planner_mismatches=Path(env["PUNCHCARD_PLANNER_MISMATCHES"])
            if env.get("PUNCHCARD_PLANNER_MISMATCHES")
            else None,
            cors_origins=cors_origins(env.get("PUNCHCARD_CORS_ORIGINS", "")),
            sweep_grace_minutes=get_int(
                "PUNCHCARD_SWEEP_GRACE_MINUTES", default.sweep_grace_minutes
            ),
            sweep_batch_size=get_int("PUNCHCARD_SWEEP_BATCH_SIZE", default.sweep_batch_size),
            sweep_poll_seconds=get_float(
                "PUNCHCARD_SWEEP_POLL_SECONDS", default.sweep_poll_seconds
            ),
            reminder_webhook_url=env.get("PUNCHCARD_REMINDER_WEBHOOK_URL") or None,
            reminder_webhook_secret=env.get("PUNCHCARD_REMINDER_WEBHOOK_SECRET") or None,
            reminder_batch_size=get_int(
                "PUNCHCARD_REMINDER_BATCH_SIZE", default.reminder_batch_size
            ),
            reminder_retry_seconds=get_float(
                "PUNCHCARD_REMINDER_RETRY_SECONDS", default.reminder_retry_seconds
            ),
            idempotency_retention_days=get_float(
                "PUNCHCARD_IDEMPOTENCY_RETENTION_DAYS", default.idempotency_retention_days
            ),
            reminder_lease_seconds=get_float(
                "PUNCHCARD_REMINDER_LEASE_SECONDS", default.reminder_lease_seconds
            ),
            live_poll_seconds=get_float("PUNCHCARD_LIVE_POLL_SECONDS", default.live_poll_seconds),
            live_health_seconds=get_float(
                "PUNCHCARD_LIVE_HEALTH_SECONDS", default.live_health_seconds
            ),
            live_naive=env.get("PUNCHCARD_LIVE_NAIVE", "0") in {"1", "true", "yes"},
            ws_init_timeout_seconds=get_float(
                "PUNCHCARD_WS_INIT_TIMEOUT_SECONDS", default.ws_init_timeout_seconds
            ),
            ws_keepalive_seconds=get_float(
                "PUNCHCARD_WS_KEEPALIVE_SECONDS", default.ws_keepalive_seconds
            ),
            ws_max_operations=get_int("PUNCHCARD_WS_MAX_OPERATIONS", default.ws_max_operations),
            debug_stats=env.get("PUNCHCARD_DEBUG_STATS", "0") in {"1", "true", "yes"},
            ws_direct_writes=env.get("PUNCHCARD_WS_DIRECT_WRITES", "1") not in {"0", "false", "no"},
            live_writer_threads=get_int(
                "PUNCHCARD_LIVE_WRITER_THREADS", default.live_writer_threads
            ),
            gc_mode=get_choice("PUNCHCARD_GC", default.gc_mode, ("tuned", "default")),
            log_level=get_choice("PUNCHCARD_LOG_LEVEL", default.log_level, LOG_LEVELS),
            log_format=get_choice("PUNCHCARD_LOG_FORMAT", default.log_format, LOG_FORMATS),
            access_log=env.get("PUNCHCARD_ACCESS_LOG", "1") not in {"0", "false", "no"},
            metrics=env.get("PUNCHCARD_METRICS", "1") not in {"0", "false", "no"},
            sweeper_metrics_port=get_int("PUNCHCARD_SWEEPER_METRICS_PORT", 0) or None,
            stripe_webhook_secret=env.get("PUNCHCARD_STRIPE_WEBHOOK_SECRET") or None,
            stripe_platform_trainer=env.get("PUNCHCARD_STRIPE_PLATFORM_TRAINER") or None,
            webhook_allow_private=bool(get_flag("PUNCHCARD_WEBHOOK_ALLOW_PRIVATE")),
            webhook_timeout_seconds=get_float(
                "PUNCHCARD_WEBHOOK_TIMEOUT_SECONDS", default.webhook_timeout_seconds
            ),
            webhook_retry_seconds=get_float(
                "PUNCHCARD_WEBHOOK_RETRY_SECONDS", default.webhook_retry_seconds
            ),
            webhook_retry_scale=get_float(
                "PUNCHCARD_WEBHOOK_RETRY_SCALE", default.webhook_retry_scale
            ),
            webhook_lease_seconds=get_float(
                "PUNCHCARD_WEBHOOK_LEASE_SECONDS", default.webhook_lease_seconds
            ),
            webhook_disable_after_days=get_float(
                "PUNCHCARD_WEBHOOK_DISABLE_AFTER_DAYS", default.webhook_disable_after_days
            ),
            webhook_batch_size=get_int("PUNCHCARD_WEBHOOK_BATCH_SIZE", default.webhook_batch_size),
            webhook_concurrency=get_int(
                "PUNCHCARD_WEBHOOK_CONCURRENCY", default.webhook_concurrency
            ),
            check_interval_seconds=get_float(
                "PUNCHCARD_CHECK_INTERVAL_SECONDS", default.check_interval_seconds
            ),
        )._validated()

    def _validated(self) -> Settings:
        """Refuse combinations that cannot work (a BadSetting names the variable)."""
        for name, port in (
            ("PUNCHCARD_PORT", self.port),
            ("PUNCHCARD_SWEEPER_METRICS_PORT", self.sweeper_metrics_port),
        ):
            if port is not None and not 0 < port < 65536:
                raise BadSetting(f"{name}={port} is not a TCP port (1-65535)")
        if self.pool_min_size < 0 or self.pool_max_size < 1:
            raise BadSetting("PUNCHCARD_POOL_MIN must be >= 0 and PUNCHCARD_POOL_MAX >= 1")
        if self.pool_min_size > self.pool_max_size:
            raise BadSetting(
                f"PUNCHCARD_POOL_MIN={self.pool_min_size} is larger than "
                f"PUNCHCARD_POOL_MAX={self.pool_max_size}"
            )
        if self.reminder_webhook_url and not self.reminder_webhook_secret:
            raise BadSetting(
                "PUNCHCARD_REMINDER_WEBHOOK_URL is set without PUNCHCARD_REMINDER_WEBHOOK_SECRET "
                "(the key that signs each reminder): set both, or neither to log reminders"
            )
        if self.webhook_lease_seconds <= self.webhook_timeout_seconds:
            raise BadSetting(
                f"PUNCHCARD_WEBHOOK_LEASE_SECONDS={self.webhook_lease_seconds:g} must be longer "
                f"than PUNCHCARD_WEBHOOK_TIMEOUT_SECONDS={self.webhook_timeout_seconds:g} "
                "(else a slow attempt is sent twice)"
            )
        if self.webhook_batch_size < 1 or self.webhook_concurrency < 1:
            raise BadSetting(
                "PUNCHCARD_WEBHOOK_BATCH_SIZE and PUNCHCARD_WEBHOOK_CONCURRENCY must be >= 1"
            )
        if self.check_interval_seconds < 0:
            raise BadSetting(
                f"PUNCHCARD_CHECK_INTERVAL_SECONDS={self.check_interval_seconds:g} must be >= 0 "
                "(0 turns the sweeper's ledger check off)"
            )
        for name, url in (
            ("DATABASE_URL", self.database_url),
            ("PUNCHCARD_API_DATABASE_URL", self.api_database_url),
            ("PUNCHCARD_WORKER_DATABASE_URL", self.worker_database_url),
        ):
            if url and not url.startswith(("postgres://", "postgresql://")):
                raise BadSetting(f"{name} must be a postgresql:// URL, not {hide_password(url)}")
        return self

    @property
    def webhook_retry_delays(self) -> tuple[float, ...]:
        """Seconds before retry n (after failed attempt n): 5 s, 5 min, 30 min, 2 h, 5 h,
        10 h, 10 h by default; eight attempts in all, the first at once."""
        later = (300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
        return (self.webhook_retry_seconds, *(s * self.webhook_retry_scale for s in later))

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def introspection_on(self) -> bool:
        return self.introspection if self.introspection is not None else not self.production

    @property
    def graphiql_on(self) -> bool:
        return self.graphiql if self.graphiql is not None else not self.production

    def check(self) -> list[str]:
        """Refuse what production must not run with; otherwise what it runs with (to log)."""
        if not self.production:
            return []
        if self.jwt_secret == DEV_JWT_SECRET:
            raise UnsafeSettings(
                "PUNCHCARD_ENV=production refuses the built-in development JWT secret: "
                "set JWT_SECRET (at least 32 random characters)"
            )
        return [
            "production mode",
            f"introspection {'on' if self.introspection_on else 'off'}",
            f"GraphiQL {'on' if self.graphiql_on else 'off'}",
        ]

    def with_database(self, url: str) -> Settings:
        return replace(self, database_url=url)

    @property
    def dev_secret(self) -> bool:
        return self.jwt_secret == DEV_JWT_SECRET


def hide_password(url: str) -> str:
    """``url`` with the password (if any) replaced by ``***``: safe to print and log."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not at or not colon or not password:
        return url
    return f"{scheme}://{user}:***@{host}{slash}{tail}"


_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s]+")


def cors_origins(value: str) -> tuple[str, ...]:
    """``PUNCHCARD_CORS_ORIGINS``: comma-separated origins (``https://app.example``, with a
    port if not the default) or ``*`` for any; a trailing ``/`` is dropped. Anything else
    (a path, a bare host) is refused here, at startup, rather than never matching."""
    origins = []
    for item in value.split(","):
        origin = item.strip().rstrip("/").lower()
        if not origin:
            continue
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ValueError(
                f"PUNCHCARD_CORS_ORIGINS: {item.strip()!r} is not an origin "
                "(scheme://host[:port], or * for any)"
            )
        origins.append(origin)
    return tuple(dict.fromkeys(origins))
