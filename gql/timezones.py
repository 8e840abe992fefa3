"""IANA time-zone names, checked before they are stored."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from punchcard.db.errors import bad_input


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory, a long name
        raise bad_input(f"unknown time zone {name[:60]!r}") from None
    return name
