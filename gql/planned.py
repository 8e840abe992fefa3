"""Running a plan (``gql/plan.py``): a tree of precompiled per-field functions.

graphql-jit's idea, over graphql-core's own pieces: the operation and its variables are
taken (and coerced) by graphql-core's ``Executor.build``, fields are collected by its
``collect_fields``, arguments coerced by its ``get_argument_values`` (once per field per
request, not per object), and custom resolvers get the ``GraphQLResolveInfo`` its executor
builds. What the tree saves is graphql-core's per-value work: a plain field is read
straight from its object and serialized by a function chosen when the tree was compiled,
``__typename`` is a constant, lists are completed by a plain loop, and every awaitable of
a level (DataLoader loads included) is awaited in one ``gather`` before the next level
starts, so nested objects still load in one batch per level.

The planner never produces an error itself. Whatever it was not built for (a resolver
that raises, a null where the schema says non-null, a value a serializer refuses, an
awaitable where a plain value was expected, variables that do not coerce) raises
``Unplanned``: the partial work is thrown away and the engine runs the same request on
graphql-core, which answers with exactly its errors, paths and null propagation.

A query run again changes nothing; a mutation's root field must run once. So a planned
mutation (one root field answered from its own row: ``Operation.atomic`` is false) awaits
its root resolvers in order, as graphql-core does, and keeps each one's outcome (the
value, or the exception it raised) in ``outcomes``; when anything after that is
unplanned, graphql-core answers by completing those same outcomes (``replay``), never
by calling the resolver again.

A planned answer's ``data`` may hold ``datetime`` values: a ``DateTime`` leaf whose value
is a UTC ``datetime`` (every ``timestamptz`` asyncpg reads) is left for the encoder, which
writes the very text graphql-core's serializer (``isoformat``) would: orjson over HTTP
(``gql/json_bytes.py``), about ten times faster, and ``results.websocket_text`` over the WebSocket.
Those two are the only readers of an engine's answer."""

from __future__ import annotations

from asyncio import gather
from collections.abc import Callable
from datetime import UTC, date, datetime
from enum import Enum
from inspect import iscoroutine
from operator import methodcaller
from typing import Any

