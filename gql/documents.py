"""Operations sent over the WebSocket: parsed and validated once per text (the fast
path's cache, with the schema's limits), plus what the hub needs to group subscribers."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    VariableDefinitionNode,
    VariableNode,
    Visitor,
    get_operation_ast,
    visit,
)
from graphql.language.visitor import SKIP, VisitorAction

from gql.fastpath import DocumentCache

RESUME_ARGUMENTS = frozenset({"afterRevision", "after"})
CACHE_SIZE = 1024
_documents = DocumentCache(CACHE_SIZE)


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

    def group_variables(self, values: dict[str, Any] | None) -> str:
        """The variables that shape events, canonically: part of the group key."""
        values = values or {}
        shaping = {
            k: values.get(k) for k in self.variables if k != self.resume_variable and k in values
        }
        return json.dumps(shaping, sort_keys=True, separators=(",", ":"), default=str)


@lru_cache(maxsize=CACHE_SIZE)
def operation(text: str, name: str | None) -> Operation | list[GraphQLError]:
    """The operation ``name`` of ``text`` (cached), or the errors that refuse it."""
    prepared = _documents.get(text)
    node = prepared.document
    if node is None or prepared.errors:
        return prepared.errors
    definition = get_operation_ast(node, name)
    if definition is None:
        message = f"Unknown operation named '{name}'." if name else "Must provide an operation."
        if name is None and len(node.definitions) > 1:
            message = "Must provide operation name if query contains multiple operations."
        return [GraphQLError(message)]
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
    )
