"""Live updates: how fast a committed change reaches every open subscription.

One ``punchcard serve`` process (a fresh one per measurement) on its own embedded
PostgreSQL. N WebSocket subscriptions (graphql-transport-ws, ``purchaseUpdated`` on one
package, one per socket, each with its own operation id) are opened by lean client
processes (a raw-socket WebSocket client: parsing frames with a library costs more CPU
than the server spends sending them). The driver commits changes with the same guarded
statement the API runs, one at a time, and measures:

- commit-to-delivery latency seen by the clients (receive time - commit time, per
  socket and change; one CLOCK_MONOTONIC across processes) at 200 and 1,000;
- the server's own fan-out time per change — from receiving the notification to
  handing the last frame to the socket (the hub records it) — at 1,000 and 10,000,
  with the client processes stopped while it runs (co-located clients woken by every
  frame would be measured instead: a real client is not on the server's cores);
- memory per idle subscription: the server's RSS growth over 10,000 subscribed
  sockets, divided by 10,000 (and per extra subscription on an open socket);
- the first change after the sockets connect is reported on its own: it pays one-time
  costs of the ramp-up (kernel buffers for the first burst, the collector catching up
  with the new connections' objects), the percentiles are over the changes after it;
- the baseline, in the same run: the same hub executing and encoding each change once
  per subscriber instead of once per document (PUNCHCARD_LIVE_NAIVE=1).

Everything shares 2 cores with PostgreSQL and the clients (and whatever else runs):
numbers are noisy, compare them within one run.

    python -m benchmarks.live_updates [--events 40] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import statistics
import struct
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import asyncpg
import httpx

from benchmarks.harness import bin_path, free_port, fresh_database, serving
from punchcard.db import purchases as db_purchases
from punchcard.gql.auth import issue_token
from punchcard.settings import DEV_JWT_SECRET, Settings

DOCUMENT = (
    "subscription($id: ID!) { purchaseUpdated(purchaseId: $id) { revision snapshot "
    "purchase { id sessionsUsed sessionsRemaining sessionsTotal status revision } "
    "entry { id delta source actor createdAt } } }"
)
SUBJECT = "bench-live"


# -- the lean client (runs in worker processes) ---------------------------------------


def _frame(text: str) -> bytes:
    """A masked client text frame."""
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return header + mask + masked


_PONG = b"\x8a\x80" + b"\0\0\0\0"


def _revision(payload: bytes) -> int:
    start = payload.index(b'"revision":') + 11
    end = start
    while payload[end : end + 1].isdigit():
        end += 1
    return int(payload[start:end])


class LeanClient(asyncio.Protocol):
    """One socket, one subscription; records when each revision arrives."""

    def __init__(
        self, host: str, port: int, token: str, purchase: str, subscriptions: int,
        seen: dict[int, list[float]] | None, ready: asyncio.Future[None],
    ) -> None:  # fmt: skip
        self.host, self.port, self.token, self.purchase = host, port, token, purchase
        self.subscriptions = subscriptions
        self.seen = seen
        self.ready = ready
        self.buffer = b""
        self.upgraded = False
        self.snapshots = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET /graphql HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
            ).encode()
        )

    def send(self, message: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(_frame(json.dumps(message)))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        if not self.upgraded:
            head, sep, rest = buffer.partition(b"\r\n\r\n")
            if not sep:
                self.buffer = buffer
                return
            assert head.startswith(b"HTTP/1.1 101"), head
            self.upgraded = True
            buffer = rest
            self.send({"type": "connection_init", "payload": {"token": self.token}})
        while len(buffer) >= 2:
            opcode, n, offset = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if n == 126:
                if len(buffer) < 4:
                    break
                n, offset = struct.unpack_from("!H", buffer, 2)[0], 4
            elif n == 127:
                if len(buffer) < 10:
                    break
                n, offset = struct.unpack_from("!Q", buffer, 2)[0], 10
            if len(buffer) < offset + n:
                break
            payload, buffer = buffer[offset : offset + n], buffer[offset + n :]
            if opcode == 1:
                self.on_text(payload)
            elif opcode == 9:
                assert self.transport is not None
                self.transport.write(_PONG)
        self.buffer = buffer

    def on_text(self, payload: bytes) -> None:
        if b'"next"' in payload:
            if b'"snapshot":true' in payload:
                self.snapshots += 1
                if self.snapshots == self.subscriptions and not self.ready.done():
                    self.ready.set_result(None)
            elif self.seen is not None:
                self.seen[_revision(payload)].append(time.monotonic())
        elif b'"connection_ack"' in payload:
            for _ in range(self.subscriptions):
                self.send(
                    {
                        "id": uuid.uuid4().hex,
                        "type": "subscribe",
                        "payload": {"query": DOCUMENT, "variables": {"id": self.purchase}},
                    }
                )
        elif b'"error"' in payload:
            self.ready.set_exception(RuntimeError(payload.decode()))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before subscribing"))


async def _clients(
    pipe: Connection, host: str, port: int, token: str, purchase: str, count: int,
    subscriptions: int, record: bool,
) -> None:  # fmt: skip
    loop = asyncio.get_running_loop()
    seen: dict[int, list[float]] = defaultdict(list)
    transports = []
    for first in range(0, count, 200):
        batch = []
        for _ in range(min(200, count - first)):
            ready: asyncio.Future[None] = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda ready=ready: LeanClient(  # type: ignore[misc]
                    host, port, token, purchase, subscriptions, seen if record else None, ready
                ),
                host,
                port,
            )
            transports.append(transport)
            batch.append(ready)
        await asyncio.gather(*batch)
    pipe.send(("ready", len(transports)))
    readable = asyncio.Event()
    loop.add_reader(pipe.fileno(), readable.set)
    while True:
        await readable.wait()
        readable.clear()
        while pipe.poll():
            command = pipe.recv()
            if command == "done":
                loop.remove_reader(pipe.fileno())
                pipe.send(("seen", dict(seen)))
                for transport in transports:
                    transport.abort()
                return
            # "pause": stop this whole process (not even epoll wake-ups) until "resume".
            assert command == "pause", command
            pipe.send((command, len(transports)))
            pipe.poll(None)  # blocks the process (the loop made the pipe non-blocking)
            assert pipe.recv() == "resume"
            pipe.send(("resume", len(transports)))


def _worker(pipe: Connection, *args: Any) -> None:
    import uvloop

    uvloop.run(_clients(pipe, *args))


@contextmanager
def subscribed(
    url: str, token: str, purchase: str, count: int, *, processes: int,
    subscriptions: int = 1, record: bool = True,
) -> Iterator[list[Connection]]:  # fmt: skip
    """``count`` sockets with ``subscriptions`` each, spread over client processes."""
    host, port = url.removeprefix("http://").split(":")
    context = multiprocessing.get_context("spawn")
    pipes, workers = [], []
    for i in range(processes):
        share = count // processes + (1 if i < count % processes else 0)
        parent, child = context.Pipe()
        worker = context.Process(
            target=_worker,
            args=(child, host, int(port), token, purchase, share, subscriptions, record),
            daemon=True,
        )
        worker.start()
        pipes.append(parent)
        workers.append(worker)
    try:
        for pipe in pipes:
            kind, _ = pipe.recv()
            assert kind == "ready"
        yield pipes
    finally:
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.kill()


def broadcast(pipes: list[Connection], command: str) -> None:
    """Tell every client process to ``pause`` (block) or ``resume``; wait until done."""
    for pipe in pipes:
        pipe.send(command)
    for pipe in pipes:
        assert pipe.recv()[0] == command


def collect(pipes: list[Connection]) -> dict[int, list[float]]:
    seen: dict[int, list[float]] = defaultdict(list)
    for pipe in pipes:
        pipe.send("done")
    for pipe in pipes:
        kind, part = pipe.recv()
        assert kind == "seen"
        for revision, times in part.items():
            seen[revision] += times
    return seen


# -- the driver -----------------------------------------------------------------------


@dataclass
class Result:
    name: str
    subscriptions: int
    latency_ms: list[float] = field(default_factory=list)  # client-side
    fanout_ms: list[float] = field(default_factory=list)  # server-side
    delivered: int = 0
    expected: int = 0
    rss_per_subscription: float | None = None
    first_ms: float | None = None  # the first change after connecting (not in the rest)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def seed(database: str) -> tuple[int, str]:
    conn = await asyncpg.connect(database)
    try:
        trainer = await conn.fetchval(
            "INSERT INTO trainers (subject) VALUES ($1) RETURNING id", SUBJECT
        )
        client = await conn.fetchval(
            "INSERT INTO clients (trainer_id, name) VALUES ($1, 'Ada') RETURNING id", trainer
        )
        purchase = await conn.fetchval(
            "INSERT INTO purchases (trainer_id, client_id, sessions_total) "
            "VALUES ($1, $2, 1000) RETURNING id",
            trainer,
            client,
        )
    finally:
        await conn.close()
    return trainer, f"pur_{purchase}"


class Changer:
    """Commits changes with the API's own guarded statements; remembers commit times."""

    def __init__(self, conn: asyncpg.Connection, trainer: int, purchase: str) -> None:
        self.conn, self.trainer, self.purchase = conn, trainer, int(purchase.split("_")[1])
        self.committed: dict[int, float] = {}
        self.flip = False

    async def change(self) -> int:
        adjust = db_purchases.release_session if self.flip else db_purchases.use_session
        self.flip = not self.flip
        row = await adjust(
            self.conn, trainer_id=self.trainer, purchase_id=self.purchase, source="INTEGRATION",
            actor="bench", reason=None, key=None, request="",
        )  # fmt: skip
        self.committed[row["revision"]] = time.monotonic()
        revision: int = row["revision"]
        return revision


