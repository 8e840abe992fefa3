"""Booking reminders: claim the due ones, mark them sent, push failed ones back.

A booking is due for its reminder at ``reminder_at(starts_at, trainer zone, hours)``
(migration 0002: the trainer's wall clock, right across DST) while it is CONFIRMED
and has not started. ``CLAIM`` takes a batch in one statement: it skips bookings
another sweeper is claiming (``SKIP LOCKED``) and upserts their ``reminders`` row
with ``next_attempt_at = now + lease``, so no other sweeper takes them while they are
being sent. The upsert's ``WHERE`` is the guard that holds even against a sweeper
whose snapshot predates ours: a row sent, or leased or backing off, is never claimed.

``MARK_SENT`` closes a reminder for good; ``MARK_FAILED`` sets the next attempt
(exponential backoff). A sweeper that dies between sending and marking leaves the
lease to run out, and the reminder is sent again: at least once, with the same
idempotency id, so receivers can drop the duplicate.

Every statement takes the sweeper's clock as ``now`` (NULL: the database's now()).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from punchcard.db.types import Executor, Row

# Bookings within `hours + MARGIN_HOURS` of now are the candidates: the margin covers
# the widest DST shift between a booking and its reminder (a larger zone change sends
# the reminder late, never not at all).
MARGIN_HOURS = 3
MAX_BACKOFF_SECONDS = 3600

CLAIM = f"""
WITH clock AS (
    SELECT coalesce($1::timestamptz, now()) AS now
), due AS (
    SELECT b.id, b.trainer_id,
           reminder_at(b.starts_at, t.timezone, t.reminder_hours_before) AS remind_at
      FROM bookings AS b
      JOIN trainers AS t ON t.id = b.trainer_id
      CROSS JOIN clock
     WHERE b.status = 'CONFIRMED' AND b.reminder_sent_at IS NULL
       AND b.starts_at > clock.now
       AND b.starts_at <= clock.now + make_interval(
               hours => (SELECT max(reminder_hours_before) FROM trainers) + {MARGIN_HOURS})
       AND t.reminder_hours_before > 0
       AND b.starts_at <= clock.now + make_interval(
               hours => t.reminder_hours_before + {MARGIN_HOURS})
       AND reminder_at(b.starts_at, t.timezone, t.reminder_hours_before) <= clock.now
       AND NOT EXISTS (
           SELECT 1 FROM reminders AS r
            WHERE r.booking_id = b.id
              AND (r.sent_at IS NOT NULL OR r.next_attempt_at > clock.now))
     ORDER BY remind_at, b.id
     LIMIT $2
       FOR NO KEY UPDATE OF b SKIP LOCKED
), claimed AS (
    INSERT INTO reminders AS r (booking_id, trainer_id, remind_at, attempts, next_attempt_at)
    SELECT due.id, due.trainer_id, due.remind_at, 1, clock.now + make_interval(secs => $3)
      FROM due CROSS JOIN clock
    ON CONFLICT (booking_id) DO UPDATE
       SET attempts = r.attempts + 1, next_attempt_at = EXCLUDED.next_attempt_at,
           updated_at = now()
     WHERE r.sent_at IS NULL AND r.next_attempt_at <= (SELECT now FROM clock)
    RETURNING r.booking_id, r.remind_at, r.attempts
)
SELECT n.candidates, c.booking_id, c.remind_at, c.attempts, b.trainer_id, b.client_id,
       b.starts_at, b.ends_at, t.timezone, cl.name AS client_name,
       cl.email AS client_email, cl.phone AS client_phone, cl.timezone AS client_timezone
  FROM (SELECT count(*) AS candidates FROM due) AS n
  LEFT JOIN (claimed AS c
             JOIN bookings AS b ON b.id = c.booking_id
             JOIN trainers AS t ON t.id = b.trainer_id
             JOIN clients AS cl ON cl.id = b.client_id) ON true
 ORDER BY c.remind_at, c.booking_id
"""

MARK_SENT = """
WITH sent AS (
    UPDATE reminders
       SET sent_at = now(), last_error = NULL, updated_at = now()
     WHERE booking_id = ANY($1::bigint[]) AND sent_at IS NULL
    RETURNING booking_id, sent_at
)
UPDATE bookings AS b SET reminder_sent_at = sent.sent_at
  FROM sent
 WHERE b.id = sent.booking_id
"""

# Attempt n failed: try again base * 2^(n-1) seconds later, at most an hour later.
MARK_FAILED = f"""
UPDATE reminders AS r
   SET next_attempt_at = coalesce($1::timestamptz, now())
           + make_interval(secs => least($4 * power(2, r.attempts - 1), {MAX_BACKOFF_SECONDS})),
       last_error = f.error,
       updated_at = now()
  FROM unnest($2::bigint[], $3::text[]) AS f(booking_id, error)
 WHERE r.booking_id = f.booking_id AND r.sent_at IS NULL
"""


async def claim(
    db: Executor, *, limit: int, lease_seconds: float, now: datetime | None = None
) -> tuple[list[Row], int]:
    """Lease up to ``limit`` due reminders to this sweeper, oldest first.

    Also returns how many candidates the batch locked: a candidate another sweeper
    claimed a moment earlier is dropped by the guard, so fewer rows than ``limit`` do
    not mean fewer are due; ``candidates < limit`` does.
    """
    rows = await db.fetch(CLAIM, now, limit, lease_seconds)
    return [row for row in rows if row["booking_id"] is not None], rows[0]["candidates"]


async def mark_sent(db: Executor, booking_ids: Sequence[int]) -> None:
    if booking_ids:
        await db.execute(MARK_SENT, list(booking_ids))


async def mark_failed(
    db: Executor,
    failures: Sequence[tuple[int, str]],
    *,
    retry_seconds: float,
    now: datetime | None = None,
) -> None:
    """Push failed reminders back: ``failures`` are (booking id, error text) pairs."""
    if failures:
        ids = [booking_id for booking_id, _ in failures]
        errors = [error[:500] for _, error in failures]
        await db.execute(MARK_FAILED, now, ids, errors, retry_seconds)
