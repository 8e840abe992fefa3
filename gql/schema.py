"""The schema, assembled once at import from the resolver modules, with its limits.

Extensions are passed as classes (a fresh instance per request: instances would be
shared by concurrent requests), and the validation rules they add are built once
here, so the validation cache keys stay stable and keep hitting.
"""

from __future__ import annotations

from collections.abc import Iterator

import strawberry
from graphql import ASTValidationRule, GraphQLError, specified_rules
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
from resolvers import api_keys, bookings, clients, ledger, offers, purchases, subscriptions

_LIMITS = Settings.from_env()
CACHE_SIZE = 1024
MAX_TOKENS = _LIMITS.max_tokens

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


# Every rule a document is validated with (the fast path in gql/fastpath.py uses these too).
VALIDATION_RULES: tuple[type[ASTValidationRule], ...] = (*specified_rules, *_RULES)


class Limits(AddValidationRules):
    def __init__(self) -> None:
        super().__init__(_RULES)


class MaxTokens(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        self.execution_context.parse_options["max_tokens"] = MAX_TOKENS
        yield


def _parser_cache() -> ParserCache:
    return ParserCache(maxsize=CACHE_SIZE)


def _validation_cache() -> ValidationCache:
    return ValidationCache(maxsize=CACHE_SIZE)


class PunchcardSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: object = None) -> None:
        """Refusals (domain errors) are answers, not faults: nothing to log here.
        Unexpected errors are logged once, where they are masked (gql/errors.py)."""


schema = PunchcardSchema(
    query=Query,
    mutation=Mutation,
    subscription=subscriptions.Subscription,
    extensions=[MaxTokens, _parser_cache, Limits, _validation_cache, MaskInternalErrors],
)


def sdl() -> str:
    return schema.as_str() + "\n"
