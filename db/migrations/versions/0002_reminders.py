"""Reminders: one row per reminded booking, its attempts and backoff; ``reminder_at()``.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from punchcard.db.migrations.script import run_script

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
-- A booking's reminder: created by the sweeper's claim, leased while it is sent
-- (next_attempt_at = claim time + lease), pushed back after a failure (backoff),
-- closed for good by sent_at. One row per booking: a booking is reminded once.
CREATE TABLE reminders (
    booking_id bigint PRIMARY KEY REFERENCES bookings (id) ON DELETE CASCADE,
    trainer_id bigint NOT NULL REFERENCES trainers (id) ON DELETE CASCADE,
    remind_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    sent_at timestamptz,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reminders_attempts_non_negative CHECK (attempts >= 0)
);
CREATE INDEX reminders_trainer ON reminders (trainer_id);

-- Upcoming bookings still waiting for their reminder (bookings.reminder_sent_at is
-- set when it went out, which drops the booking from this index).
CREATE INDEX bookings_reminder_due ON bookings (starts_at)
    WHERE status = 'CONFIRMED' AND reminder_sent_at IS NULL;

-- When a booking starting at starts_at is reminded: `hours` earlier on the wall clock
-- of `zone` (a 09:00 booking with 24 h is reminded at 09:00 the day before, whatever
-- DST does in between). A wall-clock time that does not exist (spring forward) moves
-- forward by the gap; one that exists twice (fall back) is the second, standard-time
-- one (PostgreSQL's rule). A zone PostgreSQL does not know counts as UTC, so one bad
-- row cannot stop the reminders of every other trainer.
CREATE FUNCTION reminder_at(starts_at timestamptz, zone text, hours integer)
RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN ((starts_at AT TIME ZONE zone) - make_interval(hours => hours)) AT TIME ZONE zone;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN starts_at - make_interval(hours => hours);
END $$;
"""

DOWNGRADE = """
DROP FUNCTION reminder_at(timestamptz, text, integer);
DROP INDEX bookings_reminder_due;
DROP TABLE reminders;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
