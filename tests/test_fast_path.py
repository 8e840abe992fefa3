"""The fast path answers exactly as strawberry's view: the same documents, run in the same
order against two identical databases, one app with the fast path and one without."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest

from punchcard.gql.auth import issue_token
from punchcard.server.app import create_app
from punchcard.settings import Settings
from tests.conftest import TEMPLATE, database_url

ALIASES = "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(40)) + " }"
DEEP = "{ ledger { nodes { purchase { client { purchases { client { purchases { client { purchases { client { purchases { id } } } } } } } } } } } }"  # noqa: E501
LONG = "{ me { " + " ".join(["id"] * 2100) + " } }"
PURCHASE = "id sessionsTotal sessionsUsed sessionsRemaining revision status"

# (document, variables, operationName, token name)
CALLS: list[tuple[str, dict[str, Any] | None, str | None, str]] = [
    ("{ me { id name timezone } }", None, None, "a"),
    ('mutation { createClient(input: {name: "Ada"}) { id name } }', None, None, "a"),
    ('mutation { createClient(input: {name: "  "}) { id } }', None, None, "a"),
    (
        "mutation($c: ID!) { sellPackage(input: {clientId: $c, sessionsTotal: 2}) { "
        + PURCHASE
        + " } }",
        {"c": "cli_1"},
        None,
        "a",
    ),
    (
        'mutation { sellPackage(input: {clientId: "cli_99", sessionsTotal: 2}) { id } }',
        None,
        None,
        "a",
    ),
    (
        'mutation { sellPackage(input: {clientId: "nope", sessionsTotal: 2}) { id } }',
        None,
        None,
        "a",
    ),
    (
        "mutation($p: ID!) { useSession(purchaseId: $p) { " + PURCHASE + " } }",
        {"p": "pur_1"},
        None,
        "a",
    ),
    (
        'mutation($p: ID!) { useSession(purchaseId: $p, idempotencyKey: "k") { revision } }',
        {"p": "pur_1"},
        None,
        "a",
    ),
    (
        'mutation($p: ID!) { useSession(purchaseId: $p, idempotencyKey: "k") { revision } }',
        {"p": "pur_1"},
        None,
        "a",
    ),
    ("mutation($p: ID!) { useSession(purchaseId: $p) { revision } }", {"p": "pur_1"}, None, "a"),
    (
        'mutation($p: ID!) { releaseSession(purchaseId: $p, idempotencyKey: "k") { revision } }',
        {"p": "pur_1"},
        None,
        "a",
    ),
    (
        "mutation($p: ID!) { releaseSession(purchaseId: $p) { sessionsUsed } }",
        {"p": "pur_1"},
        None,
        "a",
    ),
    ("mutation($p: ID!) { useSession(purchaseId: $p) { revision } }", {"p": "pur_1"}, None, "b"),
    ("mutation($p: ID!) { useSession(purchaseId: $p) { revision } }", {"p": 7}, None, "a"),
    ("mutation($p: ID!) { useSession(purchaseId: $p) { revision } }", None, None, "a"),
    (
        '{ purchase(id: "pur_1") { ...P client { name } ledger { nodes { delta source } } } } '
        "fragment P on Purchase { " + PURCHASE + " __typename }",
        None,
        None,
        "a",
    ),
    ('{ purchase(id: "pur_1") { id } }', None, None, "b"),
    ("query A { me { id } } query B { clients { nodes { id name } } }", None, "B", "a"),
    ("query A { me { id } } query B { clients { nodes { id } } }", None, None, "a"),
    ("query A { me { id } }", None, "Missing", "a"),
    ("{ me { id ", None, None, "a"),
    ("{ me { nope } }", None, None, "a"),
    (ALIASES, None, None, "a"),
    (DEEP, None, None, "a"),
    (LONG, None, None, "a"),
    ("{ me { id } }", None, None, "none"),
    ("{ me { id } }", None, None, "expired"),
    ("{ me { id } }", None, None, "forged"),
    ("{ __schema { queryType { name } mutationType { name } } }", None, None, "none"),
    (
        "mutation($c: ID!, $s: DateTime!, $e: DateTime!) { createBooking(input: {clientId: $c, "
        "autoAssignPackage: true, startsAt: $s, endsAt: $e}) { id status purchase { id } } }",
        {"c": "cli_1", "s": "2026-03-02T09:00:00+01:00", "e": "2026-03-02T10:00:00+01:00"},
        None,
        "a",
    ),
    ('mutation { completeBooking(id: "bkg_1") { status charged completedBy } }', None, None, "a"),
    ('mutation { completeBooking(id: "bkg_1") { status charged } }', None, None, "a"),
    ('mutation { markNoShow(id: "bkg_1") { status } }', None, None, "a"),
    ('mutation { reopenBooking(id: "bkg_1") { status charged } }', None, None, "a"),
    (
        '{ bookings(from: "2026-03-01T00:00:00Z", to: "2026-04-01T00:00:00Z") { id status '
        "client { name purchases { sessionsUsed } } purchase { sessionsRemaining } } }",
        None,
        None,
        "a",
    ),
    (
        '{ bookings(from: "2026-04-01T00:00:00Z", to: "2026-03-01T00:00:00Z") { id } }',
        None,
        None,
        "a",
    ),
    (
        "{ ledger(first: 2) { nodes { delta revision } pageInfo { hasNextPage endCursor } } }",
        None,
        None,
        "a",
    ),
    ('{ ledger(after: "x") { nodes { id } } }', None, None, "a"),
    ("subscription { me }", None, None, "a"),
]


def normalise(value: Any) -> Any:
    """Timestamps differ between the two runs; everything else must not."""
    if isinstance(value, dict):
        return {k: "<time>" if k.endswith("At") and v else normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


async def new_database(pg_server: str, name: str) -> str:
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    finally:
        await admin.close()
    return database_url(pg_server, name)


@pytest.fixture
async def twins(
    pg_server: str, template_url: str, settings: Settings
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    fast_db = await new_database(pg_server, "twin_fast")
    slow_db = await new_database(pg_server, "twin_slow")
    fast = create_app(replace(settings, database_url=fast_db, fast_path=True))
    slow = create_app(replace(settings, database_url=slow_db, fast_path=False))
    async with (
        fast.router.lifespan_context(fast),
        slow.router.lifespan_context(slow),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=fast), base_url="http://f") as f,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=slow), base_url="http://s") as s,
    ):
        yield f, s


async def test_fast_and_standard_paths_answer_alike(
    twins: tuple[httpx.AsyncClient, httpx.AsyncClient], settings: Settings
) -> None:
    fast, slow = twins
    tokens = {
        "a": issue_token(settings, "trainer-a"),
        "b": issue_token(settings, "trainer-b"),
        "expired": issue_token(settings, "trainer-a", ttl_seconds=-60),
        "forged": issue_token(replace(settings, jwt_secret="not-the-secret-" * 3), "trainer-a"),
    }
    for query, variables, operation, who in CALLS:
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        if operation is not None:
            body["operationName"] = operation
        headers = {"Authorization": f"Bearer {tokens[who]}"} if who in tokens else {}
        answers = [await c.post("/graphql", json=body, headers=headers) for c in (fast, slow)]
        fast_answer, slow_answer = (
            (
                a.status_code,
                normalise(a.json())
                if a.headers.get("content-type", "").startswith("application/json")
                else a.text,
            )
            for a in answers
        )
        assert fast_answer == slow_answer, query


async def test_non_json_and_batched_requests_take_the_standard_path(
    twins: tuple[httpx.AsyncClient, httpx.AsyncClient], settings: Settings
) -> None:
    fast, slow = twins
    headers = {"Authorization": f"Bearer {issue_token(settings, 'trainer-a')}"}
    for kwargs in (
        {"content": b"{not json", "headers": {**headers, "content-type": "application/json"}},
        {"json": [{"query": "{ me { id } }"}], "headers": headers},
        {"json": {"query": 5}, "headers": headers},
        {"json": {"query": "{ me { id } }", "extensions": {}}, "headers": headers},
    ):
        answers = [await c.post("/graphql", **kwargs) for c in (fast, slow)]  # type: ignore[arg-type]
        assert answers[0].status_code == answers[1].status_code
        assert answers[0].text == answers[1].text
