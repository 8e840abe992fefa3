"""``punchcard sweep`` as a real process on real PostgreSQL: every past booking is
completed once and every packaged one charged once (the ledger proves it), whatever
else acts at the same time: a second sweeper, a SIGKILL, a SIGTERM, a tab."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from punchcard.db import bookings
from punchcard.db.notify import CHANNEL
from punchcard.gql.ids import Kind, encode
from tests.conftest import JWT_SECRET, Api
from tests.helpers import COMPLETE, CREATE_BOOKING, CREATE_CLIENT, SELL, at, hold_seeded, iso
from tests.live import (
    BOOKINGS_CHANGED,
    PURCHASE_UPDATED,
    http_client,
    serve_env,
    servers,
    socket,
    token,
)
from tests.processes import (
    child_env,
    free_port,
    punchcard_command,
    start,
    stop,
    wait_healthy,
)
from tests.test_cli import graphql, postmaster_pid, running

# 100 clients x 20 bookings: clients 1-80 have a 30-session package (all charged),
# 81-90 a 5-session one (5 charged, 15 unpaid), 91-100 none (pay-as-you-go).
CLIENTS, PER_CLIENT, FULL, SHORT = 100, 20, 80, 10
CHARGED = FULL * PER_CLIENT + SHORT * 5
UNPAID = SHORT * (PER_CLIENT - 5)
UNPACKAGED = (CLIENTS - FULL - SHORT) * PER_CLIENT
NOTIFY_BOOKINGS = f"SELECT pg_notify('{CHANNEL}', '{{\"k\": \"booking\"}}')"


async def seed_trainer(db: asyncpg.Connection, subject: str = "sweep-trainer") -> int:
    """A trainer with CLIENTS clients and their packages (no bookings yet)."""
    trainer_id: int = await db.fetchval(
        "INSERT INTO trainers (subject, name) VALUES ($1, 'Sweep trainer') RETURNING id", subject
    )
    await db.execute(
        "INSERT INTO clients (trainer_id, name) SELECT $1, 'Client ' || n"
        " FROM generate_series(1, $2) AS n",
        trainer_id,
        CLIENTS,
    )
    await db.execute(
        """
        INSERT INTO purchases (trainer_id, client_id, sessions_total)
        SELECT trainer_id, id, CASE WHEN n <= $2 THEN 30 ELSE 5 END
          FROM (SELECT id, trainer_id, row_number() OVER (ORDER BY id) AS n
                  FROM clients WHERE trainer_id = $1) AS c
         WHERE n <= $2 + $3
        """,
        trainer_id,
        FULL,
        SHORT,
    )
    return trainer_id


async def seed_past_bookings(db: asyncpg.Connection, trainer_id: int) -> None:
    """CLIENTS * PER_CLIENT one-hour bookings, all ended more than 14 hours ago."""
    await db.execute(
        """
        INSERT INTO bookings (trainer_id, client_id, purchase_id, starts_at, ends_at)
        SELECT c.trainer_id, c.id, p.id, s.starts, s.starts + interval '1 hour'
          FROM (SELECT id, trainer_id, row_number() OVER (ORDER BY id) - 1 AS k
                  FROM clients WHERE trainer_id = $1) AS c
          LEFT JOIN purchases AS p ON p.client_id = c.id
         CROSS JOIN LATERAL (
               SELECT now() - interval '3 days' + (g * 100 + c.k) * interval '1 minute' AS starts
                 FROM generate_series(0, $2 - 1) AS g) AS s
        """,
        trainer_id,
        PER_CLIENT,
    )
    await hold_seeded(db)


async def assert_each_booking_settled_once(db: asyncpg.Connection) -> Counter[str]:
    """No booking left CONFIRMED; each packaged booking has exactly one ledger row: a +1
    (its hold used) if charged, an UNHOLD if unpaid; each package's sessions_used,
    sessions_held and revision match its ledger."""
    assert await db.fetchval("SELECT count(*) FROM bookings WHERE status = 'CONFIRMED'") == 0
    bad = await db.fetch(
        """
        SELECT b.id, b.charged, b.unpaid, count(l.id) AS entries, coalesce(sum(l.delta), 0) AS net
          FROM bookings AS b LEFT JOIN session_ledger AS l ON l.booking_id = b.id
         GROUP BY b.id
        HAVING count(l.id) <> CASE WHEN b.purchase_id IS NOT NULL THEN 1 ELSE 0 END
            OR coalesce(sum(l.delta), 0) <> CASE WHEN b.charged THEN 1 ELSE 0 END
            OR (b.purchase_id IS NOT NULL AND b.charged = b.unpaid)
            OR (b.purchase_id IS NULL AND (b.charged OR b.unpaid))
        """
    )
    assert bad == []
    drift = await db.fetch(
        """
        SELECT p.id FROM purchases AS p LEFT JOIN session_ledger AS l ON l.purchase_id = p.id
         GROUP BY p.id
        HAVING p.sessions_used <> coalesce(sum(l.delta), 0) OR p.revision <> count(l.id)
            OR p.sessions_held <> coalesce(sum(l.held_delta), 0) OR p.sessions_held <> 0
        """
    )
    assert drift == []
    rows = await db.fetch(
        "SELECT CASE WHEN charged THEN 'charged' WHEN unpaid THEN 'unpaid' ELSE 'unpackaged' END"
        " AS outcome, completed_by FROM bookings"
    )
    return Counter(row["outcome"] for row in rows) + Counter(
        f"by {row['completed_by']}" for row in rows
    )


def sweeper_env(db_url: str, **settings: str) -> dict[str, str]:
    env = child_env(DATABASE_URL=db_url, PUNCHCARD_SWEEP_POLL_SECONDS="60")
    env.update({f"PUNCHCARD_{key.upper()}": value for key, value in settings.items()})
    return env


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    """Poll ``check`` until it holds (a generous bound, never an assertion on speed)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting for: {what}")
        await asyncio.sleep(0.02)


