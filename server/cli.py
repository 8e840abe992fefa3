"""punchcard: the GraphQL API that keeps trainers' session packages exactly right.

Commands: serve, sweep, check, migrate, schema, token (`punchcard COMMAND --help` for each).
Settings are environment variables (README, "Settings"); without DATABASE_URL an
embedded PostgreSQL runs under PUNCHCARD_DATA_DIR (default ./.punchcard)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from punchcard.db.integrity import NAMES as INVARIANTS
from punchcard.logs import configure
from punchcard.server.startup import (
    EXIT_DATA_DIR,
    EXIT_USAGE,
    Refused,
    SweeperChild,
    announce,
    banner,
    check_port,
    package_version,
    preflight,
)
from punchcard.settings import BadSetting, Settings, UnsafeSettings

log = logging.getLogger("punchcard")

COMMON_ENV = (
    "DATABASE_URL (unset: embedded PostgreSQL in PUNCHCARD_DATA_DIR, default ./.punchcard), "
    "PUNCHCARD_API_DATABASE_URL, PUNCHCARD_WORKER_DATABASE_URL, "
    "PUNCHCARD_LOG_LEVEL (info), PUNCHCARD_LOG_FORMAT (human|json)"
)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


@contextmanager
def database(settings: Settings, *, migrate: bool) -> Iterator[Settings]:
    """Settings pointing at a ready database: DATABASE_URL, or the embedded server.

    uvicorn re-raises SIGTERM after its graceful shutdown, which would kill the process
    before ``atexit`` stops the embedded server: SIGTERM/SIGINT exit through here instead.
    """
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    if settings.database_url:
        if migrate:
            from punchcard.db.migrate import upgrade

            upgrade(settings.database_url)
        yield settings
        return
    from punchcard.db.embedded import BrokenDataDir, EmbeddedPostgres
    from punchcard.db.migrate import upgrade

    embedded = EmbeddedPostgres(settings.data_dir)
    try:
        url = embedded.start()
    except BrokenDataDir as broken:
        raise Refused(EXIT_DATA_DIR, str(broken)) from None
    try:
        upgrade(url)
        os.environ["DATABASE_URL"] = url  # for worker processes (--workers)
        yield settings.with_database(url)
    finally:
        embedded.stop()


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    host = args.host or settings.host
    port = args.port or settings.port
    try:
        settings.check()  # before anything starts: production refuses unsafe settings
    except UnsafeSettings as refused:
        raise Refused(EXIT_USAGE, str(refused)) from None
    check_port(host, port)  # before the database starts: one line, not a traceback later
    with database(settings, migrate=False) as ready:
        assert ready.database_url
        preflight(ready, api=True)
        token = None
        if args.demo:
            from punchcard.db.roles import worker_url
            from punchcard.gql.auth import issue_token
            from punchcard.server.demo import seed

            subject = asyncio.run(seed(worker_url(ready)))
            token = issue_token(ready, subject, ttl_seconds=7 * 24 * 3600)
        common: dict[str, Any] = {
            "host": host,
            "port": port,
            "loop": "uvloop",
            "ws": "websockets-sansio",
            "ws_per_message_deflate": False,
            "log_config": None,  # punchcard.logs formats uvicorn's records too
            "log_level": None,
            "limit_concurrency": settings.max_connections,
            "access_log": False,  # server/observe.py logs each request, with its id
        }
        sweeper = SweeperChild() if args.sweeper else None

        def ready_now() -> None:
            if sweeper is not None and sweeper.pid is None:
                sweeper.start()
            lines, fields = banner(
                ready,
                host,
                port,
                embedded=not settings.database_url,
                token=token,
                sweeper=sweeper.pid if sweeper else None,
                workers=args.workers,
            )
            announce(ready, lines, fields)

        try:
            if args.workers > 1:  # each worker builds its app and protocol (server/main.py)
                ready_now()
                uvicorn.run(
                    "punchcard.server.main:app",
                    http="punchcard.server.main:http",
                    workers=args.workers,
                    **common,
                )
            else:
                from punchcard.server.app import create_app
                from punchcard.server.slow_clients import http_protocol

                config = uvicorn.Config(create_app(ready), http=http_protocol(ready), **common)
                _server(config, ready_now).run()
        finally:
            if sweeper is not None:
                sweeper.stop()
    return 0


def _server(config: Any, on_ready: Callable[[], None]) -> Any:
    """uvicorn's server, calling ``on_ready`` once it listens (the banner, the sweeper)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and not self.should_exit:
                on_ready()

    return Server(config)


