"""Reminders: due at the same wall-clock time in the trainer's zone across DST, sent
once through a pluggable sender, retried with backoff, signed when sent by webhook.

Time is never faked: the sweeper takes its clock as a parameter (``--now`` on the
command line, ``Sweeper.now`` in process), so every moment here is exact."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from punchcard.db import reminders
from punchcard.settings import Settings
from punchcard.sweeper.senders import Reminder
from punchcard.sweeper.worker import Sweeper
from tests.processes import child_env, punchcard_command, start, stop
from tests.test_sweeper import NOTIFY_BOOKINGS, eventually, listening

SECRET = "webhook-secret-for-tests"
T = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)  # "now" for the fixed-clock tests


async def trainer(
    db: asyncpg.Connection, subject: str, zone: str = "UTC", hours: int = 24
) -> tuple[int, int]:
    """A trainer in ``zone`` reminding ``hours`` ahead, and one client: (trainer, client)."""
    trainer_id: int = await db.fetchval(
        "INSERT INTO trainers (subject, timezone, reminder_hours_before) VALUES ($1, $2, $3)"
        " RETURNING id",
        subject,
        zone,
        hours,
    )
    client_id: int = await db.fetchval(
        "INSERT INTO clients (trainer_id, name, email) VALUES ($1, 'Ada', 'ada@example.com')"
        " RETURNING id",
        trainer_id,
    )
    return trainer_id, client_id


async def book(
    db: asyncpg.Connection, ids: tuple[int, int], starts: datetime, status: str = "CONFIRMED"
) -> int:
    booking_id: int = await db.fetchval(
        "INSERT INTO bookings (trainer_id, client_id, starts_at, ends_at, status)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING id",
        *ids,
        starts,
        starts + timedelta(hours=1),
        status,
    )
    return booking_id


@dataclass
class Recorder:
    """A sender that keeps what it was given (and at which sweeper clock)."""

    now: datetime | None = None
    sent: list[tuple[datetime | None, Reminder]] = field(default_factory=list)

    async def send(self, reminder: Reminder) -> None:
        self.sent.append((self.now, reminder))

    async def aclose(self) -> None:
        pass


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool: asyncpg.Pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def sweep_at(sweeper: Sweeper, pool: asyncpg.Pool, now: datetime) -> None:
    sweeper.now = now
    if isinstance(sweeper.sender, Recorder):
        sweeper.sender.now = now
    await sweeper.sweep_pass(pool)


# Daily 09:00 bookings for a week around a DST change: (zone, first booking day).
DST_WEEKS = [
    ("Europe/Berlin", date(2025, 3, 27)),  # clocks go forward Sun 30 Mar, 02:00 -> 03:00
    ("Europe/Berlin", date(2025, 10, 23)),  # back on Sun 26 Oct, 03:00 -> 02:00
    ("America/New_York", date(2025, 3, 6)),  # forward Sun 9 Mar
    ("America/New_York", date(2025, 10, 30)),  # back Sun 2 Nov
]


@pytest.mark.parametrize(("zone", "first"), DST_WEEKS, ids=[f"{z}-{d}" for z, d in DST_WEEKS])
async def test_reminders_come_at_the_same_local_time_on_both_sides_of_a_dst_change(
    db: asyncpg.Connection, pool: asyncpg.Pool, db_url: str, zone: str, first: date
) -> None:
    local = ZoneInfo(zone)
    ids = await trainer(db, "dst", zone, hours=24)
    days = [first + timedelta(days=n) for n in range(7)]
    starts = {
        await book(db, ids, datetime.combine(day, time(9), local).astimezone(UTC)): day
        for day in days
    }
    recorder = Recorder()
    sweeper = Sweeper(Settings(database_url=db_url), recorder)
    tick = datetime.combine(first - timedelta(days=2), time(0), UTC)
    while tick <= datetime.combine(days[-1], time(12), UTC):  # the sweeper, once an hour
        await sweep_at(sweeper, pool, tick)
        tick += timedelta(hours=1)

    assert sorted(r.booking_id for _, r in recorder.sent) == sorted(starts)  # each once
    gaps = set()
    for sent_at, reminder in recorder.sent:
        assert sent_at is not None
        day = starts[reminder.booking_id]
        # 09:00 on the trainer's clock the day before, exactly when the sweeper first ran
        assert sent_at.astimezone(local) == datetime.combine(
            day - timedelta(days=1), time(9), local
        )
        assert reminder.remind_at == sent_at
        assert reminder.local(reminder.starts_at).time() == time(9)
        gaps.add(reminder.starts_at - reminder.remind_at)
    # the week crossed the change: some reminders came 24 h ahead, one 23 h or 25 h
    assert len(gaps) == 2 and timedelta(hours=24) in gaps


async def test_reminder_time_in_a_dst_gap_or_overlap_and_for_an_unknown_zone(
    db: asyncpg.Connection,
) -> None:
    """reminder_at(): a wall-clock time that does not exist moves forward by the gap; one
    that exists twice is the later (standard-time) one; an unknown zone counts as UTC."""

    async def reminder_at(starts: str, zone: str, hours: int = 24) -> datetime:
        moment: datetime = await db.fetchval(
            "SELECT reminder_at($1::timestamptz, $2, $3)",
            datetime.fromisoformat(starts),
            zone,
            hours,
        )
        return moment

    # Monday 02:30 in Berlin: Sunday 02:30 does not exist (02:00 -> 03:00) -> 03:30 CEST
    assert await reminder_at("2025-03-31T02:30+02:00", "Europe/Berlin") == datetime.fromisoformat(
        "2025-03-30T03:30+02:00"
    )
    # Monday 01:30 in New York: Sunday 01:30 happens twice -> the second, EST one
    assert await reminder_at("2025-11-03T01:30-05:00", "America/New_York") == (
        datetime.fromisoformat("2025-11-02T01:30-05:00")
    )
    assert await reminder_at("2025-06-02T09:00Z", "Mars/Olympus_Mons", 2) == (
        datetime.fromisoformat("2025-06-02T07:00Z")
    )


async def test_only_upcoming_confirmed_bookings_are_reminded_and_only_once(
    db: asyncpg.Connection, pool: asyncpg.Pool, db_url: str
) -> None:
    ids = await trainer(db, "a", "Europe/Berlin", hours=24)
    soon = await book(db, ids, T + timedelta(hours=2))  # booked late: reminded at once
    tomorrow = await book(db, ids, T + timedelta(hours=23, minutes=59))
    await book(db, ids, T + timedelta(hours=25))  # not due yet
    await book(db, ids, T - timedelta(hours=3))  # already over
    await book(db, ids, T + timedelta(hours=5), status="CANCELLED")
    silent = await trainer(db, "no-reminders", hours=0)  # 0 hours: reminders off
    await book(db, silent, T + timedelta(hours=1))
    odd = await trainer(db, "odd-zone", "Not/A_Zone", hours=3)  # must not stop the others
    odd_booking = await book(db, odd, T + timedelta(hours=2))

    recorder = Recorder()
    sweeper = Sweeper(Settings(database_url=db_url), recorder)
    for _ in range(3):
        await sweep_at(sweeper, pool, T)
    assert sorted(r.booking_id for _, r in recorder.sent) == sorted([soon, tomorrow, odd_booking])
    sent = await db.fetch("SELECT id FROM bookings WHERE reminder_sent_at IS NOT NULL")
    assert sorted(row["id"] for row in sent) == sorted([soon, tomorrow, odd_booking])


async def test_a_claim_whose_sweeper_died_is_retried_after_the_lease_with_the_same_id(
    db: asyncpg.Connection, pool: asyncpg.Pool, db_url: str
) -> None:
    ids = await trainer(db, "a")
    booking_id = await book(db, ids, T + timedelta(hours=3))
    # a sweeper claims the reminder, then dies before marking it (sent or not)
    (claimed,), _ = await reminders.claim(db, limit=10, lease_seconds=300, now=T)
    recorder = Recorder()
    sweeper = Sweeper(Settings(database_url=db_url, reminder_lease_seconds=300), recorder)
    await sweep_at(sweeper, pool, T + timedelta(seconds=299))
    assert recorder.sent == []  # leased: nobody else sends it
    await sweep_at(sweeper, pool, T + timedelta(seconds=300))
    [(_, again)] = recorder.sent
    assert (again.booking_id, again.attempt) == (booking_id, 2)
    assert again.id == Reminder.from_row(claimed).id  # receivers can drop a duplicate
    await sweep_at(sweeper, pool, T + timedelta(hours=1))
    assert len(recorder.sent) == 1


@dataclass
class Hook:
    """What the webhook receiver saw; it answers 503 to the first ``fail`` attempts."""

    fail: dict[str, int]
    default_fail: int = 0
    seen: list[tuple[str, dict[str, Any], bool, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def receive(self, body: bytes, signature: str | None, delivery: str | None) -> int:
        payload = json.loads(body)
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        signed = signature is not None and hmac.compare_digest(signature, expected)
        signed = signed and delivery == payload["id"]
        with self.lock:
            tries = sum(1 for d, *_ in self.seen if d == delivery)
            booking = payload["booking"]["id"]
            status = 503 if tries < self.fail.get(booking, self.default_fail) else 200
            self.seen.append((delivery, payload, signed, status))
        return status

    def delivered(self) -> Counter[str]:
        return Counter(payload["booking"]["id"] for _, payload, _, s in self.seen if s == 200)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops the SYNs of concurrent senders


@pytest.fixture
def hook() -> Iterator[tuple[str, Hook]]:
    """A real HTTP receiver on 127.0.0.1, in a thread."""
    received = Hook(fail={})

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = received.receive(
                body, self.headers["X-Punchcard-Signature"], self.headers["X-Punchcard-Delivery"]
            )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/reminders", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def webhook_env(db_url: str, url: str, **extra: str) -> dict[str, str]:
    return child_env(
        DATABASE_URL=db_url,
        PUNCHCARD_REMINDER_WEBHOOK_URL=url,
        PUNCHCARD_REMINDER_WEBHOOK_SECRET=SECRET,
        PUNCHCARD_REMINDER_RETRY_SECONDS="30",
        **extra,
    )


async def test_webhook_reminders_are_signed_retried_with_backoff_and_delivered_once(
    db: asyncpg.Connection, db_url: str, hook: tuple[str, Hook]
) -> None:
    url, received = hook
    ids = await trainer(db, "hooked", "America/New_York")
    booked = [await book(db, ids, T + timedelta(hours=2, minutes=n)) for n in range(5)]
    stubborn = f"bkg_{booked[0]}"
    received.default_fail = 1  # every first attempt fails; the stubborn one's first two
    received.fail[stubborn] = 2
    env = webhook_env(db_url, url)

    async def sweep_once(after_seconds: int) -> int:
        """`punchcard sweep --once` at T + after_seconds; how many requests it made."""
        before = len(received.seen)
        moment = (T + timedelta(seconds=after_seconds)).isoformat()
        result = await asyncio.to_thread(
            subprocess.run,
            [*punchcard_command(), "sweep", "--once", "--now", moment],
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return len(received.seen) - before

    assert await sweep_once(0) == 5  # all due, all fail (503)
    assert await sweep_once(29) == 0  # backing off: first retry after 30 s
    assert await sweep_once(30) == 5  # four delivered; the stubborn one fails again
    assert await sweep_once(89) == 0  # its second retry waits 60 s (doubled)
    assert await sweep_once(90) == 1  # delivered
    assert await sweep_once(3600) == 0  # nothing is ever sent twice once delivered

    assert all(signed for _, _, signed, _ in received.seen)
    assert received.delivered() == Counter({f"bkg_{b}": 1 for b in booked})
    ids_per_booking = {(p["booking"]["id"], d) for d, p, *_ in received.seen}
    assert len(ids_per_booking) == 5  # one idempotency id per booking, on every attempt
    attempts = [p["attempt"] for d, p, *_ in received.seen if p["booking"]["id"] == stubborn]
    assert attempts == [1, 2, 3]
    first = next(p for _, p, *_ in received.seen if p["booking"]["id"] == stubborn)
    assert first["booking"]["startsAtLocal"] == "2030-01-15T09:00:00-05:00"
    assert first["client"] == {
        "id": f"cli_{ids[1]}",
        "name": "Ada",
        "email": "ada@example.com",
        "phone": None,
        # no zone of her own: the trainer's clock (tests/test_policies.py: a client's own)
        "timezone": "America/New_York",
        "startsAtLocal": "2030-01-15T09:00:00-05:00",
    }
    rows = await db.fetch("SELECT attempts, sent_at, last_error FROM reminders ORDER BY booking_id")
    assert [(r["attempts"], r["sent_at"] is not None, r["last_error"]) for r in rows] == [
        (3, True, None),
        *[(2, True, None)] * 4,
    ]


async def test_two_sweepers_send_each_reminder_once(
    db: asyncpg.Connection, db_url: str, hook: tuple[str, Hook], tmp_path: Path
) -> None:
    url, received = hook
    ids = await trainer(db, "busy")
    env = webhook_env(
        db_url, url, PUNCHCARD_SWEEP_POLL_SECONDS="60", PUNCHCARD_REMINDER_BATCH_SIZE="10"
    )
    logs = [tmp_path / "sweeper-1.log", tmp_path / "sweeper-2.log"]
    sweepers = [start(["sweep"], env, log) for log in logs]
    try:
        for process, log in zip(sweepers, logs, strict=True):
            await listening(process, log)
        async with db.transaction():  # 300 bookings over the next 5 hours, all due at once
            await db.execute(
                "INSERT INTO bookings (trainer_id, client_id, starts_at, ends_at)"
                " SELECT $1, $2, now() + g * interval '1 minute',"
                "        now() + g * interval '1 minute' + interval '1 hour'"
                "   FROM generate_series(1, 300) AS g",
                *ids,
            )
            await db.execute(NOTIFY_BOOKINGS)

        async def all_sent() -> bool:
            count: int = await db.fetchval(
                "SELECT count(*) FROM bookings WHERE reminder_sent_at IS NOT NULL"
            )
            return count == 300

        await eventually(all_sent, "300 reminders sent")
    finally:
        codes = [stop(process) for process in sweepers]
    assert codes == [0, 0]
    delivered = received.delivered()
    assert len(delivered) == 300 and set(delivered.values()) == {1}
    assert len(received.seen) == 300  # no attempt at all beyond the one that succeeded
    shares = [
        sum(
            int(line.split("sent ", 1)[1].split()[0])
            for line in log.read_text().splitlines()
            if " sent " in line and "reminders" in line
        )
        for log in logs
    ]
    assert sum(shares) == 300
    assert all(share > 0 for share in shares), shares  # both took part