async def server_stats(http: httpx.AsyncClient, query: str = "") -> dict[str, Any]:
    stats: dict[str, Any] = (await http.get(f"/debug/live{query}")).json()
    return stats


async def measure(
    url: str, database: str, trainer: int, purchase: str, token: str, *, name: str,
    count: int, events: int, processes: int, record: bool, memory: bool = False,
    subscriptions: int = 1, quiet: bool = False,
) -> Result:  # fmt: skip
    """``quiet``: the clients stop reading while a change fans out (so the server-side time
    is the server's, not waking co-located client processes), and catch up after it."""
    result = Result(name, count * subscriptions)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        conn = await asyncpg.connect(database)
        changer = Changer(conn, trainer, purchase)
        try:
            # Warm up: code paths loaded, a group created and gone, before measuring RSS.
            with subscribed(url, token, purchase, 1, processes=1) as pipes:
                await changer.change()
                await asyncio.sleep(0.2)
                collect(pipes)
            await asyncio.sleep(0.5)
            before = await server_stats(http, "?reset=1")
            with subscribed(
                url, token, purchase, count, processes=processes,
                subscriptions=subscriptions, record=record,
            ) as pipes:  # fmt: skip
                idle = await server_stats(http)
                assert idle["subscribers"] == count * subscriptions, idle
                if memory:
                    grown = idle["rss_bytes"] - before["rss_bytes"]
                    result.rss_per_subscription = grown / (count * subscriptions)
                samples = idle["fanout_samples"]
                loop = asyncio.get_running_loop()
                for _ in range(events + 1):  # the first one is reported on its own
                    if quiet:
                        await loop.run_in_executor(None, broadcast, pipes, "pause")
                    await changer.change()
                    async with asyncio.timeout(120):  # the hub recorded this change
                        while (await server_stats(http))["fanout_samples"] <= samples:
                            await asyncio.sleep(0.01)
                    samples += 1
                    if quiet:
                        await loop.run_in_executor(None, broadcast, pipes, "resume")
                    await asyncio.sleep(0.1 if count <= 1000 else 0.3)
                await asyncio.sleep(1.0)  # let the clients read the last frames
                stats = await server_stats(http, "?samples=1&reset=1")
                seen = collect(pipes)
        finally:
            await conn.close()
    first, *rest = [s * 1000 for s in stats["fanout_seconds"]]
    result.first_ms, result.fanout_ms = first, rest
    if record:
        revisions = sorted(changer.committed)[-events:]  # after the warm-up and the first
        for revision in revisions:
            committed = changer.committed[revision]
            result.latency_ms += [(t - committed) * 1000 for t in seen.get(revision, [])]
        result.delivered = sum(len(seen.get(r, [])) for r in revisions)
        result.expected = events * count * subscriptions
    return result


