"""Depth and alias limits, checked in time linear in the document's size.

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

from collections.abc import Iterable
from dataclasses import dataclass

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)


@dataclass(frozen=True, slots=True)
class Measure:
    """A selection set's depth and how many aliases it holds once expanded."""

    depth: int
    aliases: int


ZERO = Measure(0, 0)


class _Measurer:
    """Measures selection sets, each fragment once (an explicit stack: no recursion)."""

    def __init__(self, document: DocumentNode) -> None:
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.done: dict[str, Measure] = {}

    def measure(self, root: SelectionSetNode) -> Measure:
        results: dict[int, Measure] = {}  # id(selection set) -> its measure
        on_path: set[str] = set()  # fragments being measured (a spread of one is a cycle)
        # Frames: (selection set, the fragment it defines or None, children pushed?)
        stack: list[tuple[SelectionSetNode, str | None, bool]] = [(root, None, False)]
        while stack:
            node, fragment, expanded = stack.pop()
            if not expanded:
                if fragment is not None:
                    if fragment in self.done or fragment in on_path:
                        continue
                    on_path.add(fragment)
                stack.append((node, fragment, True))
                stack.extend((child, name, False) for child, name in self._children(node))
                continue
            measure = self._combine(node, results)
            results[id(node)] = measure
            if fragment is not None:
                self.done[fragment] = measure
                on_path.discard(fragment)
        return results[id(root)]

    def _children(self, node: SelectionSetNode) -> Iterable[tuple[SelectionSetNode, str | None]]:
        for selection in node.selections:
            if isinstance(selection, FieldNode | InlineFragmentNode):
                if selection.selection_set is not None:
                    yield selection.selection_set, None
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                definition = self.fragments.get(name)
                if definition is not None and name not in self.done:
                    yield definition.selection_set, name

    def _combine(self, node: SelectionSetNode, results: dict[int, Measure]) -> Measure:
        depth = 0
        aliases = 0
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                if selection.alias is not None:
                    aliases += 1
                if selection.selection_set is None:
                    continue
                inner = results.get(id(selection.selection_set), ZERO)
                aliases += inner.aliases
                if not _introspection(selection):
                    depth = max(depth, 1 + inner.depth)
            elif isinstance(selection, InlineFragmentNode):
                inner = results.get(id(selection.selection_set), ZERO)
                depth, aliases = max(depth, inner.depth), aliases + inner.aliases
            elif isinstance(selection, FragmentSpreadNode):
                # Unknown fragments are graphql's own error; a cycle counts nothing here.
                inner = self.done.get(selection.name.value, ZERO)
                depth, aliases = max(depth, inner.depth), aliases + inner.aliases
        return Measure(depth, aliases)


def _introspection(field: FieldNode) -> bool:
    return field.name.value.startswith("__")


def _operations(document: DocumentNode) -> list[OperationDefinitionNode]:
    return [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]


def limit_rule(max_depth: int, max_aliases: int) -> type[ValidationRule]:
    """One rule for both limits (one pass over the document), built once per schema."""

    class DocumentLimits(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            measurer = _Measurer(context.document)
            aliases = 0
            for operation in _operations(context.document):
                measure = measurer.measure(operation.selection_set)
                aliases += measure.aliases
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

    return DocumentLimits
