"""The query planner (gql/plan.py, gql/planned.py) answers exactly as graphql-core does.

Every test here sends each document to two apps on one database: the suite's own (planner
on, with the differential check of gql/differential.py) and one with the planner off, and
requires the same response text (data, key order, errors with paths and locations). It
also reads the engine's counts to show which way the request went: planned, fallen back
to graphql-core (it met something unexpected), or never planned."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from punchcard.gql.auth import issue_token
from punchcard.gql.differential import PlannerMismatch
from punchcard.gql.plan import Planner
from punchcard.server.app import create_app, engine_for, schema_for
from punchcard.settings import Settings
from tests.conftest import Api, in_process
from tests.helpers import USE, at, booking, client, iso, package
from tests.test_calendar import StatementLog, seed_month

MONTH = datetime(2026, 3, 1, tzinfo=UTC)


def planner(settings: Settings) -> Planner:
    return engine_for(schema_for(settings)).planner


@pytest.fixture
async def core(settings: Settings) -> AsyncIterator[Api]:
    """Trainer A on an app with the planner off: graphql-core answers everything."""
    off = replace(settings, planner=False, planner_differential=False)
    async with in_process(off) as (_, http):
        yield Api(http, off, None).as_trainer("trainer-a")


async def answered(
    api: Api, core: Api, query: str, **variables: Any
) -> tuple[dict[str, Any], Counter[str]]:
    """The response (the same text from both apps) and which way the planner's app went."""
    counts = planner(api.settings).counts
    before = Counter(counts)
    body = await api.post(query, **variables)
    went = Counter(counts)
    went.subtract(before)
    reference = await core.with_token(api.token).post(query, **variables)
    assert json.dumps(body) == json.dumps(reference)
    return body, +went


PLANNED = Counter({"planned": 1})
FELL_BACK = Counter({"fallback": 1})
UNPLANNED = Counter({"unplanned": 1})


@pytest.fixture
async def diary(api: Api) -> dict[str, str]:
    """A client with a package and two bookings: one on the package, one without."""
    cid = await client(api, "Ada")
    sold = await package(api, cid, total=5)
    on_package = await booking(api, cid, sold["id"], start=at(days=1))
    unpackaged = await booking(api, cid, start=at(days=2))
    await api.data(USE, id=sold["id"])
    return {
        "client": cid,
        "purchase": sold["id"],
        "on_package": on_package["id"],
        "unpackaged": unpackaged["id"],
    }


def window() -> dict[str, str]:
    return {"from": iso(at(days=-30)), "to": iso(at(days=30))}


CALENDAR = """
query Calendar($from: DateTime!, $to: DateTime!) {
  bookings(from: $from, to: $to) {
    id startsAt endsAt status charged completedBy completedAt
    client { id name email }
    purchase { id sessionsRemaining expiresAt status revision }
  }
}"""


async def test_the_calendar_is_planned(api: Api, core: Api, diary: dict[str, str]) -> None:
    body, went = await answered(api, core, CALENDAR, **window())
    assert went == PLANNED
    bookings = body["data"]["bookings"]
    assert [b["id"] for b in bookings] == [diary["on_package"], diary["unpackaged"]]
    assert bookings[0]["purchase"]["sessionsRemaining"] == 4
    assert bookings[1]["purchase"] is None  # a null in a nullable place
    assert bookings[0]["client"]["email"] is None
    assert bookings[0]["status"] == "CONFIRMED"  # an enum, by name
    assert datetime.fromisoformat(bookings[0]["startsAt"]).tzinfo is not None  # DateTime


SHAPES = """
query Shapes($id: ID!, $from: DateTime!, $to: DateTime!) {
  __typename
  first: purchase(id: $id) { ...Count kind: __typename id }
  again: purchase(id: $id) { id ... on Purchase { sessionsUsed client { __typename name } } }
  bookings(from: $from, to: $to) { id ...Times purchase { ...Count } }
}
fragment Count on Purchase { sessionsUsed sessionsTotal sessionsRemaining }
fragment Times on Booking { startsAt endsAt ... { status } }
"""


