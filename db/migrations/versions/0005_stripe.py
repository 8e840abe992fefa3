"""Stripe: which account sells for which trainer, and what each verified event did.

- ``stripe_accounts``: the binding. An account id belongs to one trainer at most (the
  primary key); the trainer adds and removes it over GraphQL.
- ``stripe_payments``: one row per Stripe payment intent that punchcard has heard of:
  the checkout session that sold it, the package it sold, and the refund. A sale and a
  refund of one payment meet on this row (its row lock orders them, whichever arrives
  first), so a refund that arrives before its sale is kept and applied when the sale does.
- ``stripe_events``: every processed event id, written in the same transaction as what
  the event did (the primary key is what makes a redelivery change nothing), with its
  outcome and the reason, so a trainer can see why a payment sold nothing.

All three are tenant tables under row-level security like the others (migration 0004).
``stripe_events.trainer_id`` is null for an event from an account bound to nobody: the
API's role never sees those rows; the webhook (as ``punchcard_worker``) does.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from punchcard.db.migrations.script import run_script

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("stripe_accounts", "stripe_payments", "stripe_events")


def _policies(table: str) -> str:
    return f"""
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON {table} TO punchcard_api
    USING (trainer_id = current_trainer_id()) WITH CHECK (trainer_id = current_trainer_id());
CREATE POLICY internal ON {table} TO punchcard_worker USING (true) WITH CHECK (true);
"""


UPGRADE = """
CREATE TABLE stripe_accounts (
    account_id text PRIMARY KEY,
    trainer_id bigint NOT NULL REFERENCES trainers (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_accounts_trainer ON stripe_accounts (trainer_id);

CREATE TABLE stripe_payments (
    payment_intent text PRIMARY KEY,
    trainer_id bigint NOT NULL REFERENCES trainers (id) ON DELETE CASCADE,
    checkout_session_id text UNIQUE,
    purchase_id bigint REFERENCES purchases (id) ON DELETE SET NULL,
    sold_by_event text,
    refunded_by_event text,
    refunded_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_payments_trainer ON stripe_payments (trainer_id);

CREATE TABLE stripe_events (
    event_id text PRIMARY KEY,
    trainer_id bigint REFERENCES trainers (id) ON DELETE CASCADE,
    account_id text,
    type text NOT NULL,
    outcome text NOT NULL,
    reason text,
    payment_intent text,
    purchase_id bigint REFERENCES purchases (id) ON DELETE SET NULL,
    sessions_cancelled integer,
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stripe_events_outcome_known CHECK (outcome IN
        ('RECEIVED', 'SOLD', 'REFUNDED', 'REFUND_PENDING', 'DUPLICATE', 'IGNORED', 'REJECTED'))
);
CREATE INDEX stripe_events_trainer_received ON stripe_events (trainer_id, received_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON stripe_accounts, stripe_payments, stripe_events
    TO punchcard_api, punchcard_worker;
""" + "".join(_policies(table) for table in TABLES)

DOWNGRADE = """
DROP TABLE stripe_events;
DROP TABLE stripe_payments;
DROP TABLE stripe_accounts;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
