"""A mutation document of several fields commits all of them or none (hardening, defect 6).

Before, ``mutation { a: useSession(...) b: useSession(purchaseId: "bad") }`` committed
``a``, refused ``b`` and, both being non-null, answered ``data: null``: the client never
learnt that a session was used. Now the fields run in one transaction, rolled back when
any of them fails; the errors say so (``extensions.rolledBack``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from graphql import OperationDefinitionNode, parse

from punchcard.db.pool import ConnectionDone, OneConnection
from punchcard.gql.documents import _atomic
from punchcard.settings import Settings
from tests.conftest import in_process

TWO = """mutation($a: ID!, $b: ID!) {
  a: useSession(purchaseId: $a) { sessionsUsed revision }
  b: useSession(purchaseId: $b) { sessionsUsed revision }
}"""


@pytest.fixture(params=[True, False], ids=["fast-path", "strawberry-view"])
async def http(
    settings: Settings, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(replace(settings, fast_path=request.param), subject="trainer-a") as (
        _,
        client,
    ):
        yield client


async def post(http: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    answer = await http.post("/graphql", json={"query": query, "variables": variables})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def package(http: httpx.AsyncClient, sessions: int = 5) -> str:
    client = await post(http, 'mutation { createClient(input: {name: "Ada"}) { id } }')
    sold = await post(
        http,
        "mutation($c: ID!, $n: Int!) { sellPackage(input: {clientId: $c, sessionsTotal: $n}) "
        "{ id } }",
        c=client["data"]["createClient"]["id"],
        n=sessions,
    )
    purchase: str = sold["data"]["sellPackage"]["id"]
    return purchase


async def counts(db: asyncpg.Connection) -> tuple[int, int]:
    used = await db.fetchval("SELECT sessions_used FROM purchases")
    ledger = await db.fetchval("SELECT count(*) FROM session_ledger")
    return used, ledger


@pytest.mark.parametrize(
    ("second", "code"),
    [("bad", "BAD_USER_INPUT"), ("pur_999999", "NOT_FOUND"), ("cli_1", "NOT_FOUND")],
)
async def test_a_refused_field_rolls_back_the_fields_before_it(
    http: httpx.AsyncClient, db: asyncpg.Connection, second: str, code: str
) -> None:
    purchase = await package(http)
    body = await post(http, TWO, a=purchase, b=second)
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == code and error["extensions"]["rolledBack"] is True
    assert error["path"] == ["b"]
    assert await counts(db) == (0, 0)  # `a` did not commit either


async def test_a_document_whose_fields_all_succeed_commits_them_all(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    purchase = await package(http)
    body = await post(http, TWO, a=purchase, b=purchase)
    assert body["data"] == {
        "a": {"sessionsUsed": 1, "revision": 1},
        "b": {"sessionsUsed": 2, "revision": 2},
    }
    assert await counts(db) == (2, 2)


async def test_twenty_concurrent_two_field_documents_commit_whole_or_not_at_all(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Five sessions, twenty documents using two each: two commit (4 used); the third
    gets its first session, fails on the second, and gives the first back."""
    purchase = await package(http, sessions=5)
    bodies = await asyncio.gather(*(post(http, TWO, a=purchase, b=purchase) for _ in range(20)))
    whole = [b for b in bodies if b["data"] is not None]
    refused = [b for b in bodies if b["data"] is None]
    assert len(whole) == 2 and len(refused) == 18
    assert {b["errors"][0]["extensions"]["code"] for b in refused} == {"NO_SESSIONS_REMAINING"}
    assert await counts(db) == (4, 4)
    revisions = [r["revision"] for r in await db.fetch("SELECT revision FROM session_ledger")]
    assert sorted(revisions) == [1, 2, 3, 4]
    assert await db.fetchval("SELECT revision FROM purchases") == 4


NESTED = """mutation($id: ID!, $after: String) {
  useSession(purchaseId: $id) { sessionsUsed ledger(first: 5, after: $after) { nodes { delta } } }
}"""


async def test_one_field_whose_answer_fails_commits_nothing(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Found by tests/test_fuzz.py: the change committed, then the answer's nested
    ``ledger`` refused its cursor and the client got ``data: null`` and BAD_USER_INPUT for
    a session that was used. Such a document now runs in one transaction."""
    purchase = await package(http)
    body = await post(http, NESTED, id=purchase, after="not-a-cursor")
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}  # one field: nothing to undo
    assert error["path"] == ["useSession", "ledger"]
    assert await counts(db) == (0, 0)
    ok = await post(http, NESTED, id=purchase)
    assert ok == {"data": {"useSession": {"sessionsUsed": 1, "ledger": {"nodes": [{"delta": 1}]}}}}
    assert await counts(db) == (1, 1)


@pytest.mark.parametrize(
    ("document", "atomic"),
    [
        ("mutation { useSession(purchaseId: $p) { sessionsUsed revision } }", False),
        ("mutation { useSession(purchaseId: $p) { client { name } } }", True),
        ("mutation { useSession(purchaseId: $p) { ledger { nodes { delta } } } }", True),
        ("mutation { useSession(purchaseId: $p) { ... on Purchase { revision } } }", True),
        ("mutation { a: useSession(purchaseId: $p) { revision } b: me { id } }", True),
        ("query { me { id } }", False),
    ],
)
def test_which_documents_run_in_one_transaction(document: str, atomic: bool) -> None:
    parsed = parse(document.replace("$p", '"pur_1"'))
    [definition] = parsed.definitions
    assert isinstance(definition, OperationDefinitionNode)
    assert _atomic(definition) is atomic


async def test_an_ended_transaction_takes_no_more_queries(db_url: str) -> None:
    """A loader graphql-core left running after a failed field cannot reach the mutation's
    connection once it is back in the pool: ``close`` waits for the query in flight and
    refuses the later ones."""
    conn = await asyncpg.connect(db_url)
    try:
        one = OneConnection(conn)
        in_flight = asyncio.create_task(one.fetchval("SELECT pg_sleep(0.3) IS NULL"))
        await asyncio.sleep(0)  # the task runs up to its query: it holds the connection now
        await one.close()
        assert in_flight.done() and await in_flight is False  # finished, not interrupted
        with pytest.raises(ConnectionDone):
            await one.fetchval("SELECT 1")
        assert await conn.fetchval("SELECT 1") == 1  # the connection itself is fine
    finally:
        await conn.close()
