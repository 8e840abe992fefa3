"""`punchcard check` on a large ledger, beside a plain scan of the same ledger in the same run.

    .venv/bin/python -m benchmarks.check [--packages 10000] [--entries 20] [--rounds 3]

Starts its own embedded PostgreSQL in a temporary directory and seeds, set-based, one
trainer with ``--packages`` packages of ``--entries`` ledger entries each (uses, then a
few releases; the first five uses charged by COMPLETED bookings), all consistent. Then,
``--rounds`` times each, as ``punchcard_worker`` like the CLI and the sweeper:

- baselines: ``SELECT count(*) FROM session_ledger`` (one scan of the ledger), and the
  cheapest real check, ``sessions_used`` = sum(delta) per package (one aggregate);
- check: ``db.integrity.check`` (every invariant, CHECK constraints included).

It prints the best time of each, entries per second, and the ratios; it
verifies the check finds nothing on the seeded data and exactly the one drift planted
after the timing.

Then what migration 0010's composite foreign keys cost the hot path: ``--statements``
useSession/releaseSession statements (``db.purchases``, one round trip each, each writing
a ledger entry the keys check) with the keys, then with them dropped, ``--rounds`` times
in turn; the median microseconds per statement of each and their ratio.
Wall-clock numbers on a shared machine are noisy: the load is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/check.py` from anywhere
    sys.path.insert(0, str(ROOT))

from punchcard.db import integrity, purchases  # noqa: E402
from punchcard.db.embedded import EmbeddedPostgres  # noqa: E402
from punchcard.db.migrate import upgrade  # noqa: E402
from punchcard.db.roles import WORKER_ROLE, as_role  # noqa: E402

USES = 5  # charged by bookings, per package
SEED = [
    "SET session_replication_role = replica",  # no outbox events while seeding
    "INSERT INTO trainers (subject, name) VALUES ('bench', 'Bench trainer')",
    """
    INSERT INTO clients (trainer_id, name)
    SELECT t.id, 'Client ' || n FROM trainers AS t, generate_series(1, $1::int / 4) AS n
    """,
    # $2 entries per package: uses up to 3/4 of them, then releases.
    """
    INSERT INTO purchases (trainer_id, client_id, sessions_total, sessions_used, revision)
    SELECT c.trainer_id, c.id, $2::int, ($2::int * 3 / 4) - ($2::int - $2::int * 3 / 4), $2::int
      FROM clients AS c, generate_series(1, 4)
     LIMIT $1::int
    """,
    f"""
    INSERT INTO bookings (trainer_id, client_id, purchase_id, starts_at, ends_at, status,
                          charged, completed_by, completed_at)
    SELECT p.trainer_id, p.client_id, p.id, now() - make_interval(days => k),
           now() - make_interval(days => k) + interval '1 hour', 'COMPLETED', true, 'SWEEPER',
           now()
      FROM purchases AS p, generate_series(1, {USES}) AS k
    """,
    f"""
    INSERT INTO session_ledger
        (trainer_id, purchase_id, kind, delta, sessions_used_after, sessions_held_after,
         sessions_total_after, revision, source, actor, booking_id)
    SELECT p.trainer_id, p.id, CASE WHEN g <= u THEN 'USE' ELSE 'RELEASE' END,
           CASE WHEN g <= u THEN 1 ELSE -1 END,
           CASE WHEN g <= u THEN g ELSE 2 * u - g END, 0, p.sessions_total, g, 'MANUAL',
           'bench', b.id
      FROM purchases AS p
     CROSS JOIN LATERAL (SELECT $1::int * 3 / 4 AS u) AS m
     CROSS JOIN generate_series(1, $1::int) AS g
      LEFT JOIN LATERAL (SELECT id FROM bookings AS b
                          WHERE b.purchase_id = p.id ORDER BY b.id OFFSET g - 1 LIMIT 1) AS b
        ON g <= {USES}
    """,
]


def database_url(server_url: str, name: str) -> str:
    before, _, query = server_url.partition("?")
    return f"{before.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


async def seed(url: str, *, packages: int, entries: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SEED[0])
        await conn.execute(SEED[1])
        await conn.execute(SEED[2], packages)
        await conn.execute(SEED[3], packages, entries)
        await conn.execute(SEED[4])
        await conn.execute(SEED[5], entries)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def best_of(rounds: int, run: Callable[[], Awaitable[None]]) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await run()
        times.append(time.perf_counter() - started)
    return min(times)


SUMS = """
SELECT count(*) FROM purchases AS p
  LEFT JOIN (SELECT purchase_id, sum(delta) AS used FROM session_ledger GROUP BY 1) AS e
    ON e.purchase_id = p.id
 WHERE p.sessions_used <> coalesce(e.used, 0)
