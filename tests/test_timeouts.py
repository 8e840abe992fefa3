"""No request waits on PostgreSQL forever (hardening, defect 5): an exhausted pool and a
statement stuck behind a lock both answer a retryable SERVICE_UNAVAILABLE, change
nothing, and /healthz answers meanwhile. The timeouts are settings; nothing is timed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from punchcard.gql.auth import issue_token
from punchcard.settings import Settings
from tests.conftest import in_process

SELL = """mutation { c: createClient(input: {name: "Ada"}) { id } }"""


@pytest.fixture
async def tight(settings: Settings) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """An app with one connection, short waits and a short statement_timeout."""
    chosen = replace(
        settings,
        pool_min_size=1,
        pool_max_size=1,
        pool_acquire_timeout_seconds=0.3,
        statement_timeout_ms=300,
    )
    async with in_process(chosen, subject="trainer-a") as (app, http):
        yield app, http


async def post(http: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    answer = await http.post("/graphql", json={"query": query, "variables": variables})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def package(http: httpx.AsyncClient) -> str:
    client = (await post(http, SELL))["data"]["c"]["id"]
    sold = await post(
        http,
        "mutation($c: ID!) { sellPackage(input: {clientId: $c, sessionsTotal: 5}) { id } }",
        c=client,
    )
    purchase: str = sold["data"]["sellPackage"]["id"]
    return purchase


USE = "mutation($p: ID!) { useSession(purchaseId: $p) { sessionsUsed } }"


async def test_an_exhausted_pool_answers_service_unavailable_and_healthz_still_answers(
    tight: tuple[Starlette, httpx.AsyncClient], db: asyncpg.Connection
) -> None:
    app, http = tight
    purchase = await package(http)
    async with app.state.services.pool.acquire():  # the only connection, held
        body = await post(http, USE, p=purchase)
        [error] = body["errors"]
        assert error["extensions"] == {"code": "SERVICE_UNAVAILABLE", "retryable": True}
        assert body["data"] is None
        health = await http.get("/healthz")
        assert health.status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["database"] is False
    assert await db.fetchval("SELECT sessions_used FROM purchases") == 0
    after = await post(http, USE, p=purchase)  # the pool is free again: it works
    assert after["data"]["useSession"]["sessionsUsed"] == 1
    assert (await http.get("/readyz")).json() == {
        "status": "ok",
        "database": True,
        "migrations": True,
        "listener": True,
    }


async def test_an_unknown_token_while_the_pool_is_exhausted_is_unavailable_not_a_500(
    tight: tuple[Starlette, httpx.AsyncClient], settings: Settings
) -> None:
    app, http = tight
    stranger = issue_token(settings, "never-seen-before")  # provisioning needs the database
    async with app.state.services.pool.acquire():
        answer = await http.post(
            "/graphql",
            json={"query": "{ me { id } }"},
            headers={"Authorization": f"Bearer {stranger}"},
        )
    assert answer.status_code == 200
    assert answer.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"


async def test_a_statement_stuck_behind_a_lock_is_cancelled_and_changes_nothing(
    tight: tuple[Starlette, httpx.AsyncClient], db: asyncpg.Connection
) -> None:
    _, http = tight
    purchase = await package(http)
    async with db.transaction():  # another session holds the package's row lock
        await db.execute("SELECT 1 FROM purchases FOR UPDATE")
        body = await post(http, USE, p=purchase)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert error["path"] == ["useSession"]
    assert await db.fetchval("SELECT sessions_used FROM purchases") == 0
    assert await db.fetchval("SELECT count(*) FROM session_ledger") == 0
