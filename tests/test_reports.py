"""History and liability: ``sessionsAsOf`` replays a package's ledger at the instants its
entries were written, ``packageReport`` matches a hand-computed expectation at three
moments, and ``GET /reports/packages.csv`` serves the same report with the API's auth.

Lifecycle entries (CANCEL, FREEZE, UNFREEZE, EXTEND, HOLD) are written here by SQL the way
migration 0007 writes its own (one guarded UPDATE of the package and its entry, counts and
revision consistent), since their mutations are built elsewhere."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from punchcard.gql.auth import issue_token
from punchcard.server.app import create_app
from punchcard.server.reports import HEADER, as_of, safe_text
from punchcard.settings import Settings
from tests.conftest import Api
from tests.helpers import RELEASE, USE, client, package, row_id
from tests.refusals import (
    CREATE_KEY,
    CREATE_OFFER,
    LATER,
    PACKAGE_REPORT,
    SELL_OFFER,
    SESSIONS_AS_OF,
    refused,
    unchanged,
)
from tests.test_calendar import StatementLog

US = timedelta(microseconds=1)
COUNTS = ("revision", "sessionsTotal", "sessionsUsed", "sessionsHeld", "status")

PLANT = """
WITH changed AS (
    UPDATE purchases AS p
       SET revision = p.revision + 1,
           sessions_held = p.sessions_held + $3,
           status = coalesce($4, p.status),
           frozen_at = CASE WHEN $4 = 'FROZEN' THEN now()
                            WHEN $4 IS NOT NULL THEN NULL ELSE p.frozen_at END,
           cancel_reason = CASE WHEN $4 = 'CANCELLED' THEN 'planted' ELSE p.cancel_reason END,
           expires_at = coalesce(($5::jsonb ->> 'expiresAtAfter')::timestamptz, p.expires_at)
     WHERE p.id = $1
    RETURNING p.*
)
INSERT INTO session_ledger
    (trainer_id, purchase_id, kind, delta, held_delta, sessions_used_after,
     sessions_held_after, sessions_total_after, revision, source, actor, reason, detail)
SELECT c.trainer_id, c.id, $2, 0, $3, c.sessions_used, c.sessions_held, c.sessions_total,
       c.revision, 'MANUAL', 'test', 'planted', $5::jsonb
  FROM changed AS c
RETURNING created_at
"""
STATUS_AFTER = {"CANCEL": "CANCELLED", "FREEZE": "FROZEN", "UNFREEZE": "ACTIVE"}


async def plant(
    db: asyncpg.Connection, purchase: str, kind: str, *, detail: dict[str, Any] | None = None
) -> datetime:
    """A lifecycle entry on ``purchase``; a HOLD comes with the CONFIRMED booking holding
    it. Returns the entry's created_at."""
    pid = row_id(purchase)
    async with db.transaction():
        if kind == "HOLD":
            await db.execute(
                "INSERT INTO bookings (trainer_id, client_id, purchase_id, starts_at, ends_at)"
                " SELECT trainer_id, client_id, id, '2030-06-01T10:00Z', '2030-06-01T11:00Z'"
                " FROM purchases WHERE id = $1",
                pid,
            )
        created: datetime = await db.fetchval(
            PLANT,
            pid,
            kind,
            1 if kind == "HOLD" else 0,
            STATUS_AFTER.get(kind),
            json.dumps(detail) if detail is not None else None,
        )
    return created


async def as_of_entries(db: asyncpg.Connection, purchase: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT revision, created_at, sessions_used_after FROM session_ledger"
        " WHERE purchase_id = $1 ORDER BY revision",
        row_id(purchase),
    )


async def at(api: Api, purchase: str, moment: datetime) -> dict[str, Any] | None:
    found: dict[str, Any] | None = (
        await api.data(SESSIONS_AS_OF, id=purchase, at=moment.isoformat())
    )["sessionsAsOf"]
    return found


def counts(found: dict[str, Any] | None) -> tuple[Any, ...] | None:
    return tuple(found[k] for k in COUNTS) if found is not None else None


# --- sessionsAsOf ---------------------------------------------------------------------------


