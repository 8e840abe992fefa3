"""Package lifecycle: held sessions, frozen/expired packages, a ledger of every count.

Every change of a package's counts is one ledger entry, numbered by the package's
``revision``, so the ledger replays a package exactly (``sessionsAsOf``, ``punchcard
check``):

- ``kind`` says what happened: ``USE`` (+1 used; a booking's hold turning into a use
  also gives its hold back), ``RELEASE`` (-1 used), ``HOLD`` / ``UNHOLD`` (a CONFIRMED
  booking linked to the package takes / gives back a hold), ``CANCEL``, ``FREEZE``,
  ``UNFREEZE``, ``EXTEND``, ``EXPIRE`` (no count moves), ``TRANSFER_OUT`` /
  ``TRANSFER_IN`` (sessions leave one package's total and arrive in another's);
- ``delta`` / ``held_delta`` / ``total_delta`` move ``sessions_used`` / ``sessions_held``
  / ``sessions_total``; ``*_after`` are the package's counts once the entry is applied;
- ``related_purchase_id`` names the other package of a transfer; ``detail`` holds what a
  lifecycle entry changed (frozen until, expiry before and after, sessions expired).

``purchases.sessions_held`` is the number of the package's CONFIRMED bookings. Existing
holds are recorded at upgrade by one ``HOLD`` entry per package, and a cancelled
package's revision that has no entry (Stripe's refund bumped it) gets its ``CANCEL``.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from punchcard.db.migrations.script import run_script

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

LEDGER_KINDS = (
    "USE",
    "RELEASE",
    "HOLD",
    "UNHOLD",
    "CANCEL",
    "FREEZE",
    "UNFREEZE",
    "EXTEND",
    "EXPIRE",
    "TRANSFER_OUT",
    "TRANSFER_IN",
)
PURCHASE_STATUSES = ("ACTIVE", "FROZEN", "CANCELLED", "EXPIRED")


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


UPGRADE = f"""
ALTER TABLE trainers
    ADD COLUMN late_cancel_hours integer,
    ADD CONSTRAINT trainers_late_cancel_hours_range
        CHECK (late_cancel_hours IS NULL OR late_cancel_hours BETWEEN 0 AND 720);

ALTER TABLE purchases
    ADD COLUMN sessions_held integer NOT NULL DEFAULT 0,
    ADD COLUMN frozen_at timestamptz,
    ADD COLUMN frozen_until timestamptz,
    ADD COLUMN sessions_expired integer,
    ADD COLUMN cancel_reason text,
    DROP CONSTRAINT purchases_status_known,
    ADD CONSTRAINT purchases_status_known CHECK (status IN ({_quoted(PURCHASE_STATUSES)})),
    ADD CONSTRAINT purchases_sessions_held_non_negative CHECK (sessions_held >= 0),
    ADD CONSTRAINT purchases_frozen_since CHECK ((status = 'FROZEN') = (frozen_at IS NOT NULL)),
    ADD CONSTRAINT purchases_frozen_until CHECK (frozen_until IS NULL OR status = 'FROZEN'),
    ADD CONSTRAINT purchases_sessions_expired
        CHECK (sessions_expired IS NULL OR (status = 'EXPIRED' AND sessions_expired >= 0));
CREATE INDEX purchases_thaw ON purchases (frozen_until) WHERE status = 'FROZEN';

ALTER TABLE bookings
    ADD COLUMN overbooked boolean NOT NULL DEFAULT false,
    ADD COLUMN assigned_reason text;

ALTER TABLE session_ledger
    ADD COLUMN kind text,
    ADD COLUMN held_delta integer NOT NULL DEFAULT 0,
    ADD COLUMN total_delta integer NOT NULL DEFAULT 0,
    ADD COLUMN sessions_held_after integer,
    ADD COLUMN sessions_total_after integer,
    ADD COLUMN related_purchase_id bigint REFERENCES purchases (id) ON DELETE SET NULL,
    ADD COLUMN detail jsonb,
    DROP CONSTRAINT session_ledger_delta_unit;

-- Existing entries are uses and releases; totals never changed and nothing was held.
ALTER TABLE session_ledger DISABLE TRIGGER session_ledger_append_only;
UPDATE session_ledger AS e
   SET kind = CASE WHEN e.delta > 0 THEN 'USE' ELSE 'RELEASE' END,
       sessions_held_after = 0,
       sessions_total_after = p.sessions_total
  FROM purchases AS p
 WHERE p.id = e.purchase_id;
ALTER TABLE session_ledger ENABLE TRIGGER session_ledger_append_only;

