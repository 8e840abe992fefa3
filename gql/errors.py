"""Error masking: domain errors keep their message and code; anything unexpected is
logged and answered with a generic message, so internals never leak."""

from __future__ import annotations

import logging

from graphql import GraphQLError
from strawberry.extensions import MaskErrors

from punchcard.db.errors import DomainError

log = logging.getLogger("punchcard.errors")

INTERNAL = "INTERNAL_SERVER_ERROR"


def _is_unexpected(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, DomainError | GraphQLError)


def masked(error: GraphQLError) -> GraphQLError:
    """The error a client sees: unexpected ones are logged and replaced."""
    if not _is_unexpected(error):
        return error
    log.error("unexpected error at %s", error.path, exc_info=error.original_error)
    return GraphQLError(
        "Unexpected error.",
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={"code": INTERNAL},
    )


class MaskInternalErrors(MaskErrors):
    def __init__(self) -> None:
        super().__init__(should_mask_error=_is_unexpected, error_message="Unexpected error.")

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        return masked(error)
