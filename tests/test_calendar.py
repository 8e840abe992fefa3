"""The calendar query: a month of bookings with clients and packages in a bounded
number of SQL statements, whatever the number of bookings (DataLoaders)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from punchcard.gql.auth import issue_token
from punchcard.server.app import create_app
from punchcard.settings import Settings
from tests.helpers import hold_seeded

CALENDAR = """
query($from: DateTime!, $to: DateTime!) {
  bookings(from: $from, to: $to) {
    id startsAt status charged
    client { id name purchases { id sessionsRemaining } }
    purchase { id sessionsUsed sessionsRemaining client { name } }
  }
}"""
MONTH = datetime(2026, 3, 1, tzinfo=UTC)


class StatementLog:
    """Every statement the app's pool sends, seen by asyncpg's query logger."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    async def attach(self, connection: asyncpg.Connection) -> None:
        connection.add_query_logger(lambda record: self.statements.append(record.query))


async def seed_month(db: asyncpg.Connection, *, clients: int, bookings_per_client: int) -> None:
    """A trainer with ``clients`` clients, each with a package and bookings in March."""
    trainer = await db.fetchval("INSERT INTO trainers (subject) VALUES ('trainer-a') RETURNING id")
    await db.execute(
        """
        WITH c AS (
            INSERT INTO clients (trainer_id, name)
            SELECT $1, 'Client ' || n FROM generate_series(1, $2) AS n RETURNING id
        ), p AS (
            INSERT INTO purchases (trainer_id, client_id, sessions_total)
            SELECT $1, c.id, 40 FROM c RETURNING id, client_id
        )
        INSERT INTO bookings (trainer_id, client_id, purchase_id, starts_at, ends_at)
        SELECT $1, p.client_id, CASE WHEN k % 3 = 0 THEN NULL ELSE p.id END,
               $4::timestamptz + make_interval(days => k, hours => p.client_id::int % 10),
               $4::timestamptz + make_interval(days => k, hours => p.client_id::int % 10 + 1)
          FROM p, generate_series(0, $3 - 1) AS k
        """,
        trainer,
        clients,
        bookings_per_client,
        MONTH,
    )
    await hold_seeded(db)  # the seeded CONFIRMED bookings hold their packages' sessions


@pytest.fixture
async def counted(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, StatementLog]]:
    log = StatementLog()
    # One connection: asyncpg introspects types once per connection, and the warm-up
    # below must have done that before counting starts.
    # Statements as production sends them: without the differential check's second run.
    counting = replace(settings, pool_min_size=1, pool_max_size=1, planner_differential=False)
    app = create_app(counting, on_connect=log.attach)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http, log


async def calendar(
    http: httpx.AsyncClient, settings: Settings, log: StatementLog
) -> tuple[list[dict[str, Any]], int]:
    token = issue_token(settings, "trainer-a")
    request = {
        "query": CALENDAR,
        "variables": {"from": MONTH.isoformat(), "to": (MONTH + timedelta(days=31)).isoformat()},
    }
    headers = {"Authorization": f"Bearer {token}"}
    await http.post("/graphql", json=request, headers=headers)  # warm-up: token, type info
    log.statements.clear()
    response = await http.post("/graphql", json=request, headers=headers)
    body = response.json()
    assert "errors" not in body, body
    return body["data"]["bookings"], len(log.statements)


@pytest.mark.parametrize(("clients", "per_client"), [(3, 2), (30, 10)])
async def test_calendar_runs_a_bounded_number_of_statements(
    counted: tuple[httpx.AsyncClient, StatementLog],
    settings: Settings,
    db: asyncpg.Connection,
    clients: int,
    per_client: int,
) -> None:
    http, log = counted
    await seed_month(db, clients=clients, bookings_per_client=per_client)
    bookings, statements = await calendar(http, settings, log)
    assert len(bookings) == clients * per_client
    assert sum(1 for b in bookings if b["purchase"] is None) > 0
    assert all(b["client"]["purchases"] for b in bookings)
    # bookings, clients (batched), purchases by id (batched), purchases by client (batched)
    assert statements == 4, log.statements


async def test_calendar_shows_only_the_window_in_order(
    counted: tuple[httpx.AsyncClient, StatementLog], settings: Settings, db: asyncpg.Connection
) -> None:
    http, log = counted
    await seed_month(db, clients=2, bookings_per_client=40)  # spills into April
    bookings, _ = await calendar(http, settings, log)
    starts = [datetime.fromisoformat(b["startsAt"]) for b in bookings]
    assert starts == sorted(starts)
    assert all(MONTH <= s < MONTH + timedelta(days=31) for s in starts)
    assert len(bookings) == 2 * 31


CLIENTS_WITH_LEDGERS = """
{ clients(first: 100) { nodes { name purchases { id
    ledger(first: 2) { nodes { revision sessionsUsedAfter } pageInfo { hasNextPage } } } } } }
"""


@pytest.mark.parametrize("clients", [2, 40])
async def test_nested_ledgers_load_in_one_statement(
    counted: tuple[httpx.AsyncClient, StatementLog],
    settings: Settings,
    db: asyncpg.Connection,
    clients: int,
) -> None:
    http, log = counted
    await seed_month(db, clients=clients, bookings_per_client=3)
    await db.execute(  # three sessions used on every package, through the ledger
        """
        WITH used AS (
            UPDATE purchases SET sessions_used = 3, revision = revision + 3
            RETURNING id, trainer_id, revision - 3 AS before, sessions_held
        )
        INSERT INTO session_ledger
            (trainer_id, purchase_id, kind, delta, sessions_used_after, sessions_held_after,
             sessions_total_after, revision, source, actor)
        SELECT trainer_id, id, 'USE', 1, n, sessions_held, 40, before + n, 'MANUAL', 'test'
          FROM used, generate_series(1, 3) AS n
        """
    )
    headers = {"Authorization": f"Bearer {issue_token(settings, 'trainer-a')}"}
    await http.post("/graphql", json={"query": CLIENTS_WITH_LEDGERS}, headers=headers)
    log.statements.clear()
    body = (
        await http.post("/graphql", json={"query": CLIENTS_WITH_LEDGERS}, headers=headers)
    ).json()
    nodes = body["data"]["clients"]["nodes"]
    assert len(nodes) == clients
    for node in nodes:
        (purchase,) = node["purchases"]
        assert [e["revision"] for e in purchase["ledger"]["nodes"]] == [1, 2]
        assert purchase["ledger"]["pageInfo"]["hasNextPage"] is True
    # clients, purchases by client (batched), ledger pages (batched)
    assert len(log.statements) == 3, log.statements
