"""The depth and alias limits hold for every shape of fragment nesting, and checking them
costs work linear in the document (hardening, defect 1).

Work is counted, not timed: the number of Python function calls validation makes, with
a profiler hook, for documents of n and 2n fragments. A walk of every path through
fragments that each spread the next one twice doubles per fragment (2^n); a linear check
makes about twice the calls for twice the fragments.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

import pytest

from punchcard.gql.documents import Prepared
from punchcard.server.app import engine_for, schema_for
from punchcard.settings import Settings
from tests.conftest import Api


def doubling(fragments: int, *, alias: bool = False) -> str:
    """Fragment k spreads fragment k+1 twice; the last selects a field."""
    lines = ["query Doubling { me { ...F0 } }"]
    for k in range(fragments - 1):
        extra = f"a{k}: id " if alias else ""
        lines.append(f"fragment F{k} on Trainer {{ {extra}...F{k + 1} ...F{k + 1} }}")
    lines.append(f"fragment F{fragments - 1} on Trainer {{ id }}")
    return "\n".join(lines)


def calls_to_prepare(text: str) -> tuple[int, Prepared]:
    """Validate ``text`` with a fresh cache; count the Python calls it took."""
    settings = Settings()
    engine = engine_for(schema_for(settings))
    count = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event == "call":
            count += 1

    documents = type(engine.documents)(
        engine.graphql_schema,
        validate=lambda s, d: engine.core.validate(s, d, engine.schema.validation_rules),
        max_tokens=engine.schema.limits.max_tokens,
    )
    sys.setprofile(profile)
    try:
        prepared = documents.prepare(text)
    finally:
        sys.setprofile(None)
    return count, prepared


@pytest.mark.parametrize("alias", [False, True], ids=["plain", "aliased"])
def test_validation_work_grows_linearly_with_doubling_fragments(alias: bool) -> None:
    small, prepared_small = calls_to_prepare(doubling(12, alias=alias))
    large, prepared_large = calls_to_prepare(doubling(24, alias=alias))
    assert large < 3 * small, (small, large)  # 2^12 times more for a walk of every path
    if alias:
        # As the document expands: fragment k's alias counts 2^k times.
        assert prepared_large.errors[0].message == (f"{2**23 - 1} aliases found. Allowed: 30")
    else:  # 2^23 `id` fields once expanded: within the alias limit, not the cost limit
        assert prepared_small.errors == []
        codes = [(e.extensions or {}).get("code") for e in prepared_large.errors]
        assert codes == ["QUERY_TOO_COMPLEX"]


async def test_a_40_fragment_document_is_refused_at_once_without_credentials(api: Api) -> None:
    """The ~900-byte request that froze the server: now an ordinary answer."""
    body = await api.with_token(None).post(doubling(40, alias=True))
    aliases, cost = body["errors"]
    assert aliases["message"] == f"{2**39 - 1} aliases found. Allowed: 30"
    assert cost["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert body.get("data") is None


@pytest.mark.parametrize(
    ("document", "deepest"),
    [
        ("{ clients { nodes { purchases { client { id } } } } }", 4),
        ("query { clients { ...A } } fragment A on ClientConnection { nodes { ...B } } "
         "fragment B on Client { purchases { client { id } } }", 4),
        ("{ clients { nodes { ... on Client { purchases { ... on Purchase { client { id } } } } } "
         "} }", 4),
        ("{ __typename clients { __typename nodes { id } } }", 2),
    ],
)  # fmt: skip
def test_depth_is_measured_through_fragments_and_inline_fragments(
    document: str, deepest: int
) -> None:
    for limit, refused in ((deepest, False), (deepest - 1, True)):
        settings = Settings(max_query_depth=limit)
        engine = engine_for(schema_for(settings))
        errors = engine.documents.prepare(document).errors
        messages = [e.message for e in errors]
        assert any("exceeds maximum operation depth" in m for m in messages) is refused, (
            limit,
            messages,
        )


CALENDAR = (
    'query { bookings(from: "2026-03-01T00:00:00Z", to: "2026-04-01T00:00:00Z") { id startsAt '
    "endsAt status charged client { id name } purchase { id sessionsRemaining expiresAt } } }"
)
NESTED = (
    'query { bookings(from: "2026-03-01T00:00:00Z", to: "2026-04-01T00:00:00Z") '
    "{ client { purchases { ledger(first: 500) { nodes { id delta revision } } } } } }"
)


def cost_errors(document: str, **limits: int) -> list[dict[str, Any]]:
    engine = engine_for(schema_for(Settings(**limits)))  # type: ignore[arg-type]
    errors = engine.documents.prepare(document).errors
    return [e.formatted for e in errors if (e.extensions or {}).get("code") == "QUERY_TOO_COMPLEX"]


def test_the_calendar_is_within_the_cost_limit_and_a_nested_ledger_dump_is_not() -> None:
    assert cost_errors(CALENDAR) == []
    [error] = cost_errors(NESTED)
    # 500 bookings (the estimate) x 5 packages each x 500 ledger rows x 4 nodes, and the
    # fields above them: 1 + 500 * (1 + 1 * (1 + 5 * (1 + 500 * (1 + 3)))).
    assert error["extensions"]["cost"] == 5_003_501
    assert error["extensions"]["maxCost"] == 100_000


@pytest.mark.parametrize(
    ("document", "cost"),
    [
        # A list field counts 1, plus its size times what it selects.
        ("{ clients(first: 10) { nodes { id name } } }", 1 + 10 * (1 + 2)),
        ("{ clients { nodes { id } } }", 1 + 50 * (1 + 1)),  # first's default, 50
        ("query($n: Int) { clients(first: $n) { nodes { id } } }", 1 + 200 * 2),  # the cap
        ("{ a: clients(first: 10) { nodes { id } } b: clients(first: 10) { nodes { id } } }",
         2 * (1 + 10 * 2)),
        ("{ ...Q } fragment Q on Query { clients(first: 10) { ...N } } "
         "fragment N on ClientConnection { nodes { id } pageInfo { hasNextPage } }",
         1 + 10 * (2 + 2)),
    ],
)  # fmt: skip
def test_the_cost_multiplies_lists_through_arguments_aliases_and_fragments(
    document: str, cost: int
) -> None:
    assert cost_errors(document, max_query_cost=cost) == []
    [error] = cost_errors(document, max_query_cost=cost - 1)
    assert error["extensions"]["cost"] == cost


async def test_a_query_over_the_cost_limit_is_refused_before_anything_runs(api: Api) -> None:
    body = await api.post(NESTED)
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["QUERY_TOO_COMPLEX"]
