"""Policies through the API: ``updateTrainer`` and ``updateClient`` change only the fields
given, refuse bad input changing nothing, keep concurrent updates of different fields, and
a zone set through the API is the one the sweeper's reminders follow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from punchcard.settings import Settings
from punchcard.sweeper.senders import Reminder
from punchcard.sweeper.worker import Sweeper
from tests.conftest import Api
from tests.helpers import client, row_id
from tests.refusals import CREATE_KEY, UPDATE_CLIENT, UPDATE_TRAINER, refused, unchanged

ME = "{ me { id name email timezone reminderHoursBefore lateCancelHours } }"
CREATE_CLIENT = """
mutation($name: String!, $timezone: String) {
  createClient(input: {name: $name, timezone: $timezone}) { id }
}"""
CREATE_BOOKING = """
mutation($client: ID!, $start: DateTime!, $end: DateTime!) {
  createBooking(input: {clientId: $client, startsAt: $start, endsAt: $end}) { id }
}"""


async def me(api: Api) -> dict[str, Any]:
    found: dict[str, Any] = (await api.data(ME))["me"]
    return found


async def reader(api: Api) -> Api:
    """An API key of the trainer's with READ scope only."""
    created = await api.data(CREATE_KEY, name="report reader", scopes=["READ"])
    return api.with_token(created["createApiKey"]["secret"])


# --- updateTrainer ------------------------------------------------------------------------


async def test_update_trainer_changes_only_the_fields_given(api: Api) -> None:
    before = await me(api)
    assert (before["timezone"], before["reminderHoursBefore"]) == ("UTC", 24)
    assert before["lateCancelHours"] is None

    changed = (await api.data(UPDATE_TRAINER, name="  Coach Kim  ", late=24))["updateTrainer"]
    assert changed == {
        "id": before["id"],
        "name": "Coach Kim",
        "timezone": "UTC",
        "reminderHoursBefore": 24,
        "lateCancelHours": 24,
    }
    assert await me(api) == {**before, "name": "Coach Kim", "lateCancelHours": 24}

    await api.data(UPDATE_TRAINER, timezone="Europe/Berlin", hours=0)
    assert await me(api) == {
        **before,
        "name": "Coach Kim",
        "lateCancelHours": 24,
        "timezone": "Europe/Berlin",
        "reminderHoursBefore": 0,
    }
    # an explicit null clears the late-cancel policy; nothing given changes nothing
    await api.data(UPDATE_TRAINER, late=None)
    assert (await me(api))["lateCancelHours"] is None
    assert (await api.data(UPDATE_TRAINER))["updateTrainer"]["name"] == "Coach Kim"
    # the limits themselves are allowed
    await api.data(UPDATE_TRAINER, hours=168, late=720, name="")
    assert (await me(api))["reminderHoursBefore"] == 168
    assert (await me(api))["lateCancelHours"] == 720
    assert (await me(api))["name"] == ""


async def test_update_trainer_writes_the_columns(api: Api, db: asyncpg.Connection) -> None:
    trainer = row_id((await me(api))["id"])
    await api.data(UPDATE_TRAINER, timezone="Asia/Kolkata", hours=36, late=48)
    row = await db.fetchrow(
        "SELECT timezone, reminder_hours_before, late_cancel_hours FROM trainers WHERE id = $1",
        trainer,
    )
    assert tuple(row) == ("Asia/Kolkata", 36, 48)


BAD_TRAINER_INPUT = {
    "hours below 0": {"hours": -1},
    "hours above a week": {"hours": 169},
    "late below 0": {"late": -1},
    "late above 30 days": {"late": 721},
    "name too long": {"name": "x" * 201},
    "name null": {"name": None},
    "name with NUL": {"name": "Kim\x00"},
    "unknown zone": {"timezone": "Mars/Olympus_Mons"},
    "empty zone": {"timezone": ""},
    "zone as a path": {"timezone": "../../etc/passwd"},
    "zone null": {"timezone": None},
    "hours null": {"hours": None},
    "good name, bad hours": {"name": "Fine", "hours": 1000},
    "good zone, bad late": {"timezone": "Europe/Paris", "late": 10_000},
    "hours not an int": {"hours": 2.5},
}


@pytest.mark.parametrize("variables", BAD_TRAINER_INPUT.values(), ids=BAD_TRAINER_INPUT)
async def test_bad_trainer_settings_are_refused_and_change_nothing(
    api: Api, db: asyncpg.Connection, variables: dict[str, Any]
) -> None:
    await me(api)  # provisioned before the snapshot
    async with unchanged(db):
        assert await refused(api, UPDATE_TRAINER, **variables) == "BAD_USER_INPUT"


async def test_update_trainer_needs_a_writer(api: Api, db: asyncpg.Connection) -> None:
    key = await reader(api)
    async with unchanged(db):
        assert await refused(key, UPDATE_TRAINER, name="Mallory") == "FORBIDDEN"
        assert await refused(api.with_token(None), UPDATE_TRAINER, name="X") == "UNAUTHENTICATED"
        assert await refused(api.with_token("not-a-token"), UPDATE_TRAINER, late=1) == (
            "UNAUTHENTICATED"
        )
    assert (await key.data(ME))["me"] == await me(api)  # the key may read the settings


