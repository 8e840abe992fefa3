"""Booking charges: a booking's ``charged`` is its own outstanding ledger entry.

``bookings.charge_entry_id`` names the ``USE`` entry that charged the booking and has not
been given back (a refund, a reopen, or a ``releaseSession`` that released this booking's
charge clears it). The schema keeps it honest:

- ``(charge_entry_id, id)`` references ``session_ledger (id, booking_id)``: the entry is
  the booking's own;
- ``charge_entry_id`` is UNIQUE: one entry charges one booking;
- ``charged = (charge_entry_id IS NOT NULL)``: the flag cannot drift from the entry.

So a booking's charge is one entry at most, and ``charged`` is true exactly while the net
``delta`` of its entries is 1. Existing charged bookings point at their newest ``USE``
entry. Holds (``HOLD`` / ``UNHOLD`` entries) write ``session.held`` / ``session.unheld``
events.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from punchcard.db.migrations.script import run_script

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE session_ledger ADD CONSTRAINT session_ledger_id_booking UNIQUE (id, booking_id);
ALTER TABLE bookings ADD COLUMN charge_entry_id bigint;

UPDATE bookings AS b
   SET charge_entry_id = e.id
  FROM (SELECT DISTINCT ON (booking_id) booking_id, id
          FROM session_ledger
         WHERE kind = 'USE' AND booking_id IS NOT NULL
         ORDER BY booking_id, id DESC) AS e
 WHERE b.id = e.booking_id AND b.charged;
-- A booking flagged charged without a USE entry of its own was never charged.
UPDATE bookings SET charged = false WHERE charged AND charge_entry_id IS NULL;

ALTER TABLE bookings
    ADD CONSTRAINT bookings_charge_entry FOREIGN KEY (charge_entry_id, id)
        REFERENCES session_ledger (id, booking_id),
    ADD CONSTRAINT bookings_charge_entry_once UNIQUE (charge_entry_id),
    ADD CONSTRAINT bookings_charged_by_entry CHECK (charged = (charge_entry_id IS NOT NULL));
-- releaseSession looks for the package's newest charge.
CREATE INDEX bookings_purchase_charges ON bookings (purchase_id, charge_entry_id)
    WHERE charge_entry_id IS NOT NULL;

CREATE FUNCTION events_from_holds() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    p purchases;
BEGIN
    SELECT * INTO p FROM purchases WHERE id = NEW.purchase_id;
    p.sessions_used := NEW.sessions_used_after;
    p.sessions_held := NEW.sessions_held_after;
    p.sessions_total := NEW.sessions_total_after;
    p.revision := NEW.revision;
    INSERT INTO events (trainer_id, type, data)
    VALUES (NEW.trainer_id,
            CASE NEW.kind WHEN 'HOLD' THEN 'session.held' ELSE 'session.unheld' END,
            jsonb_build_object(
                'purchase', event_purchase(p),
                'entry', jsonb_build_object(
                    'id', 'led_' || NEW.id, 'kind', NEW.kind, 'delta', NEW.delta,
                    'heldDelta', NEW.held_delta,
                    'sessionsUsedAfter', NEW.sessions_used_after,
                    'sessionsHeldAfter', NEW.sessions_held_after, 'revision', NEW.revision,
                    'source', NEW.source, 'actor', NEW.actor, 'reason', NEW.reason,
                    'bookingId', 'bkg_' || NEW.booking_id, 'createdAt', NEW.created_at),
                'actor', NEW.actor, 'source', NEW.source));
    RETURN NULL;
END $$;
CREATE TRIGGER session_ledger_hold_events AFTER INSERT ON session_ledger
    FOR EACH ROW WHEN (NEW.kind IN ('HOLD', 'UNHOLD'))
    EXECUTE FUNCTION events_from_holds();
"""

DOWNGRADE = """
DROP TRIGGER session_ledger_hold_events ON session_ledger;
DROP FUNCTION events_from_holds();
DROP INDEX bookings_purchase_charges;
ALTER TABLE bookings
    DROP CONSTRAINT bookings_charged_by_entry,
    DROP CONSTRAINT bookings_charge_entry_once,
    DROP CONSTRAINT bookings_charge_entry,
    DROP COLUMN charge_entry_id;
ALTER TABLE session_ledger DROP CONSTRAINT session_ledger_id_booking;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
