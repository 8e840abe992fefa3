"""HTTP benchmarks of the API, each against a baseline measured in the same run.

- useSession, 16 connections spread over 1,000 packages: punchcard vs the bare
  Starlette + asyncpg endpoint (benchmarks/baseline_app.py) verifying the same JWT and
  doing the same SQL.
- the hot row: every request on one package, both servers.
- the calendar: a month with 300 bookings, clients and packages; requests/s on the query
  planner vs graphql-core (``PUNCHCARD_PLANNER=0``), and the SQL statements one request
  sends (asyncpg's query logger, in-process). ``--calendar`` runs only these rows.
- useSession over 1,000 packages of 100 trainers, taken in turn, vs one trainer's: what
  row-level security's switch of a pooled connection to another trainer costs.
- ``--workers`` 1 vs 2 for useSession.

After each load the ledger is checked: rows added == successful responses, and the
packages' sessions_used grew by the same number.

    python -m benchmarks.http_api [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from benchmarks.harness import Load, bin_path, free_port, fresh_database, serving, wrk
from punchcard.gql.auth import issue_token
from punchcard.server.app import create_app
from punchcard.settings import DEV_JWT_SECRET, Settings

PACKAGES = 1000
TRAINERS = 100  # the many-trainers run: each request's pooled connection switches trainer
USE_BODY = (
    '{"query": "mutation($id: ID!) { useSession(purchaseId: $id) '
    '{ sessionsUsed sessionsRemaining revision } }", "variables": {"id": "pur_%d"}}'
)
BASELINE_BODY = '{"id": %d}'
CALENDAR_BODY = (
    '{"query": "query($from: DateTime!, $to: DateTime!) { bookings(from: $from, to: $to) '
    "{ id startsAt endsAt status charged client { id name } "
    'purchase { id sessionsRemaining expiresAt } } }", '
    '"variables": {"from": "2027-03-01T00:00:00Z", "to": "2027-04-01T00:00:00Z"}}'
)


@dataclass
class Row:
    name: str
    load: Load
    baseline: Load | None = None
    note: str = ""


async def seed(url: str) -> tuple[list[int], int]:
    """Trainer 1 with 1,000 big packages, plus a month of 300 bookings; returns the
    package ids and the hot package id."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO trainers (id, subject) VALUES (1, 'bench-trainer')")
        await conn.execute(
            """
            INSERT INTO clients (trainer_id, name)
            SELECT 1, 'Client ' || n FROM generate_series(1, 100) AS n;
            """
        )
        ids = await conn.fetch(
            """
            INSERT INTO purchases (trainer_id, client_id, sessions_total)
            SELECT 1, 1 + n % 100, 1000000 FROM generate_series(1, $1) AS n
            RETURNING id
            """,
            PACKAGES + 1,
        )
        march = datetime(2027, 3, 1, tzinfo=UTC)
        await conn.execute(
            """
            INSERT INTO bookings (trainer_id, client_id, purchase_id, starts_at, ends_at)
            SELECT 1, 1 + n % 100,
                   CASE WHEN n % 4 <> 0 THEN (SELECT min(p.id) FROM purchases AS p
                                               WHERE p.client_id = 1 + n % 100) END,
                   $1::timestamptz + make_interval(hours => n * 2),
                   $1::timestamptz + make_interval(hours => n * 2 + 1)
              FROM generate_series(0, 299) AS n
            """,
            march,
        )
        assert march + timedelta(hours=600) < march + timedelta(days=31)
        package_ids = [r["id"] for r in ids]
        return package_ids[:PACKAGES], package_ids[PACKAGES]
    finally:
        await conn.close()


