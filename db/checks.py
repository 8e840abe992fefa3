"""Input checks: what PostgreSQL or asyncpg would choke on, refused first with a clear
BAD_USER_INPUT (instead of an internal error, or a naive time silently read as local)."""

from __future__ import annotations

from datetime import UTC, datetime

from punchcard.db.errors import bad_input


def text(label: str, value: str, *, max_length: int, min_length: int = 0) -> str:
    """``value`` if its length is in range and it holds no NUL (PostgreSQL text cannot)."""
    if not min_length <= len(value) <= max_length:
        if min_length:
            raise bad_input(f"{label} must be {min_length} to {max_length} characters")
        raise bad_input(f"{label} is too long (at most {max_length} characters)")
    if "\x00" in value:
        raise bad_input(f"{label} must not contain NUL characters")
    return value


def moment(label: str, value: datetime) -> datetime:
    """``value`` in UTC; a time without an offset, or one that leaves the calendar's range
    once converted to UTC, is refused."""
    if value.utcoffset() is None:
        raise bad_input(f"{label} needs a UTC offset")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise bad_input(f"{label} is out of range") from None