async def test_sessions_as_of_replays_uses_and_releases_at_their_instants(
    api: Api, db: asyncpg.Connection
) -> None:
    sold = await package(api, total=5)
    pid = sold["id"]
    for document in (USE, USE, RELEASE, USE):
        await api.data(document, id=pid)
    sold_at = await db.fetchval("SELECT created_at FROM purchases WHERE id = $1", row_id(pid))
    entries = await as_of_entries(db, pid)
    assert [e["sessions_used_after"] for e in entries] == [1, 2, 1, 2]

    assert await at(api, pid, sold_at - US) is None  # not sold yet
    first = await at(api, pid, sold_at)
    assert first is not None
    assert counts(first) == (0, 5, 0, 0, "ACTIVE")
    assert (first["sessionsRemaining"], first["sessionsAvailable"]) == (5, 5)
    assert first["purchase"] == {"id": pid}
    assert datetime.fromisoformat(first["at"]) == sold_at
    before = (0, 0)
    for entry in entries:
        just_before = await at(api, pid, entry["created_at"] - US)
        assert just_before is not None
        assert (just_before["revision"], just_before["sessionsUsed"]) == before
        found = await at(api, pid, entry["created_at"])
        assert found is not None
        assert (found["revision"], found["sessionsUsed"]) == (
            entry["revision"],
            entry["sessions_used_after"],
        )
        assert found["sessionsRemaining"] == 5 - entry["sessions_used_after"]
        before = (entry["revision"], entry["sessions_used_after"])
    # the far future: the counts now
    assert counts(await at(api, pid, datetime(2099, 1, 1, tzinfo=UTC))) == (4, 5, 2, 0, "ACTIVE")


async def test_sessions_as_of_follows_lifecycle_entries(api: Api, db: asyncpg.Connection) -> None:
    """Holds, a freeze and its end, an extension and a cancel: the status, the counts and
    the expiry as they stood after each, and before it."""
    expires = datetime.now(UTC) + timedelta(days=30)
    pid = (await package(api, total=3, expires=expires))["id"]
    await api.data(USE, id=pid)
    held = await plant(db, pid, "HOLD")
    frozen = await plant(db, pid, "FREEZE", detail={"frozenUntil": None})
    thawed = await plant(db, pid, "UNFREEZE")
    extended_to = expires + timedelta(days=10)
    extended = await plant(
        db,
        pid,
        "EXTEND",
        detail={"expiresAtBefore": expires.isoformat(), "expiresAtAfter": extended_to.isoformat()},
    )
    cancelled = await plant(db, pid, "CANCEL")

    expected = [
        (held, (2, 3, 1, 1, "ACTIVE"), expires),
        (frozen, (3, 3, 1, 1, "FROZEN"), expires),
        (thawed, (4, 3, 1, 1, "ACTIVE"), expires),
        (extended, (5, 3, 1, 1, "ACTIVE"), extended_to),
        (cancelled, (6, 3, 1, 1, "CANCELLED"), extended_to),
    ]
    previous = (1, 3, 1, 0, "ACTIVE")
    for instant, after, expiry in expected:
        assert counts(await at(api, pid, instant - US)) == previous
        found = await at(api, pid, instant)
        assert found is not None
        assert counts(found) == after
        assert found["sessionsAvailable"] == 3 - after[2] - after[3]
        assert datetime.fromisoformat(found["expiresAt"]) == expiry
        previous = after
    assert (await api.data("query($id: ID!) { purchase(id: $id) { status } }", id=pid))["purchase"][
        "status"
    ] == "CANCELLED"


async def test_sessions_as_of_expired_by_time(api: Api) -> None:
    expires = datetime.now(UTC) + timedelta(days=3)
    pid = (await package(api, total=2, expires=expires))["id"]
    assert counts(await at(api, pid, expires - US)) == (0, 2, 0, 0, "ACTIVE")
    assert counts(await at(api, pid, expires)) == (0, 2, 0, 0, "EXPIRED")