async def test_aliases_fragments_and_typenames_are_planned(
    api: Api, core: Api, diary: dict[str, str]
) -> None:
    body, went = await answered(api, core, SHAPES, id=diary["purchase"], **window())
    assert went == PLANNED
    data = body["data"]
    assert list(data) == ["__typename", "first", "again", "bookings"]
    assert data["__typename"] == "Query"
    assert list(data["first"]) == [
        "sessionsUsed",
        "sessionsTotal",
        "sessionsRemaining",
        "kind",
        "id",
    ]
    assert data["first"]["kind"] == "Purchase"
    assert data["again"]["client"] == {"__typename": "Client", "name": "Ada"}
    assert list(data["bookings"][0]) == ["id", "startsAt", "endsAt", "status", "purchase"]


CONDITIONS = """
query Conditions($id: ID!, $withClient: Boolean!, $noCounts: Boolean!) {
  purchase(id: $id) {
    id
    client @include(if: $withClient) { name }
    ... @skip(if: $noCounts) { sessionsUsed sessionsRemaining }
    sessionsUsed @include(if: $withClient)
  }
}"""


@pytest.mark.parametrize("with_client", [True, False])
@pytest.mark.parametrize("no_counts", [True, False])
async def test_skip_and_include_follow_the_variables(
    api: Api, core: Api, diary: dict[str, str], with_client: bool, no_counts: bool
) -> None:
    body, went = await answered(
        api, core, CONDITIONS, id=diary["purchase"], withClient=with_client, noCounts=no_counts
    )
    assert went == PLANNED
    fields = list(body["data"]["purchase"])
    assert ("client" in fields) is with_client
    assert ("sessionsRemaining" in fields) is not no_counts
    assert ("sessionsUsed" in fields) is (with_client or not no_counts)


async def test_the_same_document_with_other_conditions_is_planned_again(
    api: Api, core: Api, diary: dict[str, str]
) -> None:
    """A plan with conditions is compiled per request: the first request's choice does
    not stick to the document."""
    variables = {"id": diary["purchase"], "noCounts": False}
    one, _ = await answered(api, core, CONDITIONS, withClient=True, **variables)
    other, went = await answered(api, core, CONDITIONS, withClient=False, **variables)
    assert "client" in one["data"]["purchase"]
    assert "client" not in other["data"]["purchase"]
    assert went == PLANNED


LEDGER_OF = """
query Ledger($id: ID!, $first: Int!) {
  purchase(id: $id) { id ledger(first: $first) { nodes { delta source } pageInfo { hasNextPage } } }
}"""


async def test_nested_arguments_and_lists_are_planned(
    api: Api, core: Api, diary: dict[str, str]
) -> None:
    body, went = await answered(api, core, LEDGER_OF, id=diary["purchase"], first=5)
    assert went == PLANNED
    ledger = body["data"]["purchase"]["ledger"]
    assert ledger == {
        "nodes": [{"delta": 0, "source": "CALENDAR"}, {"delta": 1, "source": "MANUAL"}],
        "pageInfo": {"hasNextPage": False},
    }


PREFETCHED_OR_NOT = """
query Both($from: DateTime!, $to: DateTime!, $one: ID!, $other: ID!) {
  bookings(from: $from, to: $to) { id client { name } purchase { id sessionsUsed } }
  one: booking(id: $one) { id client { name } purchase { id sessionsUsed } }
  other: booking(id: $other) { id client { id } purchase { id } }
}"""


async def test_nested_objects_come_prefetched_in_a_list_and_loaded_alone(
    api: Api, core: Api, diary: dict[str, str]
) -> None:
    """The calendar hands its bookings their clients and packages (read as plain fields);
    ``booking(id)`` does not, and the same fields resolve through the DataLoaders."""
    body, went = await answered(
        api, core, PREFETCHED_OR_NOT, **window(), one=diary["on_package"], other=diary["unpackaged"]
    )
    assert went == PLANNED
    data = body["data"]
    assert data["one"] == data["bookings"][0]
    assert data["one"]["client"] == {"name": "Ada"}
    assert data["one"]["purchase"] == {"id": diary["purchase"], "sessionsUsed": 1}
    assert data["other"]["purchase"] is None and data["bookings"][1]["purchase"] is None


