"""Fuzzing the live schema: hypothesis-graphql writes queries and mutations against the
schema the running server serves (read back over HTTP by introspection), and each one
is sent over HTTP to the in-process app, with real PostgreSQL behind it.

Every answer must hold, whatever was sent and whoever sent it:

- the status is below 500 and the body is a JSON object;
- every error has an ``extensions.code`` from the README's table, and none is
  ``INTERNAL_SERVER_ERROR`` (an unexpected exception, even masked, is a bug here);
- no error leaks internals (exception names, SQL, tracebacks), and the server logged no
  unexpected error;
- a refused document (errors and ``data: null``) changed no row of any table;
- a mutation of several fields that failed anywhere committed nothing and says so
  (``extensions.rolledBack``).

What is sent: valid documents (queries and mutations, with argument literals or with
their arguments lifted into variables, the variables right or wrong), documents with one
schema violation (``Mode.NEGATIVE``) and broken text. IDs are the caller's own rows, the
other trainer's rows, ids of another kind, malformed ids and random text; times are near
now, at the ends of the calendar, without an offset, or garbage. Callers are the trainer
who owns the rows (JWT and API keys, one read-only), the other trainer, and callers with
no, expired, forged or garbage credentials. Half the requests take the fast path, half
strawberry's view.

``PUNCHCARD_FUZZ_EXAMPLES`` sets the number of examples (default 300). Problems are
collected over the whole run, not stopped at the first, so one run lists all it found.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import graphql
import httpx
import jwt
import pytest
from graphql import (
    ArgumentNode,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    NameNode,
    OperationDefinitionNode,
    OperationType,
    TypeInfo,
    TypeInfoVisitor,
    ValueNode,
    VariableDefinitionNode,
    VariableNode,
    Visitor,
    build_client_schema,
    get_introspection_query,
    parse,
    parse_type,
    print_ast,
    value_from_ast_untyped,
    visit,
)
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis_graphql import Mode, from_schema, mutations, nodes

from punchcard.db.errors import Code
from punchcard.gql.auth import issue_token
from punchcard.gql.errors import (
    BAD_REQUEST,
    INTERNAL,
    OPERATION_RESOLUTION_FAILURE,
    PARSE_FAILED,
    VALIDATION_FAILED,
)
from punchcard.settings import Settings
from tests.conftest import FUZZ_REPORT, Api, in_process
from tests.helpers import package
from tests.refusals import CREATE_KEY, World, build_world, malformed, of_other_kind, snapshot

EXAMPLES = int(os.environ.get("PUNCHCARD_FUZZ_EXAMPLES", "300"))

KNOWN_CODES = frozenset(
    {code.value for code in Code}
    | {PARSE_FAILED, VALIDATION_FAILED, OPERATION_RESOLUTION_FAILURE, BAD_REQUEST, INTERNAL}
    | {"QUERY_TOO_COMPLEX", "PAYLOAD_TOO_LARGE", "REQUEST_TIMEOUT"}
)
# What an error's extensions may hold besides its code (README): nothing like a trace.
KNOWN_EXTENSIONS = frozenset({"code", "cost", "maxCost", "rolledBack", "retryable"})
# Internals that must never reach a client: exception names and reprs, SQL and driver text.
LEAK = re.compile(
    r"Traceback|File \"|\b[A-Z][A-Za-z]*(Error|Exception)\b|object at 0x|NoneType|"
    r"has no attribute|asyncpg|sqlalchemy|psycopg|\bSELECT\b|\bINSERT INTO\b|"
    r"violates .* constraint|duplicate key|syntax error at or near|invalid input syntax|"
    r"out of range for type|Internal Server Error|unexpected keyword argument"
)


# --- the fuzzed values ---------------------------------------------------------------------

# The world's ids, the most useful first (hypothesis prefers the first entries of a list).
ID_FIELDS = sorted(
    (
        f.name
        for f in fields(World)
        if f.name not in {"secret", "use_key", "complete_key", "stripe_account"}
    ),
    key=lambda name: name == "trainer",
)


def ids(mine: World, theirs: World) -> st.SearchStrategy[ValueNode]:
    """``ID`` arguments: the caller's rows, the other trainer's, other kinds', malformed."""
    own = [getattr(mine, name) for name in ID_FIELDS]
    foreign = [getattr(theirs, name) for name in ID_FIELDS]
    odd = sorted(
        {of_other_kind(i) for i in own if not i.startswith("trn_")}
        | {bad for i in own for bad in malformed(i[:3])}
        | {"pur_999999", "cli_999999", "bkg_999999", "trn_1", "led_1", "ofr_999999"}
    )
    return st.one_of(
        st.sampled_from(own).map(nodes.String),
        st.sampled_from(own).map(nodes.String),
        st.sampled_from(own).map(nodes.String),
        st.sampled_from(foreign).map(nodes.String),
        st.sampled_from(odd).map(nodes.String),
        st.from_regex(r"[a-z]{3}_[0-9]{1,20}", fullmatch=True).map(nodes.String),
        st.text(max_size=20).map(nodes.String),
        st.integers().map(nodes.Int),
    )


