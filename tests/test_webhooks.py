"""Webhooks: endpoints managed over GraphQL, every event delivered per Standard Webhooks to
a real local receiver (verified with the ``standardwebhooks`` library), at least once and
retried through outages, by sweepers that share the work and survive SIGKILL."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook

from punchcard.db import roles
from punchcard.settings import Settings
from punchcard.sweeper.delivery import Deliverer
from tests.conftest import JWT_SECRET, Api, in_process
from tests.helpers import COMPLETE, USE, booking, client, package
from tests.processes import free_port, start, stop
from tests.receiver import Receiver, receiving
from tests.refusals import (
    CREATE_ENDPOINT,
    DELETE_ENDPOINT,
    DELIVERIES,
    ENDPOINTS,
    EVENTS,
    PUBLIC_URL,
    REDELIVER,
    ROTATE_SECRET,
    UPDATE_ENDPOINT,
    refused,
    unchanged,
)
from tests.test_sweeper import eventually, listening, sweeper_env


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Receivers listen on 127.0.0.1, so private addresses are allowed; retries are quick."""
    return Settings(
        database_url=db_url,
        jwt_secret=JWT_SECRET,
        pool_max_size=20,
        webhook_allow_private=True,
        webhook_retry_seconds=0.05,
        webhook_retry_scale=0.00001,
        webhook_timeout_seconds=5,
        webhook_lease_seconds=10,
    )


@pytest.fixture
async def worker_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(roles.worker_url(settings), min_size=1, max_size=4)
    yield pool
    await pool.close()


async def endpoint(api: Api, url: str, **extra: Any) -> tuple[str, str]:
    """A new endpoint: (id, secret)."""
    created = (await api.data(CREATE_ENDPOINT, url=url, **extra))["createWebhookEndpoint"]
    return created["endpoint"]["id"], created["secret"]


async def all_events(api: Api) -> list[Any]:
    nodes: list[Any] = (await api.data(EVENTS, first=500))["events"]["nodes"]
    return nodes


async def some_changes(api: Api, uses: int = 3) -> None:
    """Events: purchase.created, ``uses`` x session.used, booking.created, session.held,
    session.used, booking.completed (8 with the default)."""
    cid = await client(api)
    sold = await package(api, cid, total=10)
    for _ in range(uses):
        await api.data(USE, id=sold["id"])
    made = await booking(api, cid, sold["id"])
    await api.data(COMPLETE, id=made["id"])


async def deliveries(api: Api, endpoint_id: str) -> list[Any]:
    nodes: list[Any] = (await api.data(DELIVERIES, endpoint=endpoint_id, first=100))[
        "webhookDeliveries"
    ]["nodes"]
    return nodes


async def test_an_endpoint_is_created_listed_updated_rotated_and_deleted(api: Api) -> None:
    created = (await api.data(CREATE_ENDPOINT, url=PUBLIC_URL, description="CRM"))[
        "createWebhookEndpoint"
    ]
    secret, shown = created["secret"], created["endpoint"]
    assert secret.startswith("whsec_")
    Webhook(secret)  # a secret the library accepts
    assert shown == {
        "id": shown["id"],
        "url": PUBLIC_URL,
        "description": "CRM",
        "eventTypes": [],
        "enabled": True,
        "disabledReason": None,
    }
    assert (await api.data(ENDPOINTS))["webhookEndpoints"] == [shown]
    updated = (
        await api.data(
            UPDATE_ENDPOINT,
            id=shown["id"],
            types=["session.used", "session.used", "booking.completed"],
            url=PUBLIC_URL + "/v2",
        )
    )["updateWebhookEndpoint"]
    assert updated["eventTypes"] == ["session.used", "booking.completed"]
    assert (updated["url"], updated["description"]) == (PUBLIC_URL + "/v2", "CRM")
    rotated = (await api.data(ROTATE_SECRET, id=shown["id"]))["rotateWebhookSecret"]
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != secret
    deleted = (await api.data(DELETE_ENDPOINT, id=shown["id"]))["deleteWebhookEndpoint"]
    assert deleted["id"] == shown["id"]
    assert (await api.data(ENDPOINTS))["webhookEndpoints"] == []
    assert await refused(api, DELETE_ENDPOINT, id=shown["id"]) == "NOT_FOUND"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.16.5.4/hook",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://[fe80::1]/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "ftp://93.184.215.14/hook",
        "file:///etc/passwd",
        "gopher://93.184.215.14/",
        "93.184.215.14/hook",
        "https:///no-host",
        "https://user:pw@93.184.215.14/hook",
        "https://93.184.215.14:99999/hook",
        "https://no-such-host.invalid/hook",
        "https://93.184.215.14/a b",
        "https://93.184.215.14/" + "x" * 2000,
    ],
)
async def test_unsafe_urls_are_refused(
    settings: Settings, db: asyncpg.Connection, url: str
) -> None:
    strict = replace(settings, webhook_allow_private=False)
    async with in_process(strict) as (_, http):
        api = Api(http, strict, None).as_trainer("trainer-a")
        await api.data("{ me { id } }")
        mine = await endpoint(api, PUBLIC_URL)
        async with unchanged(db):
            assert await refused(api, CREATE_ENDPOINT, url=url) == "BAD_USER_INPUT"
            assert await refused(api, UPDATE_ENDPOINT, id=mine[0], url=url) == "BAD_USER_INPUT"


