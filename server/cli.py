"""The ``punchcard`` console script: serve, sweep, migrate, schema, token."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType

from punchcard.settings import Settings, UnsafeSettings

log = logging.getLogger("punchcard")


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
    from punchcard.db.embedded import EmbeddedPostgres
    from punchcard.db.migrate import upgrade

    embedded = EmbeddedPostgres(settings.data_dir)
    url = embedded.start()
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
        print(f"punchcard serve: {refused}", file=sys.stderr)
        return 2
    with database(settings, migrate=False) as ready:
        assert ready.database_url
        if args.demo:
            from punchcard.db.roles import worker_url
            from punchcard.gql.auth import issue_token
            from punchcard.server.demo import seed
            from punchcard.server.pages import demo_banner

            subject = asyncio.run(seed(worker_url(ready)))
            token = issue_token(ready, subject, ttl_seconds=7 * 24 * 3600)
            print(demo_banner(f"http://{host}:{port}", token), flush=True)
            print(f"Token:     {token}", flush=True)
            print(f'Header:    {{"Authorization": "Bearer {token}"}}', flush=True)
        common = {
            "host": host,
            "port": port,
            "loop": "uvloop",
            "ws": "websockets-sansio",
            "ws_per_message_deflate": False,
            "log_level": args.log_level,
            "limit_concurrency": settings.max_connections,
            "access_log": False,
        }
        sweeper = _start_sweeper() if args.sweeper else None
        try:
            if args.workers > 1:  # each worker builds its app and protocol (server/main.py)
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
                uvicorn.Server(config).run()
        finally:
            if sweeper is not None:
                _stop_child(sweeper)
    return 0


def _start_sweeper() -> subprocess.Popen[bytes]:
    """``serve --sweeper``: ``punchcard sweep`` as a child with this environment (which
    carries the embedded server's DATABASE_URL, so the child shares it)."""
    command = [sys.executable, "-m", "punchcard", "sweep"]
    child = subprocess.Popen(command, env=dict(os.environ))
    log.info("started sweeper (pid %d)", child.pid)
    return child


def _stop_child(child: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)  # it finishes its current batch
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    log.info("sweeper exited with %s", child.returncode)


def cmd_sweep(args: argparse.Namespace, settings: Settings) -> int:
    from punchcard.sweeper import worker

    if args.now is not None and not args.once:
        raise SystemExit("punchcard sweep: --now needs --once")
    with database(settings, migrate=False) as ready:
        return worker.main(ready, once=args.once, now=args.now)


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset")
    return moment


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings, migrate=True) as ready:
        print(f"migrated {ready.database_url}")
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


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="punchcard", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the GraphQL API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--demo", action="store_true", help="seed demo data, print a token")
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--sweeper", action="store_true", help="also run `punchcard sweep` as a child process"
    )
    serve.set_defaults(run=cmd_serve)

    sweep = commands.add_parser(
        "sweep", help="complete past bookings and send reminders until stopped"
    )
    sweep.add_argument("--once", action="store_true", help="one pass, then exit")
    sweep.add_argument(
        "--now", type=_moment, help="with --once: sweep as if it were this ISO-8601 time"
    )
    sweep.set_defaults(run=cmd_sweep)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(run=cmd_migrate)

    schema = commands.add_parser("schema", help="print the GraphQL SDL")
    schema.add_argument("--check", action="store_true", help="fail if the file differs")
    schema.add_argument("--path", default="schema.graphql")
    schema.set_defaults(run=cmd_schema)

    token = commands.add_parser("token", help="issue a JWT for a trainer (development)")
    token.add_argument("--trainer", required=True, help="the trainer's subject (JWT sub)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.set_defaults(run=cmd_token)
    return root


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parser().parse_args(argv)
    result: int = args.run(args, Settings.from_env())
    return result


if __name__ == "__main__":
    sys.exit(main())
