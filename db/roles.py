"""Which role each part of punchcard connects as (migration 0004 creates them).

The owner's ``DATABASE_URL`` runs migrations; the API connects as ``punchcard_api``
(row-level security scoped to one trainer per checkout: ``db/pool.py``); the sweeper,
the LISTEN connection, the live hub's change feed and authentication connect as
``punchcard_worker``. Each URL is a setting; unset, it is ``DATABASE_URL`` with the
role as the user and no password, which is what the embedded server (trust
authentication) accepts.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from punchcard.settings import Settings

API_ROLE = "punchcard_api"
WORKER_ROLE = "punchcard_worker"


def as_role(database_url: str, role: str) -> str:
    """``database_url`` with ``role`` as its user (and no password); host, port, socket
    directory and options unchanged."""
    parts = urlsplit(database_url)
    _, _, hostport = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{role}@{hostport}"))


def api_url(settings: Settings) -> str:
    """Where the API's pool connects: ``PUNCHCARD_API_DATABASE_URL`` or derived."""
    if settings.api_database_url:
        return settings.api_database_url
    assert settings.database_url, "DATABASE_URL is resolved before anything connects"
    return as_role(settings.database_url, API_ROLE)


def worker_url(settings: Settings) -> str:
    """Where cross-trainer work connects: ``PUNCHCARD_WORKER_DATABASE_URL`` or derived."""
    if settings.worker_database_url:
        return settings.worker_database_url
    assert settings.database_url, "DATABASE_URL is resolved before anything connects"
    return as_role(settings.database_url, WORKER_ROLE)
