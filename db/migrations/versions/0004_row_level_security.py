"""Row-level security: a trainer's rows are visible only to a connection scoped to them.

Three roles, one job each (``db/roles.py`` connects as them):

- the owner (``DATABASE_URL``) runs the migrations and owns the tables. ``FORCE ROW
  LEVEL SECURITY`` subjects it to the policies too, and it has none: as the owner it
  sees no tenant rows (a superuser still does; PostgreSQL exempts superusers).
- ``punchcard_api``, the API's role: neither superuser nor owner nor ``BYPASSRLS``. Its
  policy shows a row only when the row's trainer is ``current_trainer_id()``, the
  connection's ``app.trainer_id`` setting, set by ``db.pool.TenantPool`` on every
  checkout. Unset, nothing is visible and nothing can be written.
- ``punchcard_worker``, for what reads across trainers by design: the sweeper, the live
  hub's change feed, the LISTEN connection, authentication (an API key is found by its
  secret before its trainer is known) and provisioning trainers on first sign-in.

The roles are created when missing (they belong to the cluster, not the database, so
every database migrated on the server shares them); creating them needs CREATEROLE, or
create them beforehand (README, "Database roles"). They can log in without a password,
which only trust or peer authentication allows (the embedded server); elsewhere give
them passwords and point ``PUNCHCARD_API_DATABASE_URL``/``PUNCHCARD_WORKER_DATABASE_URL``
at them. The ledger stays append-only by privilege too: neither role may UPDATE or
DELETE it. Referential integrity checks bypass row security, as PostgreSQL defines.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from punchcard.db.migrations.script import run_script

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TENANT_TABLES = (
    "clients",
    "offers",
    "purchases",
    "bookings",
    "session_ledger",
    "idempotency_keys",
    "api_keys",
    "reminders",
)
ALL_TABLES = ("trainers", *TENANT_TABLES)


def _policies(table: str) -> str:
    owner = "id" if table == "trainers" else "trainer_id"
    return f"""
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON {table} TO punchcard_api
    USING ({owner} = current_trainer_id()) WITH CHECK ({owner} = current_trainer_id());
CREATE POLICY internal ON {table} TO punchcard_worker USING (true) WITH CHECK (true);
"""


UPGRADE = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'punchcard_api') THEN
        CREATE ROLE punchcard_api LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'punchcard_worker') THEN
        CREATE ROLE punchcard_worker LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
END $$;

CREATE FUNCTION current_trainer_id() RETURNS bigint LANGUAGE sql STABLE PARALLEL SAFE
    RETURN nullif(current_setting('app.trainer_id', true), '')::bigint;

GRANT USAGE ON SCHEMA public TO punchcard_api, punchcard_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON
    trainers, clients, offers, purchases, bookings, idempotency_keys, api_keys, reminders
    TO punchcard_api, punchcard_worker;
GRANT SELECT, INSERT ON session_ledger TO punchcard_api, punchcard_worker;
GRANT SELECT ON alembic_version TO punchcard_api, punchcard_worker;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO punchcard_api, punchcard_worker;
""" + "".join(_policies(table) for table in ALL_TABLES)

DOWNGRADE = (
    "".join(
        f"""
DROP POLICY internal ON {table};
DROP POLICY tenant ON {table};
ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY;
ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;
"""
        for table in ALL_TABLES
    )
    + """
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM punchcard_api, punchcard_worker;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM punchcard_api, punchcard_worker;
REVOKE USAGE ON SCHEMA public FROM punchcard_api, punchcard_worker;
DROP FUNCTION current_trainer_id();
"""
)


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