OFFSETS = [UTC, timezone(timedelta(hours=1)), timezone(-timedelta(hours=5, minutes=30))]
EDGES = [timezone(timedelta(hours=14)), timezone(-timedelta(hours=12)), *OFFSETS]
ODD_TIMES = [
    "",
    "now",
    "2026-02-30T00:00:00Z",
    "2026-01-01",
    "2026-01-01T00:00:00",
    "2026-01-01T00:00:00+24:00",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "2026-01-01T25:00:00Z",
    "2026-W01-1T00:00:00Z",
]


def times() -> st.SearchStrategy[ValueNode]:
    """``DateTime`` arguments: near now (bookings land in the seeded calendar), at the ends
    of what Python and PostgreSQL hold, without an offset, or not a time at all."""
    now = datetime.now(UTC).replace(microsecond=0)
    near = st.builds(
        lambda hours, tz: (now + timedelta(hours=hours)).astimezone(tz).isoformat(),
        st.integers(-24 * 40, 24 * 40),
        st.sampled_from(OFFSETS),
    )
    anywhere = st.datetimes(timezones=st.sampled_from(EDGES)).map(datetime.isoformat)
    naive = st.datetimes().map(datetime.isoformat)
    return st.one_of(
        near.map(nodes.String),
        near.map(nodes.String),
        anywhere.map(nodes.String),
        naive.map(nodes.String),
        st.sampled_from(ODD_TIMES).map(nodes.String),
        st.text(max_size=30).map(nodes.String),
        st.integers().map(nodes.Int),
    )


def ints() -> st.SearchStrategy[ValueNode]:
    """``Int`` arguments: mostly in the ranges that work (sessions, page sizes), then the
    edges of those ranges and of 32 bits."""
    return st.one_of(
        st.integers(1, 12),
        st.integers(1, 12),
        st.sampled_from([0, -1, 1000, 1001, 2**31 - 1, -(2**31)]),
        st.integers(-(2**31), 2**31 - 1),
    ).map(nodes.Int)


def strings() -> st.SearchStrategy[ValueNode]:
    """``String`` arguments: names, emails, time zones and keys that work, and text that
    does not (NUL, control characters, astral planes, too long)."""
    word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ABC-'", min_size=1, max_size=12)
    return st.one_of(
        word,
        word,
        st.sampled_from(["ada@example.com", "not-an-email", "Europe/Berlin", "UTC", "Mars/Base"]),
        st.sampled_from(["", " ", "\x00", "x" * 256, "x" * 5000, "🏋️", "a\u200bb", "\x7f\x1b[31m"]),
        st.text(max_size=20),
    ).map(nodes.String)


JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)


# --- documents and requests ----------------------------------------------------------------