def cmd_sweep(args: argparse.Namespace, settings: Settings) -> int:
    from punchcard.sweeper import worker

    if args.now is not None and not args.once:
        raise Refused(EXIT_USAGE, "--now needs --once")
    if settings.sweeper_metrics_port is not None and not args.once:
        check_port(
            settings.host, settings.sweeper_metrics_port, variable="PUNCHCARD_SWEEPER_METRICS_PORT"
        )
    with database(settings, migrate=False) as ready:
        preflight(ready, api=False)
        return worker.main(ready, once=args.once, now=args.now)


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from punchcard.server.check import run_check

    if args.database_url:
        settings = settings.with_database(args.database_url)
    if not settings.database_url and not (settings.data_dir / "pg").exists():
        raise Refused(
            EXIT_USAGE,
            f"no database to check: set DATABASE_URL (or --database-url), or "
            f"PUNCHCARD_DATA_DIR to an embedded data dir ({settings.data_dir}/pg does not exist)",
        )
    with database(settings, migrate=False) as ready:
        preflight(ready, api=False)
        return run_check(ready, as_json=args.json, skip=args.skip or ())


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset")
    return moment


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from punchcard.db.migrate import head
    from punchcard.settings import hide_password

    with database(settings, migrate=True) as ready:
        print(f"migrated {hide_password(ready.database_url or '')} to {head()}")
    return 0


def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    from punchcard.gql.schema import sdl
    from punchcard.server.app import schema_for

    text = sdl(schema_for(settings))
    if not args.check:
        sys.stdout.write(text)
        return 0
    path = Path(args.path)
    if path.exists() and path.read_text() == text:
        print(f"{path} is up to date")
        return 0
    print(f"{path} differs from the schema; run: punchcard schema > {path}", file=sys.stderr)
    return 1


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from punchcard.gql.auth import issue_token

    print(issue_token(settings, args.trainer, ttl_seconds=args.ttl))
    return 0


