"""What row-level security costs the hot statement, in PostgreSQL, without HTTP around it.

``useSession``'s statement (``db.purchases.USE_SESSION``) run back to back on one
connection over 1,000 packages (``synchronous_commit`` off, so the WAL flush of every
commit does not drown the difference), three ways, taking turns statement by statement:

- as the owner (a superuser on the embedded server: no policies apply), the baseline;
- as ``punchcard_api`` scoped once to the trainer (what a trainer's burst of requests
  costs: the policies, no extra round trip);
- as ``punchcard_api`` switching trainer before every statement (``set_config`` first:
  what a pooled connection pays when its last request was another trainer's).

    python -m benchmarks.row_security [--statements 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg

from benchmarks.harness import fresh_database
from benchmarks.http_api import seed
from punchcard.db import roles
from punchcard.db.pool import SCOPE_SQL
from punchcard.db.purchases import USE_SESSION

TRAINER_ID = 1  # benchmarks.http_api.seed's trainer


async def timed(
    conn: asyncpg.Connection, package: int, before: Callable[[], Awaitable[object]]
) -> float:
    """Seconds for one statement (and ``before``, which runs ahead of it)."""
    started = time.perf_counter()
    await before()
    row = await conn.fetchrow(USE_SESSION, package, TRAINER_ID, "MANUAL", "bench", None, None, "")
    elapsed = time.perf_counter() - started
    assert row is not None and row["id"] is not None, "a statement was refused"
    return elapsed


async def run(url: str, packages: list[int], count: int, rounds: int) -> dict[str, list[float]]:
    """Per round, the mean microseconds of each way; the ways take turns statement by
    statement, so the machine's drift hits them alike."""
    owner = await asyncpg.connect(url)
    api = await asyncpg.connect(roles.as_role(url, roles.API_ROLE))
    try:
        for conn in (owner, api):  # the WAL flush of each commit would drown the difference
            await conn.execute("SET synchronous_commit = off")
        await api.execute(SCOPE_SQL, str(TRAINER_ID))

        async def nothing() -> None:
            return None

        async def scope() -> None:  # what TenantConnection.scope_to sends on a switch
            await api.execute(SCOPE_SQL, str(TRAINER_ID))

        ways: dict[str, tuple[asyncpg.Connection, Callable[[], Awaitable[object]]]] = {
            "owner (no policies)": (owner, nothing),
            "API role, scoped once": (api, nothing),
            "API role, set_config first": (api, scope),
        }
        for n in range(200):  # warm: prepared statements, caches
            for conn, before in ways.values():
                await timed(conn, packages[n % len(packages)], before)
        results: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(rounds):
            await owner.execute("VACUUM purchases, session_ledger")  # no round pays for another
            totals = dict.fromkeys(ways, 0.0)
            for n in range(count):
                for name, (conn, before) in ways.items():
                    totals[name] += await timed(conn, packages[n % len(packages)], before)
            for name, total in totals.items():
                results[name].append(total / count * 1e6)
        return results
    finally:
        await owner.close()
        await api.close()


def main(count: int, rounds: int) -> str:
    with fresh_database() as url:
        packages, _ = asyncio.run(seed(url))
        results = asyncio.run(run(url, packages, count, rounds))
    base = statistics.median(results["owner (no policies)"])
    lines = [f"{'useSession statement, one connection':40} {'us/stmt':>8} {'vs owner':>9}  rounds"]
    for name, values in results.items():
        median = statistics.median(values)
        each = ", ".join(f"{v:.0f}" for v in values)
        lines.append(f"{name:40} {median:8.0f} {median / base:9.2f}  {each}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(main(args.statements, args.rounds))
