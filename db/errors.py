"""Domain errors: a refused change, with the code clients branch on (``extensions.code``)."""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    NOT_FOUND = "NOT_FOUND"
    NO_SESSIONS_REMAINING = "NO_SESSIONS_REMAINING"
    NOTHING_TO_RELEASE = "NOTHING_TO_RELEASE"
    PURCHASE_EXPIRED = "PURCHASE_EXPIRED"
    PURCHASE_CANCELLED = "PURCHASE_CANCELLED"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    INVALID_TRANSITION = "INVALID_TRANSITION"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    STRIPE_ACCOUNT_TAKEN = "STRIPE_ACCOUNT_TAKEN"
    NO_SESSIONS_AVAILABLE = "NO_SESSIONS_AVAILABLE"
    BOOKING_NOT_STARTED = "BOOKING_NOT_STARTED"
    PURCHASE_FROZEN = "PURCHASE_FROZEN"


class DomainError(Exception):
    """A request punchcard refuses; nothing was changed."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # graphql-core copies an original error's ``extensions`` onto the GraphQL error.
        self.extensions: dict[str, object] = {"code": code.value}
        if code is Code.SERVICE_UNAVAILABLE:
            self.extensions["retryable"] = True


def unavailable(error: BaseException) -> DomainError:
    """The database did not answer in time (``db.pool.UNAVAILABLE``): retry later; with an
    ``idempotencyKey`` a retry is safe even if the change did commit."""
    return DomainError(
        Code.SERVICE_UNAVAILABLE,
        f"the database is not answering ({type(error).__name__}); retry shortly",
    )


def not_found(kind: str) -> DomainError:
    return DomainError(Code.NOT_FOUND, f"{kind} not found")


def bad_input(message: str) -> DomainError:
    return DomainError(Code.BAD_USER_INPUT, message)
