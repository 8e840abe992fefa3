"""The schema, assembled once at import from the resolver modules, with its limits.

Extensions are passed as classes (a fresh instance per request: instances would be
shared by concurrent requests), and the validation rules they add are built once
here, so the validation cache keys stay stable and keep hitting.
"""

from __future__ import annotations

from collections.abc import Iterator

import strawberry
from graphql import ASTValidationRule
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.tools import merge_types

from gql.errors import MaskInternalErrors
from gql.settings import Settings
from resolvers import api_keys, bookings, clients, ledger, offers, purchases

_LIMITS = Settings.from_env()
CACHE_SIZE = 1024

Query = merge_types(
    "Query",
    (clients.Query, offers.Query, purchases.Query, bookings.Query, ledger.Query, api_keys.Query),
)
Mutation = merge_types(
    "Mutation",
    (clients.Mutation, offers.Mutation, purchases.Mutation, bookings.Mutation, api_keys.Mutation),
)

_RULES: list[type[ASTValidationRule]] = [
    *QueryDepthLimiter(max_depth=_LIMITS.max_query_depth).validation_rules,
    *MaxAliasesLimiter(max_alias_count=_LIMITS.max_aliases).validation_rules,
]


class Limits(AddValidationRules):
    def __init__(self) -> None:
        super().__init__(_RULES)


class MaxTokens(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        self.execution_context.parse_options["max_tokens"] = _LIMITS.max_tokens
        yield


def _parser_cache() -> ParserCache:
    return ParserCache(maxsize=CACHE_SIZE)


def _validation_cache() -> ValidationCache:
    return ValidationCache(maxsize=CACHE_SIZE)


schema = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    extensions=[MaxTokens, _parser_cache, Limits, _validation_cache, MaskInternalErrors],
)


def sdl() -> str:
    return schema.as_str() + "\n"