async def test_sessions_as_of_finds_only_the_callers_packages(
    api: Api, other: Api, db: asyncpg.Connection
) -> None:
    pid = (await package(api))["id"]
    later = datetime(2099, 1, 1, tzinfo=UTC).isoformat()
    await other.data("{ me { id } }")  # provisioned before the snapshot
    async with unchanged(db):
        assert (await other.data(SESSIONS_AS_OF, id=pid, at=later))["sessionsAsOf"] is None
        for wrong in ("pur_999999", pid.replace("pur_", "cli_")):
            assert (await api.data(SESSIONS_AS_OF, id=wrong, at=later))["sessionsAsOf"] is None
        for malformed in ("", "pur_0", "pur_x"):
            code = await refused(api, SESSIONS_AS_OF, id=malformed, at=later)
            assert code == "BAD_USER_INPUT"
        for bad_time in ("2030-01-01T10:00:00", "tomorrow", ""):
            code = await refused(api, SESSIONS_AS_OF, id=pid, at=bad_time)
            assert code == "BAD_USER_INPUT", bad_time
        assert await refused(api.with_token(None), SESSIONS_AS_OF, id=pid, at=later) == (
            "UNAUTHENTICATED"
        )


# --- packageReport ------------------------------------------------------------------------


async def offer(api: Api, name: str, total: int, days: int | None, price: int | None) -> str:
    made = await api.data(CREATE_OFFER, name=name, total=total, days=days, price=price)
    offer_id: str = made["createOffer"]["id"]
    return offer_id


async def sell(api: Api, client_id: str, total: int, offer_id: str) -> str:
    sold = await api.data(SELL_OFFER, client=client_id, total=total, offer=offer_id)
    purchase_id: str = sold["sellPackage"]["id"]
    return purchase_id


async def build_book(api: Api, db: asyncpg.Connection) -> dict[str, Any]:
    """Six packages of three clients (see the expectation below), and the instant after
    package A's second use."""
    ten = await offer(api, "Ten pack", 10, 60, 15000)  # 1500 a session
    three = await offer(api, "Three pack", 3, 10, 10000)  # 3333.33... a session
    free = await offer(api, "Trial", 4, None, None)
    ada, bob, cy = [await client(api, name) for name in ("Ada", "Bob", "Cy")]
    a = await sell(api, ada, 10, ten)
    for document in (USE, USE, USE, RELEASE):
        await api.data(document, id=a)
    second_use = (await as_of_entries(db, a))[1]["created_at"]
    b = await sell(api, ada, 3, three)
    await api.data(USE, id=b)
    c = (await package(api, bob, total=5))["id"]  # no offer, no expiry
    d = await sell(api, bob, 4, free)
    await api.data(USE, id=d)
    e = await sell(api, cy, 10, ten)
    await api.data(USE, id=e)
    await plant(db, e, "CANCEL")
    f = await sell(api, cy, 10, ten)
    await plant(db, f, "HOLD")
    return {
        "ids": [a, b, c, d, e, f],
        "clients": [ada, ada, bob, bob, cy, cy],
        "offers": [ten, three, None, free, ten, ten],
        "second_use": second_use,
    }


FIELDS = (
    "sessionsTotal",
    "sessionsUsed",
    "sessionsHeld",
    "sessionsRemaining",
    "sessionsAvailable",
    "status",
    "expiringWithin30Days",
    "unitPriceCents",
    "unusedValueCents",
)
# (total, used, held, remaining, available, status, expiring in 30 days, unit, unused value)
NOW = [
    (10, 2, 0, 8, 8, "ACTIVE", 0, 1500, 12000),  # A: 3 uses, 1 release
    (3, 1, 0, 2, 2, "ACTIVE", 2, 3333, 6667),  # B: expires in 10 days; 2 x 10000 / 3
    (5, 0, 0, 5, 5, "ACTIVE", 0, None, None),  # C: no offer
    (4, 1, 0, 3, 3, "ACTIVE", 0, None, None),  # D: an offer without a price
    (10, 1, 0, 9, 9, "CANCELLED", 0, 1500, 0),  # E: cancelled: nothing owed
    (10, 0, 1, 10, 9, "ACTIVE", 0, 1500, 15000),  # F: one session held
]
IN_45_DAYS = [
    (10, 2, 0, 8, 8, "ACTIVE", 8, 1500, 12000),  # A expires on day 60: within 30 days
    (3, 1, 0, 2, 2, "EXPIRED", 0, 3333, 0),  # B expired on day 10
    NOW[2],
    NOW[3],
    NOW[4],
    (10, 0, 1, 10, 9, "ACTIVE", 10, 1500, 15000),
]


