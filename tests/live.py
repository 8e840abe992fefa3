"""Real clients for live-update tests: GraphQL over WebSocket (both protocols) and HTTP,
against ``punchcard serve`` processes (tests/processes.py)."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from punchcard.gql.auth import issue_token
from punchcard.settings import Settings
from tests.conftest import JWT_SECRET
from tests.processes import child_env, server

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
TIMEOUT = 30.0  # only so a broken test fails instead of hanging

SETTINGS = Settings(jwt_secret=JWT_SECRET)

PURCHASE_UPDATED = """
subscription($id: ID!, $after: Int) {
  purchaseUpdated(purchaseId: $id, afterRevision: $after) {
    revision snapshot purchase { id sessionsUsed sessionsRemaining revision }
    entry { id delta revision sessionsUsedAfter source }
  }
}"""
CLIENT_UPDATED = """
subscription($id: ID!, $after: String) {
  clientUpdated(clientId: $id, after: $after) {
    cursor snapshot client { id name }
    purchases { id sessionsUsed revision } entries { id revision delta }
  }
}"""
BOOKINGS_CHANGED = """
subscription($from: DateTime!, $to: DateTime!, $after: String) {
  bookingsChanged(from: $from, to: $to, after: $after) {
    cursor snapshot bookings { id status charged }
  }
}"""


def token(subject: str, ttl_seconds: int = 3600, **claims: Any) -> str:
    return issue_token(SETTINGS, subject, ttl_seconds=ttl_seconds, **claims)


def serve_env(db_url: str, **overrides: str) -> dict[str, str]:
    overrides.setdefault("PUNCHCARD_JWT_LEEWAY_SECONDS", "0")  # expiry tests wait for exp
    return child_env(
        DATABASE_URL=db_url, JWT_SECRET=JWT_SECRET, PUNCHCARD_DEBUG_STATS="1", **overrides
    )


@contextmanager
def servers(env: dict[str, str], logs: Path, count: int) -> Iterator[list[str]]:
    """``count`` ``punchcard serve`` processes on the same database."""
    with server(env, logs / "a.log") as first:
        if count == 1:
            yield [first]
            return
        with server(env, logs / "b.log") as second:
            yield [first, second]


class Http:
    """GraphQL over HTTP as one trainer."""

    def __init__(self, http: httpx.AsyncClient, bearer: str) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {bearer}"}

    async def data(self, query: str, **variables: Any) -> dict[str, Any]:
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables}, headers=self.headers
        )
        body = response.json()
        assert "errors" not in body, body
        result: dict[str, Any] = body["data"]
        return result

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = (await self.http.get("/debug/live")).json()
        return stats


@asynccontextmanager
async def http_client(url: str, bearer: str) -> AsyncIterator[Http]:
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
        yield Http(http, bearer)


class Socket:
    """One GraphQL WebSocket; messages are buffered per operation id."""

    def __init__(self, ws: ClientConnection, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.inbox: dict[str | None, deque[dict[str, Any]]] = defaultdict(deque)

    @property
    def legacy(self) -> bool:
        return self.protocol == LEGACY_WS

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def init(self, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        await self.send({"type": "connection_init", "payload": payload or {}})
        return await self.control()

    async def subscribe(self, op_id: str, query: str, **variables: Any) -> None:
        kind = "start" if self.legacy else "subscribe"
        payload = {"query": query, "variables": variables}
        await self.send({"id": op_id, "type": kind, "payload": payload})

    async def complete(self, op_id: str) -> None:
        await self.send({"id": op_id, "type": "stop" if self.legacy else "complete"})

    async def _read(self) -> None:
        text = await asyncio.wait_for(self.ws.recv(), TIMEOUT)
        message = json.loads(text)
        if message.get("type") != "ka":
            self.inbox[message.get("id")].append(message)

    async def message(self, op_id: str | None) -> dict[str, Any]:
        """The next message for ``op_id`` (None: connection-level messages)."""
        while not self.inbox[op_id]:
            await self._read()
        return self.inbox[op_id].popleft()

    async def control(self) -> dict[str, Any]:
        return await self.message(None)

    async def data(self, op_id: str) -> dict[str, Any]:
        """The payload ``data`` of the next result for ``op_id``; fails on anything else."""
        message = await self.message(op_id)
        assert message["type"] == ("data" if self.legacy else "next"), message
        assert "errors" not in message["payload"], message
        data: dict[str, Any] = message["payload"]["data"]
        return data

    async def closed(self) -> tuple[int | None, str]:
        """Wait for the server to close the socket: (code, reason)."""
        try:
            while True:
                await self._read()
        except ConnectionClosed as closed:
            if closed.rcvd is None:
                return None, ""
            return closed.rcvd.code, closed.rcvd.reason


@asynccontextmanager
async def socket(
    url: str,
    bearer: str | None = None,
    *,
    protocol: str = TRANSPORT_WS,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Socket]:
    """A connected socket; with ``bearer``, initialised (``connection_ack`` received)."""
    ws_url = url.replace("http://", "ws://") + "/graphql"
    async with connect(
        ws_url,
        subprotocols=[protocol],
        additional_headers=headers,
        open_timeout=TIMEOUT,  # type: ignore[list-item]
    ) as ws:
        sock = Socket(ws, protocol)
        if bearer is not None:
            ack = await sock.init({"Authorization": f"Bearer {bearer}"})
            assert ack["type"] == "connection_ack", ack
        yield sock


async def wait_for_stats(http: Http, **expected: int) -> dict[str, Any]:
    """Poll the server's live counters until they match (counts settle asynchronously)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            stats = await http.stats()
            if all(stats[k] == v for k, v in expected.items()):
                return stats
            await asyncio.sleep(0.05)