async def test_each_trainer_changes_only_their_own_settings(api: Api, other: Api) -> None:
    theirs = await me(other)
    await api.data(UPDATE_TRAINER, name="A", timezone="Europe/Oslo", hours=2, late=3)
    assert await me(other) == theirs


async def test_concurrent_updates_of_different_fields_keep_each_other(api: Api) -> None:
    """Four callers, each changing its own field ten times, all at once: every field ends
    at its own caller's last value (a read-modify-write of the whole row would lose some)."""
    await me(api)
    zones = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"] * 3
    rounds = 10

    async def each(variable: str, value: Any) -> None:
        for n in range(rounds):
            await api.data(UPDATE_TRAINER, **{variable: value(n)})

    await asyncio.gather(
        each("name", lambda n: f"name {n}"),
        each("timezone", lambda n: zones[n]),
        each("hours", lambda n: n + 1),
        each("late", lambda n: 100 + n),
    )
    last = rounds - 1
    assert {k: v for k, v in (await me(api)).items() if k not in {"id", "email"}} == {
        "name": f"name {last}",
        "timezone": zones[last],
        "reminderHoursBefore": last + 1,
        "lateCancelHours": 100 + last,
    }


async def test_many_concurrent_updates_of_one_field_end_at_one_of_them(
    api: Api, db: asyncpg.Connection
) -> None:
    trainer = row_id((await me(api))["id"])
    values = list(range(1, 31))
    results = await asyncio.gather(*(api.post(UPDATE_TRAINER, late=v) for v in values))
    assert all("errors" not in r for r in results), results
    stored = await db.fetchval("SELECT late_cancel_hours FROM trainers WHERE id = $1", trainer)
    assert stored in values


# --- updateClient -------------------------------------------------------------------------


async def test_update_client_changes_only_the_fields_given(api: Api) -> None:
    cid = (await api.data(CREATE_CLIENT, name="Ada", timezone="Europe/London"))["createClient"][
        "id"
    ]
    updated = (await api.data(UPDATE_CLIENT, id=cid, email="ada@example.com", phone="+44 1"))[
        "updateClient"
    ]
    assert updated == {
        "id": cid,
        "name": "Ada",
        "email": "ada@example.com",
        "phone": "+44 1",
        "timezone": "Europe/London",
    }
    renamed = (await api.data(UPDATE_CLIENT, id=cid, name=" Ada Lovelace "))["updateClient"]
    assert renamed == {**updated, "name": "Ada Lovelace"}
    cleared = (await api.data(UPDATE_CLIENT, id=cid, email=None, timezone=None))["updateClient"]
    assert cleared == {**renamed, "email": None, "timezone": None}
    assert (await api.data(UPDATE_CLIENT, id=cid))["updateClient"] == cleared
    found = await api.data("query($id: ID!) { client(id: $id) { name phone email } }", id=cid)
    assert found["client"] == {"name": "Ada Lovelace", "phone": "+44 1", "email": None}


BAD_CLIENT_INPUT = {
    "empty name": {"name": ""},
    "blank name": {"name": "   "},
    "name null": {"name": None},
    "name too long": {"name": "x" * 201},
    "not an email": {"email": "ada.example.com"},
    "email too long": {"email": "a@" + "x" * 320},
    "phone too long": {"phone": "1" * 321},
    "phone with NUL": {"phone": "1\x002"},
    "unknown zone": {"timezone": "Nowhere/Land"},
    "good name, bad zone": {"name": "Fine", "timezone": "Nowhere/Land"},
}


@pytest.mark.parametrize("variables", BAD_CLIENT_INPUT.values(), ids=BAD_CLIENT_INPUT)
async def test_bad_client_details_are_refused_and_change_nothing(
    api: Api, db: asyncpg.Connection, variables: dict[str, Any]
) -> None:
    cid = await client(api)
    async with unchanged(db):
        assert await refused(api, UPDATE_CLIENT, id=cid, **variables) == "BAD_USER_INPUT"


async def test_update_client_finds_only_the_callers_clients(
    api: Api, other: Api, db: asyncpg.Connection
) -> None:
    mine = await client(api)
    theirs = await client(other, "Bea")
    key = await reader(api)
    async with unchanged(db):
        for wrong in (theirs, "cli_999999", mine.replace("cli_", "pur_")):
            assert await refused(api, UPDATE_CLIENT, id=wrong, name="X") == "NOT_FOUND", wrong
        for malformed in ("", "cli_0", "cli_x", "x" * 5000):
            assert await refused(api, UPDATE_CLIENT, id=malformed, name="X") == "BAD_USER_INPUT"
        assert await refused(other, UPDATE_CLIENT, id=mine, phone="1") == "NOT_FOUND"
        assert await refused(key, UPDATE_CLIENT, id=mine, name="X") == "FORBIDDEN"
        assert await refused(api.with_token(None), UPDATE_CLIENT, id=mine) == "UNAUTHENTICATED"
    assert (await other.data(UPDATE_CLIENT, id=theirs, name="Bea B"))["updateClient"]["name"] == (
        "Bea B"
    )