class _Lift(Visitor):
    """Turns argument literals into variables (``choose`` says which), keeping their values."""

    def __init__(self, type_info: TypeInfo, choose: Callable[[], bool]) -> None:
        super().__init__()
        self.type_info = type_info
        self.choose = choose
        self.definitions: list[VariableDefinitionNode] = []
        self.values: dict[str, Any] = {}

    def enter_argument(self, node: ArgumentNode, *_: object) -> ArgumentNode | None:
        argument = self.type_info.get_argument()
        if argument is None or isinstance(node.value, VariableNode) or not self.choose():
            return None
        name = f"v{len(self.definitions)}"
        variable = VariableNode(name=NameNode(value=name))
        self.definitions.append(
            VariableDefinitionNode(variable=variable, type=parse_type(str(argument.type)))
        )
        self.values[name] = value_from_ast_untyped(node.value)
        return ArgumentNode(name=node.name, value=variable)


def lift_variables(
    schema: GraphQLSchema, document: str, choose: Callable[[], bool]
) -> tuple[str, dict[str, Any]]:
    """``document`` with some argument literals passed as variables instead."""
    type_info = TypeInfo(schema)
    lift = _Lift(type_info, choose)
    lifted = visit(parse(document), TypeInfoVisitor(type_info, lift))
    assert isinstance(lifted, DocumentNode)
    definitions = []
    for definition in lifted.definitions:
        if isinstance(definition, OperationDefinitionNode):
            definition = OperationDefinitionNode(
                operation=definition.operation,
                name=definition.name,
                variable_definitions=tuple(lift.definitions),
                directives=definition.directives,
                selection_set=definition.selection_set,
            )
        definitions.append(definition)
    return print_ast(DocumentNode(definitions=tuple(definitions))), lift.values


# The kind of row an ID argument (or input field) names, by its name or its field's.
KIND_OF = {"purchaseId": "pur", "clientId": "cli", "offerId": "ofr"}
KIND_OF_ID = {
    "client": "cli",
    "purchase": "pur",
    "booking": "bkg",
    "completeBooking": "bkg",
    "markNoShow": "bkg",
    "cancelBooking": "bkg",
    "reopenBooking": "bkg",
    "revokeApiKey": "key",
}


def rows_by_kind(world: World, *first: str) -> dict[str, list[str]]:
    """The world's ids by kind, ``first`` (say a package that will not run out) first."""
    rows: dict[str, list[str]] = {}
    for value in [*first, *(getattr(world, name) for name in ID_FIELDS)]:
        rows.setdefault(value[:3], []).append(value)
    return rows


class _Aim(Visitor):
    """Points ID literals at the caller's rows of the kind they name (``pick`` chooses):
    random ids seldom name a row, and a mutation that finds its row is one that writes."""

    def __init__(self, pick: Callable[[str], str | None]) -> None:
        super().__init__()
        self.pick = pick

    def _aimed(self, value: ValueNode, kind: str | None) -> ValueNode | None:
        if kind is None or not isinstance(value, graphql.StringValueNode | graphql.IntValueNode):
            return None
        row = self.pick(kind)
        return None if row is None else nodes.String(row)

    def enter_argument(
        self, node: ArgumentNode, _key: object, _parent: object, _path: object, ancestors: list[Any]
    ) -> ArgumentNode | None:
        name = node.name.value
        kind = KIND_OF.get(name)
        if name == "id":
            field_node = next(a for a in reversed(ancestors) if isinstance(a, graphql.FieldNode))
            kind = KIND_OF_ID.get(field_node.name.value)
        value = self._aimed(node.value, kind)
        return None if value is None else ArgumentNode(name=node.name, value=value)

    def enter_object_field(self, node: graphql.ObjectFieldNode, *_: object) -> Any:
        value = self._aimed(node.value, KIND_OF.get(node.name.value))
        return None if value is None else graphql.ObjectFieldNode(name=node.name, value=value)


def aim_ids(document: str, pick: Callable[[str], str | None]) -> str:
    return print_ast(visit(parse(document), _Aim(pick)))


@dataclass(frozen=True)
class Request:
    kind: str  # how the document was made
    caller: str
    path: str  # "fast" or "view"
    body: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.kind} as {self.caller} via {self.path}: {self.body!r}"[:3000]