def table(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [tuple(row[k] for k in FIELDS) for row in report["packages"]]


def totals(rows: list[tuple[Any, ...]]) -> dict[str, int]:
    return {
        "packages": len(rows),
        **{k: sum(r[i] for r in rows) for i, k in enumerate(FIELDS[:5])},
        "expiringWithin30Days": sum(r[6] for r in rows),
        "unusedValueCents": sum(r[8] or 0 for r in rows),
    }


async def test_the_package_report_matches_a_hand_computed_book(
    api: Api, db: asyncpg.Connection
) -> None:
    book = await build_book(api, db)
    before = datetime.now(UTC)
    report = (await api.data(PACKAGE_REPORT))["packageReport"]  # asOf: now
    assert before <= datetime.fromisoformat(report["asOf"]) <= datetime.now(UTC)
    assert [r["purchase"]["id"] for r in report["packages"]] == book["ids"]
    assert [r["client"]["id"] for r in report["packages"]] == book["clients"]
    assert [r["offer"] and r["offer"]["id"] for r in report["packages"]] == book["offers"]
    assert table(report) == NOW
    assert report["totals"] == totals(NOW)
    assert report["totals"]["unusedValueCents"] == 33667

    later = datetime.now(UTC) + timedelta(days=45)
    future = (await api.data(PACKAGE_REPORT, asOf=later.isoformat()))["packageReport"]
    assert table(future) == IN_45_DAYS
    assert future["totals"] == totals(IN_45_DAYS)
    assert (future["totals"]["expiringWithin30Days"], future["totals"]["unusedValueCents"]) == (
        18,
        27000,
    )

    # after A's second use only A existed, with two sessions used
    past = (await api.data(PACKAGE_REPORT, asOf=book["second_use"].isoformat()))["packageReport"]
    assert [(r["purchase"]["id"], r["revision"]) for r in past["packages"]] == [(book["ids"][0], 2)]
    assert table(past) == [(10, 2, 0, 8, 8, "ACTIVE", 0, 1500, 12000)]
    empty = (await api.data(PACKAGE_REPORT, asOf="2000-01-01T00:00:00Z"))["packageReport"]
    assert empty["packages"] == [] and empty["totals"]["packages"] == 0


async def test_each_report_row_is_that_package_as_of_the_same_moment(
    api: Api, db: asyncpg.Connection
) -> None:
    await build_book(api, db)
    for moment in (datetime.now(UTC), datetime.now(UTC) + timedelta(days=45)):
        report = (await api.data(PACKAGE_REPORT, asOf=moment.isoformat()))["packageReport"]
        for row in report["packages"]:
            alone = await at(api, row["purchase"]["id"], moment)
            assert alone is not None
            assert {k: alone[k] for k in alone if k in row} == {
                k: row[k] for k in alone if k in row
            }


async def test_the_report_holds_only_the_callers_packages(
    api: Api, other: Api, db: asyncpg.Connection
) -> None:
    await build_book(api, db)
    theirs = (await package(other, total=7))["id"]
    report = (await other.data(PACKAGE_REPORT))["packageReport"]
    assert [r["purchase"]["id"] for r in report["packages"]] == [theirs]
    assert report["totals"]["sessionsTotal"] == 7
    for bad in ("2030-01-01T10:00:00", "soon"):
        assert await refused(api, PACKAGE_REPORT, asOf=bad) == "BAD_USER_INPUT"
    assert await refused(api.with_token(None), PACKAGE_REPORT) == "UNAUTHENTICATED"


# --- GET /reports/packages.csv --------------------------------------------------------------

CSV = "/reports/packages.csv"


async def get_csv(api: Api, token: str | None, **params: str) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await api.http.get(CSV, params=params, headers=headers)


def parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


async def test_the_csv_is_the_report_with_a_total_line(api: Api, db: asyncpg.Connection) -> None:
    book = await build_book(api, db)
    moment = datetime.now(UTC) + timedelta(days=45)
    response = await get_csv(api, api.token, asOf=moment.isoformat())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="packages-{moment.date().isoformat()}.csv"'
    )
    lines = parse(response.text)
    assert tuple(lines[0]) == HEADER
    body, total = lines[1:-1], lines[-1]
    report = (await api.data(PACKAGE_REPORT, asOf=moment.isoformat()))["packageReport"]
    assert [line[0] for line in body] == book["ids"]
    assert [line[1] for line in body] == book["clients"]
    assert [line[2] for line in body] == ["Ada", "Ada", "Bob", "Bob", "Cy", "Cy"]
    assert [line[3] for line in body] == [
        "Ten pack",
        "Three pack",
        "",
        "Trial",
        "Ten pack",
        "Ten pack",
    ]
    numbers = [line[7:] for line in body]
    expected = [
        [str(v) if v is not None else "" for v in (*row[:5], row[6], row[7], row[8])]
        for row in IN_45_DAYS
    ]
    assert numbers == expected
    assert [line[5] for line in body] == [row[5] for row in IN_45_DAYS]
    for line, row in zip(body, report["packages"], strict=True):
        assert datetime.fromisoformat(line[4]) == datetime.fromisoformat(row["soldAt"])
        assert ((line[6] and datetime.fromisoformat(line[6])) or None) == (
            row["expiresAt"] and datetime.fromisoformat(row["expiresAt"])
        )
    sums = report["totals"]
    assert total == [
        "TOTAL", "", "6 packages", "", "", "", "",
        *(str(sums[k]) for k in FIELDS[:5]), str(sums["expiringWithin30Days"]), "",
        str(sums["unusedValueCents"]),
    ]  # fmt: skip


