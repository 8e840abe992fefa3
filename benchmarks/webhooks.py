"""What the outbox costs ``useSession``, and how fast the sweeper delivers webhooks.

1. ``useSession``'s statement (``db.purchases.USE_SESSION``) back to back on one connection
   as ``punchcard_api`` (``synchronous_commit`` off, as in ``benchmarks.row_security``),
   in rounds that take turns:

   - the outbox trigger disabled (``ALTER TABLE session_ledger DISABLE TRIGGER``): the
     statement as it was before events existed, the baseline;
   - the trigger on, no webhook endpoint;
   - the same with a ``punchcard sweep`` process running (it numbers the events, nothing
     to deliver);
   - the trigger on, an endpoint configured and a ``punchcard sweep`` process sequencing
     and delivering every event to a local receiver at the same time, on the same cores.

2. Events delivered per second: ``--events`` events queued for one endpoint, delivered by
   ``sweeper.delivery.Deliverer`` (claim, sign, POST, record) to a receiver in its own
   process; the baseline is the same number of unsigned POSTs of the same bodies from
   httpx at the same concurrency, with no database, in the same run.

    python -m benchmarks.webhooks [--statements 2000] [--rounds 3] [--events 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace

import asyncpg
import httpx

from benchmarks.harness import bin_path, free_port, fresh_database
from benchmarks.http_api import seed
from punchcard.db import events, roles
from punchcard.db.pool import SCOPE_SQL
from punchcard.db.purchases import USE_SESSION
from punchcard.settings import Settings
from punchcard.sweeper.delivery import Deliverer

TRAINER_ID = 1  # benchmarks.http_api.seed's trainer

RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


@contextlib.contextmanager
def receiver() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    url = f"http://127.0.0.1:{port}/hooks"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.post(url, content=b"{}", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def settings_for(url: str) -> Settings:
    return Settings(database_url=url, webhook_allow_private=True, webhook_concurrency=16)


@contextlib.contextmanager
def delivering(url: str) -> Iterator[None]:
    """A ``punchcard sweep`` process beside the measurement, delivering every event."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PUNCHCARD_WEBHOOK_ALLOW_PRIVATE": "1",
        "PUNCHCARD_SWEEP_POLL_SECONDS": "1",
        "PUNCHCARD_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen([bin_path("punchcard"), "sweep"], env=env)
    try:
        time.sleep(3)  # started, listening, and through its first pass
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


async def statement_rounds(
    url: str, receiver_url: str, packages: list[int], count: int, rounds: int
) -> dict[str, list[float]]:
    owner = await asyncpg.connect(url)
    api = await asyncpg.connect(roles.as_role(url, roles.API_ROLE))
    try:
        await api.execute("SET synchronous_commit = off")
        await api.execute(SCOPE_SQL, str(TRAINER_ID))
        sequencer = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            await events.sequence_all(sequencer)  # the seed's events: not this measurement's
        finally:
            await sequencer.close()

        async def measure() -> float:
            started = time.perf_counter()
            for n in range(count):
                row = await api.fetchrow(
                    USE_SESSION, packages[n % len(packages)], TRAINER_ID, "MANUAL", "bench",
                    None, None, "",
                )  # fmt: skip
                assert row is not None and row["id"] is not None
            return (time.perf_counter() - started) / count * 1e6

        results: dict[str, list[float]] = {
            "outbox trigger off (before)": [],
            "outbox on, no endpoint": [],
            "outbox on, sweeper numbering": [],
            "outbox on, endpoint + delivering": [],
        }
        endpoint = None
        for _ in range(rounds):
            for name in results:
                await owner.execute("VACUUM purchases, session_ledger, events")
                on = name != "outbox trigger off (before)"
                verb = "ENABLE" if on else "DISABLE"
                await owner.execute(
                    f"ALTER TABLE session_ledger {verb} TRIGGER session_ledger_events"
                )
                if name.endswith("delivering"):
                    endpoint = await owner.fetchval(
                        "INSERT INTO webhook_endpoints (trainer_id, url, secret) "
                        "VALUES ($1, $2, 'whsec_' || encode('0123456789abcdef'::bytea, 'base64')) "
                        "RETURNING id",
                        TRAINER_ID,
                        receiver_url,
                    )
                    with delivering(url):
                        await measure()  # warm, and let the sweeper catch up
                        results[name].append(await measure())
                    await owner.execute("DELETE FROM webhook_endpoints WHERE id = $1", endpoint)
                elif name.endswith("numbering"):
                    with delivering(url):
                        await measure()
                        results[name].append(await measure())
                else:
                    await measure()  # warm: the statement is planned again after ALTER
                    results[name].append(await measure())
        return results
    finally:
        await owner.close()
        await api.close()


