"""Error masking and codes: domain errors keep their message and code; anything unexpected
is logged and answered with a generic message, so internals never leak; every error a
client sees has an ``extensions.code``.

Codes of errors no resolver raised (Apollo's names, so clients can branch on them):
``GRAPHQL_PARSE_FAILED`` (syntax, too many tokens), ``GRAPHQL_VALIDATION_FAILED`` (the
schema's rules and limits), ``OPERATION_RESOLUTION_FAILURE`` (no such operation, or
several and no ``operationName``), ``BAD_USER_INPUT`` (variables that do not coerce),
``BAD_REQUEST`` (not a GraphQL request at all: see ``gql/http.py``, which also answers
``METHOD_NOT_ALLOWED`` and ``NOT_ACCEPTABLE``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import MaskErrors

from punchcard.db.errors import DomainError, unavailable
from punchcard.db.pool import UNAVAILABLE

log = logging.getLogger("punchcard.errors")

INTERNAL = "INTERNAL_SERVER_ERROR"
PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
OPERATION_RESOLUTION_FAILURE = "OPERATION_RESOLUTION_FAILURE"
BAD_USER_INPUT = "BAD_USER_INPUT"
BAD_REQUEST = "BAD_REQUEST"


def refusal_body(message: str, code: str, **extensions: object) -> dict[str, object]:
    """The JSON body of a refusal outside GraphQL execution (an HTTP error, an overloaded
    server, the Stripe webhook): one error with its code, shaped like the endpoint's."""
    return {"errors": [{"message": message, "extensions": {"code": code, **extensions}}]}


def with_extensions(error: GraphQLError, **extensions: object) -> GraphQLError:
    """``error`` with more ``extensions`` (the same message, place and cause)."""
    return GraphQLError(
        error.message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error,
        extensions={**(error.extensions or {}), **extensions},
    )


def with_code(error: GraphQLError, code: str) -> GraphQLError:
    """``error`` with ``extensions.code`` (kept if it has one)."""
    if error.extensions and "code" in error.extensions:
        return error
    return with_extensions(error, code=code)


def request_errors(data: object, errors: list[GraphQLError]) -> list[GraphQLError]:
    """Errors of an execution that never started (the document was valid, so its
    variables did not coerce) get BAD_USER_INPUT; field errors keep theirs."""
    if data is None and all(e.path is None and not _is_unexpected(e) for e in errors):
        return [with_code(e, BAD_USER_INPUT) for e in errors]
    return errors


def _is_unexpected(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, DomainError | GraphQLError)


def code_of(error: GraphQLError) -> str | None:
    """The ``extensions.code`` a client will see for ``error`` (as ``masked`` answers it)."""
    if _is_unexpected(error):
        if isinstance(error.original_error, UNAVAILABLE):
            busy = unavailable(error.original_error).extensions.get("code")
            return busy if isinstance(busy, str) else None
        return INTERNAL
    code = (error.extensions or {}).get("code")
    return code if isinstance(code, str) else None


def masked(error: GraphQLError) -> GraphQLError:
    """The error a client sees: unexpected ones are logged and replaced; a database that
    did not answer in time is a retryable SERVICE_UNAVAILABLE."""
    if not _is_unexpected(error):
        return error
    if isinstance(error.original_error, UNAVAILABLE):
        log.warning("database unavailable at %s: %r", error.path, error.original_error)
        busy = unavailable(error.original_error)
        return GraphQLError(
            busy.message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions=busy.extensions,
        )
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
    """strawberry's view: masks like ``masked`` and codes like the engine's path."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=_is_unexpected, error_message="Unexpected error.")
        self._invalid: list[GraphQLError] = []

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        return masked(error)

    def on_validate(self) -> Iterator[None]:
        yield
        self._invalid = list(self.execution_context.pre_execution_errors or ())

    def on_operation(self) -> Iterator[None]:
        yield from super().on_operation()
        context = self.execution_context
        result = context.result
        errors = getattr(result, "errors", None)
        if not errors:
            return
        if context.graphql_document is None:
            coded = [with_code(e, PARSE_FAILED) for e in errors]
        elif self._invalid:
            coded = [with_code(e, VALIDATION_FAILED) for e in errors]
        else:
            coded = request_errors(getattr(result, "data", None), errors)
        result.errors = coded  # type: ignore[union-attr]