async def test_bad_endpoint_input_is_refused(api: Api, db: asyncpg.Connection) -> None:
    mine, _ = await endpoint(api, PUBLIC_URL)
    async with unchanged(db):
        for variables in (
            {"url": PUBLIC_URL, "types": ["session.exploded"]},
            {"url": PUBLIC_URL, "types": [""]},
            {"url": PUBLIC_URL, "description": "x" * 501},
            {"url": PUBLIC_URL, "description": "nul\x00"},
        ):
            assert await refused(api, CREATE_ENDPOINT, **variables) == "BAD_USER_INPUT", variables
        assert await refused(api, UPDATE_ENDPOINT, id=mine, types=["nope"]) == "BAD_USER_INPUT"
    assert await refused(api.with_token(None), CREATE_ENDPOINT, url=PUBLIC_URL) == (
        "UNAUTHENTICATED"
    )


async def test_every_event_is_delivered_once_and_verifies(
    api: Api, settings: Settings, worker_pool: asyncpg.Pool
) -> None:
    with receiving(Receiver(free_port())) as receiver:
        endpoint_id, secret = await endpoint(api, receiver.url)
        await some_changes(api)
        assert await Deliverer(settings).deliver_pass(worker_pool) > 0
        events = await all_events(api)
        assert len(events) == 8
        verified = receiver.verified(secret)
        by_id = {r.headers["webhook-id"]: payload for r, payload in zip(
            receiver.delivered(), verified, strict=True
        )}  # fmt: skip
        assert receiver.ids() == {e["id"]: 1 for e in events}
        for event in events:
            payload = by_id[event["id"]]
            assert payload.keys() == {"type", "timestamp", "data"}
            assert (payload["type"], payload["data"]) == (event["type"], event["data"])
        for wrong in ("whsec_" + "A" * 32, (await api.data(ROTATE_SECRET, id=endpoint_id))[
            "rotateWebhookSecret"
        ]["secret"]):  # fmt: skip
            with pytest.raises(Exception, match="signature"):
                Webhook(wrong).verify(receiver.delivered()[0].body, receiver.delivered()[0].headers)
        shown = await deliveries(api, endpoint_id)
        assert {d["status"] for d in shown} == {"DELIVERED"}
        assert all(
            [(a["attempt"], a["statusCode"]) for a in d["attempts"]] == [(1, 200)] for d in shown
        )


async def test_a_receiver_down_then_failing_then_accepting_gets_every_event(
    api: Api, settings: Settings, worker_pool: asyncpg.Pool
) -> None:
    receiver = Receiver(free_port(), status=500)
    endpoint_id, secret = await endpoint(api, receiver.url)
    await some_changes(api)
    deliverer = Deliverer(settings)
    await deliverer.deliver_pass(worker_pool)  # nobody listening: connection refused
    assert deliverer.failed == 8 and deliverer.delivered == 0
    with receiving(receiver):

        async def failed_twice() -> bool:
            await deliverer.deliver_pass(worker_pool)
            return len(receiver.requests()) >= 14

        await eventually(failed_twice, "two rounds of 500s")
        receiver.status = 200

        async def all_delivered() -> bool:
            await deliverer.deliver_pass(worker_pool)
            return {d["status"] for d in await deliveries(api, endpoint_id)} == {"DELIVERED"}

        await eventually(all_delivered, "every delivery accepted")
    events = await all_events(api)
    assert receiver.ids() == {e["id"]: 1 for e in events}  # none lost, none twice accepted
    assert {r.headers["webhook-id"] for r in receiver.requests()} == {e["id"] for e in events}
    assert len(receiver.verified(secret)) == len(events)
    for shown in await deliveries(api, endpoint_id):
        log = [(a["attempt"], a["statusCode"]) for a in shown["attempts"]]
        assert log[0] == (1, None) and log[-1] == (shown["attempt"], 200)
        assert shown["attempts"][0]["error"].startswith("ConnectError")
        assert {code for _, code in log[1:-1]} == {500}
        assert all(a["latencyMs"] >= 0 for a in shown["attempts"])


