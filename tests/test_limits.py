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
        engine.schema.validation_rules,
        max_tokens=engine.schema.limits.max_tokens,
        validate=lambda s, d: engine.core.validate(s, d, engine.schema.validation_rules),
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
    else:
        assert prepared_small.errors == [] and prepared_large.errors == []


async def test_a_40_fragment_document_is_refused_at_once_without_credentials(api: Api) -> None:
    """The ~900-byte request that froze the server: now an ordinary answer."""
    body = await api.with_token(None).post(doubling(40, alias=True))
    [error] = body["errors"]
    assert error["message"] == f"{2**39 - 1} aliases found. Allowed: 30"
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
