"""Plans: which documents the planner (``gql/planned.py``) runs, decided once per operation.

A query is planned when everything in its document is something the planner knows how
to run exactly as graphql-core would: object types, lists, non-nulls, scalars and enums,
``__typename``, fragments (named and inline, on object types), ``@skip``/``@include``.
So is a mutation of one root field answered from its own row (``Operation.atomic`` is
false: ``useSession { sessionsUsed revision }``), whose coroutine resolver the plan runs
exactly once (``gql/planned.py``). Anything else (mutations that commit whole,
subscriptions, introspection, interfaces or unions, any other directive, object types
that check their values with ``is_type_of``) is not planned, and graphql-core runs it,
as it runs every request the planner meets something unexpected in.

The compiled tree's parts are defined here (``gql/planned.py`` compiles and runs them,
``gql/generated.py`` writes each selection's code). The tree is cached on the plan when
no ``@skip``/``@include`` can change it (``static``); otherwise it is compiled per request
(cheap: its size is the document's, never the data's)."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DirectiveNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLField,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    get_named_type,
    get_operation_ast,
    is_abstract_type,
    visit,
)
from graphql.execution import Executor
from graphql.execution.collect_fields import FieldDetails
from graphql.language.visitor import BREAK, VisitorAction
from graphql.pyutils import Path

from punchcard import metrics
from punchcard.gql.documents import CACHE_SIZE, Operation

CONDITIONS = frozenset({"skip", "include"})


Completer = Callable[["Run", Any, Path | None], Any]
Reader = Callable[[Any], Any]
# An awaitable met on the way, and where its completed value goes once it settles.
Pending = tuple[Any, dict[str, Any] | list[Any], str | int, Completer, Path | None]


class Run:
    """One request's execution of a tree."""

    __slots__ = ("arguments", "executor", "pending")

    def __init__(self, executor: Executor[Any]) -> None:
        self.executor = executor
        self.arguments: list[dict[str, Any]] = []
        self.pending: list[Pending] = []


@dataclass(slots=True)
class Field:
    """One response key of a selection, compiled (``gql/generated.py`` writes the code)."""

    key: str
    # "typename", "leaf" (read and serialized), "get" (read), "resolve", "prefetched"
    # (read; resolved when the attribute holds None)
    kind: str
    definition: GraphQLField
    nodes: list[FieldNode]
    parent_type: GraphQLObjectType
    attribute: str | None  # what a plain or prefetched field reads from its object
    check: str  # a leaf's value passed as is when: "str", "bool", "int" (in range); "call"
    coerce: Reader | None  # a leaf's serializer (and null check), for other values
    # A resolver of its own, called with its info (and arguments): strawberry's wrapper,
    # or what it does, when internals.direct_resolver knows it.
    resolve: Callable[..., Any] | None
    slot: int  # its arguments in ``Run.arguments``; -1: none
    complete: Completer | None  # an object or list value's completion
    needs_path: bool  # it, or a field under it, has a resolver (which gets info.path)


@dataclass(slots=True)
class Selection:
    typename: str
    fields: list[Field]
    needs_path: bool
    execute: Callable[[Run, Any, Path | None], dict[str, Any]]


@dataclass(slots=True)
class Tree:
    """A compiled operation: the root selection and the fields that take arguments."""

    root: Selection
    arguments: list[tuple[GraphQLField, FieldDetails]]
    mutation: bool = False  # its root fields run once, in order (planned.resolve_serially)


@dataclass(slots=True)
class Plan:
    """What the planner runs for one operation of a document."""

    operation: Operation
    definition: OperationDefinitionNode
    static: bool  # no @skip/@include: the compiled tree is the same for every request
    info_class: Any  # strawberry's Info class, for resolvers called directly
    tree: Tree | None = field(default=None)  # compiled once, when static (gql/planned.py)


class _Check(Visitor):
    """Walks a document with its types and stops at the first thing not planned for."""

    def __init__(self, type_info: TypeInfo) -> None:
        super().__init__()
        self.type_info = type_info
        self.refused: str | None = None
        self.conditional = False

    def _refuse(self, why: str) -> VisitorAction:
        self.refused = why
        return BREAK

    def enter_directive(self, node: DirectiveNode, *_: object) -> VisitorAction:
        if node.name.value not in CONDITIONS:
            return self._refuse(f"directive @{node.name.value}")
        self.conditional = True
        return None

    def enter_field(self, node: FieldNode, *_: object) -> VisitorAction:
        name = node.name.value
        if name.startswith("__") and name != "__typename":
            return self._refuse(f"introspection field {name}")
        definition = self.type_info.get_field_def()
        if definition is None:
            return self._refuse(f"unknown field {name}")
        named = get_named_type(definition.type)
        if is_abstract_type(named):
            return self._refuse(f"abstract type {named.name}")
        if isinstance(named, GraphQLObjectType) and named.is_type_of is not None:
            return self._refuse(f"{named.name} checks its values (is_type_of)")
        return None

    def _on_object(self, kind: str) -> VisitorAction:
        if not isinstance(self.type_info.get_type(), GraphQLObjectType):
            return self._refuse(f"{kind} on a type that is not an object type")
        return None

    def enter_inline_fragment(self, node: InlineFragmentNode, *_: object) -> VisitorAction:
        return self._on_object("inline fragment")

    def enter_fragment_definition(self, node: FragmentDefinitionNode, *_: object) -> VisitorAction:
        if node.variable_definitions:
            return self._refuse("fragment variables")
        return self._on_object("fragment")


def refusal(schema: GraphQLSchema, operation: Operation) -> tuple[str | None, bool]:
    """Why ``operation`` is not planned (None: it is), and whether it has conditions."""
    if operation.type is OperationType.SUBSCRIPTION:
        return "subscriptions are not planned", False
    if operation.atomic:
        return "mutations that commit whole (several fields, nested answers)", False
    query = operation.type is OperationType.QUERY
    root = schema.query_type if query else schema.mutation_type
    if root is None or root.is_type_of is not None:
        return f"no plannable {operation.type.value} type", False
    type_info = TypeInfo(schema)
    check = _Check(type_info)
    visit(operation.node, TypeInfoVisitor(type_info, check))
    return check.refused, check.conditional


class Planner:
    """The process's plans (a bounded LRU beside the document cache) and what they did."""

    def __init__(self, schema: GraphQLSchema, info_class: Any, size: int = CACHE_SIZE) -> None:
        self.schema = schema
        self.info_class = info_class
        self._size = size
        self._plans: OrderedDict[tuple[str, str | None], Plan | None] = OrderedDict()
        # What happened to requests: "planned", "fallback" (met something unexpected, ran
        # on graphql-core), "unplanned" (graphql-core from the start); tests read them.
        self.counts: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()

    def count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        metrics.planner_queries.labels(outcome).inc()

    def plan(self, operation: Operation) -> Plan | None:
        key = (operation.text, operation.name)
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        found = self._make(operation)
        self._plans[key] = found
        if len(self._plans) > self._size:
            self._plans.popitem(last=False)
        return found

    def _make(self, operation: Operation) -> Plan | None:
        why, conditional = refusal(self.schema, operation)
        if why is not None:
            self.refusals[why] += 1
            return None
        definition = get_operation_ast(operation.node, operation.name)
        assert definition is not None  # documents.operation found it
        return Plan(operation, definition, not conditional, self.info_class)
