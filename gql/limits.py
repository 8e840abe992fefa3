"""Depth, alias and cost limits, checked in time linear in the document's size.

The cost is the number of nodes an answer may hold at most: every field counts 1, and a
list multiplies what it selects by its size (``first``, or the estimate ``ListSizes``
gives), so ``bookings -> client -> purchases -> ledger(first: 500)`` is refused before it
runs (``QUERY_TOO_COMPLEX``) instead of returning 750,000 nodes.

strawberry's ``QueryDepthLimiter`` and ``MaxAliasesLimiter`` walk every path through the
fragment spreads: fragments that each spread the next one twice make them exponential
(a 900-byte document froze the server for seconds). These rules answer the same
questions with the same messages, but compute each fragment's depth and alias count once
(memoised, without recursion) and add them up.

Depth is strawberry's: a field with a selection set counts 1 plus its deepest child, a
leaf or an introspection field (``__typename``, ``__schema``) counts 0, fragments count
what they select. Aliases are counted as the document expands: a fragment spread twice
counts its aliases twice. A fragment that spreads itself (already refused by graphql's
own rules) counts nothing on the way round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    get_named_type,
    get_nullable_type,
    is_list_type,
)


@dataclass(frozen=True, slots=True)
class Measure:
    """A selection set's depth, how many aliases it holds once expanded, and the number of
    nodes its answer may hold at most (its cost)."""

    depth: int
    aliases: int
    cost: int


ZERO = Measure(0, 0, 0)
DEFAULT_LIST = 10  # rows assumed for a list nobody gave an estimate for


@dataclass(frozen=True, slots=True, eq=False)  # compared (and hashed) by identity
class ListSizes:
    """How many items a list field may return: ``pages`` for fields with a ``first``
    argument (its largest accepted value, assumed when ``first`` is a variable),
    ``lists`` for plain lists (``"Type.field"`` -> rows). A connection's ``nodes`` count
    once: its ``first`` already did."""

    pages: Mapping[str, int] = field(default_factory=dict)
    lists: Mapping[str, int] = field(default_factory=dict)

    def multiplier(self, parent: str, definition: GraphQLField, node: FieldNode) -> int:
        coordinate = f"{parent}.{node.name.value}"
        if "first" in definition.args:
            given = next((a.value for a in node.arguments or () if a.name.value == "first"), None)
            if isinstance(given, IntValueNode):
                return max(int(given.value), 0)
            default = definition.args["first"].default_value
            if given is None and isinstance(default, int):
                return default
            return self.pages.get(coordinate, DEFAULT_LIST)
        if is_list_type(get_nullable_type(definition.type)):
            if parent.endswith("Connection") and node.name.value == "nodes":
                return 1
            return self.lists.get(coordinate, DEFAULT_LIST)
        return 1


Frame = tuple[SelectionSetNode, str | None, GraphQLNamedType | None, bool]


class _Measurer:
    """Measures selection sets, each fragment once (an explicit stack: no recursion)."""

    def __init__(self, document: DocumentNode, schema: GraphQLSchema, sizes: ListSizes) -> None:
        self.schema = schema
        self.sizes = sizes
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.done: dict[str, Measure] = {}

    def measure(self, root: SelectionSetNode, root_type: GraphQLNamedType | None) -> Measure:
        results: dict[int, Measure] = {}  # id(selection set) -> its measure
        on_path: set[str] = set()  # fragments being measured (a spread of one is a cycle)
        # Frames: (selection set, the fragment it defines or None, its type, children pushed?)
        stack: list[Frame] = [(root, None, root_type, False)]
        while stack:
            node, fragment, parent, expanded = stack.pop()
            if not expanded:
                if fragment is not None:
                    if fragment in self.done or fragment in on_path:
                        continue
                    on_path.add(fragment)
                stack.append((node, fragment, parent, True))
                stack.extend(
                    (child, name, kind, False) for child, name, kind in self._children(node, parent)
                )
                continue
            measure = self._combine(node, parent, results)
            results[id(node)] = measure
            if fragment is not None:
                self.done[fragment] = measure
                on_path.discard(fragment)
        return results[id(root)]

    def _field(self, parent: GraphQLNamedType | None, node: FieldNode) -> GraphQLField | None:
        if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            found: GraphQLField | None = parent.fields.get(node.name.value)
            return found
        return None

    def _type(self, name: str) -> GraphQLNamedType | None:
        return self.schema.get_type(name)

    def _children(
        self, node: SelectionSetNode, parent: GraphQLNamedType | None
    ) -> Iterable[tuple[SelectionSetNode, str | None, GraphQLNamedType | None]]:
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                if selection.selection_set is not None:
                    definition = self._field(parent, selection)
                    kind = get_named_type(definition.type) if definition is not None else None
                    yield selection.selection_set, None, kind
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                kind = self._type(condition.name.value) if condition is not None else parent
                yield selection.selection_set, None, kind
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is not None and name not in self.done:
                    on = self._type(fragment.type_condition.name.value)
                    yield fragment.selection_set, name, on

    def _combine(
        self, node: SelectionSetNode, parent: GraphQLNamedType | None, results: dict[int, Measure]
    ) -> Measure:
        depth = aliases = cost = 0
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                if selection.alias is not None:
                    aliases += 1
                cost += 1
                if selection.selection_set is None:
                    continue
                inner = results.get(id(selection.selection_set), ZERO)
                aliases += inner.aliases
                definition = self._field(parent, selection)
                if definition is not None and parent is not None:
                    cost += self.sizes.multiplier(parent.name, definition, selection) * inner.cost
                if not _introspection(selection):
                    depth = max(depth, 1 + inner.depth)
            else:
                if isinstance(selection, InlineFragmentNode):
                    inner = results.get(id(selection.selection_set), ZERO)
                elif isinstance(selection, FragmentSpreadNode):
                    # Unknown fragments are graphql's own error; a cycle counts nothing here.
                    inner = self.done.get(selection.name.value, ZERO)
                else:
                    continue
                depth, aliases = max(depth, inner.depth), aliases + inner.aliases
                cost += inner.cost
        return Measure(depth, aliases, cost)


def _introspection(field: FieldNode) -> bool:
    return field.name.value.startswith("__")


def _operations(document: DocumentNode) -> list[OperationDefinitionNode]:
    return [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]


def limit_rule(
    max_depth: int, max_aliases: int, max_cost: int, sizes: ListSizes
) -> type[ValidationRule]:
    """One rule for every limit (one pass over the document), built once per schema."""

    class DocumentLimits(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            schema = context.schema
            measurer = _Measurer(context.document, schema, sizes)
            aliases = cost = 0
            for operation in _operations(context.document):
                root = schema.get_root_type(operation.operation)
                measure = measurer.measure(operation.selection_set, root)
                aliases += measure.aliases
                cost += measure.cost
                # strawberry's limiter reports a chain of more than ``max_depth`` fields.
                if measure.depth > max_depth:
                    name = operation.name.value if operation.name else "anonymous"
                    context.report_error(
                        GraphQLError(
                            f"'{name}' exceeds maximum operation depth of {max_depth}", operation
                        )
                    )
            if aliases > max_aliases:
                context.report_error(
                    GraphQLError(f"{aliases} aliases found. Allowed: {max_aliases}")
                )
            if cost > max_cost:
                context.report_error(
                    GraphQLError(
                        f"the query may return {cost} nodes; at most {max_cost} are allowed "
                        "(ask for smaller pages, fewer nested lists or fewer aliases)",
                        extensions={"code": "QUERY_TOO_COMPLEX", "cost": cost, "maxCost": max_cost},
                    )
                )

    return DocumentLimits