async def test_an_endpoint_failing_every_retry_is_disabled_then_resumed(
    api: Api, settings: Settings, worker_pool: asyncpg.Pool
) -> None:
    with receiving(Receiver(free_port(), status=503)) as receiver:
        endpoint_id, secret = await endpoint(api, receiver.url, types=["purchase.created"])
        await package(api, total=3)
        deliverer = Deliverer(settings)

        async def disabled() -> bool:
            await deliverer.deliver_pass(worker_pool)
            (shown,) = (await api.data(ENDPOINTS))["webhookEndpoints"]
            return not shown["enabled"]

        await eventually(disabled, "the endpoint disabled")
        (shown,) = (await api.data(ENDPOINTS))["webhookEndpoints"]
        assert "every retry" in shown["disabledReason"] and "HTTP 503" in shown["disabledReason"]
        (failed,) = await deliveries(api, endpoint_id)
        assert (failed["status"], failed["attempt"], len(failed["attempts"])) == ("FAILED", 8, 8)
        assert failed["nextAttemptAt"] is None
        assert (
            await refused(api, REDELIVER, event=failed["eventId"], endpoint=endpoint_id)
            == "BAD_USER_INPUT"
        )  # disabled: enable it first
        receiver.status = 200
        enabled = (await api.data(UPDATE_ENDPOINT, id=endpoint_id, enabled=True))[
            "updateWebhookEndpoint"
        ]
        assert (enabled["enabled"], enabled["disabledReason"]) == (True, None)
        again = (await api.data(REDELIVER, event=failed["eventId"], endpoint=endpoint_id))[
            "redeliverEvent"
        ]
        assert (again["status"], again["attempt"]) == ("PENDING", 0)
        await deliverer.deliver_pass(worker_pool)
        assert receiver.ids() == {failed["eventId"]: 1}  # the same webhook-id as before
        assert len(receiver.verified(secret)) == 1
        assert len(receiver.requests()) == 9


async def test_an_endpoint_gets_only_the_types_it_asked_for(
    api: Api, settings: Settings, worker_pool: asyncpg.Pool
) -> None:
    with receiving(Receiver(free_port())) as receiver:
        await endpoint(api, receiver.url, types=["session.used"])
        await some_changes(api, uses=2)
        await Deliverer(settings).deliver_pass(worker_pool)
        types = [r.headers["webhook-id"] for r in receiver.delivered()]
        used = [e["id"] for e in await all_events(api) if e["type"] == "session.used"]
        assert sorted(types) == sorted(used) and len(used) == 3


async def test_a_private_address_is_refused_at_delivery_time_too(
    api: Api, settings: Settings, worker_pool: asyncpg.Pool
) -> None:
    """Saved while private addresses were allowed (or a name re-pointed since): the
    sweeper checks again after its own DNS lookup and does not call it."""
    with receiving(Receiver(free_port())) as receiver:
        endpoint_id, _ = await endpoint(api, receiver.url)
        await package(api, total=2)
        strict = Deliverer(replace(settings, webhook_allow_private=False))
        await strict.deliver_pass(worker_pool)
        assert receiver.arrived == 0
    (shown,) = await deliveries(api, endpoint_id)
    assert shown["status"] == "PENDING"
    assert shown["error"].startswith("refused: 127.0.0.1 resolves to a loopback address")


async def test_concurrent_deliverers_send_each_attempt_once(api: Api, settings: Settings) -> None:
    with receiving(Receiver(free_port())) as receiver:
        await endpoint(api, receiver.url)
        await endpoint(api, receiver.url + "/second")
        sold = await package(api, total=40)
        await asyncio.gather(*(api.data(USE, id=sold["id"]) for _ in range(30)))
        pools = [
            await asyncpg.create_pool(roles.worker_url(settings), min_size=1, max_size=2)
            for _ in range(6)
        ]
        try:
            small = replace(settings, webhook_batch_size=5)
            await asyncio.gather(*(Deliverer(small).deliver_pass(pool) for pool in pools))
            await Deliverer(small).deliver_pass(pools[0])  # what a short batch left behind
        finally:
            for pool in pools:
                await pool.close()
        events = await all_events(api)
        assert len(events) == 31
        assert len(receiver.requests()) == 2 * 31  # each event to each endpoint, once
        assert receiver.ids() == {e["id"]: 2 for e in events}