async def test_concurrent_client_updates_of_different_fields_keep_each_other(api: Api) -> None:
    cid = await client(api)
    rounds = 10

    async def each(variable: str, value: Any) -> None:
        for n in range(rounds):
            await api.data(UPDATE_CLIENT, id=cid, **{variable: value(n)})

    await asyncio.gather(
        each("name", lambda n: f"Ada {n}"),
        each("email", lambda n: f"ada{n}@example.com"),
        each("phone", lambda n: f"+1 555 {n:04}"),
    )
    found = (await api.data(UPDATE_CLIENT, id=cid))["updateClient"]
    assert (found["name"], found["email"], found["phone"]) == (
        "Ada 9",
        "ada9@example.com",
        "+1 555 0009",
    )


# --- reminders follow the zone set through the API ------------------------------------------


@dataclass
class Recorder:
    sent: list[Reminder] = field(default_factory=list)

    async def send(self, reminder: Reminder) -> None:
        self.sent.append(reminder)

    async def aclose(self) -> None:
        pass


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool: asyncpg.Pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


# Sunday 10 March 2030, 09:00 in New York (EDT, clocks went forward at 02:00 that day): a
# 24-hour reminder on New York's wall clock is Saturday 09:00 EST = 14:00 UTC, an hour
# later than 24 hours before in UTC (13:00 UTC), so the zone in use shows.
STARTS = datetime.fromisoformat("2030-03-10T09:00:00-04:00")
IN_UTC = datetime.fromisoformat("2030-03-09T13:00:00+00:00")
IN_NEW_YORK = datetime.fromisoformat("2030-03-09T09:00:00-05:00")


async def test_reminders_follow_the_zone_set_through_update_trainer(
    api: Api, pool: asyncpg.Pool, db_url: str
) -> None:
    await api.data(UPDATE_TRAINER, timezone="America/New_York", hours=24)
    traveller = (await api.data(CREATE_CLIENT, name="Tomo", timezone="Asia/Tokyo"))["createClient"][
        "id"
    ]
    local = await client(api, "Lou")  # no zone of their own
    bookings = {}
    for cid in (traveller, local):
        made = await api.data(
            CREATE_BOOKING, client=cid, start=STARTS.isoformat(), end="2030-03-10T10:00:00-04:00"
        )
        bookings[made["createBooking"]["id"]] = cid

    recorder = Recorder()
    sweeper = Sweeper(Settings(database_url=db_url), recorder)
    sweeper.now = IN_UTC  # when a UTC trainer's reminder would be due
    await sweeper.sweep_pass(pool)
    assert recorder.sent == []
    sweeper.now = IN_NEW_YORK
    await sweeper.sweep_pass(pool)

    assert sorted(r.booking_id for r in recorder.sent) == sorted(map(row_id, bookings))
    for reminder in recorder.sent:
        assert reminder.remind_at == IN_NEW_YORK
        payload = reminder.payload()
        assert payload["remindAt"] == IN_NEW_YORK.astimezone(UTC).isoformat()
        assert payload["booking"]["timezone"] == "America/New_York"
        assert payload["booking"]["startsAtLocal"] == "2030-03-10T09:00:00-04:00"
        if payload["client"]["id"] == traveller:
            assert payload["client"]["timezone"] == "Asia/Tokyo"
            assert payload["client"]["startsAtLocal"] == "2030-03-10T22:00:00+09:00"
        else:
            assert payload["client"]["timezone"] == "America/New_York"
            assert payload["client"]["startsAtLocal"] == "2030-03-10T09:00:00-04:00"
    # a later change of zone or hours never sends a reminder again
    await api.data(UPDATE_TRAINER, timezone="Pacific/Honolulu", hours=2)
    for now in (IN_NEW_YORK.replace(hour=23), STARTS.replace(hour=8)):
        sweeper.now = now
        await sweeper.sweep_pass(pool)
    assert len(recorder.sent) == 2


async def test_reminders_stop_when_the_trainer_sets_zero_hours(
    api: Api, pool: asyncpg.Pool, db_url: str
) -> None:
    await api.data(UPDATE_TRAINER, timezone="America/New_York", hours=0)
    cid = await client(api)
    await api.data(
        CREATE_BOOKING, client=cid, start=STARTS.isoformat(), end="2030-03-10T10:00:00-04:00"
    )
    recorder = Recorder()
    sweeper = Sweeper(Settings(database_url=db_url), recorder)
    for now in (IN_UTC, IN_NEW_YORK, STARTS.replace(hour=8)):
        sweeper.now = now
        await sweeper.sweep_pass(pool)
    assert recorder.sent == []