async def test_the_csv_defaults_to_now_and_reads_an_unencoded_plus(
    api: Api, db: asyncpg.Connection
) -> None:
    await build_book(api, db)
    now = await get_csv(api, api.token)
    assert now.status_code == 200
    assert [line[7:] for line in parse(now.text)[1:-1]] == [
        [str(v) if v is not None else "" for v in (*row[:5], row[6], row[7], row[8])] for row in NOW
    ]
    # '+' in a query string is a space once decoded: the offset is still understood
    raw = await api.http.get(
        CSV + "?asOf=2000-01-01T10:00:00+02:00", headers={"Authorization": f"Bearer {api.token}"}
    )
    assert raw.status_code == 200, raw.text
    assert parse(raw.text) == [
        list(HEADER),
        ["TOTAL", "", "0 packages", *[""] * 4, *["0"] * 6, "", "0"],
    ]
    assert 'filename="packages-2000-01-01.csv"' in raw.headers["content-disposition"]


async def test_the_csv_escapes_what_a_spreadsheet_would_run(api: Api) -> None:
    names = [
        '=HYPERLINK("http://evil.example","x")',
        "+1 shout",
        "-2",
        "@SUM(A1)",
        "Plain",
    ]
    for name in names:
        await package(api, await client(api, name), total=1)
    evil_offer = await offer(api, "=cmd|' /C calc'!A0", 2, None, 100)
    await sell(api, await client(api, "Zed"), 2, evil_offer)
    lines = parse((await get_csv(api, api.token)).text)[1:-1]
    got = {line[2] for line in lines}
    assert got == {
        '\'=HYPERLINK("http://evil.example","x")',
        "'+1 shout",
        "'-2",
        "'@SUM(A1)",
        "Plain",
        "Zed",
    }
    assert "'=cmd|' /C calc'!A0" in {line[3] for line in lines}
    # names are stripped when stored; a tab or carriage return first would be escaped too
    assert (safe_text("\tx"), safe_text("\rx"), safe_text("a=b"), safe_text(None)) == (
        "'\tx",
        "'\rx",
        "a=b",
        "",
    )


