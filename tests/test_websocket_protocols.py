"""Both WebSocket protocols against a real ``punchcard serve``: messages, close codes,
credentials, tenant isolation and slow consumers."""

from __future__ import annotations

import asyncio
import json
import os
import socket as sockets
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import jwt
import pytest
from websockets.asyncio.client import connect

from tests.conftest import TEMPLATE, database_url
from tests.helpers import CREATE_BOOKING, CREATE_CLIENT, SELL, USE, at, iso
from tests.live import (
    BOOKINGS_CHANGED,
    CLIENT_UPDATED,
    LEGACY_WS,
    PURCHASE_UPDATED,
    TIMEOUT,
    TRANSPORT_WS,
    Http,
    http_client,
    serve_env,
    socket,
    token,
)
from tests.processes import server


@pytest.fixture(scope="module")
def url(
    pg_server: str, template_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One server for the module (tests use their own trainers), with short timers."""
    name = f"ws_{os.getpid()}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
    env = serve_env(
        database_url(pg_server, name),
        PUNCHCARD_WS_INIT_TIMEOUT_SECONDS="1",
        PUNCHCARD_WS_KEEPALIVE_SECONDS="0.2",
    )
    try:
        with server(env, tmp_path_factory.mktemp("ws") / "serve.log") as base:
            yield base
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


async def package(http: Http, total: int = 100) -> tuple[str, str]:
    client_id: str = (await http.data(CREATE_CLIENT, name="Ada"))["createClient"]["id"]
    sold = await http.data(SELL, client=client_id, total=total)
    return client_id, sold["sellPackage"]["id"]


async def test_graphql_transport_ws_ping_subscribe_next_complete(url: str) -> None:
    bearer = token("protocol-modern")
    async with http_client(url, bearer) as http, socket(url) as sock:
        _, purchase = await package(http)
        await sock.send({"type": "ping"})  # allowed before connection_init
        assert await sock.control() == {"type": "pong"}
        assert (await sock.init({"Authorization": f"Bearer {bearer}"}))["type"] == "connection_ack"
        await sock.send({"type": "ping", "payload": {"at": 1}})
        assert (await sock.control())["type"] == "pong"

        await sock.subscribe("p", PURCHASE_UPDATED, id=purchase)
        assert (await sock.data("p"))["purchaseUpdated"]["snapshot"] is True
        await http.data(USE, id=purchase)
        assert (await sock.data("p"))["purchaseUpdated"]["revision"] == 1

        await sock.complete("p")
        await sock.subscribe("q", PURCHASE_UPDATED, id=purchase)  # joins after p left
        assert (await sock.data("q"))["purchaseUpdated"]["revision"] == 1
        await http.data(USE, id=purchase)
        assert (await sock.data("q"))["purchaseUpdated"]["revision"] == 2
        assert not sock.inbox["p"]  # p would have been sent before q: it is gone

        # Fields, aliases and variables as asked; the same operation id is free again.
        await sock.subscribe(
            "p",
            "subscription S($id: ID!) { u: purchaseUpdated(purchaseId: $id) "
            "{ r: revision purchase { left: sessionsRemaining } } }",
            id=purchase,
        )
        assert await sock.data("p") == {"u": {"r": 2, "purchase": {"left": 98}}}


async def test_queries_mutations_and_refused_documents_over_the_socket(url: str) -> None:
    bearer = token("protocol-operations")
    async with http_client(url, bearer) as http, socket(url, bearer) as sock:
        _, purchase = await package(http)
        await sock.subscribe(
            "q", "query($id: ID!) { purchase(id: $id) { sessionsUsed createdAt } }", id=purchase
        )
        answered = await sock.data("q")
        created = answered["purchase"]["createdAt"]  # a planned DateTime, written as text
        assert datetime.fromisoformat(created).tzinfo is not None
        assert answered == {"purchase": {"sessionsUsed": 0, "createdAt": created}}
        assert (await sock.message("q"))["type"] == "complete"

        await sock.subscribe(
            "m",
            "mutation($id: ID!) { useSession(purchaseId: $id) { sessionsUsed createdAt } }",
            id=purchase,
        )
        assert await sock.data("m") == {"useSession": {"sessionsUsed": 1, "createdAt": created}}
        assert (await sock.message("m"))["type"] == "complete"

        await sock.subscribe("v", "subscription { purchaseUpdated { revision } }")
        refused = await sock.message("v")
        assert refused["type"] == "error" and "purchaseId" in refused["payload"][0]["message"]

        await sock.subscribe("s", "subscription { purchaseUpdated(purchaseId: ")
        assert (await sock.message("s"))["type"] == "error"

        await sock.subscribe("x", PURCHASE_UPDATED, id="pur_999999")
        missing = await sock.message("x")
        assert missing["type"] == "error"
        assert missing["payload"][0]["extensions"]["code"] == "NOT_FOUND"

        await sock.subscribe("t", BOOKINGS_CHANGED, **{"from": iso(at(days=1)), "to": iso(at())})
        backwards = await sock.message("t")
        assert backwards["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"

        await sock.subscribe("k", CLIENT_UPDATED, id="cli_1", after="not-a-cursor")
        assert (await sock.message("k"))["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_legacy_graphql_ws_ack_keepalive_data_stop_terminate(url: str) -> None:
    bearer = token("protocol-legacy")
    async with (
        http_client(url, bearer) as http,
        socket(url, bearer, protocol=LEGACY_WS) as sock,
    ):
        _, purchase = await package(http)
        await sock.subscribe("1", PURCHASE_UPDATED, id=purchase)
        assert (await sock.data("1"))["purchaseUpdated"]["revision"] == 0
        await http.data(USE, id=purchase)
        assert (await sock.data("1"))["purchaseUpdated"]["revision"] == 1

        await sock.complete("1")  # "stop"
        assert await sock.message("1") == {"id": "1", "type": "complete"}

        await sock.subscribe("1", PURCHASE_UPDATED, id="pur_999999")
        error = await sock.message("1")
        assert error["type"] == "error" and error["payload"]["extensions"]["code"] == "NOT_FOUND"

        # "ka" keeps coming (every 0.2 s on this server): read raw frames until one does.
        async with asyncio.timeout(TIMEOUT):
            while json.loads(await sock.ws.recv())["type"] != "ka":
                pass
        await sock.send({"type": "connection_terminate"})
        assert (await sock.closed())[0] == 1000


async def test_legacy_graphql_ws_refuses_a_bad_token_with_connection_error(url: str) -> None:
    async with socket(url, protocol=LEGACY_WS) as sock:
        await sock.send({"type": "connection_init", "payload": {"Authorization": "Bearer nope"}})
        refused = await sock.control()
        assert refused["type"] == "connection_error"
        assert "invalid token" in refused["payload"]["message"]
        assert (await sock.closed())[0] == 4403


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        ([{"type": "subscribe", "id": "1", "payload": {"query": "{ me { id } }"}}], 4401),
        (["init", "init"], 4429),
        (["init", "sub", "sub"], 4409),
        (["{not json"], 4400),
        ([{"type": "nonsense"}], 4400),
        (["init", {"type": "subscribe", "id": "", "payload": {"query": "{ me { id } }"}}], 4400),
        (["init", {"type": "subscribe", "id": "1", "payload": {}}], 4400),
        ([], 4408),  # nothing sent: initialisation timeout (1 s on this server)
    ],
    ids=["before-init", "second-init", "duplicate-id", "not-json", "unknown-type",
         "empty-id", "no-query", "init-timeout"],
)  # fmt: skip
async def test_protocol_violations_close_with_their_code(
    url: str, messages: list[Any], code: int
) -> None:
    bearer = token("protocol-violations")
    async with http_client(url, bearer) as http:
        _, purchase = await package(http)
    sub = {"type": "subscribe", "id": "same", "payload": {"query": PURCHASE_UPDATED}}
    sub["payload"]["variables"] = {"id": purchase}
    async with socket(url) as sock:
        for message in messages:
            if message == "init":
                await sock.send({"type": "connection_init", "payload": {"token": bearer}})
            elif message == "sub":
                await sock.send(sub)
            elif isinstance(message, str):
                await sock.ws.send(message)
            else:
                await sock.send(message)
        assert (await sock.closed())[0] == code


async def test_an_unknown_subprotocol_is_refused(url: str) -> None:
    ws_url = url.replace("http://", "ws://") + "/graphql"
    async with connect(ws_url, subprotocols=["graphql-ws-v9"]) as ws:  # type: ignore[list-item]
        await ws.wait_closed()
        assert ws.close_code == 4406


def forged(subject: str) -> str:
    now = 2_000_000_000
    return jwt.encode({"sub": subject, "exp": now}, "not-the-secret-" * 3, algorithm="HS256")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({}, "send a token"),
        ({"Authorization": f"Bearer {forged('protocol-auth')}"}, "invalid token"),
        ({"authorization": token("protocol-auth", ttl_seconds=-10)}, "token expired"),
        ({"token": "pc_not-a-key"}, "unknown or revoked API key"),
        ({"Authorization": 42}, "use 'Authorization: Bearer <token>'"),
    ],
    ids=["missing", "forged", "expired", "bad-api-key", "not-a-string"],
)
async def test_bad_credentials_are_refused_at_connection_init(
    url: str, payload: dict[str, Any], reason: str
) -> None:
    async with socket(url) as sock:
        await sock.send({"type": "connection_init", "payload": payload})
        code, said = await sock.closed()
        assert code == 4403
        assert reason in said


async def test_credentials_from_the_upgrade_headers_or_the_token_key(url: str) -> None:
    bearer = token("protocol-headers")
    async with http_client(url, bearer) as http:
        _, purchase = await package(http)
    headers = {"Authorization": f"Bearer {bearer}"}
    async with socket(url, headers=headers) as sock:
        assert (await sock.init())["type"] == "connection_ack"
        await sock.subscribe("p", PURCHASE_UPDATED, id=purchase)
        assert (await sock.data("p"))["purchaseUpdated"]["revision"] == 0
    async with socket(url) as sock:
        assert (await sock.init({"token": bearer}))["type"] == "connection_ack"
        await sock.subscribe("p", PURCHASE_UPDATED, id=purchase)
        assert (await sock.data("p"))["purchaseUpdated"]["revision"] == 0


async def test_the_socket_closes_when_its_token_expires(url: str) -> None:
    short = token("protocol-expiry", ttl_seconds=3)
    async with http_client(url, short) as http, socket(url, short) as sock:
        _, purchase = await package(http)
        await sock.subscribe("p", PURCHASE_UPDATED, id=purchase)
        assert (await sock.data("p"))["purchaseUpdated"]["revision"] == 0
        assert await sock.closed() == (4401, "token expired")


async def test_another_trainers_rows_are_never_seen(url: str) -> None:
    ours, theirs = token("isolation-a"), token("isolation-b")
    window = {"from": iso(at(days=-1)), "to": iso(at(days=7))}
    async with (
        http_client(url, ours) as http,
        http_client(url, theirs) as other,
        socket(url, ours) as sock,
    ):
        their_client, their_purchase = await package(other)
        our_client, _ = await package(http)

        await sock.subscribe("p", PURCHASE_UPDATED, id=their_purchase)
        assert (await sock.message("p"))["payload"][0]["extensions"]["code"] == "NOT_FOUND"
        await sock.subscribe("c", CLIENT_UPDATED, id=their_client)
        assert (await sock.message("c"))["payload"][0]["extensions"]["code"] == "NOT_FOUND"

        await sock.subscribe("b", BOOKINGS_CHANGED, **window)
        assert (await sock.data("b"))["bookingsChanged"]["bookings"] == []
        start = at(hours=1)
        slot = {"start": iso(start), "end": iso(at(hours=2))}
        theirs_booked = await other.data(CREATE_BOOKING, client=their_client, **slot)
        await other.data(USE, id=their_purchase)
        ours_booked = await http.data(CREATE_BOOKING, client=our_client, **slot)
        change = (await sock.data("b"))["bookingsChanged"]  # the first change we see is ours
        assert [b["id"] for b in change["bookings"]] == [ours_booked["createBooking"]["id"]]
        assert theirs_booked["createBooking"]["id"] not in json.dumps(list(sock.inbox["b"]))


HEAVY = """
subscription($id: ID!) {
  purchaseUpdated(purchaseId: $id) {
    revision
    purchase {
      sessionsUsed
      ledger(first: 200) { nodes { id cursor delta revision source actor reason createdAt } }
    }
  }
}"""


def slow_socket(url: str) -> sockets.socket:
    """A TCP connection with a tiny receive window, for a client that stops reading."""
    parts = urlsplit(url)
    raw = sockets.socket()
    raw.setsockopt(sockets.SOL_SOCKET, sockets.SO_RCVBUF, 4096)
    raw.connect((parts.hostname, parts.port))
    raw.setblocking(False)
    return raw


async def test_a_slow_consumer_gets_the_latest_value_and_a_lossless_resync(url: str) -> None:
    bearer = token("slow-consumer")
    ws_url = url.replace("http://", "ws://") + "/graphql"
    async with http_client(url, bearer) as http, socket(url, bearer) as fast:
        client_id, purchase = await package(http, total=1000)
        before = await http.stats()
        async with connect(
            ws_url,
            sock=slow_socket(url),
            subprotocols=[TRANSPORT_WS],
            max_queue=1,  # type: ignore[list-item]
        ) as slow:
            await slow.send(json.dumps({"type": "connection_init", "payload": {"token": bearer}}))
            assert json.loads(await slow.recv())["type"] == "connection_ack"
            for op, query in (("p", HEAVY), ("c", CLIENT_UPDATED)):
                payload = {
                    "query": query,
                    "variables": {"id": purchase if op == "p" else client_id},
                }
                await slow.send(json.dumps({"id": op, "type": "subscribe", "payload": payload}))
            await fast.subscribe("p", HEAVY, id=purchase)
            await fast.data("p")

            # The slow client stops reading; change until the server has conflated for it.
            revision = 0
            while True:
                await http.data(USE, id=purchase)
                revision += 1
                assert (await fast.data("p"))["purchaseUpdated"]["revision"] == revision
                stats = await http.stats()
                if (
                    stats["conflated"] > before["conflated"]
                    and stats["resyncs"] > before["resyncs"]
                ):
                    break
                assert revision < 1000, "the server never backed up"
            for _ in range(3):  # a few more while it is backed up
                await http.data(USE, id=purchase)
                revision += 1

            # It reads again: the newest state arrives, revisions only ever increase, and
            # the delta stream, re-synced, lost no ledger entry and repeated none.
            revisions: list[int] = []
            entries: list[int] = []
            used = -1
            start: int | None = None  # sessions used in the clientUpdated snapshot
            async with asyncio.timeout(TIMEOUT):
                while not revisions or revisions[-1] < revision or used < revision:
                    message = json.loads(await slow.recv())
                    data = message["payload"]["data"]
                    if message["id"] == "p":
                        revisions.append(data["purchaseUpdated"]["revision"])
                        continue
                    update = data["clientUpdated"]
                    counts = [p["sessionsUsed"] for p in update["purchases"]]
                    if update["snapshot"]:
                        start = counts[0]
                    entries += [e["revision"] for e in update["entries"]]
                    used = max([used, *counts])
            assert revisions == sorted(set(revisions)) and revisions[-1] == revision
            assert len(revisions) < revision + 1  # some were skipped while it was backed up
            assert start is not None
            assert sorted(entries) == list(range(start + 1, revision + 1))