ALTER TABLE session_ledger
    ALTER COLUMN kind SET NOT NULL,
    ALTER COLUMN sessions_held_after SET NOT NULL,
    ALTER COLUMN sessions_total_after SET NOT NULL,
    ADD CONSTRAINT session_ledger_kind_known CHECK (kind IN ({_quoted(LEDGER_KINDS)})),
    ADD CONSTRAINT session_ledger_delta_unit CHECK (delta IN (-1, 0, 1)),
    ADD CONSTRAINT session_ledger_delta_by_kind
        CHECK ((kind = 'USE') = (delta = 1) AND (kind = 'RELEASE') = (delta = -1)),
    ADD CONSTRAINT session_ledger_total_by_kind
        CHECK ((kind IN ('TRANSFER_OUT', 'TRANSFER_IN')) = (total_delta <> 0)),
    ADD CONSTRAINT session_ledger_counts_after
        CHECK (sessions_used_after BETWEEN 0 AND sessions_total_after
               AND sessions_held_after >= 0 AND sessions_total_after >= 0);
CREATE INDEX session_ledger_purchase_created ON session_ledger (purchase_id, created_at, id);

-- A cancelled package whose last revision has no entry: Stripe's refund cancelled it.
WITH missing AS (
    SELECT p.id, p.trainer_id, p.revision, p.sessions_used, p.sessions_total
      FROM purchases AS p
     WHERE p.status = 'CANCELLED'
       AND NOT EXISTS (SELECT 1 FROM session_ledger AS e
                        WHERE e.purchase_id = p.id AND e.revision = p.revision)
       AND p.revision > 0
)
INSERT INTO session_ledger
    (trainer_id, purchase_id, kind, delta, sessions_used_after, sessions_held_after,
     sessions_total_after, revision, source, actor, reason)
SELECT trainer_id, id, 'CANCEL', 0, sessions_used, 0, sessions_total, revision,
       'INTEGRATION', 'migration', 'cancelled before the ledger recorded cancellations'
  FROM missing;

-- Bookings already CONFIRMED on a package hold its sessions from now on: one entry each.
WITH held AS (
    SELECT b.purchase_id, count(*)::int AS n
      FROM bookings AS b
     WHERE b.status = 'CONFIRMED' AND b.purchase_id IS NOT NULL
     GROUP BY b.purchase_id
), taken AS (
    UPDATE purchases AS p
       SET sessions_held = h.n, revision = p.revision + 1, updated_at = now()
      FROM held AS h
     WHERE p.id = h.purchase_id
    RETURNING p.id, p.trainer_id, p.revision, p.sessions_used, p.sessions_held, p.sessions_total
)
INSERT INTO session_ledger
    (trainer_id, purchase_id, kind, delta, held_delta, sessions_used_after,
     sessions_held_after, sessions_total_after, revision, source, actor, reason)
SELECT trainer_id, id, 'HOLD', 0, sessions_held, sessions_used, sessions_held, sessions_total,
       revision, 'MANUAL', 'migration', 'confirmed bookings hold their sessions'
  FROM taken;

-- Event bodies carry the new counts; only uses and releases are session events.
CREATE OR REPLACE FUNCTION event_purchase(p purchases) RETURNS jsonb LANGUAGE sql STABLE
RETURN jsonb_build_object(
    'id', 'pur_' || p.id, 'clientId', 'cli_' || p.client_id,
    'offerId', 'ofr_' || p.offer_id, 'sessionsTotal', p.sessions_total,
    'sessionsUsed', p.sessions_used, 'sessionsRemaining', p.sessions_total - p.sessions_used,
    'sessionsHeld', p.sessions_held,
    'sessionsAvailable', p.sessions_total - p.sessions_used - p.sessions_held,
    'expiresAt', p.expires_at, 'status', p.status, 'revision', p.revision);

CREATE OR REPLACE FUNCTION events_from_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    p purchases;
    body jsonb;
    remaining integer;
BEGIN
    IF NEW.kind NOT IN ('USE', 'RELEASE') THEN
        RETURN NULL;
    END IF;
    SELECT * INTO p FROM purchases WHERE id = NEW.purchase_id;
    -- The counts as of this entry (one statement may write several entries of a package).
    p.sessions_used := NEW.sessions_used_after;
    p.sessions_held := NEW.sessions_held_after;
    p.sessions_total := NEW.sessions_total_after;
    p.revision := NEW.revision;
    remaining := p.sessions_total - NEW.sessions_used_after;
    body := jsonb_build_object(
        'purchase', event_purchase(p),
        'entry', jsonb_build_object(
            'id', 'led_' || NEW.id, 'kind', NEW.kind, 'delta', NEW.delta,
            'sessionsUsedAfter', NEW.sessions_used_after, 'revision', NEW.revision,
            'source', NEW.source, 'actor', NEW.actor, 'reason', NEW.reason,
            'bookingId', 'bkg_' || NEW.booking_id, 'idempotencyKey', NEW.idempotency_key,
            'createdAt', NEW.created_at),
        'actor', NEW.actor, 'source', NEW.source);
    INSERT INTO events (trainer_id, type, data)
    VALUES (NEW.trainer_id,
            CASE WHEN NEW.delta > 0 THEN 'session.used' ELSE 'session.released' END, body);
    IF NEW.delta > 0 AND remaining <= 1 THEN
        INSERT INTO events (trainer_id, type, data)
        VALUES (NEW.trainer_id, 'purchase.low_balance',
                body || jsonb_build_object('sessionsRemaining', remaining));
    END IF;
    RETURN NULL;
