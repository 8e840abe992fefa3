"""Row-level security (migration 0004): a query that forgets its trainer filter, run
through the API's own pool, finds the caller's rows or none, never another trainer's.

These go around the resolvers on purpose: the SQL below has no ``WHERE trainer_id``,
the mistake the policies are there to catch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import asyncpg
import pytest

from punchcard.db import roles
from punchcard.db.pool import Pool, TenantPool
from punchcard.db.types import Executor
from punchcard.settings import Settings
from tests.conftest import Api, in_process
from tests.refusals import build_world

TENANT_TABLES = (
    "clients",
    "offers",
    "purchases",
    "bookings",
    "session_ledger",
    "idempotency_keys",
    "api_keys",
    "reminders",
    "stripe_accounts",
    "stripe_payments",
    "stripe_events",
    "events",
    "event_counters",
    "webhook_endpoints",
    "webhook_deliveries",
    "webhook_attempts",
)


@dataclass
class Tenants:
    pool: TenantPool
    internal: Pool
    a: int
    b: int


@pytest.fixture
async def tenants(settings: Settings, db: asyncpg.Connection) -> AsyncIterator[Tenants]:
    """Two trainers with a full set of rows each, and the app's pools."""
    async with in_process(settings) as (app, http):
        api = Api(http, settings, None).as_trainer("trainer-a")
        await build_world(api, "Ada")
        await build_world(api.as_trainer("trainer-b"), "Bea")
        ids = dict(await db.fetch("SELECT subject, id FROM trainers"))
        await db.execute(  # the sweeper's rows: one reminder per booking
            """
            INSERT INTO reminders (booking_id, trainer_id, remind_at, next_attempt_at)
            SELECT id, trainer_id, starts_at, starts_at FROM bookings
            """
        )
        await db.execute(  # what the Stripe webhook writes: a payment and its event each
            """
            INSERT INTO stripe_payments (payment_intent, trainer_id, purchase_id)
            SELECT 'pi_' || id, trainer_id, id FROM purchases;
            INSERT INTO stripe_events (event_id, trainer_id, type, outcome, payment_intent)
            SELECT 'evt_' || payment_intent, trainer_id, 'checkout.session.completed', 'SOLD',
                   payment_intent
              FROM stripe_payments
            """
        )
        await db.execute(  # the sweeper's rows: one attempt per delivery
            """
            INSERT INTO webhook_attempts (trainer_id, delivery_id, attempt, latency_ms)
            SELECT trainer_id, id, 1, 5 FROM webhook_deliveries
            """
        )
        services = app.state.services
        yield Tenants(services.pool, services.internal, ids["trainer-a"], ids["trainer-b"])


async def trainers_seen(db: Executor, table: str) -> set[int]:
    column = "id" if table == "trainers" else "trainer_id"
    rows = await db.fetch(f"SELECT DISTINCT {column} AS t FROM {table}")
    return {row["t"] for row in rows}


@pytest.mark.parametrize("table", ["trainers", *TENANT_TABLES])
async def test_an_unfiltered_query_sees_only_the_scoped_trainer(
    tenants: Tenants, db: asyncpg.Connection, table: str
) -> None:
    everyone = await trainers_seen(db, table)  # the superuser: what is really there
    assert everyone == {tenants.a, tenants.b}, f"the world should fill {table}"
    assert await trainers_seen(tenants.pool.scoped(tenants.a), table) == {tenants.a}
    assert await trainers_seen(tenants.pool.scoped(tenants.b), table) == {tenants.b}
    assert await trainers_seen(tenants.pool.scoped(None), table) == set()
    assert await trainers_seen(tenants.pool, table) == set()  # unscoped: nobody
    assert await trainers_seen(tenants.internal, table) == everyone


async def test_one_connection_switches_between_trainers(settings: Settings) -> None:
    """With one pooled connection, each checkout sees its own trainer, never the last."""
    async with in_process(replace(settings, pool_min_size=1, pool_max_size=1)) as (app, http):
        api = Api(http, settings, None).as_trainer("trainer-a")
        await build_world(api, "Ada")
        await build_world(api.as_trainer("trainer-b"), "Bea")
        pool: TenantPool = app.state.services.pool
        internal: Pool = app.state.services.internal
        ids = {r["subject"]: r["id"] for r in await internal.fetch("SELECT * FROM trainers")}
        for subject in ["trainer-a", "trainer-b", "trainer-b", "trainer-a", None, "trainer-b"]:
            trainer = ids[subject] if subject else None
            seen = await trainers_seen(pool.scoped(trainer), "purchases")
            assert seen == ({trainer} if trainer else set())


