"""What readiness checks and ``/metrics`` read from the database: the migration the
database is at, and how far behind the sweeper is (read here, so the number keeps
growing when no sweeper runs at all)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from punchcard.db.reminders import MARGIN_HOURS

# The oldest booking that should have been completed, and the oldest reminder that
# should have gone out (retries in backoff included: they are late too), in seconds.
LAG = f"""
WITH clock AS (SELECT now() AS now)
SELECT
  (SELECT extract(epoch FROM clock.now - make_interval(mins => $1) - min(b.ends_at))
     FROM bookings AS b
    WHERE b.status = 'CONFIRMED' AND b.ends_at < clock.now - make_interval(mins => $1))
    AS bookings,
  (SELECT extract(epoch FROM clock.now - min(reminder_at(b.starts_at, t.timezone,
                                                         t.reminder_hours_before)))
     FROM bookings AS b JOIN trainers AS t ON t.id = b.trainer_id
    WHERE b.status = 'CONFIRMED' AND b.reminder_sent_at IS NULL
      AND b.starts_at > clock.now
      AND b.starts_at <= clock.now + make_interval(
              hours => (SELECT max(reminder_hours_before) FROM trainers) + {MARGIN_HOURS})
      AND t.reminder_hours_before > 0
      AND reminder_at(b.starts_at, t.timezone, t.reminder_hours_before) <= clock.now
      AND NOT EXISTS (SELECT 1 FROM reminders AS r
                       WHERE r.booking_id = b.id AND r.sent_at IS NOT NULL))
    AS reminders,
  (SELECT count(*) FROM reminders AS r
    WHERE r.sent_at IS NULL AND r.last_error IS NOT NULL) AS failing
  FROM clock
"""


@dataclass(frozen=True, slots=True)
class Lag:
    bookings: float  # seconds the oldest due booking is past its grace (0: none due)
    reminders: float  # seconds the oldest due reminder is past its time (0: none due)
    failing_reminders: int  # reminders whose last send failed, waiting for a retry


async def migration(db: Any) -> str | None:
    """The revision in ``alembic_version`` (None: never migrated)."""
    try:
        version: str | None = await db.fetchval("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        return None
    return version


async def lag(db: Any, *, grace_minutes: int) -> Lag:
    """How late the sweeper is (``db`` sees every trainer's rows: the worker role)."""
    row = await db.fetchrow(LAG, grace_minutes)
    return Lag(
        bookings=max(float(row["bookings"] or 0), 0.0),
        reminders=max(float(row["reminders"] or 0), 0.0),
        failing_reminders=int(row["failing"]),
    )