def requests(
    schema: GraphQLSchema, mine: World, theirs: World, aims: dict[str, list[str]]
) -> st.SearchStrategy[Request]:
    scalars = {"ID": ids(mine, theirs), "DateTime": times(), "Int": ints(), "String": strings()}
    valid = from_schema(schema, custom_scalars=scalars)
    negative = from_schema(schema, custom_scalars=scalars, mode=Mode.NEGATIVE)
    assert schema.mutation_type is not None
    # One mutation field per document as well: most documents of several fields fail on one
    # of them and commit nothing, and a single field is where a change commits on its own.
    one_mutation = st.one_of(
        *(
            mutations(schema, fields=[name], custom_scalars=scalars)
            for name in schema.mutation_type.fields
        )
    )
    truncated = st.tuples(valid, st.floats(0, 1)).map(lambda d: d[0][: int(len(d[0]) * d[1])])

    @st.composite
    def build(draw: st.DrawFn) -> Request:
        kind = draw(st.sampled_from(KINDS))
        variables: dict[str, Any] | None = None
        if kind == "negative":
            document = draw(negative)
        elif kind == "broken":
            document = draw(truncated | st.text(max_size=200) | st.sampled_from(HANDMADE))
        else:
            document = draw(one_mutation if kind == "one mutation" else valid)
            if kind == "one mutation" or draw(st.booleans()):  # at rows of the right kind
                document = aim_ids(
                    document, lambda k: draw(st.sampled_from(aims[k])) if k in aims else None
                )
        if kind == "variables":
            document, variables = lift_variables(
                schema, document, lambda: draw(st.integers(0, 3)) > 0
            )
            if draw(st.booleans()) and variables:  # wrong values, missing and extra ones
                kind = "bad variables"
                for name in list(variables):
                    action = draw(st.sampled_from(["keep", "replace", "drop"]))
                    if action == "replace":
                        variables[name] = draw(JSON)
                    elif action == "drop":
                        del variables[name]
                if draw(st.booleans()):
                    variables[draw(st.text(min_size=1, max_size=8))] = draw(JSON)
        body: dict[str, Any] = {"query": document}
        if variables is not None:
            body["variables"] = variables
        if draw(st.sampled_from([False] * 19 + [True])):
            body["operationName"] = draw(
                st.sampled_from(["Fuzz", "", "A", "B"]) | st.text(max_size=8)
            )
        caller = draw(st.sampled_from(CALLER_WEIGHTS))
        return Request(kind, caller, draw(st.sampled_from(["fast", "view"])), body)

    return build()


# Text a generator does not write: escapes, a lone surrogate, several operations, fragments,
# a subscription over HTTP, introspection, a document of nothing but tokens.
HANDMADE = [
    '{ clients(search: "\\ud800") { nodes { id } } }',
    '{ clients(search: "\\u{1F3CB}\\u0000") { nodes { id name } } }',
    'mutation { createClient(input: {name: "\\u0000"}) { id } }',
    "query A { me { id } } query B { me { id } }",
    'query A { me { id } } mutation B { createClient(input: {name: "x"}) { id } }',
    "fragment F on Query { me { id } } { ...F }",
    "fragment F on Query { ...F } { ...F }",
    'mutation { ...M } fragment M on Mutation { createClient(input: {name: "frag"}) { id } }',
    'subscription { purchaseUpdated(purchaseId: "pur_1") { revision } }',
    "{ __schema { types { name } } }",
    "{ __typename }",
    "{ me { id " + "__typename " * 3000 + "} }",
    "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(40)) + " }",
    "{ me @skip(if: true) { id } }",
    "{ me @include(if: $undefined) { id } }",
    'query($x: Int = "no") { me { id } }',
]

# How each document is made (hypothesis prefers the first entries of a list).
KINDS = ["one mutation", "valid", "one mutation", "variables", "negative", "broken"]