@pytest.mark.drift_planted  # it bumps revisions behind the ledger's back, on purpose
async def test_unfiltered_writes_reach_only_the_scoped_trainer(
    tenants: Tenants, db: asyncpg.Connection
) -> None:
    before = dict(
        await db.fetch("SELECT trainer_id, sum(revision) FROM purchases GROUP BY trainer_id")
    )
    status = await tenants.pool.scoped(tenants.a).execute(
        "UPDATE purchases SET revision = revision + 1000"
    )
    count = await db.fetchval("SELECT count(*) FROM purchases WHERE trainer_id = $1", tenants.a)
    assert status == f"UPDATE {count}"
    after = dict(
        await db.fetch("SELECT trainer_id, sum(revision) FROM purchases GROUP BY trainer_id")
    )
    assert after[tenants.b] == before[tenants.b]
    assert after[tenants.a] == before[tenants.a] + 1000 * count
    assert await tenants.pool.scoped(tenants.a).execute("DELETE FROM api_keys") != "DELETE 0"
    assert await db.fetchval("SELECT count(*) FROM api_keys WHERE trainer_id = $1", tenants.b)


async def test_rows_for_another_trainer_cannot_be_written(tenants: Tenants) -> None:
    as_a = tenants.pool.scoped(tenants.a)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await as_a.execute("INSERT INTO clients (trainer_id, name) VALUES ($1, 'x')", tenants.b)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await as_a.execute("UPDATE clients SET trainer_id = $1", tenants.b)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await tenants.pool.execute("INSERT INTO clients (trainer_id, name) VALUES ($1, 'x')", 1)


async def test_the_ledger_is_append_only_by_privilege(tenants: Tenants) -> None:
    for db in (tenants.pool.scoped(tenants.a), tenants.internal):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await db.execute("UPDATE session_ledger SET reason = 'edited'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await db.execute("DELETE FROM session_ledger")


async def test_the_roles_cannot_bypass_row_security(db: asyncpg.Connection) -> None:
    for role in (roles.API_ROLE, roles.WORKER_ROLE):
        attributes = await db.fetchrow("SELECT * FROM pg_roles WHERE rolname = $1", role)
        assert attributes is not None
        assert not attributes["rolsuper"] and not attributes["rolbypassrls"]
        owned = await db.fetchval(
            "SELECT count(*) FROM pg_class WHERE relowner = $1", attributes["oid"]
        )
        assert owned == 0, f"{role} must not own what it is restricted on"


async def test_every_table_with_a_trainer_has_forced_row_security(
    db: asyncpg.Connection,
) -> None:
    """A new tenant table without policies fails here."""
    tables = await db.fetch(
        """
        SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
               (SELECT array_agg(p.polname ORDER BY p.polname)
                  FROM pg_policy AS p WHERE p.polrelid = c.oid) AS policies
          FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r'
           AND (c.relname = 'trainers' OR EXISTS (
                SELECT FROM pg_attribute AS a
                 WHERE a.attrelid = c.oid AND a.attname = 'trainer_id' AND NOT a.attisdropped))
        """
    )
    assert {t["relname"] for t in tables} == {"trainers", *TENANT_TABLES}
    for table in tables:
        assert table["relrowsecurity"] and table["relforcerowsecurity"], table["relname"]
        assert table["policies"] == ["internal", "tenant"], table["relname"]


async def test_the_api_connects_as_its_own_role(tenants: Tenants) -> None:
    assert await tenants.pool.fetchval("SELECT current_user") == roles.API_ROLE
    assert await tenants.pool.fetchval("SELECT session_user") == roles.API_ROLE
    assert await tenants.internal.fetchval("SELECT current_user") == roles.WORKER_ROLE


def test_role_urls_keep_host_port_and_options() -> None:
    url = "postgresql://owner:secret@db.example:6543/punchcard?sslmode=require"
    assert roles.as_role(url, "punchcard_api") == (
        "postgresql://punchcard_api@db.example:6543/punchcard?sslmode=require"
    )
    socket = "postgresql://postgres:@/t_1?host=/tmp/pg"
    assert (
        roles.as_role(socket, "punchcard_worker")
        == "postgresql://punchcard_worker@/t_1?host=/tmp/pg"
    )
    explicit = Settings(database_url=url, api_database_url="postgresql://api:pw@h/d")
    assert roles.api_url(explicit) == "postgresql://api:pw@h/d"
    assert roles.worker_url(explicit) == roles.as_role(url, roles.WORKER_ROLE)