from graphql import (
    ExecutionResult,
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLField,
    GraphQLID,
    GraphQLInt,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLString,
    OperationType,
    Undefined,
    get_named_type,
    is_leaf_type,
)
from graphql.execution import Executor
from graphql.execution.collect_fields import (
    FieldDetails,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path
from graphql.type.introspection import TypeNameMetaFieldDef
from strawberry.execution import optimized_is_awaitable

from punchcard.gql import generated
from punchcard.gql.plan import Completer, Field, Pending, Plan, Reader, Run, Selection, Tree
from punchcard.internals import (
    STRAWBERRY_DEFINITION,
    basic_attribute,
    direct_resolver,
    prefetched_attribute,
)

is_awaitable = optimized_is_awaitable
MAX_INT = 2_147_483_647
MIN_INT = -2_147_483_648
# graphql-core's own scalars whose coerce_output_value returns a value of this type as is.
_BUILT_IN = (GraphQLString, GraphQLID, GraphQLBoolean)
_EXACT: dict[str, type] = {"String": str, "ID": str, "Boolean": bool}
_CHECKS = {"String": "str", "ID": "str", "Boolean": "bool"}
# Values that are never awaitable nor errors: the serializer is asked straight away.
PLAIN = frozenset({str, int, float, bool, datetime, date})
# strawberry's DateTime serializer: a UTC datetime's text is orjson's (gql/json_bytes.py).
_ISOFORMAT = repr(methodcaller("isoformat"))


class Unplanned(Exception):
    """The request met something its plan did not expect: graphql-core answers it."""


async def run(
    plan: Plan, executor: Executor[Any] | list[Any], outcomes: dict[str, Any] | None = None
) -> ExecutionResult | None:
    """The planned answer, or None when graphql-core must answer instead. A mutation's
    root fields' outcomes are put in ``outcomes`` (by response key) as they settle:
    when there are any, graphql-core must complete them (``replay``), not run again."""
    if isinstance(executor, list) or executor.middleware_manager is not None:
        return None  # variables that do not coerce: graphql-core says how
    tree = plan.tree
    if tree is None:
        try:
            tree = compile_tree(executor, plan.info_class)
        except Exception:  # Unplanned, or a @skip/@include that does not evaluate
            return None
        if plan.static:
            plan.tree = tree
    state = Run(executor)
    try:
        state.arguments = [
            get_argument_values(
                definition,
                details.node,
                executor.variable_values,
                details.fragment_variable_values,
                executor.hide_suggestions,
            )
            for definition, details in tree.arguments
        ]
        data = tree.root.execute(state, executor.root_value, None)
        if tree.mutation:
            await resolve_serially(state, {} if outcomes is None else outcomes)
        await settle(state)
    except BaseException as error:
        await discard(state.pending)
        if isinstance(error, Exception):
            return None
        raise
    return ExecutionResult(data=data, errors=None)


async def resolve_serially(state: Run, outcomes: dict[str, Any]) -> None:
    """A mutation's root fields, awaited one after the other (as graphql-core runs them)
    in this task, each outcome kept before it is completed; the first that raises stops
    the rest (never started: graphql-core's replay starts them)."""
    batch, state.pending = state.pending, []
    for index, (awaitable, container, key, complete, path) in enumerate(batch):
        try:
            value = await awaitable
        except Exception as error:
            outcomes[str(key)] = error
            await discard(batch[index + 1 :])
            raise Unplanned from error
        outcomes[str(key)] = value
        container[key] = complete(state, value, path)  # type: ignore[index]


def replay(outcomes: dict[str, Any]) -> Callable[..., Any]:
    """graphql-core middleware answering a mutation's root fields with the outcomes a
    planned run already had (raising the exception one raised), every other field as
    usual: the resolvers that changed something are never called twice."""

    def middleware(next_: Callable[..., Any], source: Any, info: Any, **arguments: Any) -> Any:
        if info.path.prev is None and info.path.key in outcomes:
            outcome = outcomes[info.path.key]
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        return next_(source, info, **arguments)

    return middleware


async def settle(state: Run) -> None:
    """Await each level's awaitables together (one DataLoader batch per level), then
    complete their values, which may leave the next level's."""
    while state.pending:
        batch, state.pending = state.pending, []
        if len(batch) == 1:  # the level's one awaitable (a list's resolver): no task
            values = [await _outcome(batch[0][0])]
        else:
            values = await gather(*(p[0] for p in batch), return_exceptions=True)
        for (_, container, key, complete, path), value in zip(batch, values, strict=True):
            if isinstance(value, BaseException):
                raise Unplanned from value
            container[key] = complete(state, value, path)  # type: ignore[index]


async def _outcome(awaitable: Any) -> Any:
    """What ``gather(..., return_exceptions=True)`` gives for one awaitable."""
    try:
        return await awaitable
    except Exception as error:
        return error


async def discard(pending: list[Pending]) -> None:
    """Throw away what a given-up run left: coroutines never started are closed, other
    awaitables (futures of a DataLoader batch under way) are let settle, quietly."""
    others = []
    for awaitable, *_ in pending:
        if iscoroutine(awaitable):
            awaitable.close()
        else:
            others.append(awaitable)
    pending.clear()
    if others:
        await gather(*others, return_exceptions=True)


# -- compiling --------------------------------------------------------------------------


def compile_tree(executor: Executor[Any], info_class: Any) -> Tree:
    compiler = _Compiler(executor, info_class)
    mutation = executor.operation.operation is OperationType.MUTATION
    root_type = executor.schema.mutation_type if mutation else executor.schema.query_type
    assert root_type is not None  # gql/plan.py checked
    collected = collect_fields(
        executor.schema,
        executor.fragments,
        executor.variable_values,
        root_type,
        executor.operation,
        executor.hide_suggestions,
    )
    if collected.new_defer_usages:
        raise Unplanned
    root = compiler.selection(root_type, collected.grouped_field_set)
    if mutation and not all(_runs_once(field) for field in root.fields):
        raise Unplanned
    return Tree(root, compiler.arguments, mutation)


def _runs_once(field: Field) -> bool:
    """Whether a mutation's root field is one the plan can run exactly once: a coroutine
    resolver (it starts when awaited, so nothing ran until ``resolve_serially`` awaits
    it), or ``__typename``."""
    if field.kind == "typename":
        return True
    definition = (field.definition.extensions or {}).get(STRAWBERRY_DEFINITION)
    return field.kind == "resolve" and bool(getattr(definition, "is_async", False))


class _Compiler:
    def __init__(self, executor: Executor[Any], info_class: Any) -> None:
        self.executor = executor
        self.info_class = info_class
        self.arguments: list[tuple[GraphQLField, FieldDetails]] = []

    def selection(
        self, parent_type: GraphQLObjectType, grouped: dict[str, list[FieldDetails]]
    ) -> Selection:
        fields = [self.field(parent_type, key, details) for key, details in grouped.items()]
        needs_path = any(f.needs_path for f in fields)
        return Selection(parent_type.name, fields, needs_path, generated.function(fields))

    def field(self, parent_type: GraphQLObjectType, key: str, details: list[FieldDetails]) -> Field:
        first = details[0]
        if first.fragment_variable_values is not None or any(d.defer_usage for d in details):
            raise Unplanned
        nodes = [d.node for d in details]
        name = first.node.name.value
        if name == "__typename":
            return Field(
                key, "typename", TypeNameMetaFieldDef, nodes, parent_type, None, "call", None,
                None, -1, None, False,
            )  # fmt: skip
        definition = parent_type.fields.get(name)
        if definition is None:
            raise Unplanned
        slot = -1
        if definition.args or first.node.arguments:
            slot = len(self.arguments)
            self.arguments.append((definition, first))
        attribute = basic_attribute(definition) if slot < 0 else None
        if attribute is not None and is_leaf_type(get_named_type(definition.type)):
            check, coerce = _leaf(definition.type)
            return Field(
                key, "leaf", definition, nodes, parent_type, attribute, check, coerce, None, -1,
                None, False,
            )  # fmt: skip
        complete, needs_path = self.completer(definition.type, details)
        if attribute is not None:
            return Field(
                key, "get", definition, nodes, parent_type, attribute, "call", None, None, -1,
                complete, needs_path,
            )  # fmt: skip
        resolve = direct_resolver(definition, self.info_class)
        if resolve is None:
            resolve = definition.resolve or self.executor.field_resolver
        # A value a list resolver loaded ahead is read like a plain field; the resolver
        # (which reads the same attribute first) runs only when it is not there.
        kind, attribute = "resolve", prefetched_attribute(definition) if slot < 0 else None
        if attribute is not None:
            kind = "prefetched"
        return Field(
            key, kind, definition, nodes, parent_type, attribute, "call", None, resolve, slot,
            complete, True,
        )  # fmt: skip

    def completer(
        self, type_: GraphQLOutputType, details: list[FieldDetails]
    ) -> tuple[Completer, bool]:
        if isinstance(type_, GraphQLNonNull):
            inner, needs_path = self.completer(type_.of_type, details)
            return _non_null(inner), needs_path
        if isinstance(type_, GraphQLList):
            inner, needs_path = self.completer(type_.of_type, details)
            return _list(inner, needs_path), needs_path
        if is_leaf_type(type_):
            coerce = _coercer(type_)
            return (lambda _, value, __: coerce(value)), False
        if isinstance(type_, GraphQLObjectType) and type_.is_type_of is None:
            executor = self.executor
            collected = collect_subfields(
                executor.schema,
                executor.fragments,
                executor.variable_values,
                executor.operation,
                type_,
                details,
                executor.hide_suggestions,
            )
            if collected.new_defer_usages:
                raise Unplanned
            selection = self.selection(type_, collected.grouped_field_set)
            return _object(selection.execute), selection.needs_path
        raise Unplanned  # interfaces and unions: gql/plan.py refuses them first


def _non_null(inner: Completer) -> Completer:
    def complete(state: Run, value: Any, path: Path | None) -> Any:
        completed = inner(state, value, path)
        if completed is None:
            raise Unplanned  # graphql-core's "Cannot return null for non-nullable field"
        return completed

    return complete


def _list(item: Completer, needs_path: bool) -> Completer:
    def complete(state: Run, value: Any, path: Path | None) -> Any:
        if value is None or value is Undefined:
            return None
        if type(value) is not list and type(value) is not tuple:
            raise Unplanned  # other iterables (and errors): graphql-core knows them
        out: list[Any] = []
        for index, entry in enumerate(value):
            entry_path = Path(path, index, None) if needs_path else None
            if is_awaitable(entry):
                out.append(None)
                state.pending.append((entry, out, index, item, entry_path))
            else:
                out.append(item(state, entry, entry_path))
        return out

    return complete


def _object(execute: Callable[[Run, Any, Path | None], dict[str, Any]]) -> Completer:
    def complete(state: Run, value: Any, path: Path | None) -> Any:
        if value is None or value is Undefined:
            return None
        if isinstance(value, Exception):
            raise Unplanned
        return execute(state, value, path)

    return complete


def _coercer(leaf: GraphQLLeafType) -> Reader:
    """A nullable leaf's response value: graphql-core's ``coerce_output_value``, with
    the answer of the common cases known ahead (a ``str`` for String and ID, a ``bool``,
    an ``int`` in range, an enum member already seen)."""
    coerce = leaf.coerce_output_value

    def slow(value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        if type(value) not in PLAIN and (isinstance(value, Exception) or is_awaitable(value)):
            raise Unplanned
        coerced = coerce(value)
        if coerced is None or coerced is Undefined:
            raise Unplanned
        return coerced

    exact = _EXACT.get(leaf.name) if leaf in _BUILT_IN else None
    if exact is not None:

        def plain(value: Any) -> Any:
            return value if type(value) is exact else slow(value)

        return plain
    if leaf is GraphQLInt:

        def integer(value: Any) -> Any:
            if type(value) is int and MIN_INT <= value <= MAX_INT:
                return value
            return slow(value)

        return integer
    if isinstance(leaf, GraphQLEnumType):
        return _enum(slow)
    if leaf.name == "DateTime" and repr(coerce) == _ISOFORMAT:

        def moment(value: Any) -> Any:
            if type(value) is datetime and value.tzinfo is UTC:
                return value  # json_bytes writes value.isoformat()
            return slow(value)

        return moment
    return slow


def _enum(slow: Reader) -> Reader:
    """An enum's name for a member, remembered per member once the type's own
    ``coerce_output_value`` named it (members are singletons; the name of one never
    changes). Keyed by the member's identity (an Enum's ``__hash__`` is Python code, too
    slow for every value of a list) and checked to be that very object, so an equal value
    of another type (an IntEnum's int) is still asked of the type."""
    names: dict[int, tuple[Any, str]] = {}

    def member(value: Any) -> Any:
        known = names.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        name = slow(value)
        if isinstance(value, Enum):
            names[id(value)] = (value, name)  # the member kept: its id is never reused
        return name

    return member


def _leaf(type_: GraphQLOutputType) -> tuple[str, Reader]:
    """A leaf field's check for values passed as they are, and its serializer for the
    others (None for null, or ``Unplanned`` where the field is non-null)."""
    leaf: Any = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    coerce = _coercer(leaf)
    check = "int" if leaf is GraphQLInt else _CHECKS.get(leaf.name, "call")
    if leaf not in _BUILT_IN and leaf is not GraphQLInt:
        check = "call"
    if not isinstance(type_, GraphQLNonNull):
        return check, coerce

    def required(value: Any) -> Any:
        coerced = coerce(value)
        if coerced is None:
            raise Unplanned
        return coerced

    return check, required