@contextmanager
def server(database: str, *, naive: bool = False) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "JWT_SECRET": DEV_JWT_SECRET,
        "PUNCHCARD_DEBUG_STATS": "1",
        "PUNCHCARD_LIVE_NAIVE": "1" if naive else "0",
        "PUNCHCARD_WS_MAX_OPERATIONS": "100",
    }
    with serving([bin_path("punchcard"), "serve", "--port", str(port)], env, port) as url:
        yield url


def report(results: list[Result]) -> None:
    print()
    print(
        f"{'measurement':<44} {'subs':>6}  {'client p50/p99/max ms':>24}  "
        f"{'server fan-out p50/p99/max ms':>30}"
    )
    for r in results:
        client = (
            f"{pct(r.latency_ms, 0.5):6.1f} {pct(r.latency_ms, 0.99):7.1f} {max(r.latency_ms):7.1f}"
            if r.latency_ms
            else "-"
        )
        server = (
            f"{pct(r.fanout_ms, 0.5):7.1f} {pct(r.fanout_ms, 0.99):8.1f} {max(r.fanout_ms):8.1f}"
            if r.fanout_ms
            else "-"
        )
        print(f"{r.name:<44} {r.subscriptions:>6}  {client:>24}  {server:>30}")
        if r.expected:
            print(f"{'':<44} delivered {r.delivered}/{r.expected} frames")
        if r.first_ms is not None:
            print(f"{'':<44} first change after connecting: {r.first_ms:.1f} ms (server)")
        if r.rss_per_subscription is not None:
            print(f"{'':<44} memory per idle subscription: {r.rss_per_subscription / 1024:.1f} KB")