def start_sweepers(db_url: str, logs: list[Path], **extra: str) -> list[subprocess.Popen[bytes]]:
    env = sweeper_env(
        db_url,
        webhook_allow_private="1",
        webhook_retry_seconds="0.1",
        webhook_retry_scale="0.0001",
        sweep_poll_seconds="1",
        **extra,
    )
    return [start(["sweep"], env, log) for log in logs]


async def test_two_sweeper_processes_deliver_each_attempt_once(
    api: Api, db_url: str, tmp_path: Path
) -> None:
    with receiving(Receiver(free_port())) as receiver:
        _, secret = await endpoint(api, receiver.url)
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        sweepers = start_sweepers(db_url, logs)
        try:
            for process, log in zip(sweepers, logs, strict=True):
                await listening(process, log)
            sold = await package(api, total=60)
            await asyncio.gather(*(api.data(USE, id=sold["id"]) for _ in range(40)))
            expected = {e["id"] for e in await all_events(api)}

            async def delivered() -> bool:
                return set(receiver.ids()) == expected

            await eventually(delivered, "every event delivered")
            await asyncio.sleep(1)  # time for a duplicate to show, were there one
        finally:
            codes = [stop(process) for process in sweepers]
        assert codes == [0, 0]
        assert receiver.ids() == {event_id: 1 for event_id in expected}
        assert len(receiver.requests()) == len(expected)
        assert len(receiver.verified(secret)) == len(expected)


async def test_a_sweeper_killed_mid_delivery_loses_nothing(
    api: Api, db_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    receiver = Receiver(free_port(), hold=threading.Event())
    with receiving(receiver):
        endpoint_id, secret = await endpoint(api, receiver.url)
        await some_changes(api)  # before the sweeper starts: it claims all 8 at once
        (first,) = start_sweepers(
            db_url, [tmp_path / "killed.log"], webhook_timeout_seconds="8",
            webhook_lease_seconds="9",
        )  # fmt: skip
        try:

            async def in_flight() -> bool:
                # every request's body has arrived (a kill mid-body would leave one cut
                # short, answered into a closed socket and unverifiable)
                return receiver.arrived >= 8

            await eventually(in_flight, "the sweeper mid-delivery")
            first.send_signal(signal.SIGKILL)
            first.wait(30)
        finally:
            stop(first)
        assert await db.fetchval("SELECT count(*) FROM webhook_attempts") == 0
        receiver.hold.set()  # the dead sweeper's requests complete into closed sockets
        (second,) = start_sweepers(db_url, [tmp_path / "second.log"])
        try:
            expected = {e["id"] for e in await all_events(api)}

            async def delivered() -> bool:
                shown = await deliveries(api, endpoint_id)
                return {d["status"] for d in shown} == {"DELIVERED"}

            await eventually(delivered, "every delivery retried after the lease")
        finally:
            assert stop(second) == 0
    assert len(expected) == 8
    assert set(receiver.ids()) == expected  # nothing lost
    assert {r.headers["webhook-id"] for r in receiver.requests()} == expected
    assert max(receiver.ids().values()) <= 2  # a duplicate carries the same webhook-id
    assert len(receiver.verified(secret)) == len(receiver.delivered())
    for shown in await deliveries(api, endpoint_id):
        assert shown["attempt"] == 2  # the killed attempt, then the one recorded
        assert [a["attempt"] for a in shown["attempts"]] == [2]


async def test_an_endpoint_failing_for_days_is_disabled_with_the_reason(
    api: Api, settings: Settings, worker_pool: asyncpg.Pool
) -> None:
    """The disable window (here 0.00001 days, under a second) passes between two failed
    attempts one second apart: the endpoint is disabled though its schedule is not spent."""
    with receiving(Receiver(free_port(), status=500)) as receiver:
        endpoint_id, _ = await endpoint(api, receiver.url)
        await package(api, total=3)
        deliverer = Deliverer(
            replace(settings, webhook_retry_seconds=1.0, webhook_disable_after_days=0.00001)
        )

        async def disabled() -> bool:
            await deliverer.deliver_pass(worker_pool)
            (shown,) = (await api.data(ENDPOINTS))["webhookEndpoints"]
            return not shown["enabled"]

        await eventually(disabled, "the endpoint disabled")
    (shown,) = (await api.data(ENDPOINTS))["webhookEndpoints"]
    assert shown["disabledReason"].startswith("deliveries failing since")
    assert "HTTP 500" in shown["disabledReason"]
    (pending,) = await deliveries(api, endpoint_id)
    assert pending["status"] == "PENDING" and pending["attempt"] == 2  # kept for re-enabling