"""


async def measure(url: str, *, rounds: int) -> tuple[float, float, float, int]:
    worker = await asyncpg.connect(as_role(url, WORKER_ROLE))
    try:
        rows: int = await worker.fetchval("SELECT count(*) FROM session_ledger")
        drifts = await integrity.check(worker)
        assert drifts == [], drifts[:5]

        async def scan() -> None:
            await worker.fetchval("SELECT count(*) FROM session_ledger")

        async def sums() -> None:
            assert await worker.fetchval(SUMS) == 0

        async def check() -> None:
            await integrity.check(worker)

        baseline = await best_of(rounds, scan)
        summed = await best_of(rounds, sums)
        checked = await best_of(rounds, check)
        return baseline, summed, checked, rows
    finally:
        await worker.close()


async def plant_and_find(url: str) -> list[integrity.Drift]:
    owner = await asyncpg.connect(url)
    try:
        await owner.execute("UPDATE purchases SET sessions_used = sessions_used + 1 WHERE id = 1")
        return await integrity.check(owner, skip=["last_entry"])
    finally:
        await owner.close()


KEYS_OFF = """
ALTER TABLE session_ledger DROP CONSTRAINT session_ledger_purchase_trainer;
ALTER TABLE bookings DROP CONSTRAINT bookings_purchase_owner;
"""
KEYS_ON = """
ALTER TABLE session_ledger ADD CONSTRAINT session_ledger_purchase_trainer
    FOREIGN KEY (purchase_id, trainer_id) REFERENCES purchases (id, trainer_id);
ALTER TABLE bookings ADD CONSTRAINT bookings_purchase_owner
    FOREIGN KEY (purchase_id, trainer_id, client_id)
    REFERENCES purchases (id, trainer_id, client_id);
"""


async def statements(conn: asyncpg.Connection, trainer_id: int, count: int) -> float:
    """Microseconds per useSession/releaseSession statement, ``count`` of them."""
    started = time.perf_counter()
    for n in range(count):
        adjust = purchases.use_session if n % 2 == 0 else purchases.release_session
        await adjust(
            conn,
            trainer_id=trainer_id,
            purchase_id=1 + (n // 2) % 1000,
            source="MANUAL",
            actor="bench",
            reason=None,
            key=None,
            request="",
        )
    return (time.perf_counter() - started) / count * 1e6


async def key_cost(url: str, *, count: int, rounds: int) -> tuple[float, float]:
    conn = await asyncpg.connect(url)
    try:
        trainer_id: int = await conn.fetchval("SELECT id FROM trainers")
        await statements(conn, trainer_id, 200)  # warm the statement cache
        on, off = [], []
        for _ in range(rounds):
            on.append(await statements(conn, trainer_id, count))
            await conn.execute(KEYS_OFF)
            off.append(await statements(conn, trainer_id, count))
            await conn.execute(KEYS_ON)
        return statistics.median(on), statistics.median(off)
    finally:
        await conn.close()


async def run(args: argparse.Namespace, server_url: str) -> int:
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute("DROP DATABASE IF EXISTS bench_check WITH (FORCE)")
        await admin.execute("CREATE DATABASE bench_check")
    finally:
        await admin.close()
    url = database_url(server_url, "bench_check")
    await asyncio.to_thread(upgrade, url)
    started = time.perf_counter()
    await seed(url, packages=args.packages, entries=args.entries)
    print(
        f"seeded {args.packages} packages x {args.entries} entries in "
        f"{time.perf_counter() - started:.1f}s (load {os.getloadavg()[0]:.2f})"
    )
    baseline, summed, checked, rows = await measure(url, rounds=args.rounds)
    print(f"baseline count(*) scan: {baseline:.3f}s  {rows / baseline:,.0f} entries/s")
    print(f"baseline sum per package: {summed:.3f}s  {rows / summed:,.0f} entries/s")
    print(
        f"punchcard check:        {checked:.3f}s  {rows / checked:,.0f} entries/s "
        f"({len(integrity.NAMES)} invariants, {rows} entries, {args.packages} packages)"
    )
    print(
        f"ratio check / scan: {checked / baseline:.1f}x, check / sum: {checked / summed:.1f}x "
        f"(load {os.getloadavg()[0]:.2f})"
    )
    found = await plant_and_find(url)
    assert [(d.invariant, d.ref) for d in found] == [("sessions_used", "pur_1")], found
    print(f"planted drift found: {found[0].line()}")
    await owner_repair(url)
    on, off = await key_cost(url, count=args.statements, rounds=args.rounds)
    print(
        f"useSession/releaseSession statement with 0010's keys: {on:.0f} us, without: "
        f"{off:.0f} us, ratio {on / off:.2f} (load {os.getloadavg()[0]:.2f})"
    )
    return 0


async def owner_repair(url: str) -> None:
    owner = await asyncpg.connect(url)
    try:
        await owner.execute("UPDATE purchases SET sessions_used = sessions_used - 1 WHERE id = 1")
    finally:
        await owner.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=int, default=10_000)
    parser.add_argument("--entries", type=int, default=20, help="ledger entries per package")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--statements", type=int, default=2000, help="per round, keys on/off")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="punchcard-bench-check-") as tmp:
        embedded = EmbeddedPostgres(Path(tmp))
        server_url = embedded.start()
        try:
            return asyncio.run(run(args, server_url))
        finally:
            embedded.stop()


if __name__ == "__main__":
    sys.exit(main())