def ratio(grouped: Result, naive: Result) -> None:
    if grouped.fanout_ms and naive.fanout_ms:
        p50 = statistics.median(naive.fanout_ms) / statistics.median(grouped.fanout_ms)
        print(f"baseline / grouped fan-out at {grouped.subscriptions}: {p50:.1f}x (p50)")
    if grouped.latency_ms and naive.latency_ms:
        p99 = pct(naive.latency_ms, 0.99) / pct(grouped.latency_ms, 0.99)
        print(f"baseline / grouped client p99 at {grouped.subscriptions}: {p99:.1f}x")


async def run(events: int, quick: bool, only: str | None) -> None:
    scale = 10 if quick else 1
    token = issue_token(Settings(jwt_secret=DEV_JWT_SECRET), SUBJECT, ttl_seconds=86400)
    print(f"load average before: {os.getloadavg()}")
    with fresh_database() as database:
        trainer, purchase = await seed(database)
        common = {"database": database, "trainer": trainer, "purchase": purchase, "token": token}
        results: list[Result] = []

        async def run_one(naive: bool = False, **options: Any) -> None:
            label = f"{options['name']} {options['count'] * scale}"
            if only and only not in label:
                return
            with server(database, naive=naive) as url:
                results.append(await measure(url, **common, **options))

        for count, processes in ((200, 2), (1000, 4)):
            await run_one(
                name="grouped: clients read", count=count // scale, events=events,
                processes=processes, record=True,
            )  # fmt: skip
        await run_one(
            name="grouped: 10 subscriptions per socket", count=1000 // scale,
            subscriptions=10, events=events // 2, processes=4, record=False, memory=True,
            quiet=True,
        )  # fmt: skip
        for count in (1000, 10_000):
            await run_one(
                name="grouped: server-side (clients quiet)", count=count // scale,
                events=events // 2, processes=4, record=False, memory=True, quiet=True,
            )  # fmt: skip
        await run_one(
            naive=True, name="baseline (execute per subscriber): clients read",
            count=1000 // scale, events=events, processes=4, record=True,
        )  # fmt: skip
        for count in (1000, 10_000):
            await run_one(
                naive=True, name="baseline (execute per subscriber): server-side",
                count=count // scale, events=max(3, events // 8), processes=4, record=False,
                quiet=True,
            )  # fmt: skip
    report(results)
    if not only:
        ratio(results[1], results[5])  # 1,000, clients reading
        ratio(results[3], results[6])  # 1,000, server-side
        ratio(results[4], results[7])  # 10,000, server-side
    print(f"load average after: {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=40, help="changes per measurement")
    parser.add_argument("--quick", action="store_true", help="a tenth of the subscriptions")
    parser.add_argument("--only", help="run the measurements whose label contains this")
    args = parser.parse_args()
    asyncio.run(run(args.events, args.quick, args.only))


if __name__ == "__main__":
    main()
