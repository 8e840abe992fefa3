"""Soak: open and close many GraphQL WebSockets against one ``punchcard serve`` and report
its RSS before, after, and after a full collection (hardening, defect 3).

Each cycle connects (graphql-transport-ws), initialises, subscribes to a package,
reads the snapshot, and closes. The server's numbers come from ``/debug/live``
(``collect=1`` runs ``gc.collect()`` first). A baseline in the same run: the same
cycles against a server with Python's default GC thresholds (``PUNCHCARD_GC=default``).

    python -m benchmarks.websocket_soak [--cycles 10000] [--concurrency 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import httpx
from websockets.asyncio.client import connect

from benchmarks.harness import bin_path, free_port, fresh_database, serving
from punchcard.db import clients, purchases, trainers
from punchcard.gql.auth import issue_token
from punchcard.settings import DEV_JWT_SECRET, Settings

SUBSCRIBE = (
    "subscription($id: ID!) { purchaseUpdated(purchaseId: $id) "
    "{ revision purchase { sessionsUsed } } }"
)


@contextmanager
def server(database: str, gc_mode: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "JWT_SECRET": DEV_JWT_SECRET,
        "PUNCHCARD_DEBUG_STATS": "1",
        "PUNCHCARD_GC": gc_mode,
    }
    with serving([bin_path("punchcard"), "serve", "--port", str(port)], env, port) as url:
        yield url


async def seed(database: str) -> str:
    conn = await asyncpg.connect(database)
    try:
        trainer = await trainers.provision(conn, subject="soak", name="Soak", email=None)
        client = await clients.create_client(
            conn, trainer_id=trainer["id"], name="Ada", email=None, phone=None, timezone=None
        )
        sold = await purchases.sell_package(
            conn,
            trainer_id=trainer["id"],
            client_id=client["id"],
            sessions_total=10,
            expires_at=None,
            offer_id=None,
        )
        return f"pur_{sold['id']}"
    finally:
        await conn.close()


async def cycle(url: str, bearer: str, purchase: str) -> None:
    async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": {"token": bearer}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        payload = {"query": SUBSCRIBE, "variables": {"id": purchase}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        assert json.loads(await ws.recv())["type"] == "next"


async def stats(url: str, **params: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        body: dict[str, Any] = (await http.get("/debug/live", params=params)).json()
        return body


async def soak(url: str, bearer: str, purchase: str, cycles: int, concurrency: int) -> list[str]:
    ws_url = url.replace("http://", "ws://") + "/graphql"
    for _ in range(50):  # warm up: imports, caches, first allocations
        await cycle(ws_url, bearer, purchase)
    before = await stats(url, collect="1")
    remaining = cycles
    lock = asyncio.Lock()

    async def worker() -> None:
        nonlocal remaining
        while True:
            async with lock:
                if remaining == 0:
                    return
                remaining -= 1
            await cycle(ws_url, bearer, purchase)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    after = await stats(url)
    collected = await stats(url, collect="1")
    mb = 1024 * 1024

    def line(name: str, s: dict[str, Any]) -> str:
        return (
            f"  {name:<24} RSS {s['rss_bytes'] / mb:7.1f} MB   sockets {s['sockets']:>3}   "
            f"gc objects {s.get('gc_objects', 0):>9,}   tasks {s['tasks']}"
        )

    grown = (after["rss_bytes"] - before["rss_bytes"]) / cycles
    kept = (collected["rss_bytes"] - before["rss_bytes"]) / cycles
    return [
        line("before", before),
        line(f"after {cycles:,} cycles", after),
        line("after gc.collect()", collected),
        f"  growth per cycle: {grown:,.0f} bytes before a full collection, "
        f"{kept:,.0f} bytes after it",
    ]


async def main_async(cycles: int, concurrency: int) -> None:
    bearer = issue_token(Settings(), "soak", ttl_seconds=3600)
    for gc_mode in ("tuned", "default"):
        with fresh_database() as database:
            purchase = await seed(database)
            with server(database, gc_mode) as url:
                label = "punchcard (tuned GC)" if gc_mode == "tuned" else "baseline: default GC"
                print(f"{label}: {cycles:,} open/close cycles, {concurrency} at a time", flush=True)
                for text in await soak(url, bearer, purchase, cycles, concurrency):
                    print(text, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main_async(args.cycles, args.concurrency))


if __name__ == "__main__":
    main()
