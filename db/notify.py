"""The change channel's NOTIFY payload: written (as SQL) and parsed here, nowhere else.

A notification is only a wake-up: listeners re-read the rows. Payloads are tiny JSON
objects, far below NOTIFY's 8000-byte limit::

    {"t": trainer id, "k": kind, "id": row id, "r": revision, "l": ledger id, "n": rows}

``k`` is ``purchase`` (a package's count or revision changed), ``booking`` (one booking
was created), ``bookings`` (``n`` bookings of the trainer moved) or ``api_key`` (key
``id`` was revoked). The live-update hub reads ``t`` (whose rows to re-read), the sweeper
``k`` (package-only changes never make a booking due), the socket registry ``api_key``
notices (close the sockets that key opened).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

CHANNEL = "punchcard_changes"

PURCHASE = "purchase"
BOOKING = "booking"
BOOKINGS = "bookings"
API_KEY = "api_key"


def notify_sql(*, trainer: str, kind: str, **fields: str) -> str:
    """The ``pg_notify(...)`` call for a SQL statement: ``trainer`` and ``fields`` are SQL
    expressions, ``kind`` one of the kinds above. Field names: ``id``, ``r``, ``l``, ``n``."""
    assert kind in {PURCHASE, BOOKING, BOOKINGS, API_KEY}
    assert set(fields) <= {"id", "r", "l", "n"}
    pairs = "".join(f", '{name}', {expression}" for name, expression in fields.items())
    return f"pg_notify('{CHANNEL}', json_build_object('t', {trainer}, 'k', '{kind}'{pairs})::text)"


@dataclass(frozen=True, slots=True)
class Notice:
    """A parsed payload; ``trainer_id`` is None when the payload is not one of ours."""

    trainer_id: int | None
    kind: str | None
    row_id: int | None = None

    @classmethod
    def parse(cls, payload: str) -> Notice:
        try:
            message = json.loads(payload)
        except ValueError:
            return cls(None, None)
        if not isinstance(message, dict):
            return cls(None, None)
        trainer, kind, row = message.get("t"), message.get("k"), message.get("id")
        return cls(_int(trainer), kind if isinstance(kind, str) else None, _int(row))


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