async def test_an_error_in_a_nested_field_falls_back_to_graphql_cores_answer(
    api: Api, core: Api, diary: dict[str, str]
) -> None:
    """A DomainError deep in the answer: graphql-core's error (message, path, locations,
    code) and its null propagation (ledger is non-null, so purchase becomes null)."""
    body, went = await answered(api, core, LEDGER_OF, id=diary["purchase"], first=0)
    assert went == FELL_BACK
    assert body["data"] == {"purchase": None}
    (error,) = body["errors"]
    assert error["path"] == ["purchase", "ledger"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["locations"] == [{"line": 3, "column": 26}]


IN_LIST = """
query($from: DateTime!, $to: DateTime!) {
  bookings(from: $from, to: $to) { id purchase { id ledger(first: 0) { nodes { id } } } }
}"""


async def test_errors_inside_a_list_keep_their_indexes(
    api: Api, core: Api, diary: dict[str, str]
) -> None:
    body, went = await answered(api, core, IN_LIST, **window())
    assert went == FELL_BACK
    assert [b["purchase"] for b in body["data"]["bookings"]] == [None, None]
    assert [e["path"] for e in body["errors"]] == [["bookings", 0, "purchase", "ledger"]]


PURCHASE = "query($id: ID!) { purchase(id: $id) { id sessionsUsed } }"


async def test_not_found_and_another_trainers_ids_answer_null(
    api: Api, other: Api, core: Api, diary: dict[str, str]
) -> None:
    missing, went = await answered(api, core, PURCHASE, id="pur_999999")
    assert (missing, went) == ({"data": {"purchase": None}}, PLANNED)
    theirs, went = await answered(other, core, PURCHASE, id=diary["purchase"])
    assert (theirs, went) == ({"data": {"purchase": None}}, PLANNED)
    junk, went = await answered(api, core, PURCHASE, id="not-an-id")
    assert went == FELL_BACK  # the resolver refuses a malformed id: graphql-core's error
    assert junk["data"] == {"purchase": None}
    assert junk["errors"][0]["path"] == ["purchase"]
    assert junk["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize(
    "variables",
    [
        {"from": "not a date", "to": "2026-03-01T00:00:00+00:00"},
        {"to": "2026-03-01T00:00:00+00:00"},
        {"from": 7, "to": "2026-03-01T00:00:00+00:00"},
    ],
)
async def test_variables_that_do_not_coerce_get_graphql_cores_errors(
    api: Api, core: Api, variables: dict[str, Any]
) -> None:
    body, went = await answered(api, core, CALENDAR, **variables)
    assert went == FELL_BACK
    assert body["data"] is None
    assert {e["extensions"]["code"] for e in body["errors"]} == {"BAD_USER_INPUT"}


@pytest.mark.parametrize("token", [None, "not-a-jwt"])
async def test_missing_or_bad_tokens_get_graphql_cores_errors(
    api: Api, core: Api, token: str | None
) -> None:
    body, went = await answered(api.with_token(token), core, CALENDAR, **window())
    assert went == FELL_BACK
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert body["errors"][0]["path"] == ["bookings"]


async def test_an_expired_token_gets_graphql_cores_error(api: Api, core: Api) -> None:
    expired = api.as_trainer(
        "trainer-a", exp=int((datetime.now(UTC) - timedelta(hours=1)).timestamp())
    )
    body, went = await answered(expired, core, CALENDAR, **window())
    assert went == FELL_BACK
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


# A mutation whose answer reaches past its row commits whole (Operation.atomic): unplanned.
USE_WITH_CLIENT = "mutation($id: ID!) { useSession(purchaseId: $id) { id client { name } } }"
USE_TWICE = """
mutation($id: ID!) { a: useSession(purchaseId: $id) { id } b: useSession(purchaseId: $id) { id } }
"""


@pytest.mark.parametrize(
    "document",
    [
        "{ __schema { queryType { name } } }",
        'query { __type(name: "Booking") { name } }',
        USE_WITH_CLIENT,
        USE_TWICE,
    ],
)
async def test_what_the_planner_does_not_know_runs_on_graphql_core(
    api: Api, core: Api, diary: dict[str, str], document: str
) -> None:
    """Introspection and mutations that commit whole (several fields, nested answers) are
    never planned (the latter run in their transaction, past the planner)."""
    counts = planner(api.settings).counts
    before = Counter(counts)
    body = await api.post(document, id=diary["purchase"])
    went = Counter(counts)
    went.subtract(before)
    assert +went == (Counter() if "mutation" in document else UNPLANNED)
    assert "data" in body and "errors" not in body


async def test_a_read_only_api_key_reads_through_the_planner(
    api: Api, core: Api, diary: dict[str, str]
) -> None:
    created = await api.data('mutation { createApiKey(name: "ro", scopes: [READ]) { secret } }')
    key = api.with_token(created["createApiKey"]["secret"])
    body, went = await answered(key, core, PURCHASE, id=diary["purchase"])
    assert went == PLANNED
    assert body["data"]["purchase"]["sessionsUsed"] == 1


async def test_a_difference_from_graphql_core_fails_the_request_and_is_recorded(
    settings: Settings, diary: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The differential check can fail: a planner that answers one wrong count is caught."""
    from punchcard.gql import planned

    real = planned._leaf

    def off_by_one(type_: Any) -> Any:
        check, coerce = real(type_)
        if str(type_) != "Int!":
            return check, coerce
        return "call", lambda value: coerce(value) + 1  # every Int! one too many

    monkeypatch.setattr(planned, "_leaf", off_by_one)
    record = tmp_path / "mismatches.jsonl"
    checked = replace(settings, planner_differential=True, planner_mismatches=record)
    # A document no other test sends, so no plan compiled before the sabotage is reused.
    query = "query Sabotaged($id: ID!) { purchase(id: $id) { sessionsUsed id } }"
    async with in_process(checked, subject="trainer-a") as (_, http):
        with pytest.raises(PlannerMismatch):
            await http.post(
                "/graphql", json={"query": query, "variables": {"id": diary["purchase"]}}
            )
    (line,) = record.read_text().splitlines()
    entry = json.loads(line)
    assert entry["operationName"] is None and entry["query"] == query
    assert json.loads(entry["planned"])["data"]["purchase"]["sessionsUsed"] == 2
    assert json.loads(entry["graphql_core"])["data"]["purchase"]["sessionsUsed"] == 1


async def test_concurrent_writers_never_look_like_a_planner_bug(
    api: Api, diary: dict[str, str]
) -> None:
    """Reads of a package while its sessions are used, all at once: each read is checked
    against graphql-core in its own snapshot, so no count that moved between the two runs
    is taken for a difference (a mismatch would raise, and fail this test)."""
    counts = planner(api.settings).counts
    before = counts["planned"]
    reads = [api.post(LEDGER_OF, id=diary["purchase"], first=50) for _ in range(20)]
    # 5 sessions: 1 used, 1 held by the diary's booking, so 3 uses take what is left
    writes = [api.post(USE, id=diary["purchase"]) for _ in range(3)]
    answers = await asyncio.gather(*reads, *writes)
    assert all("errors" not in a for a in answers), answers
    used = [a["data"]["purchase"]["ledger"]["nodes"] for a in answers[:20]]
    assert all(2 <= len(nodes) <= 5 for nodes in used)  # the booking's hold, 1 + 3 uses
    assert counts["planned"] >= before + 20


@pytest.fixture
async def logged(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, StatementLog]]:
    """An app on one connection whose statements are logged, planner on, no differential
    check (whose second run would double them): what production sends."""
    log = StatementLog()
    one = replace(settings, pool_min_size=1, pool_max_size=1, planner_differential=False)
    app = create_app(one, on_connect=log.attach)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http, log


@pytest.mark.parametrize(("clients", "per_client"), [(2, 5), (30, 10)])
async def test_the_planned_calendar_sends_the_same_statements_for_10_or_300_bookings(
    logged: tuple[httpx.AsyncClient, StatementLog],
    settings: Settings,
    db: asyncpg.Connection,
    clients: int,
    per_client: int,
) -> None:
    http, log = logged
    await seed_month(db, clients=clients, bookings_per_client=per_client)
    headers = {"Authorization": f"Bearer {issue_token(settings, 'trainer-a')}"}
    request = {
        "query": CALENDAR,
        "variables": {"from": MONTH.isoformat(), "to": (MONTH + timedelta(days=31)).isoformat()},
    }
    await http.post("/graphql", json=request, headers=headers)  # warm-up: token, type info
    counts = planner(settings).counts
    before = counts["planned"]
    log.statements.clear()
    body = (await http.post("/graphql", json=request, headers=headers)).json()
    assert counts["planned"] == before + 1
    assert len(body["data"]["bookings"]) == clients * per_client
    # bookings, then clients and purchases by id, each batched: 3 whatever the month holds
    assert len(log.statements) == 3, log.statements


async def test_many_planned_calendars_at_once_answer_alike(
    api: Api, core: Api, diary: dict[str, str]
) -> None:
    """One compiled tree shared by twenty requests in flight together: no request's state
    (arguments, pending loads, paths) leaks into another's answer."""
    counts = planner(api.settings).counts
    before = counts["planned"]
    variables = window()
    answers = await asyncio.gather(*(api.post(CALENDAR, **variables) for _ in range(20)))
    reference = await core.post(CALENDAR, **variables)
    assert all(json.dumps(a) == json.dumps(reference) for a in answers)
    assert counts["planned"] >= before + 20


# -- mutations: one root field answered from its own row -----------------------------------

USE_COUNTS = "mutation($id: ID!) { useSession(purchaseId: $id) { sessionsUsed revision } }"


async def ledger_size(api: Api, purchase_id: str) -> int:
    data = await api.data(LEDGER_OF, id=purchase_id, first=100)
    return len(data["purchase"]["ledger"]["nodes"])


async def test_a_single_row_mutation_is_planned_and_runs_once(
    api: Api, diary: dict[str, str]
) -> None:
    """useSession on the plan: one more USE, once (the suite's differential check also
    has graphql-core complete the same outcome, and compares)."""
    counts = planner(api.settings).counts
    entries = await ledger_size(api, diary["purchase"])
    before = Counter(counts)
    body = await api.post(USE_COUNTS, id=diary["purchase"])
    went = Counter(counts)
    went.subtract(before)
    assert +went == PLANNED
    assert body == {"data": {"useSession": {"sessionsUsed": 2, "revision": entries + 1}}}
    assert await ledger_size(api, diary["purchase"]) == entries + 1


@pytest.mark.parametrize(
    ("who", "purchase", "code"),
    [
        ("trainer-a", "pur_999999", "NOT_FOUND"),
        ("trainer-a", "not-an-id", "BAD_USER_INPUT"),
        ("trainer-b", None, "NOT_FOUND"),  # another trainer's package
        (None, None, "UNAUTHENTICATED"),
        ("trainer-a", "full", "NO_SESSIONS_REMAINING"),
    ],
)
async def test_a_mutation_that_is_refused_answers_graphql_cores_error_and_changes_nothing(
    api: Api, core: Api, diary: dict[str, str], who: str | None, purchase: str | None, code: str
) -> None:
    """The resolver raises: graphql-core completes that same error (never runs the
    mutation again), and the answer is the one the planner-off app gives."""
    target = diary["purchase"] if purchase is None else purchase
    if purchase == "full":
        target = (await package(api, diary["client"], total=1))["id"]
        await api.data(USE, id=target)
    caller = api.with_token(None) if who is None else api.as_trainer(who)
    revision = (await api.data(PURCHASE_REVISION, id=diary["purchase"]))["purchase"]["revision"]
    body, went = await answered(caller, core, USE_COUNTS, id=target)
    assert went == FELL_BACK
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"]["code"] == code
    assert error["path"] == ["useSession"]
    after = (await api.data(PURCHASE_REVISION, id=diary["purchase"]))["purchase"]["revision"]
    assert after == revision


PURCHASE_REVISION = "query($id: ID!) { purchase(id: $id) { revision } }"


async def test_a_mutation_whose_answer_fails_after_the_change_is_completed_not_run_again(
    settings: Settings, diary: dict[str, str], monkeypatch: pytest.MonkeyPatch, api: Api
) -> None:
    """The plan's completion gives up after useSession changed the package: graphql-core
    answers by completing the same outcome; the session is used once, not twice."""
    from punchcard.gql import planned

    real = planned._leaf

    def refusing(type_: Any) -> Any:
        check, coerce = real(type_)
        if str(type_) != "Int!":
            return check, coerce

        def refuse(value: Any) -> Any:
            raise planned.Unplanned

        return "call", refuse

    monkeypatch.setattr(planned, "_leaf", refusing)
    checked = replace(settings, planner_differential=True)
    # A document no other test sends, so no plan compiled before the sabotage is reused.
    query = "mutation Refused($id: ID!) { useSession(purchaseId: $id) { revision sessionsUsed } }"
    entries = await ledger_size(api, diary["purchase"])
    counts = planner(checked).counts
    before = Counter(counts)
    async with in_process(checked, subject="trainer-a") as (_, http):
        response = await http.post(
            "/graphql", json={"query": query, "variables": {"id": diary["purchase"]}}
        )
    went = Counter(counts)
    went.subtract(before)
    assert +went == FELL_BACK
    assert response.json() == {"data": {"useSession": {"revision": entries + 1, "sessionsUsed": 2}}}
    assert await ledger_size(api, diary["purchase"]) == entries + 1


async def test_concurrent_planned_uses_of_one_package_count_each_session_once(
    api: Api, diary: dict[str, str]
) -> None:
    """20 planned useSessions at once on a package with 3 sessions left (5, 1 used, 1
    held): 3 succeed, 17 are refused, and the ledger has exactly 3 more entries."""
    entries = await ledger_size(api, diary["purchase"])
    counts = planner(api.settings).counts
    before = Counter(counts)
    answers = await asyncio.gather(*(api.post(USE_COUNTS, id=diary["purchase"]) for _ in range(20)))
    went = Counter(counts)
    went.subtract(before)
    used = [a["data"]["useSession"] for a in answers if "errors" not in a]
    refused = [a["errors"][0]["extensions"]["code"] for a in answers if "errors" in a]
    assert sorted(u["sessionsUsed"] for u in used) == [2, 3, 4]
    assert refused == ["NO_SESSIONS_AVAILABLE"] * 17
    assert went == Counter({"planned": 3, "fallback": 17})
    assert await ledger_size(api, diary["purchase"]) == entries + 3


def test_utc_datetimes_are_left_for_the_encoder(settings: Settings) -> None:
    """A DateTime leaf's UTC value goes into the planned data as it is (json_bytes and
    results.websocket_text write its isoformat); any other value is serialized by the scalar there
    and then."""
    from punchcard.gql.planned import _coercer

    moment = _coercer(schema_for(settings)._schema.type_map["DateTime"])  # type: ignore[arg-type]
    utc = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    assert moment(utc) is utc
    elsewhere = utc.astimezone(timezone(timedelta(hours=2)))
    assert moment(elsewhere) == "2026-03-01T11:30:00+02:00"
    assert moment(utc.replace(tzinfo=None)) == "2026-03-01T09:30:00"
    assert moment(None) is None