# The owner most of the time, so that valid documents reach rows and change them.
CALLER_WEIGHTS = [
    *["owner"] * 8,
    "owner key",
    "read-only key",
    "other trainer",
    "anonymous",
    "expired",
    "forged",
    "garbage",
    "unknown key",
    "not bearer",
]


# --- the server under test -----------------------------------------------------------------


@dataclass
class Target:
    schema: GraphQLSchema
    mine: World
    theirs: World
    aims: dict[str, list[str]]  # the owner's rows by kind, to point ids at
    clients: dict[str, httpx.AsyncClient]  # by path
    headers: dict[str, dict[str, str]]  # by caller
    db: asyncpg.Connection


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def target(settings: Settings) -> AsyncIterator[Target]:
    async with AsyncExitStack() as stack:
        _, fast = await stack.enter_async_context(in_process(settings))
        _, view = await stack.enter_async_context(in_process(replace(settings, fast_path=False)))
        db = await asyncpg.connect(settings.database_url)
        stack.push_async_callback(db.close)
        owner = Api(fast, settings, None).as_trainer("trainer-a")
        other = owner.as_trainer("trainer-b")
        mine = await build_world(owner, "Ada")
        theirs = await build_world(other, "Bea")
        reader = await owner.data(CREATE_KEY, name="reader", scopes=["READ"])
        # The world's packages run out after a few uses; this one lasts the whole run.
        lasting = await package(owner, mine.client, total=1000)
        introspection = await owner.data(get_introspection_query(descriptions=False))
        assert owner.token and other.token
        headers = {
            "owner": bearer(owner.token),
            "owner key": bearer(mine.secret),
            "read-only key": bearer(reader["createApiKey"]["secret"]),
            "other trainer": bearer(other.token),
            "anonymous": {},
            "expired": bearer(issue_token(settings, "trainer-a", ttl_seconds=-3600)),
            "forged": bearer(jwt.encode({"sub": "trainer-a", "exp": 2**40}, "x" * 32)),
            "garbage": bearer("not.a.token"),
            "unknown key": bearer("pc_" + "A" * 43),
            "not bearer": {"Authorization": "Basic dHJhaW5lcjpwYXNz"},
        }
        yield Target(
            build_client_schema(introspection),  # type: ignore[arg-type]
            mine,
            theirs,
            rows_by_kind(mine, lasting["id"]),
            {"fast": fast, "view": view},
            headers,
            db,
        )


