"""The tables as SQLAlchemy Core metadata: Alembic's target and the drift test's reference.

The migrations in ``db/migrations/versions`` create exactly this; ``tests/test_schema.py``
fails when the two disagree.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()


def _created_at() -> Column[object]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


def _trainer_fk() -> Column[int]:
    return Column(
        "trainer_id", BigInteger, ForeignKey("trainers.id", ondelete="CASCADE"), nullable=False
    )


trainers = Table(
    "trainers",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("subject", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False, server_default=""),
    Column("email", Text),
    Column("timezone", Text, nullable=False, server_default="UTC"),
    Column("reminder_hours_before", Integer, nullable=False, server_default="24"),
    _created_at(),
)

clients = Table(
    "clients",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _trainer_fk(),
    Column("name", Text, nullable=False),
    Column("email", Text),
    Column("phone", Text),
    Column("timezone", Text),
    _created_at(),
    CheckConstraint("length(name) BETWEEN 1 AND 200", name="clients_name_length"),
    Index("clients_trainer_name", "trainer_id", "name", "id"),
)

offers = Table(
    "offers",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _trainer_fk(),
    Column("name", Text, nullable=False),
    Column("sessions_total", Integer, nullable=False),
    Column("valid_days", Integer),
    Column("price_cents", Integer),
    _created_at(),
    CheckConstraint("sessions_total > 0", name="offers_sessions_total_positive"),
    CheckConstraint("valid_days IS NULL OR valid_days > 0", name="offers_valid_days_positive"),
    Index("offers_trainer", "trainer_id"),
)

purchases = Table(
    "purchases",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _trainer_fk(),
    Column("client_id", BigInteger, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False),
    Column("offer_id", BigInteger, ForeignKey("offers.id", ondelete="SET NULL")),
    Column("sessions_total", Integer, nullable=False),
    Column("sessions_used", Integer, nullable=False, server_default="0"),
    Column("expires_at", DateTime(timezone=True)),
    Column("status", Text, nullable=False, server_default="ACTIVE"),
    Column("revision", Integer, nullable=False, server_default="0"),
    _created_at(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("sessions_total > 0", name="purchases_sessions_total_positive"),
    CheckConstraint(
        "sessions_used BETWEEN 0 AND sessions_total", name="purchases_sessions_used_in_range"
    ),
    CheckConstraint(
        "status IN ('ACTIVE', 'FROZEN', 'CANCELLED', 'EXPIRED')", name="purchases_status_known"
    ),
    CheckConstraint("revision >= 0", name="purchases_revision_non_negative"),
    Index("purchases_client", "client_id", "expires_at"),
    Index("purchases_trainer", "trainer_id"),
)

bookings = Table(
    "bookings",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _trainer_fk(),
    Column("client_id", BigInteger, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False),
    Column("purchase_id", BigInteger, ForeignKey("purchases.id", ondelete="SET NULL")),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("status", Text, nullable=False, server_default="CONFIRMED"),
    Column("charged", Boolean, nullable=False, server_default=text("false")),
    Column("unpaid", Boolean, nullable=False, server_default=text("false")),
    Column("late_cancel", Boolean, nullable=False, server_default=text("false")),
    Column("completed_by", Text),
    Column("completed_at", DateTime(timezone=True)),
    Column("reminder_sent_at", DateTime(timezone=True)),
    _created_at(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("ends_at > starts_at", name="bookings_ends_after_start"),
    CheckConstraint(
        "status IN ('CONFIRMED', 'COMPLETED', 'CANCELLED', 'NO_SHOW')", name="bookings_status_known"
    ),
    CheckConstraint(
        "completed_by IS NULL OR completed_by IN ('MANUAL', 'CALENDAR', 'SWEEPER', 'INTEGRATION')",
        name="bookings_completed_by_known",
    ),
    CheckConstraint("NOT (charged AND unpaid)", name="bookings_charged_or_unpaid"),
    Index("bookings_trainer_starts", "trainer_id", "starts_at"),
    Index("bookings_purchase", "purchase_id"),
    Index("bookings_due", "ends_at", postgresql_where=text("status = 'CONFIRMED'")),
)

session_ledger = Table(
    "session_ledger",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _trainer_fk(),
    Column(
        "purchase_id", BigInteger, ForeignKey("purchases.id", ondelete="CASCADE"), nullable=False
    ),
    Column("delta", SmallInteger, nullable=False),
    Column("sessions_used_after", Integer, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("source", Text, nullable=False),
    Column("booking_id", BigInteger, ForeignKey("bookings.id", ondelete="SET NULL")),
    Column("actor", Text, nullable=False),
    Column("reason", Text),
    Column("idempotency_key", Text),
    _created_at(),
    CheckConstraint("delta IN (-1, 0, 1)", name="session_ledger_delta_unit"),
    CheckConstraint(
        "source IN ('MANUAL', 'CALENDAR', 'SWEEPER', 'INTEGRATION')", name="session_ledger_source"
    ),
    UniqueConstraint("purchase_id", "revision", name="session_ledger_purchase_revision"),
    Index("session_ledger_trainer_id", "trainer_id", "id"),
    Index("session_ledger_booking", "booking_id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column(
        "trainer_id", BigInteger, ForeignKey("trainers.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("key", Text, primary_key=True),
    Column("request", Text, nullable=False),
    Column("result", JSONB, nullable=False),
    _created_at(),
    CheckConstraint("length(key) BETWEEN 1 AND 255", name="idempotency_keys_key_length"),
    Index("idempotency_keys_created", "created_at"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _trainer_fk(),
    Column("name", Text, nullable=False),
    Column("secret_hash", Text, nullable=False, unique=True),
    Column("prefix", Text, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    _created_at(),
    Index("api_keys_trainer", "trainer_id"),
)

# Migration 0002: one reminder per booking (claimed, retried with backoff, sent once),
# and the index the reminder claim scans.
reminders = Table(
    "reminders",
    metadata,
    Column(
        "booking_id",
        BigInteger,
        ForeignKey("bookings.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    _trainer_fk(),
    Column("remind_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    Column("last_error", Text),
    _created_at(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("attempts >= 0", name="reminders_attempts_non_negative"),
    Index("reminders_trainer", "trainer_id"),
)

Index(
    "bookings_reminder_due",
    bookings.c.starts_at,
    postgresql_where=text("status = 'CONFIRMED' AND reminder_sent_at IS NULL"),
)

# Migration 0003 (live updates): the transaction that wrote each row last, and the
# indexes the change feed reads by. See db/changes.py.
for _table in (purchases, bookings, session_ledger):
    _table.append_column(
        Column(
            "changed_xid",
            BigInteger,
            nullable=False,
            server_default=text("current_xid()"),
        )
    )
Index("bookings_trainer_changed", bookings.c.trainer_id, bookings.c.changed_xid)
Index("session_ledger_trainer_changed", session_ledger.c.trainer_id, session_ledger.c.changed_xid)

# Migration 0005 (Stripe): the account binding, one row per payment intent, and every
# processed event id with its outcome. See db/stripe.py.
stripe_accounts = Table(
    "stripe_accounts",
    metadata,
    Column("account_id", Text, primary_key=True),
    _trainer_fk(),
    _created_at(),
    Index("stripe_accounts_trainer", "trainer_id"),
)

stripe_payments = Table(
    "stripe_payments",
    metadata,
    Column("payment_intent", Text, primary_key=True),
    _trainer_fk(),
    Column("checkout_session_id", Text, unique=True),
    Column("purchase_id", BigInteger, ForeignKey("purchases.id", ondelete="SET NULL")),
    Column("sold_by_event", Text),
    Column("refunded_by_event", Text),
    Column("refunded_at", DateTime(timezone=True)),
    _created_at(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("stripe_payments_trainer", "trainer_id"),
)


stripe_events = Table(
    "stripe_events",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("trainer_id", BigInteger, ForeignKey("trainers.id", ondelete="CASCADE")),
    Column("account_id", Text),
    Column("type", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("reason", Text),
    Column("payment_intent", Text),
    Column("purchase_id", BigInteger, ForeignKey("purchases.id", ondelete="SET NULL")),
    Column("sessions_cancelled", Integer),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "outcome IN ('RECEIVED', 'SOLD', 'REFUNDED', 'REFUND_PENDING', 'DUPLICATE', 'IGNORED', "
        "'REJECTED')",
        name="stripe_events_outcome_known",
    ),
    Index("stripe_events_trainer_received", "trainer_id", "received_at"),
)


# Migration 0006 (events and webhooks): who changed a booking or package last, the
# outbox, its per-trainer counters, endpoints, deliveries and attempts. See db/events.py
# and db/webhooks.py.
for _table in (purchases, bookings):
    _table.append_column(Column("changed_by", Text))
    _table.append_column(Column("change_source", Text))
Index("purchases_expires", purchases.c.expires_at, postgresql_where=text("status = 'ACTIVE'"))


def _updated_at() -> Column[object]:
    return Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now())


events = Table(
    "events",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _trainer_fk(),
    Column("seq", BigInteger),
    Column("type", Text, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("dedupe_key", Text),
    _created_at(),
    CheckConstraint("seq > 0", name="events_seq_positive"),
    Index("events_trainer_seq", "trainer_id", "seq", unique=True),
    Index("events_unsequenced", "trainer_id", "id", postgresql_where=text("seq IS NULL")),
    Index(
        "events_dedupe",
        "trainer_id",
        "dedupe_key",
        unique=True,
        postgresql_where=text("dedupe_key IS NOT NULL"),
    ),
)

event_counters = Table(
    "event_counters",
    metadata,
    Column(
        "trainer_id",
        BigInteger,
        ForeignKey("trainers.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _trainer_fk(),
    Column("url", Text, nullable=False),
    Column("description", Text),
    Column("event_types", ARRAY(Text), nullable=False, server_default="{}"),
    Column("secret", Text, nullable=False),
    Column("enabled", Boolean, nullable=False, server_default="true"),
    Column("disabled_reason", Text),
    Column("failing_since", DateTime(timezone=True)),
    _created_at(),
    _updated_at(),
    Index("webhook_endpoints_trainer", "trainer_id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _trainer_fk(),
    Column(
        "endpoint_id",
        BigInteger,
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("event_id", BigInteger, ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
    Column("status", Text, nullable=False, server_default="PENDING"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("delivered_at", DateTime(timezone=True)),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    _created_at(),
    _updated_at(),
    CheckConstraint(
        "status IN ('PENDING', 'DELIVERED', 'FAILED')", name="webhook_deliveries_status_known"
    ),
    Index("webhook_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'PENDING'")),
    Index("webhook_deliveries_endpoint", "endpoint_id", "id"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _trainer_fk(),
    Column(
        "delivery_id",
        BigInteger,
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempt", Integer, nullable=False),
    Column("status_code", Integer),
    Column("latency_ms", Integer, nullable=False),
    Column("error", Text),
    _created_at(),
    Index("webhook_attempts_delivery", "delivery_id", "id"),
)


# Migration 0007 (package lifecycle): held sessions, frozen and expired packages, the
# trainer's late-cancel policy, and ledger entries for every change of a package's counts.
trainers.append_column(Column("late_cancel_hours", Integer))
purchases.append_column(Column("sessions_held", Integer, nullable=False, server_default="0"))
purchases.append_column(Column("frozen_at", DateTime(timezone=True)))
purchases.append_column(Column("frozen_until", DateTime(timezone=True)))
purchases.append_column(Column("sessions_expired", Integer))
purchases.append_column(Column("cancel_reason", Text))
Index("purchases_thaw", purchases.c.frozen_until, postgresql_where=text("status = 'FROZEN'"))
bookings.append_column(Column("overbooked", Boolean, nullable=False, server_default=text("false")))
bookings.append_column(Column("assigned_reason", Text))
session_ledger.append_column(Column("kind", Text, nullable=False))
session_ledger.append_column(Column("held_delta", Integer, nullable=False, server_default="0"))
session_ledger.append_column(Column("total_delta", Integer, nullable=False, server_default="0"))
session_ledger.append_column(Column("sessions_held_after", Integer, nullable=False))
session_ledger.append_column(Column("sessions_total_after", Integer, nullable=False))
session_ledger.append_column(
    Column("related_purchase_id", BigInteger, ForeignKey("purchases.id", ondelete="SET NULL"))
)
session_ledger.append_column(Column("detail", JSONB))
Index(
    "session_ledger_purchase_created",
    session_ledger.c.purchase_id,
    session_ledger.c.created_at,
    session_ledger.c.id,
)

# Migration 0008 (booking charges): a booking's charge is its outstanding USE entry.
session_ledger.append_constraint(
    UniqueConstraint("id", "booking_id", name="session_ledger_id_booking")
)
bookings.append_column(Column("charge_entry_id", BigInteger))
bookings.append_constraint(
    ForeignKeyConstraint(
        ["charge_entry_id", "id"],
        ["session_ledger.id", "session_ledger.booking_id"],
        name="bookings_charge_entry",
        use_alter=True,  # bookings and session_ledger name each other
    )
)
bookings.append_constraint(UniqueConstraint("charge_entry_id", name="bookings_charge_entry_once"))
bookings.append_constraint(
    CheckConstraint("charged = (charge_entry_id IS NOT NULL)", name="bookings_charged_by_entry")
)
Index(
    "bookings_purchase_charges",
    bookings.c.purchase_id,
    bookings.c.charge_entry_id,
    postgresql_where=text("charge_entry_id IS NOT NULL"),
)

# Migration 0010 (the ledger checks itself): an entry belongs to its package's trainer, a
# booking's package to the booking's trainer and client (composite foreign keys).
purchases.append_constraint(UniqueConstraint("id", "trainer_id", name="purchases_id_trainer"))
purchases.append_constraint(
    UniqueConstraint("id", "trainer_id", "client_id", name="purchases_id_trainer_client")
)
session_ledger.append_constraint(
    ForeignKeyConstraint(
        ["purchase_id", "trainer_id"],
        ["purchases.id", "purchases.trainer_id"],
        name="session_ledger_purchase_trainer",
    )
)
bookings.append_constraint(
    ForeignKeyConstraint(
        ["purchase_id", "trainer_id", "client_id"],
        ["purchases.id", "purchases.trainer_id", "purchases.client_id"],
        name="bookings_purchase_owner",
    )
)