async def listening(process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the sweeper finished its first pass and waits on its LISTEN connection."""

    async def ready() -> bool:
        assert process.poll() is None, log.read_text()
        return "waiting for work" in log.read_text()

    await eventually(ready, f"sweeper {process.pid} waiting")


def completed_counts(log: Path) -> list[int]:
    return [
        int(line.split("completed ", 1)[1].split()[0])
        for line in log.read_text().splitlines()
        if " completed " in line and "bookings:" in line
    ]


async def confirmed(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM bookings WHERE status = 'CONFIRMED'")
    return count


async def test_two_sweepers_started_at_once_settle_2000_bookings_once(
    db: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    trainer_id = await seed_trainer(db)
    env = sweeper_env(db_url, sweep_batch_size="25")
    logs = [tmp_path / "sweeper-1.log", tmp_path / "sweeper-2.log"]
    sweepers = [start(["sweep"], env, log) for log in logs]
    try:
        for process, log in zip(sweepers, logs, strict=True):
            await listening(process, log)
        async with db.transaction():  # one commit wakes both at the same moment
            await seed_past_bookings(db, trainer_id)
            await db.execute(NOTIFY_BOOKINGS)
        await eventually(lambda: _none_confirmed(db), "all bookings completed")
    finally:
        codes = [stop(process) for process in sweepers]
    assert codes == [0, 0]
    outcome = await assert_each_booking_settled_once(db)
    assert outcome["charged"] == CHARGED
    assert outcome["unpaid"] == UNPAID
    assert outcome["unpackaged"] == UNPACKAGED
    assert outcome["by SWEEPER"] == CLIENTS * PER_CLIENT
    shares = [sum(completed_counts(log)) for log in logs]
    assert sum(shares) == CLIENTS * PER_CLIENT  # no booking completed by both
    assert all(share > 0 for share in shares), shares  # both took part


async def _none_confirmed(db: asyncpg.Connection) -> bool:
    return await confirmed(db) == 0


async def test_sigkill_mid_run_then_restart_loses_and_doubles_nothing(
    db: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    await seed_past_bookings(db, await seed_trainer(db))
    total = CLIENTS * PER_CLIENT
    env = sweeper_env(db_url, sweep_batch_size="5")
    log = tmp_path / "sweeper.log"
    process = start(["sweep"], env, log)
    try:
        await eventually(lambda: _confirmed_below(db, total - 100), "some batches done")
        process.send_signal(signal.SIGKILL)  # mid-run: most likely inside a batch's transaction
        assert process.wait(30) == -signal.SIGKILL
    finally:
        stop(process)
    left = await confirmed(db)
    assert 0 < left < total  # killed part-way
    assert (total - left) % 5 == 0  # a batch commits whole or not at all
    again = subprocess.run(
        [*punchcard_command(), "sweep", "--once"], env=env, capture_output=True, timeout=120
    )
    assert again.returncode == 0, again.stdout + again.stderr
    outcome = await assert_each_booking_settled_once(db)
    assert (outcome["charged"], outcome["unpaid"], outcome["unpackaged"]) == (
        CHARGED,
        UNPAID,
        UNPACKAGED,
    )


async def _confirmed_below(db: asyncpg.Connection, limit: int) -> bool:
    return await confirmed(db) < limit


async def test_sigterm_finishes_the_current_batch_and_exits_0(
    db: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    await seed_past_bookings(db, await seed_trainer(db))
    total = CLIENTS * PER_CLIENT
    log = tmp_path / "sweeper.log"
    process = start(["sweep"], sweeper_env(db_url, sweep_batch_size="10"), log)
    await eventually(lambda: _confirmed_below(db, total - 50), "some batches done")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    lines = log.read_text().splitlines()
    (signalled,) = [i for i, line in enumerate(lines) if "SIGTERM: finishing" in line]
    after = [line for line in lines[signalled:] if " completed " in line and "bookings:" in line]
    assert len(after) <= 1  # at most the batch that was in flight
    assert "sweeper stopped" in lines[-1]
    left = await confirmed(db)
    assert left > 0  # it stopped early instead of draining the queue
    assert (total - left) % 10 == 0  # whole batches only
    assert sum(completed_counts(log)) == total - left
    # a restart picks up where it stopped; everything is settled exactly once
    again = subprocess.run(
        [*punchcard_command(), "sweep", "--once"],
        env=sweeper_env(db_url),
        capture_output=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    outcome = await assert_each_booking_settled_once(db)
    assert (outcome["charged"], outcome["unpaid"]) == (CHARGED, UNPAID)


async def test_bookings_completed_from_tabs_while_the_sweeper_runs_are_charged_once(
    api: Api, db: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    trainer_id = await seed_trainer(db, subject="trainer-a")  # the `api` fixture's trainer
    log = tmp_path / "sweeper.log"
    process = start(["sweep"], sweeper_env(db_url, sweep_batch_size="20"), log)
    try:
        await listening(process, log)
        await seed_past_bookings(db, trainer_id)  # no NOTIFY: the sweeper keeps waiting ...
        # ... until the first tab's change wakes it; then it races the tabs, two of which
        # complete each of the oldest 300 bookings, in the order the sweeper takes them
        oldest = await db.fetch("SELECT id FROM bookings ORDER BY ends_at, id LIMIT 300")
        tabs = asyncio.gather(
            *(
                api.post(COMPLETE, id=encode(Kind.BOOKING, row["id"]))
                for row in oldest
                for _ in "ab"
            )
        )
        results = await tabs
        await eventually(lambda: _none_confirmed(db), "all bookings completed")
    finally:
        assert stop(process) == 0
    for result in results:
        assert "errors" not in result, result
        assert result["data"]["completeBooking"]["status"] == "COMPLETED"
    outcome = await assert_each_booking_settled_once(db)
    assert (outcome["charged"], outcome["unpaid"], outcome["unpackaged"]) == (
        CHARGED,
        UNPAID,
        UNPACKAGED,
    )
    assert outcome["by CALENDAR"] >= 1
    assert outcome["by SWEEPER"] >= CLIENTS * PER_CLIENT - len(oldest)
    assert outcome["by CALENDAR"] + outcome["by SWEEPER"] == CLIENTS * PER_CLIENT


async def test_a_booking_a_tab_is_completing_is_skipped_then_charged_once_by_the_tab(
    db: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    trainer_id = await seed_trainer(db)
    await seed_past_bookings(db, trainer_id)
    booking_id, purchase_id = await db.fetchrow(
        "SELECT id, purchase_id FROM bookings WHERE purchase_id IS NOT NULL ORDER BY id LIMIT 1"
    )
    tab = await asyncpg.connect(db_url)
    try:
        transaction = tab.transaction()
        await transaction.start()  # the tab's completeBooking, not yet committed
        moved = await tab.fetchrow(
            bookings.TRANSITION,
            [booking_id],
            trainer_id,
            ["CONFIRMED"],
            "COMPLETED",
            False,
            "CALENDAR",
            list(bookings.CHARGING),
            "tab",
        )
        await bookings.settle(tab, moved["ids"], moved["held"], source="CALENDAR", actor="tab")
        log = tmp_path / "sweeper.log"
        process = start(["sweep", "--once"], sweeper_env(db_url), log)

        async def blocked_on_the_package() -> bool:
            assert process.poll() is None, log.read_text()
            waiting: int = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return waiting > 0

        # it skipped the locked booking and waits only for the package row the tab holds
        await eventually(blocked_on_the_package, "the sweeper waiting for the package lock")
        await transaction.commit()
        assert await asyncio.to_thread(process.wait, 60) == 0
    finally:
        await tab.close()
    outcome = await assert_each_booking_settled_once(db)
    assert (outcome["charged"], outcome["unpaid"]) == (CHARGED, UNPAID)
    assert outcome["by CALENDAR"] == 1
    ledger = await db.fetch("SELECT source FROM session_ledger WHERE booking_id = $1", booking_id)
    assert [row["source"] for row in ledger] == ["CALENDAR"]
    used = await db.fetchval("SELECT sessions_used FROM purchases WHERE id = $1", purchase_id)
    assert used == PER_CLIENT


async def test_a_sweeper_whose_connections_drop_reconnects_and_carries_on(
    db: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    trainer_id = await seed_trainer(db)
    log = tmp_path / "sweeper.log"
    process = start(["sweep"], sweeper_env(db_url, sweep_poll_seconds="0.2"), log)
    try:
        await listening(process, log)
        await db.execute(  # what a PostgreSQL restart does to the sweeper's connections
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await seed_past_bookings(db, trainer_id)
        await eventually(lambda: _none_confirmed(db), "all bookings completed")
    finally:
        assert stop(process) == 0
    assert "connection lost" in log.read_text()
    await assert_each_booking_settled_once(db)


async def test_sweeper_changes_reach_listeners_like_any_other_change(
    db: asyncpg.Connection, db_url: str
) -> None:
    trainer_id = await seed_trainer(db)
    await seed_past_bookings(db, trainer_id)
    heard: list[dict[str, object]] = []
    listener = await asyncpg.connect(db_url)
    try:
        await listener.add_listener(CHANNEL, lambda *args: heard.append(json.loads(args[3])))
        result = await asyncio.to_thread(
            subprocess.run,
            [*punchcard_command(), "sweep", "--once"],
            env=sweeper_env(db_url),
            capture_output=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        packages = {
            row["id"]: row["revision"]
            for row in await db.fetch("SELECT id, revision FROM purchases WHERE revision > 0")
        }
        assert len(packages) == FULL + SHORT

        async def all_heard() -> bool:
            latest = {m["id"]: m["r"] for m in heard if m.get("k") == "purchase"}
            return latest == packages and any(m.get("k") == "bookings" for m in heard)

        await eventually(all_heard, "a notification per charged package and the calendar")
    finally:
        await listener.close()
    assert {m["t"] for m in heard} == {trainer_id}


async def test_sweeper_changes_reach_live_subscribers_of_a_serve_process(
    db_url: str, tmp_path: Path
) -> None:
    bearer = token("trainer-a")
    log = tmp_path / "sweeper.log"
    sweeper = start(["sweep"], sweeper_env(db_url), log)
    try:
        await listening(sweeper, log)
        with servers(serve_env(db_url), tmp_path, 1) as (url,):
            async with http_client(url, bearer) as http, socket(url, bearer) as sock:
                client_id = (await http.data(CREATE_CLIENT, name="Ada"))["createClient"]["id"]
                purchase = (await http.data(SELL, client=client_id, total=10))["sellPackage"]["id"]
                await sock.subscribe("p", PURCHASE_UPDATED, id=purchase)
                window = {"from": iso(at(days=-1)), "to": iso(at(days=1))}
                await sock.subscribe("b", BOOKINGS_CHANGED, **window)
                assert (await sock.data("p"))["purchaseUpdated"]["snapshot"]
                assert (await sock.data("b"))["bookingsChanged"]["bookings"] == []
                created = await http.data(
                    CREATE_BOOKING,
                    client=client_id,
                    purchase=purchase,
                    start=iso(at(hours=-3)),
                    end=iso(at(hours=-2)),
                )
                booked = created["createBooking"]["id"]
                # the booking holds a session; the back-filled booking wakes the sweeper,
                # which completes it and turns the hold into a use
                held = (await sock.data("p"))["purchaseUpdated"]
                assert (held["revision"], held["purchase"]["sessionsUsed"]) == (1, 0)
                update = (await sock.data("p"))["purchaseUpdated"]
                assert (update["revision"], update["purchase"]["sessionsUsed"]) == (2, 1)
                assert update["entry"]["source"] == "SWEEPER"
                seen: list[tuple[str, str, bool]] = []
                while (booked, "COMPLETED", True) not in seen:
                    change = (await sock.data("b"))["bookingsChanged"]
                    seen += [(b["id"], b["status"], b["charged"]) for b in change["bookings"]]
    finally:
        assert stop(sweeper) == 0


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    env = child_env(
        PUNCHCARD_DATA_DIR=str(tmp_path / "data"),
        JWT_SECRET=JWT_SECRET,
        PUNCHCARD_SWEEP_GRACE_MINUTES="0",
    )
    env.pop("DATABASE_URL", None)
    return env


CREATE = """
mutation($start: DateTime!, $end: DateTime!) {
  createBooking(input: {clientId: "cli_1", purchaseId: "pur_1", startsAt: $start, endsAt: $end})
  { id }
}"""


def test_serve_with_sweeper_runs_a_child_sweeper_on_the_embedded_database(
    tmp_path: Path, embedded_env: dict[str, str]
) -> None:
    data_dir = Path(embedded_env["PUNCHCARD_DATA_DIR"])
    log = tmp_path / "serve.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = start(["serve", "--demo", "--sweeper", "--port", str(port)], embedded_env, log)
    try:
        wait_healthy(serve, url, log)
        token = next(
            line.split()[1] for line in log.read_text().splitlines() if line.startswith("Token:")
        )
        (child,) = psutil.Process(serve.pid).children()
        assert "sweep" in child.cmdline()
        # a back-filled booking that ended an hour ago: the notification wakes the sweeper
        ended = time.time() - 3600
        times = {"start": _iso(ended - 3600), "end": _iso(ended)}
        created = httpx.post(
            f"{url}/graphql",
            json={"query": CREATE, "variables": times},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()
        booking = created["data"]["createBooking"]["id"]
        query = f'{{ booking(id: "{booking}") {{ status completedBy charged }} }}'
        deadline = time.monotonic() + 60
        while graphql(url, token, query)["data"] != {  # the demo's past bookings are done too
            "booking": {"status": "COMPLETED", "completedBy": "SWEEPER", "charged": True}
        }:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        # `sweep` without DATABASE_URL joins the same embedded server, and leaving it
        # does not stop the server serve still uses
        once = subprocess.run(
            [*punchcard_command(), "sweep", "--once"],
            env=embedded_env,
            capture_output=True,
            timeout=120,
        )
        assert once.returncode == 0, once.stdout + once.stderr
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        pg_pid = postmaster_pid(data_dir)
    finally:
        code = stop(serve)
    assert code == 0
    assert not running(child.pid)  # serve stopped its sweeper ...
    assert not running(pg_pid)  # ... and the embedded server
    assert "sweeper stopped" in log.read_text()


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(epoch))