async def delivery_rate(url: str, receiver_url: str, count: int) -> dict[str, float]:
    owner = await asyncpg.connect(url)
    settings = settings_for(url)
    pool = await asyncpg.create_pool(roles.worker_url(settings), min_size=1, max_size=2)
    try:
        await owner.execute("DELETE FROM webhook_endpoints")
        await events.sequence_all(pool)  # everything so far: not for this endpoint
        await owner.execute(
            "INSERT INTO webhook_endpoints (trainer_id, url, secret) VALUES ($1, $2, $3)",
            TRAINER_ID,
            receiver_url,
            "whsec_MDEyMzQ1Njc4OWFiY2RlZg==",
        )
        await owner.execute(
            """
            INSERT INTO events (trainer_id, type, data)
            SELECT $1, 'session.used', e.data FROM events AS e
             WHERE e.type = 'session.used' ORDER BY e.id DESC LIMIT $2
            """,
            TRAINER_ID,
            count,
        )
        _, fanned = await events.sequence_all(pool)
        assert fanned == count, fanned
        deliverer = Deliverer(replace(settings, webhook_batch_size=200))
        started = time.perf_counter()
        while await deliverer.deliver_pass(pool):
            pass
        pipeline = time.perf_counter() - started
        assert deliverer.delivered == count, (deliverer.delivered, deliverer.failed)
        body = await owner.fetchval("SELECT data::text FROM events ORDER BY id DESC LIMIT 1")
        limit = asyncio.Semaphore(settings.webhook_concurrency)
        async with httpx.AsyncClient(
            limits=httpx.Limits(max_connections=settings.webhook_concurrency)
        ) as http:

            async def post() -> None:
                async with limit:
                    response = await http.post(receiver_url, content=body.encode())
                    assert response.status_code == 204

            started = time.perf_counter()
            await asyncio.gather(*(post() for _ in range(count)))
            raw = time.perf_counter() - started
        return {"deliverer": count / pipeline, "raw httpx POSTs": count / raw}
    finally:
        await pool.close()
        await owner.close()


def main(count: int, rounds: int, event_count: int) -> str:
    with fresh_database() as url, receiver() as receiver_url:
        packages, _ = asyncio.run(seed(url))
        statements = asyncio.run(statement_rounds(url, receiver_url, packages, count, rounds))
        rates = asyncio.run(delivery_rate(url, receiver_url, event_count))
    base = statistics.median(statements["outbox trigger off (before)"])
    lines = [
        f"{'useSession statement, one connection':36} {'us/stmt':>8} {'vs before':>10}  rounds"
    ]
    for name, values in statements.items():
        median = statistics.median(values)
        each = ", ".join(f"{v:.0f}" for v in values)
        lines.append(f"{name:36} {median:8.0f} {median / base:10.2f}  {each}")
    lines.append("")
    lines.append(f"{'webhooks to a local receiver':36} {'per s':>8} {'vs raw':>10}")
    for name, rate in rates.items():
        lines.append(f"{name:36} {rate:8.0f} {rate / rates['raw httpx POSTs']:10.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    print(main(args.statements, args.rounds, args.events))
