"""Malformed requests get a JSON error with a code and change nothing, on the fast path
and strawberry's view alike (hardening, defects 7, 8, 9 and 10)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import jwt
import pytest

from punchcard.gql.http import GraphQLHTTP
from punchcard.server.app import engine_for, schema_for
from punchcard.settings import Settings
from tests.conftest import in_process
from tests.live import serve_env, socket, token
from tests.processes import server

DEEP = "[" * 100_000 + "]" * 100_000
CREATE = "mutation($n: String!) { createClient(input: {name: $n}) { id } }"

MALFORMED = {
    "bare string": '"hello"',
    "bare number": "42",
    "null": "null",
    "batch": json.dumps([{"query": "{ me { id } }"}]),
    "not json": "{not json",
    "variables nested 100,000 deep": '{"query": "{ me { id } }", "variables": {"x": ' + DEEP + "}}",
    "query is a number": '{"query": 5}',
    "empty query": '{"query": ""}',
    "variables are a string": '{"query": "{ me { id } }", "variables": "x"}',
    "operationName is a list": '{"query": "{ me { id } }", "operationName": []}',
    "unknown field": '{"query": "{ me { id } }", "persisted": true}',
    "lone surrogate in a variable": json.dumps(
        {"query": CREATE, "variables": {"n": "Ada"}}
    ).replace("Ada", "A\\ud800da"),
    "lone surrogate in the query": '{"query": "{ me { id } } # \\udfff"}',
    "lone surrogate in a key": '{"query": "{ me { id } }", "variables": {"\\ud800": 1}}',
}


@pytest.fixture(params=[True, False], ids=["fast-path", "strawberry-view"])
async def http(
    settings: Settings, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    chosen = replace(settings, fast_path=request.param)
    json_body = {"content-type": "application/json"}
    async with in_process(chosen, subject="trainer-a", headers=json_body) as (_, client):
        yield client


async def rows(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval(
        "SELECT (SELECT count(*) FROM clients) + (SELECT count(*) FROM trainers)"
    )
    return count


@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_a_body_that_is_no_graphql_request_is_a_400_with_a_json_error(
    http: httpx.AsyncClient, db: asyncpg.Connection, name: str
) -> None:
    before = await rows(db)
    answer = await http.post("/graphql", content=MALFORMED[name])
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/json"
    [error] = answer.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST", error
    assert await rows(db) == before


async def test_a_body_over_the_limit_is_a_413_with_a_json_error(http: httpx.AsyncClient) -> None:
    padding = " " * (1 << 20)
    answer = await http.post("/graphql", content='{"query": "{ me { id } }"' + padding + "}")
    assert answer.status_code == 413
    assert answer.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body["errors"]]


@pytest.mark.parametrize(
    ("document", "variables", "code"),
    [
        ("{ me { id ", None, "GRAPHQL_PARSE_FAILED"),
        ("{ me { ...Nowhere } }", None, "GRAPHQL_VALIDATION_FAILED"),
        ("{ me { nope } }", None, "GRAPHQL_VALIDATION_FAILED"),
        ("{ " + "a: me { id } " * 31 + "}", None, "GRAPHQL_VALIDATION_FAILED"),
        ("{ " + "me { id } " * 1001 + "}", None, "GRAPHQL_PARSE_FAILED"),  # token limit
        ("mutation($p: ID!) { useSession(purchaseId: $p) { revision } }", {}, "BAD_USER_INPUT"),
        ("query($t: DateTime!) { bookings(from: $t, to: $t) { id } }", {"t": "noon"},
         "BAD_USER_INPUT"),
        ('subscription { purchaseUpdated(purchaseId: "pur_1") { revision } }', None,
         "BAD_REQUEST"),
    ],
)  # fmt: skip
async def test_every_refusal_of_a_document_has_a_code(
    http: httpx.AsyncClient, document: str, variables: dict[str, Any] | None, code: str
) -> None:
    body: dict[str, Any] = {"query": document}
    if variables is not None:
        body["variables"] = variables
    answer = await http.post("/graphql", json=body)
    assert answer.status_code == 200
    assert answer.json()["data"] is None
    assert set(codes(answer.json())) == {code}, answer.json()


async def test_several_operations_without_a_name_are_refused_and_none_runs(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    before = await rows(db)
    document = 'mutation A { createClient(input: {name: "Ada"}) { id } } query B { me { id } }'
    answer = await http.post("/graphql", json={"query": document})
    assert codes(answer.json()) == ["OPERATION_RESOLUTION_FAILURE"]
    assert "operation name" in answer.json()["errors"][0]["message"]
    missing = await http.post("/graphql", json={"query": document, "operationName": "C"})
    assert codes(missing.json()) == ["OPERATION_RESOLUTION_FAILURE"]
    assert await rows(db) == before
    named = await http.post("/graphql", json={"query": document, "operationName": "A"})
    assert named.json()["data"]["createClient"]["id"].startswith("cli_")


def claims_token(settings: Settings, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "skewed", "iat": now, "exp": now + 600, **claims}
    return jwt.encode(payload, settings.jwt_secret, algorithm="HS256")


@pytest.mark.parametrize("leeway", [30.0, 0.0])
async def test_a_small_clock_skew_is_allowed_on_iat_nbf_and_exp(
    settings: Settings, leeway: float
) -> None:
    # Skews measured from just before each request, in whole seconds well inside the 30 s
    # leeway and well outside none: "a second ahead" turned into "now" while the app started.
    skewed = {
        "iat ten seconds ahead": lambda now: {"iat": now + 10},
        "nbf fifteen seconds ahead": lambda now: {"nbf": now + 15},
        "exp twenty seconds ago": lambda now: {"exp": now - 20},
    }
    async with in_process(replace(settings, jwt_leeway_seconds=leeway)) as (_, http):
        for skew in skewed.values():
            claims = skew(int(time.time()))
            bearer = claims_token(settings, **claims)
            answer = await http.post(
                "/graphql",
                json={"query": "{ me { id } }"},
                headers={"Authorization": f"Bearer {bearer}"},
            )
            body = answer.json()
            if leeway:
                assert "errors" not in body, (claims, body)
            else:
                assert codes(body) == ["UNAUTHENTICATED"], (claims, body)
        far = claims_token(settings, iat=int(time.time()) + 120)  # beyond any leeway
        answer = await http.post(
            "/graphql", json={"query": "{ me { id } }"}, headers={"Authorization": f"Bearer {far}"}
        )
        assert codes(answer.json()) == ["UNAUTHENTICATED"]


async def test_a_websocket_message_nested_too_deep_or_with_a_lone_surrogate_closes_4400(
    db_url: str, tmp_path: Any
) -> None:
    with server(serve_env(db_url), tmp_path / "serve.log") as url:
        for text in (
            '{"type": "connection_init", "payload": {"x": ' + DEEP + "}}",
            '{"type": "connection_init", "payload": {"Authorization": "\\ud800"}}',
        ):
            async with socket(url) as ws:
                await ws.ws.send(text)
                code, reason = await ws.closed()
                assert code == 4400, (code, reason)
                assert reason.startswith("Invalid message")
        async with socket(url, token("still-fine")) as ws:  # the server carries on
            await ws.subscribe("1", "{ me { id } }")
            assert (await ws.data("1"))["me"]["id"].startswith("trn_")


async def test_a_body_that_does_not_arrive_in_time_is_a_408(settings: Settings) -> None:
    """A client that sends headers and then a trickle (or nothing) is cut off."""
    endpoint = GraphQLHTTP(engine_for(schema_for(settings)), body_timeout=0.2)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the body never comes
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"40")],
    }
    await endpoint(scope, receive, send)
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["errors"][0]["extensions"]["code"] == "REQUEST_TIMEOUT"