class _Help(argparse.RawDescriptionHelpFormatter):
    """Descriptions kept as written; an option's default shown when it has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _command(
    commands: Any, name: str, summary: str, description: str, env: str
) -> argparse.ArgumentParser:
    made: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=f"{summary}.\n\n{description}",
        epilog=textwrap.fill(f"environment: {env}", 79, subsequent_indent="  "),
        formatter_class=_Help,
    )
    return made


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="punchcard", description=__doc__, formatter_class=_Help)
    root.add_argument("--version", action="version", version=f"punchcard {package_version()}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = _command(
        commands,
        "serve",
        "run the GraphQL API",
        "Serves /graphql (HTTP and WebSocket), /graphiql, /healthz, /readyz and /metrics,\n"
        "and prints where once it is ready. Without DATABASE_URL it starts (or joins) the\n"
        "embedded PostgreSQL and migrates it; with it, the database must be migrated\n"
        "already (punchcard migrate). Exits 2-6 with one line when it cannot start.",
        "PUNCHCARD_HOST (127.0.0.1), PUNCHCARD_PORT (8000), JWT_SECRET, PUNCHCARD_ENV, "
        "PUNCHCARD_MAX_CONNECTIONS, PUNCHCARD_METRICS (1), PUNCHCARD_ACCESS_LOG (1), "
        f"{COMMON_ENV}; the rest in the README",
    )
    serve.add_argument("--host", help="listen address (default: PUNCHCARD_HOST)")
    serve.add_argument("--port", type=int, help="listen port (default: PUNCHCARD_PORT)")
    serve.add_argument("--workers", type=int, default=1, help="server processes")
    serve.add_argument(
        "--demo", action="store_true", help="seed a demo trainer's data and print a token"
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="overrides PUNCHCARD_LOG_LEVEL; debug also shows the libraries' logs",
    )
    serve.add_argument(
        "--sweeper",
        action="store_true",
        help="also run `punchcard sweep` as a child process (restarted if it dies)",
    )
    serve.set_defaults(run=cmd_serve)

    sweep = _command(
        commands,
        "sweep",
        "complete past bookings and send reminders until stopped",
        "Completes CONFIRMED bookings PUNCHCARD_SWEEP_GRACE_MINUTES after they end (and\n"
        "charges them), sends due reminders and purges old idempotency keys, in batches;\n"
        "checks the ledger (punchcard check) every PUNCHCARD_CHECK_INTERVAL_SECONDS.\n"
        "SIGTERM finishes the batch in flight and exits 0.",
        "PUNCHCARD_SWEEP_GRACE_MINUTES (15), PUNCHCARD_SWEEP_BATCH_SIZE (500), "
        "PUNCHCARD_SWEEP_POLL_SECONDS (30), PUNCHCARD_REMINDER_WEBHOOK_URL and "
        "PUNCHCARD_REMINDER_WEBHOOK_SECRET (unset: reminders are logged), "
        "PUNCHCARD_SWEEPER_METRICS_PORT (unset: no metrics endpoint), "
        "PUNCHCARD_CHECK_INTERVAL_SECONDS (3600; 0: no ledger check), "
        f"{COMMON_ENV}",
    )
    sweep.add_argument("--once", action="store_true", help="one pass, then exit")
    sweep.add_argument(
        "--now", type=_moment, help="with --once: sweep as if it were this ISO-8601 time"
    )
    sweep.set_defaults(run=cmd_sweep)

    check = _command(
        commands,
        "check",
        "verify the ledger's invariants",
        "Checks every package and booking against the ledger (sessions_used and\n"
        "sessions_held are the sums of the entries, revisions 1..n without gaps, the\n"
        "entries replay, CONFIRMED bookings hold, no booking charged twice, every CHECK\n"
        'holds; README, "Ledger check") and prints one line per drift, then a summary.\n'
        "Exit 0: clean; 1: drift found; 2-6: could not check (one line on stderr).",
        f"{COMMON_ENV} (it connects as punchcard_worker, which sees every trainer)",
    )
    check.add_argument(
        "--database-url", help="check this database instead of DATABASE_URL's (the owner's URL)"
    )
    check.add_argument("--json", action="store_true", help="one JSON object on stdout")
    check.add_argument(
        "--skip",
        action="append",
        metavar="INVARIANT",
        choices=INVARIANTS,
        help="leave an invariant out (repeatable): " + ", ".join(INVARIANTS),
    )
    check.set_defaults(run=cmd_check)

    migrate = _command(
        commands,
        "migrate",
        "apply the database migrations",
        "Brings DATABASE_URL (or the embedded database) to the newest Alembic revision\n"
        "and creates the punchcard_api and punchcard_worker roles if missing. Repeatable.",
        COMMON_ENV,
    )
    migrate.set_defaults(run=cmd_migrate)

    schema = _command(
        commands,
        "schema",
        "print the GraphQL SDL",
        "Prints the schema as SDL, or with --check compares it with a file (exit 1 if\n"
        "it differs). Needs no database.",
        "PUNCHCARD_MAX_QUERY_DEPTH, PUNCHCARD_MAX_ALIASES, PUNCHCARD_MAX_TOKENS",
    )
    schema.add_argument("--check", action="store_true", help="fail if the file differs")
    schema.add_argument("--path", default="schema.graphql", help="the file --check compares")
    schema.set_defaults(run=cmd_schema)

    token = _command(
        commands,
        "token",
        "issue a JWT for a trainer (development)",
        "Prints an HS256 JWT signed with JWT_SECRET whose sub is the trainer. Needs no\n"
        "database: an unknown sub is provisioned on its first request.",
        "JWT_SECRET, JWT_AUDIENCE, JWT_ISSUER",
    )
    token.add_argument("--trainer", required=True, help="the trainer's subject (JWT sub)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.set_defaults(run=cmd_token)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except BadSetting as bad:
        configure()
        print(f"punchcard {args.command}: {bad}", file=sys.stderr)
        return EXIT_USAGE
    configure(getattr(args, "log_level", None) or settings.log_level, settings.log_format)
    try:
        result: int = args.run(args, settings)
    except Refused as refused:
        print(f"punchcard {args.command}: {refused}", file=sys.stderr)
        return refused.code
    return result


if __name__ == "__main__":
    sys.exit(main())
