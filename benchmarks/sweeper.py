"""The set-based sweeper against a naive one-booking-at-a-time loop, same run, same data.

    /tmp/v/bin/python -m benchmarks.sweeper [--bookings 10000] [--batch 500]

Starts its own embedded PostgreSQL in a temporary directory, seeds the past bookings
once into a template, and gives each contender its own copy of it:

- naive: list the due bookings, then one transaction per booking through the same
  transition as ``completeBooking`` (``db.bookings.transition``: TRANSITION + SETTLE);
- set-based: ``punchcard.sweeper.worker.Sweeper.sweep_pass``, the real worker code (one claim
  statement with ``FOR UPDATE SKIP LOCKED`` + one SETTLE per batch).

After each it checks the outcome (nothing left CONFIRMED; the ledger sum equals the
charged bookings and every package's sessions_used) and prints bookings/s and the
ratio. Wall-clock numbers on a shared machine are noisy: the load average is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/sweeper.py` from anywhere
    sys.path.insert(0, str(ROOT))

from punchcard.db import bookings  # noqa: E402
from punchcard.db.embedded import EmbeddedPostgres  # noqa: E402
from punchcard.db.migrate import upgrade  # noqa: E402
from punchcard.settings import Settings  # noqa: E402
from punchcard.sweeper.senders import LogSender  # noqa: E402
from punchcard.sweeper.worker import Sweeper  # noqa: E402

PER_CLIENT = 10
GRACE_MINUTES = 15

SEED = [
    "INSERT INTO trainers (subject, name) VALUES ('bench', 'Bench trainer')",
    """
    INSERT INTO clients (trainer_id, name)
    SELECT t.id, 'Client ' || n FROM trainers AS t, generate_series(1, $1::int) AS n
    """,
    # 80 % of clients have enough sessions, 10 % run out half-way (unpaid), 10 % none
    """
    INSERT INTO purchases (trainer_id, client_id, sessions_total)
    SELECT trainer_id, id, CASE WHEN n % 10 = 9 THEN $1::int / 2 ELSE $1::int * 2 END
      FROM (SELECT id, trainer_id, row_number() OVER (ORDER BY id) AS n FROM clients) AS c
     WHERE n % 10 <> 0
    """,
    """
    INSERT INTO bookings (trainer_id, client_id, purchase_id, starts_at, ends_at)
    SELECT c.trainer_id, c.id, p.id, s.starts, s.starts + interval '1 hour'
      FROM (SELECT id, trainer_id, row_number() OVER (ORDER BY id) AS k FROM clients) AS c
      LEFT JOIN purchases AS p ON p.client_id = c.id
     CROSS JOIN LATERAL (
           SELECT now() - interval '60 days' + (g * 10000 + c.k) * interval '1 second' AS starts
             FROM generate_series(1, $1::int) AS g) AS s
    """,
    # Bookings inserted here hold their sessions as createBooking's would (one HOLD entry per
    # package, as migration 0007 recorded existing holds; tests/helpers.HOLD_SEEDED).
    """
    WITH held AS (
        SELECT purchase_id, count(*)::int AS n FROM bookings
         WHERE status = 'CONFIRMED' AND purchase_id IS NOT NULL AND $1::int > 0
         GROUP BY purchase_id
    ), taken AS (
        UPDATE purchases AS p SET sessions_held = h.n, revision = p.revision + 1
          FROM held AS h WHERE p.id = h.purchase_id
        RETURNING p.id, p.trainer_id, p.revision, p.sessions_used, p.sessions_held,
                  p.sessions_total
    )
    INSERT INTO session_ledger
        (trainer_id, purchase_id, kind, delta, held_delta, sessions_used_after,
         sessions_held_after, sessions_total_after, revision, source, actor, reason)
    SELECT trainer_id, id, 'HOLD', 0, sessions_held, sessions_used, sessions_held,
           sessions_total, revision, 'MANUAL', 'bench', 'seeded bookings hold their sessions'
      FROM taken
    """,
]

DUE = f"""
SELECT id, trainer_id FROM bookings
 WHERE status = 'CONFIRMED' AND ends_at < now() - interval '{GRACE_MINUTES} minutes'
 ORDER BY ends_at, id
"""


def database_url(server_url: str, name: str) -> str:
    before, _, query = server_url.partition("?")
    return f"{before.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """As the API's pool: no RESET ALL round trip on release."""


