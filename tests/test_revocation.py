"""Revoking an API key closes every socket it opened, on every server process (hardening,
defect 2). Before, subscriptions kept streaming and mutations sent over the open socket
still committed."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from tests.helpers import USE
from tests.live import PURCHASE_UPDATED, http_client, serve_env, servers, socket, token
from tests.test_live_updates import client_and_package

CREATE_KEY = 'mutation { createApiKey(name: "widget") { secret apiKey { id } } }'
REVOKE_KEY = "mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }"


async def test_revoking_a_key_closes_its_sockets_on_both_processes(
    db_url: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    bearer = token("trainer-a")
    with servers(serve_env(db_url), tmp_path, 2) as (a, b):
        async with http_client(a, bearer) as trainer:
            _, purchase = await client_and_package(trainer)
            created = (await trainer.data(CREATE_KEY))["createApiKey"]
            other = (await trainer.data(CREATE_KEY))["createApiKey"]
            secret, key_id = created["secret"], created["apiKey"]["id"]
            async with (
                socket(a, secret) as on_a,
                socket(b, secret) as on_b,
                socket(b, other["secret"]) as unrelated,
            ):
                for ws in (on_a, on_b, unrelated):
                    await ws.subscribe("p", PURCHASE_UPDATED, id=purchase)
                    assert (await ws.data("p"))["purchaseUpdated"]["snapshot"] is True
                # The key works over the socket until it is revoked.
                await on_b.subscribe("use", USE, id=purchase)
                assert (await on_b.data("use"))["useSession"]["sessionsUsed"] == 1
                assert (await trainer.data(REVOKE_KEY, id=key_id))["revokeApiKey"]["revokedAt"]
                for ws in (on_a, on_b):
                    code, reason = await ws.closed()
                    assert (code, reason) == (4403, "Forbidden: API key revoked")
                # Another key's socket carries on.
                await trainer.data(USE, id=purchase)
                update = None
                while update is None or update["revision"] < 2:
                    update = (await unrelated.data("p"))["purchaseUpdated"]
                assert update["purchase"]["sessionsUsed"] == 2
            async with socket(b) as late:  # and the revoked key cannot open a new one
                await late.send({"type": "connection_init", "payload": {"token": secret}})
                code, _ = await late.closed()
                assert code == 4403
    assert await db.fetchval("SELECT sessions_used FROM purchases") == 2
