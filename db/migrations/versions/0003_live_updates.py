"""Live updates: every purchase, booking and ledger row remembers the transaction that
wrote it last (``changed_xid``), so a reader can find exactly what a snapshot missed.

``changed_xid`` is ``pg_current_xact_id()`` (the epoch-extended, never-wrapping
transaction id) as a bigint: the column default covers INSERT, a trigger covers UPDATE.
Bookings are only marked when something the API shows changes (not ``reminder_sent_at``
or ``updated_at`` alone). See ``db/changes.py`` for how readers use it.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from punchcard.db.migrations.script import run_script

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE FUNCTION current_xid() RETURNS bigint LANGUAGE sql VOLATILE
    RETURN pg_current_xact_id()::text::bigint;

ALTER TABLE purchases ADD COLUMN changed_xid bigint NOT NULL DEFAULT current_xid();
ALTER TABLE bookings ADD COLUMN changed_xid bigint NOT NULL DEFAULT current_xid();
ALTER TABLE session_ledger ADD COLUMN changed_xid bigint NOT NULL DEFAULT current_xid();

-- purchases are found through purchases_trainer (a trainer has few), so their updates
-- stay HOT; bookings and the ledger grow without bound and get an index.
CREATE INDEX bookings_trainer_changed ON bookings (trainer_id, changed_xid);
CREATE INDEX session_ledger_trainer_changed ON session_ledger (trainer_id, changed_xid);

CREATE FUNCTION mark_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.changed_xid := current_xid();
    RETURN NEW;
END $$;

CREATE TRIGGER purchases_mark_changed BEFORE UPDATE ON purchases
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION mark_changed();

CREATE TRIGGER bookings_mark_changed BEFORE UPDATE ON bookings
    FOR EACH ROW WHEN (
        (OLD.client_id, OLD.purchase_id, OLD.starts_at, OLD.ends_at, OLD.status, OLD.charged,
         OLD.unpaid, OLD.late_cancel, OLD.completed_by, OLD.completed_at)
        IS DISTINCT FROM
        (NEW.client_id, NEW.purchase_id, NEW.starts_at, NEW.ends_at, NEW.status, NEW.charged,
         NEW.unpaid, NEW.late_cancel, NEW.completed_by, NEW.completed_at))
    EXECUTE FUNCTION mark_changed();
"""

DOWNGRADE = """
DROP TRIGGER bookings_mark_changed ON bookings;
DROP TRIGGER purchases_mark_changed ON purchases;
DROP FUNCTION mark_changed();
DROP INDEX session_ledger_trainer_changed;
DROP INDEX bookings_trainer_changed;
ALTER TABLE session_ledger DROP COLUMN changed_xid;
ALTER TABLE bookings DROP COLUMN changed_xid;
ALTER TABLE purchases DROP COLUMN changed_xid;
DROP FUNCTION current_xid();
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
