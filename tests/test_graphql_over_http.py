"""GraphQL over HTTP as https://graphql.github.io/graphql-over-http/ says: GET for queries,
``application/graphql-response+json`` with its status codes, ``Accept`` negotiation, and a
JSON error for every 4xx; on the fast path and strawberry's view alike.
(tests/test_http_audit.py runs graphql-http's own audit against a real server.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from punchcard.settings import Settings
from tests.conftest import in_process

GR = "application/graphql-response+json"
JSON = "application/json"
CREATE = 'mutation { createClient(input: {name: "Ada"}) { id } }'
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture(params=[True, False], ids=["fast-path", "strawberry-view"])
async def app_http(
    settings: Settings, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    async with in_process(replace(settings, fast_path=request.param), subject="trainer-a") as (
        app,
        client,
    ):
        yield app, client


@pytest.fixture
def http(app_http: tuple[Starlette, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_http[1]


async def clients(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM clients")
    return count


def gql_get(
    http: httpx.AsyncClient, accept: str | None = None, **params: Any
) -> Any:  # an awaitable response
    headers = {"Accept": accept} if accept else {}
    return http.get("/graphql", params=params, headers=headers, follow_redirects=False)


def code(answer: httpx.Response) -> str:
    value: str = answer.json()["errors"][0]["extensions"]["code"]
    return value


# GET


async def test_a_query_over_get_runs_with_variables_and_an_operation_name(
    http: httpx.AsyncClient,
) -> None:
    created = await http.post("/graphql", json={"query": CREATE})
    client_id = created.json()["data"]["createClient"]["id"]
    answer = await gql_get(
        http,
        query="query Other { me { id } } query One($id: ID!) { client(id: $id) { name } }",
        variables=json.dumps({"id": client_id}),
        operationName="One",
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == JSON
    assert answer.json() == {"data": {"client": {"name": "Ada"}}}
    assert "accept" in answer.headers["vary"].lower()
    gr = await gql_get(http, GR, query="{ me { id } }")
    assert gr.status_code == 200
    assert gr.headers["content-type"].startswith(GR)
    assert gr.json()["data"]["me"]["id"].startswith("trn_")


@pytest.mark.parametrize("accept", [None, GR])
@pytest.mark.parametrize(
    ("query", "operation"),
    [
        (CREATE, None),
        ("mutation { __typename }", None),
        ("mutation { nope }", None),  # invalid too: still a mutation over GET
        ("query Q { me { id } } " + CREATE.replace("mutation", "mutation M"), "M"),
    ],
)
async def test_a_mutation_over_get_is_a_405_and_changes_nothing(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    accept: str | None,
    query: str,
    operation: str | None,
) -> None:
    before = await clients(db)
    params = {"query": query} if operation is None else {"query": query, "operationName": operation}
    answer = await gql_get(http, accept, **params)
    assert answer.status_code == 405, answer.text
    assert answer.headers["allow"] == "POST"
    assert code(answer) == "METHOD_NOT_ALLOWED"
    assert await clients(db) == before


async def test_the_query_of_a_document_with_a_mutation_may_be_sent_over_get(
    http: httpx.AsyncClient,
) -> None:
    document = "query Q { me { id } } " + CREATE.replace("mutation", "mutation M")
    answer = await gql_get(http, query=document, operationName="Q")
    assert answer.status_code == 200
    assert answer.json()["data"]["me"]["id"].startswith("trn_")


@pytest.mark.parametrize(("accept", "status"), [(None, 200), (GR, 400)])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_subscription_over_http_is_refused_with_bad_request(
    http: httpx.AsyncClient, accept: str | None, status: int, method: str
) -> None:
    document = 'subscription { purchaseUpdated(purchaseId: "pur_1") { revision } }'
    if method == "GET":
        answer = await gql_get(http, accept, query=document)
    else:
        headers = {"Accept": accept} if accept else {}
        answer = await http.post("/graphql", json={"query": document}, headers=headers)
    assert answer.status_code == status
    assert code(answer) == "BAD_REQUEST"
    assert "WebSocket" in answer.json()["errors"][0]["message"]
    assert ("data" in answer.json()) is (accept is None)  # the legacy shape keeps data: null


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"query": ""},
        {"query": "{ me { id } }", "variables": "[1]"},
        {"query": "{ me { id } }", "variables": "{not json"},
        {"query": "{ me { id } }", "extensions": "5"},
        {"query": "{ me { id } }", "persisted": "1"},
        {"query": "{ me { id } }", "variables": '{"x": "\\ud800"}'},
    ],
    ids=["no query", "empty", "array", "bad json", "number", "unknown", "lone surrogate"],
)
async def test_a_get_that_is_no_graphql_request_is_a_json_400(
    http: httpx.AsyncClient, params: dict[str, str]
) -> None:
    answer = await gql_get(http, **params)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == JSON
    assert code(answer) == "BAD_REQUEST"


async def test_a_parameter_given_twice_or_not_utf8_is_a_400(http: httpx.AsyncClient) -> None:
    for query_string in ("query=%7B__typename%7D&query=%7B__typename%7D", "query=%ff"):
        answer = await http.get(f"/graphql?{query_string}")
        assert answer.status_code == 400
        assert code(answer) == "BAD_REQUEST"


async def test_a_browser_get_goes_to_graphiql(http: httpx.AsyncClient) -> None:
    page = await gql_get(http, BROWSER)
    assert page.status_code == 302
    assert page.headers["location"] == "/graphiql"
    # with a query, a browser gets the JSON answer (a shared link to a query works)
    linked = await gql_get(http, BROWSER, query="{ __typename }")
    assert linked.status_code == 200
    assert linked.json() == {"data": {"__typename": "Query"}}


async def test_without_graphiql_a_browser_get_is_a_json_400(settings: Settings) -> None:
    async with in_process(replace(settings, graphiql=False)) as (_, http):
        page = await gql_get(http, BROWSER)
        assert page.status_code == 400
        assert page.headers["content-type"] == JSON
        assert code(page) == "BAD_REQUEST"


# Media types and status codes


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, JSON),
        ("*/*", JSON),
        ("application/*", JSON),
        (JSON, JSON),
        (f"{JSON}; charset=utf-8", JSON),
        (GR, GR),
        (f"{GR}, {JSON};q=0.9", GR),
        (f"{JSON}, {GR}", JSON),
        (f"{GR};q=0.5, */*", JSON),
        (BROWSER, JSON),
    ],
)
async def test_accept_picks_the_media_type(
    http: httpx.AsyncClient, accept: str | None, chosen: str
) -> None:
    headers = {"Accept": accept} if accept else {}
    answer = await http.post("/graphql", json={"query": "{ __typename }"}, headers=headers)
    assert answer.status_code == 200
    assert answer.headers["content-type"].split(";")[0] == chosen
    assert answer.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    ("body", "graphql_code"),
    [
        ({"query": "{ me { id "}, "GRAPHQL_PARSE_FAILED"),
        ({"query": "{ me { nope } }"}, "GRAPHQL_VALIDATION_FAILED"),
        ({"query": "query A { me { id } }", "operationName": "B"}, "OPERATION_RESOLUTION_FAILURE"),
        (
            {"query": "query($t: DateTime!) { bookings(from: $t, to: $t) { id } }",
             "variables": {"t": "noon"}},
            "BAD_USER_INPUT",
        ),
    ],
    ids=["parse", "validation", "operation", "variables"],
)  # fmt: skip
async def test_a_request_that_fails_before_execution(
    http: httpx.AsyncClient, body: dict[str, Any], graphql_code: str
) -> None:
    legacy = await http.post("/graphql", json=body)
    assert legacy.status_code == 200
    assert legacy.json()["data"] is None
    assert code(legacy) == graphql_code
    answer = await http.post("/graphql", json=body, headers={"Accept": GR})
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == f"{GR}; charset=utf-8"
    assert "data" not in answer.json()
    assert code(answer) == graphql_code


async def test_errors_during_execution_are_a_200_in_both_media_types(
    http: httpx.AsyncClient,
) -> None:
    for accept in (JSON, GR):
        answer = await http.post(
            "/graphql",
            json={"query": 'mutation { useSession(purchaseId: "pur_404") { revision } }'},
            headers={"Accept": accept},
        )
        assert answer.status_code == 200
        assert answer.json()["data"] is None
        assert code(answer) == "NOT_FOUND"
        partial = await http.post(
            "/graphql",
            json={"query": '{ __typename purchase(id: "pur_404") { id } }'},
            headers={"Accept": accept},
        )
        assert partial.status_code == 200
        assert partial.json()["data"] == {"__typename": "Query", "purchase": None}


async def test_a_database_that_does_not_answer_is_a_503_where_the_media_type_allows(
    settings: Settings,
) -> None:
    tight = replace(settings, pool_min_size=1, pool_max_size=1, pool_acquire_timeout_seconds=0.3)
    async with in_process(tight, subject="trainer-a") as (app, http):
        await http.post("/graphql", json={"query": "{ me { id } }"})  # provisioned
        async with app.state.services.pool.acquire():  # the only connection, held
            legacy = await http.post("/graphql", json={"query": CREATE})
            answer = await http.post("/graphql", json={"query": CREATE}, headers={"Accept": GR})
    assert legacy.status_code == 200
    assert legacy.json()["data"] is None
    assert code(legacy) == "SERVICE_UNAVAILABLE"
    assert answer.status_code == 503
    assert "data" not in answer.json()
    assert answer.json()["errors"][0]["extensions"] == {
        "code": "SERVICE_UNAVAILABLE",
        "retryable": True,
    }


async def test_nothing_acceptable_is_a_406(http: httpx.AsyncClient) -> None:
    for accept in ("text/html", "application/xml", f"{JSON};q=0, {GR};q=0"):
        answer = await http.post(
            "/graphql", json={"query": "{ __typename }"}, headers={"Accept": accept}
        )
        assert answer.status_code == 406, accept
        assert answer.headers["content-type"] == JSON
        assert code(answer) == "NOT_ACCEPTABLE"
        over_get = await gql_get(http, "application/xml", query="{ __typename }")
        assert over_get.status_code == 406


# Every other refusal is a JSON 4xx


@pytest.mark.parametrize(
    "headers",
    [{}, {"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"},
     {"content-type": "application/json; charset=latin-1"}],
    ids=["none", "text", "form", "latin-1"],
)  # fmt: skip
async def test_a_post_that_is_not_json_is_a_415(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    answer = await http.post("/graphql", content=b'{"query": "{ __typename }"}', headers=headers)
    assert answer.status_code == 415
    assert answer.headers["content-type"] == JSON
    assert code(answer) == "BAD_REQUEST"


async def test_json_in_any_case_and_utf8_charset_is_accepted(http: httpx.AsyncClient) -> None:
    for content_type in ("Application/JSON", "application/json; charset=UTF-8"):
        answer = await http.post(
            "/graphql",
            content=b'{"query": "{ __typename }"}',
            headers={"content-type": content_type},
        )
        assert answer.status_code == 200, content_type


async def test_a_batch_is_refused_on_purpose(http: httpx.AsyncClient) -> None:
    batch = [{"query": "{ __typename }"}, {"query": "{ __typename }"}]
    for accept in (JSON, GR):
        answer = await http.post("/graphql", json=batch, headers={"Accept": accept})
        assert answer.status_code == 400
        assert code(answer) == "BAD_REQUEST"
        assert "batched requests are not supported" in answer.json()["errors"][0]["message"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
async def test_other_methods_on_graphql_are_a_json_405(
    http: httpx.AsyncClient, method: str
) -> None:
    answer = await http.request(method, "/graphql")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, POST"
    assert answer.headers["content-type"] == JSON
    if method != "HEAD":
        assert code(answer) == "METHOD_NOT_ALLOWED"


async def test_starlettes_own_404_and_405_are_json(http: httpx.AsyncClient) -> None:
    missing = await http.get("/nowhere")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == JSON
    assert code(missing) == "NOT_FOUND"
    wrong = await http.post("/healthz")
    assert wrong.status_code == 405
    assert wrong.headers["content-type"] == JSON
    assert code(wrong) == "METHOD_NOT_ALLOWED"
