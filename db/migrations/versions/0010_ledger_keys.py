"""The schema enforces what ``punchcard check`` would otherwise only find: a ledger entry
belongs to its package's trainer, and a booking's package to the booking's trainer and
client.

Two composite foreign keys, each on a unique key of ``purchases`` that includes its
primary key (so the keys cost one more index per package, and every write that names a
package checks its owner in the same index probe it already makes):

- ``session_ledger (purchase_id, trainer_id)`` references ``purchases (id, trainer_id)``;
- ``bookings (purchase_id, trainer_id, client_id)`` references ``purchases (id,
  trainer_id, client_id)`` (MATCH SIMPLE: an unpackaged booking is not checked).

The single-column keys stay: their ON DELETE actions (cascade the ledger, unlink the
bookings) still apply, and the composite ones are then satisfied. Rows already in the
database are validated when the keys are added: a database with such drift fails this
migration, naming the key; ``punchcard check`` lists the rows (``entry_trainer``,
``booking_package``).

(On the ``check`` branch this revises 0007; the lead renumbers it after 0008 and 0009.)

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from punchcard.db.migrations.script import run_script

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE purchases
    ADD CONSTRAINT purchases_id_trainer UNIQUE (id, trainer_id),
    ADD CONSTRAINT purchases_id_trainer_client UNIQUE (id, trainer_id, client_id);
ALTER TABLE session_ledger
    ADD CONSTRAINT session_ledger_purchase_trainer FOREIGN KEY (purchase_id, trainer_id)
        REFERENCES purchases (id, trainer_id);
ALTER TABLE bookings
    ADD CONSTRAINT bookings_purchase_owner FOREIGN KEY (purchase_id, trainer_id, client_id)
        REFERENCES purchases (id, trainer_id, client_id);
"""

DOWNGRADE = """
ALTER TABLE bookings DROP CONSTRAINT bookings_purchase_owner;
ALTER TABLE session_ledger DROP CONSTRAINT session_ledger_purchase_trainer;
ALTER TABLE purchases
    DROP CONSTRAINT purchases_id_trainer_client,
    DROP CONSTRAINT purchases_id_trainer;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
