"""Middleware added in ``create_app`` wraps every route, ``/graphql`` included.

The app is served by a real uvicorn (websockets-sansio, as ``punchcard serve`` runs it)
on a real socket; a recording middleware and Starlette's CORS middleware sit in front.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from punchcard.gql.auth import issue_token
from punchcard.server.app import create_app
from punchcard.settings import Settings
from tests.live import PURCHASE_UPDATED, http_client, socket
from tests.processes import free_port

ORIGIN = "https://calendar.example"


class Recorder:
    """Pure ASGI middleware: notes every scope it sees and every message sent through it."""

    def __init__(self, app: ASGIApp, seen: list[tuple[str, str, str]]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        self.seen.append((scope["type"], scope["path"], "scope"))

        async def sending(message: Any) -> None:
            self.seen.append((scope["type"], scope["path"], message["type"]))
            await send(message)

        await self.app(scope, receive, sending)


@contextlib.asynccontextmanager
async def serving(settings: Settings, seen: list[tuple[str, str, str]]) -> AsyncIterator[Any]:
    app = create_app(
        settings,
        middleware=[
            Middleware(Recorder, seen=seen),
            Middleware(
                CORSMiddleware, allow_origins=[ORIGIN], allow_methods=["POST"], allow_headers=["*"]
            ),
        ],
    )
    port = free_port()
    config = uvicorn.Config(  # as `punchcard serve` runs it
        app,
        host="127.0.0.1",
        port=port,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                await asyncio.sleep(0.02)
        yield app, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def setup(url: str, bearer: str) -> str:
    async with http_client(url, bearer) as http:
        client = await http.data('mutation { createClient(input: {name: "Ada"}) { id } }')
        package = await http.data(
            "mutation($c: ID!) { sellPackage(input: {clientId: $c, sessionsTotal: 5}) { id } }",
            c=client["createClient"]["id"],
        )
        purchase: str = package["sellPackage"]["id"]
        return purchase


USE = "mutation($id: ID!) { useSession(purchaseId: $id) { sessionsUsed revision } }"


@pytest.mark.parametrize("direct", [True, False], ids=["direct-writes", "asgi-writes"])
async def test_middleware_sees_post_graphql_and_the_websocket_upgrade(
    db_url: str, direct: bool
) -> None:
    settings = Settings(database_url=db_url, jwt_secret="secret-" * 6, ws_direct_writes=direct)
    bearer = issue_token(settings, "trainer-a")
    seen: list[tuple[str, str, str]] = []
    async with serving(settings, seen) as (app, url):
        purchase = await setup(url, bearer)
        assert ("http", "/graphql", "scope") in seen
        assert ("http", "/graphql", "http.response.start") in seen

        async with socket(url, bearer) as ws:
            assert ("websocket", "/graphql", "scope") in seen
            assert ("websocket", "/graphql", "websocket.accept") in seen
            [connection] = app.state.sockets.open
            # Fan-out frames may go straight to uvicorn's transport (the probe allows it
            # on the pinned versions), or through the stack when direct writes are off.
            assert (connection.outbox._direct is not None) is direct
            await ws.subscribe("1", PURCHASE_UPDATED, id=purchase)
            first = await ws.data("1")
            assert first["purchaseUpdated"]["snapshot"] is True
            async with http_client(url, bearer) as http:
                used = await http.data(USE, id=purchase)
            update = await ws.data("1")
            assert update["purchaseUpdated"]["revision"] == used["useSession"]["revision"]
            assert update["purchaseUpdated"]["entry"]["delta"] == 1
        sent = [kind for t, path, kind in seen if t == "websocket" and kind == "websocket.send"]
        # The connection's own messages (the ack) always pass the stack; the subscription's
        # frames (snapshot, update) are written straight to the transport when direct.
        assert len(sent) == (1 if direct else 3)

        async with httpx.AsyncClient(base_url=url) as http:
            preflight = await http.options(
                "/graphql",
                headers={
                    "Origin": ORIGIN,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == ORIGIN
            answer = await http.post(
                "/graphql",
                json={"query": "{ me { id } }"},
                headers={"Origin": ORIGIN, "Authorization": f"Bearer {bearer}"},
            )
            assert answer.headers["access-control-allow-origin"] == ORIGIN
            assert answer.json()["data"]["me"]["id"].startswith("trn_")
