"""Schema assembly: the root types the resolvers define, with the limits of the settings.

``build_schema`` is called by the composition root (``server/app.py``, ``punchcard
schema``) with ``resolvers.ROOTS``; it never imports the resolvers itself, so ``gql`` stays
below them. A schema is built once per distinct set of limits and shared.

Extensions are passed as classes (a fresh instance per request: instances would be
shared by concurrent requests), and the validation rules they add are built once per
schema, so the validation cache keys stay stable and keep hitting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

import strawberry
from graphql import (
    ASTValidationRule,
    GraphQLError,
    NoSchemaIntrospectionCustomRule,
    specified_rules,
)
from strawberry.extensions import (
    AddValidationRules,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)

from punchcard.gql.errors import MaskInternalErrors
from punchcard.gql.limits import ListSizes, limit_rule
from punchcard.settings import Settings

CACHE_SIZE = 1024
NO_SIZES = ListSizes()


@dataclass(frozen=True, slots=True)
class Roots:
    """The schema's root types (``resolvers.ROOTS``)."""

    query: type
    mutation: type
    subscription: type
    list_sizes: ListSizes = NO_SIZES  # how long each list may be (the query cost)


@dataclass(frozen=True, slots=True)
class Limits:
    """What a document may ask for; from the settings."""

    max_depth: int
    max_aliases: int
    max_tokens: int
    max_cost: int = 100_000
    introspection: bool = True

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            settings.max_query_depth,
            settings.max_aliases,
            settings.max_tokens,
            settings.max_query_cost,
            settings.introspection_on,
        )

    def rules(self, sizes: ListSizes) -> tuple[type[ASTValidationRule], ...]:
        """Every rule a document is validated with (the same for every path)."""
        return (
            *specified_rules,
            limit_rule(self.max_depth, self.max_aliases, self.max_cost, sizes),  # linear
            *(() if self.introspection else (NoSchemaIntrospectionCustomRule,)),
        )


class PunchcardSchema(strawberry.Schema):
    """strawberry's schema over ``roots``, with the limits it enforces on every path."""

    def __init__(self, roots: Roots, limits: Limits) -> None:
        self.limits = limits
        self.validation_rules = limits.rules(roots.list_sizes)
        super().__init__(
            query=roots.query,
            mutation=roots.mutation,
            subscription=roots.subscription,
            extensions=_extensions(limits, self.validation_rules[len(specified_rules) :]),
        )

    def process_errors(self, errors: list[GraphQLError], execution_context: object = None) -> None:
        """Refusals (domain errors) are answers, not faults: nothing to log here.
        Unexpected errors are logged once, where they are masked (gql/errors.py)."""


def _extensions(
    limits: Limits, rules: tuple[type[ASTValidationRule], ...]
) -> list[type[SchemaExtension] | Callable[[], SchemaExtension]]:
    """strawberry's view runs these per request; the rules are the ones built once above."""

    class Limited(AddValidationRules):
        def __init__(self) -> None:
            super().__init__(list(rules))

    class MaxTokens(SchemaExtension):
        def on_operation(self) -> Iterator[None]:
            self.execution_context.parse_options["max_tokens"] = limits.max_tokens
            yield

    def parser_cache() -> ParserCache:
        return ParserCache(maxsize=CACHE_SIZE)

    def validation_cache() -> ValidationCache:
        return ValidationCache(maxsize=CACHE_SIZE)

    return [MaxTokens, parser_cache, Limited, validation_cache, MaskInternalErrors]


@cache
def build_schema(roots: Roots, limits: Limits) -> PunchcardSchema:
    """The schema for ``limits`` (one per distinct limits: building one takes a while)."""
    return PunchcardSchema(roots, limits)


def sdl(schema: strawberry.Schema) -> str:
    """The SDL as checked in (``schema.graphql``)."""
    return schema.as_str() + "\n"