class Errors(logging.Handler):
    """What the server logged at ERROR or above (an unexpected error is logged there)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Tally:
    examples: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    refused: int = 0  # errors and no data: checked to have changed nothing
    committed: int = 0  # answers with data whose request changed rows
    problems: list[str] = field(default_factory=list)

    def lines(self, seconds: float) -> list[str]:
        return [
            f"fuzz: {self.examples} examples in {seconds:.1f} s",
            f"fuzz: statuses {dict(sorted(self.statuses.items()))}",
            f"fuzz: kinds {dict(sorted(self.kinds.items()))}",
            f"fuzz: refused (checked unchanged) {self.refused}, changed rows {self.committed}",
            f"fuzz: error codes {dict(self.codes.most_common())}",
            f"fuzz: problems {len(self.problems)}",
        ]


def is_atomic(document: str) -> bool:
    """A mutation of several root fields (all or nothing: README)."""
    try:
        node = parse(document)
    except GraphQLError:
        return False
    operations = [d for d in node.definitions if isinstance(d, OperationDefinitionNode)]
    return (
        len(operations) == 1
        and operations[0].operation is OperationType.MUTATION
        and len(operations[0].selection_set.selections) > 1
    )


async def check(server: Target, request: Request, tally: Tally) -> None:
    """Send ``request`` and note every broken promise in ``tally.problems``."""
    problems: list[str] = []
    before = await snapshot(server.db)
    try:
        response = await server.clients[request.path].post(
            "/graphql", json=request.body, headers=server.headers[request.caller]
        )
    except Exception as raised:  # the app raised: a server would answer 500
        tally.problems.append(f"the app raised {raised!r}\n  {request}")
        return
    after = await snapshot(server.db)
    tally.examples += 1
    tally.statuses[response.status_code] += 1
    tally.kinds[request.kind] += 1
    if response.status_code >= 500:
        problems.append(f"status {response.status_code}")
    if not response.headers.get("content-type", "").startswith("application/json"):
        problems.append(f"content-type {response.headers.get('content-type')!r}")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        problems.append("the body is no JSON object")
        body = {}
    errors = body.get("errors") or []
    data = body.get("data")
    if not errors and data is None:
        problems.append("neither data nor errors")
    for error in errors:
        extensions = error.get("extensions") or {}
        code = extensions.get("code")
        tally.codes[str(code)] += 1
        if code not in KNOWN_CODES:
            problems.append(f"error without a known code: {error!r}")
        if code == INTERNAL:
            problems.append(f"internal error: {error!r}")
        # SERVICE_UNAVAILABLE names the driver's exception on purpose (db/errors.py).
        if code != "SERVICE_UNAVAILABLE" and LEAK.search(str(error.get("message", ""))):
            problems.append(f"unmasked error: {error!r}")
        if set(extensions) - KNOWN_EXTENSIONS:
            problems.append(f"unexpected extensions: {error!r}")
    if errors and data is None:
        tally.refused += 1
        if after != before:
            changed = sorted(t for t in after if after[t] != before.get(t))
            problems.append(f"refused, yet rows changed in {changed}")
    elif after != before:
        tally.committed += 1
    if (
        errors
        and is_atomic(request.body["query"])
        and any("path" in e for e in errors)
        and (data is not None or not all(e.get("extensions", {}).get("rolledBack") for e in errors))
    ):
        problems.append("a failed mutation of several fields is not rolled back")
    if 400 <= response.status_code < 500 and not errors:
        problems.append("a 4xx without errors")
    if problems:
        tally.problems.append(f"{'; '.join(problems)}\n  {request}\n  -> {response.text[:2000]}")


def test_fuzz_the_live_schema(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> None:
    # Hypothesis caches (unicode tables, constants) go to a temporary directory, and there
    # is no example database: nothing is written into the repository.
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    tally = Tally()
    logged = Errors()
    punchcard_log = logging.getLogger("punchcard")
    punchcard_log.addHandler(logged)
    started = time.monotonic()
    # The app and its pools live on this loop, across examples: the test is synchronous,
    # so no fixture is function-scoped inside @given and each example runs on the loop.
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        stack = AsyncExitStack()
        server = runner.run(stack.enter_async_context(target(settings)))
        try:

            @hypothesis_settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                phases=[Phase.generate],  # the database moves on: shrinking would not replay
                suppress_health_check=[
                    HealthCheck.too_slow,
                    HealthCheck.data_too_large,
                    HealthCheck.large_base_example,
                    HealthCheck.filter_too_much,
                ],
                print_blob=False,
            )
            @given(requests(server.schema, server.mine, server.theirs, server.aims))
            def fuzz(one: Request) -> None:
                runner.run(check(server, one, tally))

            fuzz()
        finally:
            try:
                runner.run(stack.aclose())
            except TimeoutError as error:  # a pooled connection was still busy at close
                tally.problems.append(f"closing the app timed out ({error!r})")
            finally:
                punchcard_log.removeHandler(logged)
                seconds = time.monotonic() - started
                request.config.stash.setdefault(FUZZ_REPORT, []).extend(tally.lines(seconds))
    for name, value in [
        ("fuzz_examples", tally.examples),
        ("fuzz_seconds", round(seconds, 1)),
        ("fuzz_statuses", dict(tally.statuses)),
        ("fuzz_codes", dict(tally.codes)),
    ]:
        request.node.user_properties.append((name, value))
    tally.problems += [f"logged: {r.getMessage()} {r.exc_info!r}" for r in logged.records]
    if tally.problems:
        shown = "\n\n".join(tally.problems[:30])
        pytest.fail(f"{len(tally.problems)} problems in {tally.examples} examples:\n{shown}")
    assert tally.examples >= EXAMPLES