async def seed_trainers(url: str) -> list[tuple[int, str]]:
    """TRAINERS more trainers with PACKAGES // TRAINERS packages each: (package id,
    trainer subject), taken in turn so consecutive requests come from other trainers."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """
            WITH t AS (
                INSERT INTO trainers (id, subject)
                SELECT 1 + n, 'bench-trainer-' || n FROM generate_series(1, $1) AS n
                RETURNING id, subject
            ), c AS (
                INSERT INTO clients (trainer_id, name) SELECT id, 'Client' FROM t
                RETURNING id, trainer_id
            )
            INSERT INTO purchases (trainer_id, client_id, sessions_total)
            SELECT c.trainer_id, c.id, 1000000 FROM c, generate_series(1, $2) AS n
            RETURNING id, trainer_id
            """,
            TRAINERS,
            PACKAGES // TRAINERS,
        )
        subjects = {r["id"]: r["subject"] for r in await conn.fetch("SELECT * FROM trainers")}
        by_trainer: dict[str, list[int]] = {}
        for row in rows:
            by_trainer.setdefault(subjects[row["trainer_id"]], []).append(row["id"])
        each = PACKAGES // TRAINERS
        return [(ids[i], subject) for i in range(each) for subject, ids in by_trainer.items()]
    finally:
        await conn.close()


async def vacuum(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE purchases, session_ledger")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def counters(url: str) -> tuple[int, int]:
    """(ledger rows, total sessions_used), read in one snapshot."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(  # one statement: one snapshot
            """
            SELECT (SELECT count(*) FROM session_ledger) AS ledger,
                   (SELECT sum(sessions_used) FROM purchases) AS used
            """
        )
        return row["ledger"], row["used"]
    finally:
        await conn.close()


async def calendar_statements(url: str, token: str) -> int:
    """SQL statements one calendar request sends, counted in-process by asyncpg's query
    logger on a one-connection pool (after a warm-up: type introspection is per
    connection)."""
    sent: list[str] = []

    async def log_queries(connection: asyncpg.Connection) -> None:
        connection.add_query_logger(lambda record: sent.append(record.query))

    settings = Settings(database_url=url, pool_min_size=1, pool_max_size=1)
    app = create_app(settings, on_connect=log_queries)
    body = json.loads(CALENDAR_BODY)
    headers = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench") as http,
    ):
        await http.post("/graphql", json=body, headers=headers)
        sent.clear()
        response = await http.post("/graphql", json=body, headers=headers)
        assert len(response.json()["data"]["bookings"]) == 300
    return len(sent)


def checked(url: str, run: Load, before: tuple[int, int], connections: int = 16) -> str:
    """The ledger grew by exactly the sessions used, and by the successful responses plus
    at most the requests in flight when wrk stopped (served, but never read by wrk)."""
    time.sleep(0.5)  # let the requests in flight finish
    after = asyncio.run(counters(url))
    ledger, used = after[0] - before[0], after[1] - before[1]
    if ledger != used or not run.ok <= ledger <= run.ok + connections or run.failed:
        raise SystemExit(
            f"ledger check failed: +{ledger} rows, +{used} used, {run.ok} ok, {run.failed} failed"
        )
    return f"ledger +{ledger}, {run.ok} ok, {ledger - run.ok} in flight at stop"


