"""Documents, parsed and validated once per text (a bounded LRU, with the schema's limits
and rules), and the operations in them, with what the hub needs to group subscribers.

Every path that runs a document (HTTP, queries and mutations over the WebSocket,
subscriptions) takes it from here, so each text is parsed and validated once per process."""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    VariableDefinitionNode,
    VariableNode,
    Visitor,
    get_operation_ast,
    parse,
    visit,
)
from graphql.language.visitor import SKIP, VisitorAction

from punchcard import metrics
from punchcard.gql.errors import (
    OPERATION_RESOLUTION_FAILURE,
    PARSE_FAILED,
    VALIDATION_FAILED,
    with_code,
)

RESUME_ARGUMENTS = frozenset({"afterRevision", "after"})
CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Prepared:
    """A parsed and validated document, or the errors that stop it."""

    document: DocumentNode | None
    errors: list[GraphQLError]


class _VariableUses(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.uses: Counter[str] = Counter()

    def enter_variable_definition(self, *_: object) -> VisitorAction:
        return SKIP

    def enter_variable(self, node: VariableNode, *_: object) -> None:
        self.uses[node.name.value] += 1


def _resume_variable(node: DocumentNode, operation: OperationDefinitionNode) -> str | None:
    """The variable passed as the root field's resume argument, if used nowhere else.

    Subscribers that differ only in it share a group: it only decides where each of
    them starts, never what an event looks like."""
    uses = _VariableUses()
    visit(node, uses)
    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode):
            continue
        for argument in selection.arguments or ():
            value = argument.value
            if (
                argument.name.value in RESUME_ARGUMENTS
                and isinstance(value, VariableNode)
                and uses.uses[value.name.value] == 1
            ):
                return value.name.value
    return None


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of a valid document."""

    text: str
    name: str | None
    node: DocumentNode
    type: OperationType
    variables: tuple[str, ...]  # declared, in order
    resume_variable: str | None
    # A mutation of more than one root field, or of one whose answer reaches past its own
    # row (``_atomic``): it commits whole, answer included, or not at all (``Engine.execute``).
    atomic: bool = False
    # More than one root field (or fragments): errors say ``rolledBack`` (the fields before
    # the one that failed were undone). One field's error already means nothing changed.
    several_fields: bool = False
    # The name the document gives the operation (``mutation Use ...``), which a request's
    # ``operationName`` may leave out: what metrics count it under.
    defined_name: str | None = None

    def group_variables(self, values: dict[str, Any] | None) -> str:
        """The variables that shape events, canonically: part of the group key."""
        values = values or {}
        shaping = {
            k: values.get(k) for k in self.variables if k != self.resume_variable and k in values
        }
        return json.dumps(shaping, sort_keys=True, separators=(",", ":"), default=str)


class Documents:
    """The process's documents for one schema: ``prepare`` parses and validates a text once,
    ``operation`` picks the operation a request names (both cached)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        *,
        validate: Callable[[GraphQLSchema, DocumentNode], list[GraphQLError]],
        max_tokens: int,
        size: int = CACHE_SIZE,
    ) -> None:
        """``validate`` runs every rule of the schema (strawberry's own included)."""
        self._schema = schema
        self._validate = validate
        self._max_tokens = max_tokens
        self._size = size
        self._prepared: OrderedDict[str, Prepared] = OrderedDict()
        self._operations: OrderedDict[tuple[str, str | None], Operation | list[GraphQLError]] = (
            OrderedDict()
        )

    def prepare(self, text: str) -> Prepared:
        entry = self._prepared.get(text)
        if entry is not None:
            self._prepared.move_to_end(text)
            return entry
        try:
            document = parse(text, max_tokens=self._max_tokens)
        except GraphQLError as error:
            entry = Prepared(None, [with_code(error, PARSE_FAILED)])
        else:
            errors = self._validate(self._schema, document)
            entry = Prepared(document, [with_code(e, VALIDATION_FAILED) for e in errors])
        _remember(self._prepared, text, entry, self._size)
        return entry

    def operation(self, text: str, name: str | None) -> Operation | list[GraphQLError]:
        """The operation ``name`` of ``text``, or the errors that refuse it."""
        key = (text, name)
        entry = self._operations.get(key)
        if entry is not None:
            self._operations.move_to_end(key)
        else:
            entry = _operation(self.prepare(text), text, name)
            _remember(self._operations, key, entry, self._size)
        if isinstance(entry, list):  # refused before it ran: counted here, as "invalid"
            metrics.graphql_requests.labels(metrics.INVALID, "unknown").inc()
            for error in entry:
                code = (error.extensions or {}).get("code")
                metrics.graphql_errors.labels(metrics.INVALID, metrics.code_label(code)).inc()
        return entry


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any, size: int) -> None:
    cache[key] = value
    if len(cache) > size:
        cache.popitem(last=False)


def _operation(prepared: Prepared, text: str, name: str | None) -> Operation | list[GraphQLError]:
    node = prepared.document
    if node is None or prepared.errors:
        return prepared.errors
    definition = get_operation_ast(node, name)
    if definition is None:
        message = f"Unknown operation named '{name}'." if name else "Must provide an operation."
        if name is None and len(node.definitions) > 1:
            message = "Must provide operation name if query contains multiple operations."
        return [GraphQLError(message, extensions={"code": OPERATION_RESOLUTION_FAILURE})]
    is_subscription = definition.operation is OperationType.SUBSCRIPTION
    return Operation(
        text=text,
        name=name,
        node=node,
        type=definition.operation,
        variables=tuple(
            d.variable.name.value
            for d in definition.variable_definitions or ()
            if isinstance(d, VariableDefinitionNode)
        ),
        resume_variable=_resume_variable(node, definition) if is_subscription else None,
        atomic=_atomic(definition),
        several_fields=definition.operation is OperationType.MUTATION
        and not _one_field(definition),
        defined_name=definition.name.value if definition.name else None,
    )


def _one_field(definition: OperationDefinitionNode) -> bool:
    selections = definition.selection_set.selections
    return len(selections) == 1 and isinstance(selections[0], FieldNode)


def _atomic(definition: OperationDefinitionNode) -> bool:
    """Whether a mutation must run in one transaction (``Engine.execute``): its answer can
    fail after a change committed. That is a document of several fields, or of one whose
    answer selects more than the returned row's own fields (nested objects, fields with
    arguments, fragments): a nested ``ledger(after: "bad")`` would otherwise answer
    ``data: null`` with an error after the session was used. One field answered from its
    own row (``useSession { sessionsUsed revision }``) stays one statement."""
    if definition.operation is not OperationType.MUTATION:
        return False
    if not _one_field(definition):
        return True
    [field] = definition.selection_set.selections
    assert isinstance(field, FieldNode)
    answer = field.selection_set
    return answer is not None and any(
        not isinstance(s, FieldNode) or s.selection_set is not None or s.arguments
        for s in answer.selections
    )