async def test_the_csv_needs_the_apis_auth(api: Api, other: Api, db: asyncpg.Connection) -> None:
    await build_book(api, db)
    created = (await api.data(CREATE_KEY, name="accountant", scopes=["READ"]))["createApiKey"]
    async with unchanged(db):
        for token in (None, "not-a-token", other.token + "x" if other.token else "x"):
            refusal = await get_csv(api, token)
            assert refusal.status_code == 401
            assert refusal.headers["www-authenticate"] == "Bearer"
            assert refusal.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        for bad in ("yesterday", "2030-01-01T10:00:00", "2030-01-01", "", "9" * 40):
            refusal = await get_csv(api, api.token, asOf=bad)
            assert refusal.status_code == 400, bad
            body = refusal.json()
            assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
            assert "asOf" in body["errors"][0]["message"]
    moment = datetime.now(UTC).isoformat()
    by_key = await get_csv(api, created["secret"], asOf=moment)
    assert by_key.status_code == 200
    assert by_key.text == (await get_csv(api, api.token, asOf=moment)).text
    theirs = parse((await get_csv(api, other.token, asOf=moment)).text)
    assert theirs[1:] == [["TOTAL", "", "0 packages", *[""] * 4, *["0"] * 6, "", "0"]]
    assert (
        await api.http.post(CSV, headers={"Authorization": f"Bearer {api.token}"})
    ).status_code == 405


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-01-01T10:00:00Z", "2030-01-01T10:00:00+00:00"),
        ("2030-01-01T10:00:00+02:00", "2030-01-01T08:00:00+00:00"),
        ("2030-01-01T10:00:00 02:00", "2030-01-01T08:00:00+00:00"),
        ("2030-01-01 10:00:00-05:00", "2030-01-01T15:00:00+00:00"),
    ],
)
def test_as_of_parsing(text: str, expected: str) -> None:
    parsed = as_of(text)
    assert parsed is not None and parsed.isoformat() == expected


# --- one statement, whatever the number of packages ----------------------------------------


@pytest.fixture
async def counted(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, StatementLog]]:
    """The app on one pooled connection whose statements are logged (as production sends
    them: without the differential check's second run)."""
    log = StatementLog()
    one = replace(settings, pool_min_size=1, pool_max_size=1, planner_differential=False)
    app = create_app(one, on_connect=log.attach)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http, log


async def seed(db: asyncpg.Connection, packages: int) -> None:
    trainer = await db.fetchval("INSERT INTO trainers (subject) VALUES ('trainer-a') RETURNING id")
    await db.execute(
        """
        WITH c AS (
            INSERT INTO clients (trainer_id, name)
            SELECT $1, 'Client ' || n FROM generate_series(1, $2) AS n RETURNING id
        ), o AS (
            INSERT INTO offers (trainer_id, name, sessions_total, price_cents)
            VALUES ($1, 'Pack', 10, 9000) RETURNING id
        )
        INSERT INTO purchases (trainer_id, client_id, offer_id, sessions_total)
        SELECT $1, c.id, o.id, 10 FROM c, o
        """,
        trainer,
        packages,
    )


@pytest.mark.parametrize("packages", [2, 40])
async def test_the_report_is_one_statement_whatever_its_size(
    counted: tuple[httpx.AsyncClient, StatementLog],
    settings: Settings,
    db: asyncpg.Connection,
    packages: int,
) -> None:
    http, log = counted
    await seed(db, packages)
    headers = {"Authorization": f"Bearer {issue_token(settings, 'trainer-a')}"}
    nested = {"query": PACKAGE_REPORT, "variables": {"asOf": LATER}}
    flat = {"query": "{ packageReport { totals { packages unusedValueCents } } }"}
    await http.post("/graphql", json=nested, headers=headers)  # warm-up: token, type info
    for request, expected in ((flat, 1), (nested, 4)):  # nested: + clients, offers, purchases
        log.statements.clear()
        body = (await http.post("/graphql", json=request, headers=headers)).json()
        assert "errors" not in body, body
        assert body["data"]["packageReport"]["totals"]["packages"] == packages
        assert len(log.statements) == expected, log.statements
    log.statements.clear()
    response = await http.get(CSV, headers=headers)
    assert response.status_code == 200
    assert len(parse(response.text)) == packages + 2
    assert len(log.statements) == 1, log.statements