END $$;
"""

DOWNGRADE = """
CREATE OR REPLACE FUNCTION events_from_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    p purchases;
    body jsonb;
    remaining integer;
BEGIN
    SELECT * INTO p FROM purchases WHERE id = NEW.purchase_id;
    p.sessions_used := NEW.sessions_used_after;
    p.revision := NEW.revision;
    remaining := p.sessions_total - NEW.sessions_used_after;
    body := jsonb_build_object(
        'purchase', event_purchase(p),
        'entry', jsonb_build_object(
            'id', 'led_' || NEW.id, 'delta', NEW.delta,
            'sessionsUsedAfter', NEW.sessions_used_after, 'revision', NEW.revision,
            'source', NEW.source, 'actor', NEW.actor, 'reason', NEW.reason,
            'bookingId', 'bkg_' || NEW.booking_id, 'idempotencyKey', NEW.idempotency_key,
            'createdAt', NEW.created_at),
        'actor', NEW.actor, 'source', NEW.source);
    INSERT INTO events (trainer_id, type, data)
    VALUES (NEW.trainer_id,
            CASE WHEN NEW.delta > 0 THEN 'session.used' ELSE 'session.released' END, body);
    IF NEW.delta > 0 AND remaining <= 1 THEN
        INSERT INTO events (trainer_id, type, data)
        VALUES (NEW.trainer_id, 'purchase.low_balance',
                body || jsonb_build_object('sessionsRemaining', remaining));
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION event_purchase(p purchases) RETURNS jsonb LANGUAGE sql STABLE
RETURN jsonb_build_object(
    'id', 'pur_' || p.id, 'clientId', 'cli_' || p.client_id,
    'offerId', 'ofr_' || p.offer_id, 'sessionsTotal', p.sessions_total,
    'sessionsUsed', p.sessions_used, 'sessionsRemaining', p.sessions_total - p.sessions_used,
    'expiresAt', p.expires_at, 'status', p.status, 'revision', p.revision);

DROP INDEX session_ledger_purchase_created;
ALTER TABLE session_ledger DISABLE TRIGGER session_ledger_append_only;
DELETE FROM session_ledger WHERE kind NOT IN ('USE', 'RELEASE');
ALTER TABLE session_ledger ENABLE TRIGGER session_ledger_append_only;
ALTER TABLE session_ledger
    DROP CONSTRAINT session_ledger_counts_after,
    DROP CONSTRAINT session_ledger_total_by_kind,
    DROP CONSTRAINT session_ledger_delta_by_kind,
    DROP CONSTRAINT session_ledger_delta_unit,
    DROP CONSTRAINT session_ledger_kind_known,
    DROP COLUMN detail,
    DROP COLUMN related_purchase_id,
    DROP COLUMN sessions_total_after,
    DROP COLUMN sessions_held_after,
    DROP COLUMN total_delta,
    DROP COLUMN held_delta,
    DROP COLUMN kind,
    ADD CONSTRAINT session_ledger_delta_unit CHECK (delta IN (-1, 1));

ALTER TABLE bookings DROP COLUMN assigned_reason, DROP COLUMN overbooked;

DROP INDEX purchases_thaw;
ALTER TABLE purchases
    DROP CONSTRAINT purchases_sessions_expired,
    DROP CONSTRAINT purchases_frozen_until,
    DROP CONSTRAINT purchases_frozen_since,
    DROP CONSTRAINT purchases_sessions_held_non_negative,
    DROP CONSTRAINT purchases_status_known;
UPDATE purchases SET status = 'ACTIVE' WHERE status IN ('FROZEN', 'EXPIRED');
ALTER TABLE purchases
    DROP COLUMN cancel_reason,
    DROP COLUMN sessions_expired,
    DROP COLUMN frozen_until,
    DROP COLUMN frozen_at,
    DROP COLUMN sessions_held,
    ADD CONSTRAINT purchases_status_known CHECK (status IN ('ACTIVE', 'CANCELLED'));

ALTER TABLE trainers DROP CONSTRAINT trainers_late_cancel_hours_range,
    DROP COLUMN late_cancel_hours;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
