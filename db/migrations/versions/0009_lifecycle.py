"""Package lifecycle events: freezes, thaws, extensions, expiries and transfers.

``events_from_ledger`` (0006, replaced by 0007) learns the lifecycle's entries: each
writes one event in the entry's transaction, its body the package as of the entry plus
the entry (kind, deltas, counts after, detail):

- ``FREEZE`` → ``purchase.frozen``, ``UNFREEZE`` → ``purchase.unfrozen``,
  ``EXTEND`` → ``purchase.extended``;
- ``EXPIRE`` → ``purchase.expired`` (the sweeper's entry; the row-less announcement the
  sweeper wrote before is gone). A package whose expiry was already announced that way
  (``dedupe_key`` ``purchase.expired:<id>``) gets no second one for the same expiry, and
  an expiry found more than 30 days after it passed (the first sweep after an upgrade)
  is recorded but not announced;
- ``TRANSFER_OUT`` → ``sessions.transferred`` (one event per transfer: the source as of
  the entry, and the new package's id in ``toPurchaseId``; the new package also gets its
  ``purchase.created``);
- ``CANCEL`` writes none: the status change's trigger writes ``purchase.cancelled``;
  ``HOLD``/``UNHOLD``/``TRANSFER_IN`` write none.

``session.used``, ``session.released`` and ``purchase.low_balance`` are unchanged.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from punchcard.db.migrations.script import run_script

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

EXPIRED_WINDOW_DAYS = 30

UPGRADE = f"""
CREATE OR REPLACE FUNCTION events_from_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    p purchases;
    body jsonb;
    remaining integer;
    kind text;
BEGIN
    kind := CASE NEW.kind WHEN 'USE' THEN 'session.used'
                          WHEN 'RELEASE' THEN 'session.released'
                          WHEN 'FREEZE' THEN 'purchase.frozen'
                          WHEN 'UNFREEZE' THEN 'purchase.unfrozen'
                          WHEN 'EXTEND' THEN 'purchase.extended'
                          WHEN 'EXPIRE' THEN 'purchase.expired'
                          WHEN 'TRANSFER_OUT' THEN 'sessions.transferred' END;
    IF kind IS NULL THEN
        RETURN NULL;
    END IF;
    IF NEW.kind = 'EXPIRE' AND (
        (NEW.detail ->> 'expiresAt')::timestamptz
            <= NEW.created_at - make_interval(days => {EXPIRED_WINDOW_DAYS})
        OR (EXISTS (SELECT FROM events AS e
                     WHERE e.trainer_id = NEW.trainer_id
                       AND e.dedupe_key = 'purchase.expired:' || NEW.purchase_id)
            AND NOT EXISTS (SELECT FROM session_ledger AS x
                             WHERE x.purchase_id = NEW.purchase_id AND x.kind = 'EXPIRE'
                               AND x.id <> NEW.id))) THEN
        RETURN NULL;  -- stale, or announced before the sweeper recorded expiries
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
    IF NEW.kind NOT IN ('USE', 'RELEASE') THEN
        body := body || jsonb_build_object(
            'entry', (body -> 'entry') || jsonb_build_object(
                'heldDelta', NEW.held_delta, 'totalDelta', NEW.total_delta,
                'sessionsHeldAfter', NEW.sessions_held_after,
                'sessionsTotalAfter', NEW.sessions_total_after,
                'relatedPurchaseId', 'pur_' || NEW.related_purchase_id,
                'detail', NEW.detail));
    END IF;
    IF NEW.kind = 'TRANSFER_OUT' THEN
        body := body || jsonb_build_object(
            'sessions', -NEW.total_delta, 'fromPurchaseId', 'pur_' || NEW.purchase_id,
            'toPurchaseId', 'pur_' || NEW.related_purchase_id);
    END IF;
    INSERT INTO events (trainer_id, type, data) VALUES (NEW.trainer_id, kind, body);
    IF NEW.kind = 'USE' AND remaining <= 1 THEN
        INSERT INTO events (trainer_id, type, data)
        VALUES (NEW.trainer_id, 'purchase.low_balance',
                body || jsonb_build_object('sessionsRemaining', remaining));
    END IF;
    RETURN NULL;
END $$;
"""

# 0007's function, as it was.
DOWNGRADE = """
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


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
