"""The ledger checks itself: each invariant of db/integrity.py catches a drift planted
behind the API's back (as the server's superuser, the append-only trigger disabled where
the ledger itself is changed), by purchase or booking id; `punchcard check` prints it and
exits 1, exits 0 after a storm of concurrent API calls; the sweeper's periodic pass logs
it and sets its gauge."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from punchcard.db import integrity
from punchcard.settings import BadSetting, Settings
from tests.conftest import Api
from tests.helpers import (
    CANCEL,
    COMPLETE,
    NO_SHOW,
    RELEASE,
    REOPEN,
    USE,
    booking,
    client,
    package,
    row_id,
)
from tests.processes import child_env, free_port, punchcard_command, start, stop
from tests.test_operations import samples

TIMEOUT = 120


@dataclass
class World:
    """Trainer A: package ``P`` (10 sessions) used twice by hand, then booking ``B`` on
    it (a HOLD) completed (charged: its hold became a USE): revisions 1..4. Package ``Q`` of another
    client of A, unused. Trainer B exists (``other_trainer``)."""

    p: int
    q: int
    b: int
    client: int
    other_client: int
    other_trainer: int


@pytest.fixture
async def world(api: Api, other: Api, db: asyncpg.Connection) -> World:
    ada = await client(api, "Ada")
    p = await package(api, ada, total=10)
    for _ in range(2):
        await api.data(USE, id=p["id"])
    b = await booking(api, ada, p["id"])
    done = await api.data(COMPLETE, id=b["id"])
    assert done["completeBooking"]["charged"] is True
    bob = await client(api, "Bob")
    q = await package(api, bob, total=5)
    await client(other, "Someone else's")
    other_trainer = await db.fetchval("SELECT id FROM trainers WHERE subject = 'trainer-b'")
    assert await integrity.check(db) == []
    return World(
        p=row_id(p["id"]),
        q=row_id(q["id"]),
        b=row_id(b["id"]),
        client=row_id(ada),
        other_client=row_id(bob),
        other_trainer=other_trainer,
    )


async def behind_the_ledgers_back(db: asyncpg.Connection, *statements: str) -> None:
    """Run ``statements`` in one transaction with every trigger off (the ledger's
    append-only trigger, the outbox's, the foreign keys' of migration 0010), as a
    superuser may: ``session_replication_role = replica``."""
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        for sql in statements:
            await db.execute(sql)


Plant = Callable[[World], list[str]]


def _entry(w: World, *, revision: int, kind: str, used: int, total: int, **more: int) -> str:
    columns = {
        "trainer_id": f"(SELECT trainer_id FROM purchases WHERE id = {w.p})",
        "purchase_id": str(w.p),
        "kind": f"'{kind}'",
        "delta": str(more.get("delta", 0)),
        "total_delta": str(more.get("total_delta", 0)),
        "sessions_used_after": str(used),
        "sessions_held_after": "0",
        "sessions_total_after": str(total),
        "revision": str(revision),
        "source": "'MANUAL'",
        "actor": "'test'",
    }
    if "booking_id" in more:
        columns["booking_id"] = str(more["booking_id"])
    if "related" in more:
        columns["related_purchase_id"] = str(more["related"])
    return (
        f"INSERT INTO session_ledger ({', '.join(columns)}) VALUES ({', '.join(columns.values())})"
    )


# name: (what to do behind the API's back, every (invariant, ref) the check must report)
PLANTS: dict[str, tuple[Plant, Callable[[World], set[tuple[str, str]]]]] = {
    "sessions_used edited": (
        lambda w: [f"UPDATE purchases SET sessions_used = 4 WHERE id = {w.p}"],
        lambda w: {("sessions_used", f"pur_{w.p}"), ("last_entry", f"pur_{w.p}")},
    ),
    "sessions_held edited": (
        lambda w: [f"UPDATE purchases SET sessions_held = 1 WHERE id = {w.p}"],
        lambda w: {
            ("sessions_held", f"pur_{w.p}"),
            ("held_bookings", f"pur_{w.p}"),
            ("last_entry", f"pur_{w.p}"),
        },
    ),
    "revision bumped without an entry": (
        lambda w: [f"UPDATE purchases SET revision = 5 WHERE id = {w.p}"],
        lambda w: {("revisions", f"pur_{w.p}")},
    ),
    "an entry deleted (a gap)": (
        lambda w: [f"DELETE FROM session_ledger WHERE purchase_id = {w.p} AND revision = 2"],
        lambda w: {
            ("revisions", f"pur_{w.p}"),
            ("sessions_used", f"pur_{w.p}"),
            ("replay", f"pur_{w.p}"),
        },
    ),
    "an entry's count after edited": (
        lambda w: [
            "UPDATE session_ledger SET sessions_used_after = 5"
            f" WHERE purchase_id = {w.p} AND revision = 2"
        ],
        lambda w: {("replay", f"pur_{w.p}")},
    ),
    "sessions_total edited": (
        lambda w: [f"UPDATE purchases SET sessions_total = 12 WHERE id = {w.p}"],
        lambda w: {("last_entry", f"pur_{w.p}")},
    ),
    "a CONFIRMED booking that holds nothing": (
        lambda w: [
            "INSERT INTO bookings (trainer_id, client_id, purchase_id, starts_at, ends_at)"
            f" SELECT trainer_id, client_id, id, now() + interval '1 day',"
            f" now() + interval '25 hours' FROM purchases WHERE id = {w.p}"
        ],
        lambda w: {("held_bookings", f"pur_{w.p}")},
    ),
    "charged flag cleared": (
        lambda w: [f"UPDATE bookings SET charged = false, charge_entry_id = NULL WHERE id = {w.b}"],
        lambda w: {("booking_charges", f"bkg_{w.b}")},
    ),
    "a booking charged twice": (
        lambda w: [
            _entry(w, revision=5, kind="USE", used=4, total=10, delta=1, booking_id=w.b),
            f"UPDATE purchases SET sessions_used = 4, revision = 5 WHERE id = {w.p}",
        ],
        lambda w: {("booking_charges", f"bkg_{w.b}")},
    ),
    "an entry of another trainer": (
        lambda w: [
            f"UPDATE session_ledger SET trainer_id = {w.other_trainer}"
            f" WHERE purchase_id = {w.p} AND revision = 1"
        ],
        lambda w: {("entry_trainer", f"pur_{w.p}")},
    ),
    "a booking on another client's package": (
        lambda w: [f"UPDATE bookings SET client_id = {w.other_client} WHERE id = {w.b}"],
        lambda w: {("booking_package", f"bkg_{w.b}")},
    ),
    "a transfer out that arrives nowhere": (
        lambda w: [
            _entry(
                w, revision=5, kind="TRANSFER_OUT", used=3, total=8, total_delta=-2, related=w.q
            ),
            f"UPDATE purchases SET sessions_total = 8, revision = 5 WHERE id = {w.p}",
        ],
        lambda w: {("transfers", f"pur_{w.p}")},
    ),
    "a row written while its CHECK was not valid": (
        lambda w: [
            "ALTER TABLE bookings DROP CONSTRAINT bookings_ends_after_start",
            f"UPDATE bookings SET ends_at = starts_at WHERE id = {w.b}",
            "ALTER TABLE bookings ADD CONSTRAINT bookings_ends_after_start"
            " CHECK (ends_at > starts_at) NOT VALID",
        ],
        lambda w: {("check_constraints", f"bkg_{w.b}")},
    ),
}


@pytest.mark.drift_planted
@pytest.mark.parametrize("plant", list(PLANTS), ids=list(PLANTS))
async def test_each_invariant_reports_a_planted_drift_by_its_row(
    world: World, db: asyncpg.Connection, plant: str
) -> None:
    statements, expected = PLANTS[plant]
    await behind_the_ledgers_back(db, *statements(world))
    drifts = await integrity.check(db)
    assert {(d.invariant, d.ref) for d in drifts} == expected(world), drifts
    assert all(d.subject in {"purchase", "booking"} for d in drifts)
    # Leaving the invariant out hides exactly its drifts.
    (first, _), *_ = sorted(expected(world))
    rest = await integrity.check(db, skip=[first])
    assert {(d.invariant, d.ref) for d in rest} == {
        pair for pair in expected(world) if pair[0] != first
    }


@pytest.mark.drift_planted
async def test_a_drift_line_says_what_the_row_says_and_what_the_ledger_says(
    world: World, db: asyncpg.Connection
) -> None:
    await behind_the_ledgers_back(
        db, f"UPDATE purchases SET sessions_used = 5 WHERE id = {world.p}"
    )
    lines = {d.line() for d in await integrity.check(db)}
    assert lines == {
        f"purchase pur_{world.p}: sessions_used 5, ledger says 3",
        f"purchase pur_{world.p}: sessions_used 5, last entry (led_4) says 3",
    }


async def test_the_schema_refuses_an_entry_or_booking_of_another_owner(
    world: World, db: asyncpg.Connection
) -> None:
    """Migration 0010's keys: what entry_trainer and booking_package look for cannot be
    written at all, even by a role that bypasses row-level security."""
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="session_ledger_purchase_trainer"):
        await db.execute(
            _entry(world, revision=5, kind="CANCEL", used=3, total=10).replace(
                f"(SELECT trainer_id FROM purchases WHERE id = {world.p})", str(world.other_trainer)
            )
        )
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="bookings_purchase_owner"):
        await db.execute(
            f"UPDATE bookings SET client_id = {world.other_client} WHERE id = {world.b}"
        )
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="bookings_purchase_owner"):
        await db.execute(f"UPDATE bookings SET purchase_id = {world.q} WHERE id = {world.b}")


def check_command(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*punchcard_command(), "check", *args],
        env=child_env(DATABASE_URL=db_url),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.mark.drift_planted
async def test_punchcard_check_prints_each_drift_and_exits_1(
    world: World, db: asyncpg.Connection, db_url: str
) -> None:
    clean = await asyncio.to_thread(check_command, db_url)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.startswith("ledger check: clean (11 invariants"), clean.stdout

    await behind_the_ledgers_back(
        db,
        f"UPDATE purchases SET sessions_used = 5 WHERE id = {world.p}",
        f"UPDATE bookings SET charged = false, charge_entry_id = NULL WHERE id = {world.b}",
    )
    found = await asyncio.to_thread(check_command, db_url)
    assert found.returncode == 1, found.stderr
    lines = found.stdout.splitlines()
    assert f"purchase pur_{world.p}: sessions_used 5, ledger says 3" in lines
    assert f"booking bkg_{world.b}: charged false, ledger says 1 session used" in lines
    assert lines[-1].startswith(
        "ledger check: 3 drifts (sessions_used 1, last_entry 1, booking_charges 1;"
    ), lines

    machine = await asyncio.to_thread(check_command, db_url, "--json", "--skip", "last_entry")
    assert machine.returncode == 1, machine.stderr
    body = json.loads(machine.stdout)
    assert body["clean"] is False and body["skipped"] == ["last_entry"]
    assert {(d["invariant"], d["ref"]) for d in body["drifts"]} == {
        ("sessions_used", f"pur_{world.p}"),
        ("booking_charges", f"bkg_{world.b}"),
    }
    assert body["counts"]["sessions_used"] == 1 and "last_entry" not in body["counts"]
    assert {"invariant", "subject", "ref", "field", "found", "says", "expected"} == set(
        body["drifts"][0]
    )


def test_punchcard_check_without_a_database_exits_2_and_unreachable_3(tmp_path: Path) -> None:
    env = child_env(PUNCHCARD_DATA_DIR=str(tmp_path / "none"))
    env.pop("DATABASE_URL", None)
    missing = subprocess.run(
        [*punchcard_command(), "check"], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert missing.returncode == 2
    assert "no database to check" in missing.stderr
    assert not (tmp_path / "none").exists()  # it did not create an empty one to check
    port = free_port()  # nothing listens there
    unreachable = check_command(f"postgresql://postgres@127.0.0.1:{port}/punchcard")
    assert unreachable.returncode == 3
    assert "cannot reach PostgreSQL" in unreachable.stderr
    assert unreachable.stdout == ""


async def test_the_ledger_is_clean_after_a_storm_of_concurrent_calls(
    api: Api, db: asyncpg.Connection, db_url: str
) -> None:
    """Uses, releases and booking transitions fired at the same packages and bookings at
    once, then every booking completed: not one drift."""
    rng = random.Random(12)
    ada = await client(api, "Ada")
    packages = [(await package(api, ada, total=12))["id"] for _ in range(3)]
    bookings = [(await booking(api, ada, packages[k % 3]))["id"] for k in range(12)]

    async def call(document: str, **variables: object) -> None:
        await api.post(document, **variables)  # refusals (nothing left, wrong state) are fine

    calls: list[Awaitable[None]] = []
    for _ in range(160):
        pick = rng.random()
        if pick < 0.3:
            calls.append(call(USE, id=rng.choice(packages)))
        elif pick < 0.5:
            calls.append(call(RELEASE, id=rng.choice(packages)))
        else:
            document = rng.choice([COMPLETE, NO_SHOW, CANCEL, REOPEN])
            extra = {"late": rng.random() < 0.5} if document is CANCEL else {}
            calls.append(call(document, id=rng.choice(bookings), **extra))
    await asyncio.gather(*calls)
    for opaque in bookings:  # nothing left CONFIRMED: holds come and go with the helper's work
        await call(REOPEN, id=opaque)
        await call(COMPLETE, id=opaque)
    assert await db.fetchval("SELECT count(*) FROM bookings WHERE status = 'CONFIRMED'") == 0
    assert await db.fetchval("SELECT count(*) FROM session_ledger") > 12
    assert await integrity.check(db) == []
    clean = await asyncio.to_thread(check_command, db_url)
    assert clean.returncode == 0, clean.stdout + clean.stderr


@pytest.mark.drift_planted
async def test_the_sweeper_checks_periodically_logs_drift_and_sets_its_gauge(
    world: World, db: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = child_env(
        DATABASE_URL=db_url,
        PUNCHCARD_SWEEP_POLL_SECONDS="60",
        PUNCHCARD_CHECK_INTERVAL_SECONDS="0.2",
        PUNCHCARD_SWEEPER_METRICS_PORT=str(port),
    )
    log = tmp_path / "sweep.log"
    process = start(["sweep"], env, log)

    async def gauges() -> dict[str, float]:
        while True:
            assert process.poll() is None, log.read_text()
            try:
                response = await asyncio.to_thread(
                    httpx.get, f"http://127.0.0.1:{port}/metrics", timeout=5
                )
                return samples(response.text)
            except httpx.HTTPError:
                await asyncio.sleep(0.05)

    async def until(holds: Callable[[dict[str, float]], bool], what: str) -> dict[str, float]:
        deadline = time.monotonic() + TIMEOUT
        while not holds(got := await gauges()):
            assert time.monotonic() < deadline, f"still waiting for {what}:\n{log.read_text()}"
            await asyncio.sleep(0.05)
        return got

    drift = 'punchcard_ledger_drift{invariant="sessions_used"}'
    success = "punchcard_ledger_check_last_success_timestamp_seconds"
    try:
        clean = await until(lambda g: g.get(success, 0) > 0, "a first check")
        assert clean[drift] == 0
        assert all(v == 0 for k, v in clean.items() if k.startswith("punchcard_ledger_drift{"))
        await behind_the_ledgers_back(
            db, f"UPDATE purchases SET sessions_used = 5 WHERE id = {world.p}"
        )
        found = await until(lambda g: g.get(drift, 0) == 1, "the drift in the gauge")
        assert found['punchcard_ledger_drift{invariant="last_entry"}'] == 1
        assert found['punchcard_ledger_drift{invariant="booking_charges"}'] == 0
        assert found[success] >= clean[success]
    finally:
        assert stop(process) == 0, log.read_text()
    text = log.read_text()
    assert f"ledger drift (sessions_used): purchase pur_{world.p}: sessions_used 5" in text
    assert "ledger check: clean" in text


def test_punchcard_check_says_what_it_does_its_exit_codes_and_environment() -> None:
    done = subprocess.run(
        [*punchcard_command(), "check", "--help"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for words in ("Exit 0: clean; 1: drift found", "--json", "--database-url", "punchcard_worker"):
        assert words in text, text
    assert all(name in text for name in integrity.NAMES)
    sweep = subprocess.run(
        [*punchcard_command(), "sweep", "--help"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert "PUNCHCARD_CHECK_INTERVAL_SECONDS (3600; 0: no ledger check)" in " ".join(
        sweep.stdout.split()
    )


def test_the_check_interval_is_a_setting_0_turns_it_off() -> None:
    assert Settings.from_env({}).check_interval_seconds == 3600
    assert Settings.from_env({"PUNCHCARD_CHECK_INTERVAL_SECONDS": "0"}).check_interval_seconds == 0
    with pytest.raises(BadSetting, match="PUNCHCARD_CHECK_INTERVAL_SECONDS=-1"):
        Settings.from_env({"PUNCHCARD_CHECK_INTERVAL_SECONDS": "-1"})