def main(seconds: int = 10) -> list[Row]:
    rows: list[Row] = []
    with fresh_database() as url:
        packages, hot = asyncio.run(seed(url))
        many = asyncio.run(seed_trainers(url))
        many_ids = [package for package, _ in many]
        many_tokens = [issue_token(Settings(), subject, ttl_seconds=3600) for _, subject in many]
        env = {**os.environ, "DATABASE_URL": url, "JWT_SECRET": DEV_JWT_SECRET}
        token = issue_token(Settings(), "bench-trainer", ttl_seconds=3600)

        def uvicorn(app: str, port: int) -> list[str]:
            return [
                bin_path("uvicorn"), app, "--port", str(port), "--loop", "uvloop",
                "--http", "httptools", "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip

        def punchcard(port: int, workers: int = 1) -> list[str]:
            return [
                bin_path("punchcard"), "serve", "--port", str(port),
                "--workers", str(workers), "--log-level", "warning",
            ]  # fmt: skip

        def measure(
            base: str, body: str, ids: list[int], auth: str = "", tokens: Sequence[str] = ()
        ) -> tuple[Load, str]:
            wrk(base, body_template=body, ids=ids, token=auth, tokens=tokens, seconds=2)  # warm
            time.sleep(0.5)  # the warm-up's requests in flight finish before counting
            # Each run leaves tens of thousands of dead package rows: vacuum them first,
            # so no run pays for its predecessor (autovacuum would, at random).
            asyncio.run(vacuum(url))
            before = asyncio.run(counters(url))
            run = wrk(base, body_template=body, ids=ids, token=auth, tokens=tokens, seconds=seconds)
            return run, checked(url, run, before)

        port = free_port()
        with serving(uvicorn("benchmarks.baseline_app:app", port), env, port) as base:
            spread_base, _ = measure(f"{base}/use", BASELINE_BODY, packages, token)
            hot_base, _ = measure(f"{base}/use", BASELINE_BODY, [hot], token)
        port = free_port()
        with serving(punchcard(port), env, port) as api:
            spread, note = measure(f"{api}/graphql", USE_BODY, packages, token)
            rows.append(Row("useSession, 1,000 packages", spread, spread_base, note))
            hot_run, note = measure(f"{api}/graphql", USE_BODY, [hot], token)
            rows.append(Row("useSession, one hot package", hot_run, hot_base, note))
            switching, note = measure(f"{api}/graphql", USE_BODY, many_ids, tokens=many_tokens)
            rows.append(Row("useSession, 100 trainers (vs 1)", switching, spread, note))
        rows.extend(calendar_rows(url, env, token, seconds))
        port = free_port()
        with serving(punchcard(port, workers=2), env, port) as api:
            two, note = measure(f"{api}/graphql", USE_BODY, packages, token)
            rows.append(Row("useSession, --workers 2 (vs 1)", two, spread, note))
    return rows


def calendar_rows(url: str, env: dict[str, str], token: str, seconds: int) -> list[Row]:
    """The calendar on its plan (gql/planned.py) and on graphql-core (PUNCHCARD_PLANNER=0),
    one server each, in the same run: the planner's row has graphql-core's as baseline."""
    loads: dict[str, Load] = {}
    for planner in ("0", "1"):
        port = free_port()
        command = [
            bin_path("punchcard"), "serve", "--port", str(port), "--log-level", "warning",
        ]  # fmt: skip
        with serving(command, {**env, "PUNCHCARD_PLANNER": planner}, port) as api:
            wrk(f"{api}/graphql", body_template=CALENDAR_BODY, ids=[0], token=token, seconds=2)
            loads[planner] = wrk(
                f"{api}/graphql", body_template=CALENDAR_BODY, ids=[0], token=token, seconds=seconds
            )
    statements = asyncio.run(calendar_statements(url, token))
    note = f"{statements} SQL statements/request"
    return [
        Row("calendar, 300 bookings, graphql-core", loads["0"], None, note),
        Row("calendar, 300 bookings, planned", loads["1"], loads["0"], f"vs graphql-core; {note}"),
    ]


def calendar_only(seconds: int) -> list[Row]:
    with fresh_database() as url:
        asyncio.run(seed(url))
        env = {**os.environ, "DATABASE_URL": url, "JWT_SECRET": DEV_JWT_SECRET}
        token = issue_token(Settings(), "bench-trainer", ttl_seconds=3600)
        return calendar_rows(url, env, token, seconds)


def table(rows: list[Row]) -> str:
    lines = [
        f"{'benchmark':34} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'baseline':>9} {'ratio':>6}  notes",
    ]
    for row in rows:
        base = f"{row.baseline.rps:9.0f}" if row.baseline else f"{'-':>9}"
        ratio = f"{row.load.rps / row.baseline.rps:6.2f}" if row.baseline else f"{'-':>6}"
        lines.append(
            f"{row.name:34} {row.load.rps:8.0f} {row.load.p50_ms:7.2f} {row.load.p99_ms:7.2f} "
            f"{base} {ratio}  {row.note}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--calendar", action="store_true", help="only the calendar rows")
    args = parser.parse_args()
    started = time.monotonic()
    print(table((calendar_only if args.calendar else main)(args.seconds)))
    print(f"(measured in {time.monotonic() - started:.0f} s)")