async def pool_for(url: str) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(url, min_size=1, max_size=1, reset=_keep_session)
    return pool


async def naive(pool: asyncpg.Pool, batch: int) -> None:
    for row in await pool.fetch(DUE):
        await bookings.transition(
            pool,
            trainer_id=row["trainer_id"],
            booking_id=row["id"],
            allowed_from=("CONFIRMED",),
            to_status="COMPLETED",
            source="SWEEPER",
            actor="naive-sweeper",
        )


async def set_based(pool: asyncpg.Pool, batch: int) -> None:
    settings = Settings(
        database_url="unused", sweep_batch_size=batch, sweep_grace_minutes=GRACE_MINUTES
    )
    await Sweeper(settings, LogSender()).sweep_pass(pool)


async def verify(conn: asyncpg.Connection, total: int) -> tuple[int, int]:
    """Everything completed, every charge in the ledger once; (charged, unpaid)."""
    row = await conn.fetchrow(
        """
        SELECT count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
               count(*) FILTER (WHERE charged) AS charged,
               count(*) FILTER (WHERE unpaid) AS unpaid,
               (SELECT coalesce(sum(delta), 0) FROM session_ledger) AS ledger,
               (SELECT count(DISTINCT booking_id) FILTER (WHERE delta <> 0) FROM session_ledger)
                   AS ledger_bookings,
               (SELECT sum(sessions_used) FROM purchases) AS used
          FROM bookings
        """
    )
    assert row is not None
    assert row["completed"] == total, row
    assert row["ledger"] == row["charged"] == row["ledger_bookings"] == row["used"], row
    drift = await conn.fetchval(
        """
        SELECT count(*) FROM purchases AS p
         WHERE p.sessions_used <> (SELECT coalesce(sum(delta), 0) FROM session_ledger AS l
                                    WHERE l.purchase_id = p.id)
        """
    )
    assert drift == 0
    return row["charged"], row["unpaid"]


Contender = Callable[[asyncpg.Pool, int], Awaitable[None]]


async def measure(
    admin: asyncpg.Connection, server: str, name: str, run: Contender, total: int, batch: int
) -> float:
    await admin.execute(f"CREATE DATABASE {name} TEMPLATE bench_seed")
    url = database_url(server, name)
    pool = await pool_for(url)
    try:
        started = time.perf_counter()
        await run(pool, batch)
        elapsed = time.perf_counter() - started
        async with pool.acquire() as conn:
            charged, unpaid = await verify(conn, total)
    finally:
        await pool.close()
    rate = total / elapsed
    print(
        f"{name:>14}: {total:,} bookings in {elapsed:7.2f} s = {rate:9,.0f} bookings/s"
        f"  (verified: {charged:,} charged once each, {unpaid:,} unpaid)",
        flush=True,
    )
    return rate


async def main(total: int, batch: int) -> None:
    clients = total // PER_CLIENT
    with tempfile.TemporaryDirectory(prefix="punchcard-bench-") as tmp:
        embedded = EmbeddedPostgres(Path(tmp))
        server = embedded.start()
        try:
            admin: asyncpg.Connection = await asyncpg.connect(server)
            try:
                await admin.execute("CREATE DATABASE bench_seed")
                seed_url = database_url(server, "bench_seed")
                await asyncio.to_thread(upgrade, seed_url)
                seed = await asyncpg.connect(seed_url)
                try:
                    await seed.execute(SEED[0])
                    await seed.execute(SEED[1], clients)
                    await seed.execute(SEED[2], PER_CLIENT)
                    await seed.execute(SEED[3], PER_CLIENT)
                    await seed.execute(SEED[4], PER_CLIENT)
                    await seed.execute("VACUUM ANALYZE")
                finally:
                    await seed.close()
                print(
                    f"{clients * PER_CLIENT:,} past bookings of {clients:,} clients;"
                    f" load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
                    flush=True,
                )
                slow = await measure(admin, server, "naive", naive, clients * PER_CLIENT, batch)
                fast = await measure(
                    admin, server, f"set_{batch}", set_based, clients * PER_CLIENT, batch
                )
            finally:
                await admin.close()
        finally:
            embedded.stop()
    print(
        f"set-based / naive: {fast / slow:.1f}x  (load average now {os.getloadavg()[0]:.2f};"
        " timings on a shared machine are noisy)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bookings", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500, help="set-based batch size")
    options = parser.parse_args()
    asyncio.run(main(options.bookings, options.batch))
