"""Bad input gets a clear error and changes nothing.

Every refused call runs inside ``unchanged(db)``: every row of every table (counts,
sessions_used, revision, statuses, ledger, idempotency keys) is compared before and after.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from punchcard.settings import Settings
from tests.conftest import Api
from tests.helpers import (
    CANCEL,
    COMPLETE,
    CREATE_BOOKING,
    NO_SHOW,
    RELEASE,
    SELL,
    USE,
    at,
    iso,
)
from tests.refusals import (
    API_KEYS,
    BOOKINGS,
    CLIENTS,
    CREATE_KEY,
    CREATE_OFFER,
    ID_SLOTS,
    LEDGER,
    MUTATIONS,
    QUERY_SLOTS,
    IdSlot,
    QuerySlot,
    Variables,
    World,
    build_world,
    invalid,
    malformed,
    of_other_kind,
    refused,
    snapshot,
    unchanged,
)

CREATE_CLIENT_FULL = """
mutation($name: String!, $email: String, $phone: String, $timezone: String) {
  createClient(input: {name: $name, email: $email, phone: $phone, timezone: $timezone}) { id }
}"""
NESTED_LEDGER = """
query($id: ID!, $first: Int, $after: String) {
  purchase(id: $id) { ledger(first: $first, after: $after) { nodes { id } } }
}"""
NAIVE = "2030-01-01T10:00:00"  # no UTC offset: which instant is it?
BEFORE_YEAR_1_IN_UTC = "0001-01-01T00:00:00+05:00"
AFTER_YEAR_9999_IN_UTC = "9999-12-31T23:00:00-05:00"


@pytest.fixture
async def world(api: Api) -> World:
    return await build_world(api)


@pytest.mark.parametrize("operation", MUTATIONS)
async def test_the_snapshot_sees_what_each_mutation_changes(
    api: Api, db: asyncpg.Connection, world: World, operation: str
) -> None:
    """``unchanged(db)`` is not vacuous: each mutation, when it succeeds, changes it."""
    document, variables = MUTATIONS[operation]
    before = await snapshot(db)
    await api.data(document, **variables(world))
    assert await snapshot(db) != before


# --- ids: unknown, of another kind, malformed -------------------------------------------


@pytest.mark.parametrize("slot", ID_SLOTS, ids=str)
async def test_the_id_slots_accept_their_own_rows(api: Api, world: World, slot: IdSlot) -> None:
    """The control for the refusals below: the same call with a real id succeeds."""
    await api.data(slot.document, **slot.variables(world, slot.valid(world)))


@pytest.mark.parametrize("variant", ["unknown", "other kind"])
@pytest.mark.parametrize("slot", ID_SLOTS, ids=str)
async def test_an_id_naming_no_row_is_not_found(
    api: Api, db: asyncpg.Connection, world: World, slot: IdSlot, variant: str
) -> None:
    value = f"{slot.kind}_999999" if variant == "unknown" else of_other_kind(slot.valid(world))
    async with unchanged(db):
        code = await refused(api, slot.document, **slot.variables(world, value))
    assert code == "NOT_FOUND"


@pytest.mark.parametrize("slot", ID_SLOTS, ids=str)
async def test_a_malformed_id_is_bad_input(
    api: Api, db: asyncpg.Connection, world: World, slot: IdSlot
) -> None:
    async with unchanged(db):
        for value in malformed(slot.kind):
            code = await refused(api, slot.document, **slot.variables(world, value))
            assert code == "BAD_USER_INPUT", value


@pytest.mark.parametrize("slot", QUERY_SLOTS, ids=str)
async def test_a_query_for_an_id_naming_no_row_answers_nothing(
    api: Api, db: asyncpg.Connection, world: World, slot: QuerySlot
) -> None:
    assert slot.answer(await api.data(slot.document, **{slot.variable: slot.valid(world)}))
    for value in (f"{slot.kind}_999999", of_other_kind(slot.valid(world))):
        data = await api.data(slot.document, **{slot.variable: value})
        assert not slot.answer(data), value
    async with unchanged(db):
        for value in malformed(slot.kind):
            code = await refused(api, slot.document, **{slot.variable: value})
            assert code == "BAD_USER_INPUT", value


# --- malformed arguments ----------------------------------------------------------------


def case(name: str, document: str, variables: Variables) -> Any:
    """One call, by name (a pytest param): ``variables`` builds its arguments from the world."""
    return pytest.param(document, variables, id=name)


def booking_at(start: str, end: str, **extra: Any) -> Variables:
    return lambda w: {"client": w.client, "start": start, "end": end, **extra}


def when(hours: float = 0) -> str:
    """A fixed instant (plus ``hours``): bookings may be anywhere in time."""
    return iso(datetime.fromisoformat("2030-01-01T10:00:00+00:00") + timedelta(hours=hours))


BAD_USER_INPUT = [
    # createClient
    case("name empty", CREATE_CLIENT_FULL, lambda w: {"name": ""}),
    case("name blank", CREATE_CLIENT_FULL, lambda w: {"name": "  \t "}),
    case("name too long", CREATE_CLIENT_FULL, lambda w: {"name": "x" * 201}),
    case("name with NUL", CREATE_CLIENT_FULL, lambda w: {"name": "Ada\x00"}),
    case("email without @", CREATE_CLIENT_FULL, lambda w: {"name": "A", "email": "ada"}),
    case("email too long", CREATE_CLIENT_FULL, lambda w: {"name": "A", "email": "a@" + "x" * 319}),
    case("email with NUL", CREATE_CLIENT_FULL, lambda w: {"name": "A", "email": "a@b\x00"}),
    case("phone too long", CREATE_CLIENT_FULL, lambda w: {"name": "A", "phone": "1" * 321}),
    case("time zone unknown", CREATE_CLIENT_FULL, lambda w: {"name": "A", "timezone": "Mars/Base"}),
    case("time zone empty", CREATE_CLIENT_FULL, lambda w: {"name": "A", "timezone": ""}),
    case("time zone a folder", CREATE_CLIENT_FULL, lambda w: {"name": "A", "timezone": "America"}),
    case("time zone a path", CREATE_CLIENT_FULL, lambda w: {"name": "A", "timezone": "../../etc"}),
    case("time zone huge", CREATE_CLIENT_FULL, lambda w: {"name": "A", "timezone": "x" * 5000}),
    case("time zone with NUL", CREATE_CLIENT_FULL, lambda w: {"name": "A", "timezone": "UTC\x00"}),
    # createOffer
    case("offer name empty", CREATE_OFFER, lambda w: {"name": " ", "total": 5}),
    case("offer name with NUL", CREATE_OFFER, lambda w: {"name": "Te\x00n", "total": 5}),
    case("offer name too long", CREATE_OFFER, lambda w: {"name": "x" * 201, "total": 5}),
    case("offer sessionsTotal 0", CREATE_OFFER, lambda w: {"name": "Ten", "total": 0}),
    case("offer sessionsTotal 1001", CREATE_OFFER, lambda w: {"name": "Ten", "total": 1001}),
    case("offer validDays 0", CREATE_OFFER, lambda w: {"name": "Ten", "total": 5, "days": 0}),
    case("offer validDays 3651", CREATE_OFFER, lambda w: {"name": "T", "total": 5, "days": 3651}),
    case("offer price negative", CREATE_OFFER, lambda w: {"name": "T", "total": 5, "price": -1}),
    case("offer price huge", CREATE_OFFER, lambda w: {"name": "T", "total": 5, "price": 10**8 + 1}),
    # sellPackage
    case("sessionsTotal 0", SELL, lambda w: {"client": w.client, "total": 0}),
    case("sessionsTotal negative", SELL, lambda w: {"client": w.client, "total": -3}),
    case("sessionsTotal over 1000", SELL, lambda w: {"client": w.client, "total": 1001}),
    case("sessionsTotal max Int", SELL, lambda w: {"client": w.client, "total": 2**31 - 1}),
    case("expiresAt naive", SELL, lambda w: {"client": w.client, "total": 5, "expires": NAIVE}),
    case(
        "expiresAt before year 1 in UTC",
        SELL,
        lambda w: {"client": w.client, "total": 5, "expires": BEFORE_YEAR_1_IN_UTC},
    ),
    case(
        "expiresAt after year 9999 in UTC",
        SELL,
        lambda w: {"client": w.client, "total": 5, "expires": AFTER_YEAR_9999_IN_UTC},
    ),
    # useSession / releaseSession / completeBooking: idempotency keys and reasons
    case("useSession key empty", USE, lambda w: {"id": w.purchase, "key": ""}),
    case("useSession key 256 chars", USE, lambda w: {"id": w.purchase, "key": "k" * 256}),
    case("useSession key with NUL", USE, lambda w: {"id": w.purchase, "key": "k\x00"}),
    case("useSession reason too long", USE, lambda w: {"id": w.purchase, "reason": "r" * 1001}),
    case("useSession reason with NUL", USE, lambda w: {"id": w.purchase, "reason": "r\x00"}),
    case("releaseSession key empty", RELEASE, lambda w: {"id": w.purchase, "key": ""}),
    case("releaseSession key 256 chars", RELEASE, lambda w: {"id": w.purchase, "key": "k" * 256}),
    case("completeBooking key empty", COMPLETE, lambda w: {"id": w.confirmed, "key": ""}),
    case("completeBooking key 256", COMPLETE, lambda w: {"id": w.confirmed, "key": "k" * 256}),
    # createBooking
    case("endsAt equals startsAt", CREATE_BOOKING, booking_at(when(), when())),
    case("endsAt before startsAt", CREATE_BOOKING, booking_at(when(), when(-1))),
    case("longer than 24 hours", CREATE_BOOKING, booking_at(when(), when(24.5))),
    case("startsAt naive", CREATE_BOOKING, booking_at(NAIVE, when())),
    case("endsAt naive", CREATE_BOOKING, booking_at(when(), NAIVE)),
    case("both naive", CREATE_BOOKING, booking_at(NAIVE, "2030-01-01T11:00:00")),
    case(
        "startsAt before year 1 in UTC",
        CREATE_BOOKING,
        booking_at(BEFORE_YEAR_1_IN_UTC, "0001-01-01T01:00:00+05:00"),
    ),
    case(
        "purchaseId and autoAssignPackage",
        CREATE_BOOKING,
        lambda w: {
            "client": w.client,
            "purchase": w.purchase,
            "auto": True,
            "start": when(),
            "end": when(1),
        },
    ),
    # clients
    case("clients first 0", CLIENTS, lambda w: {"first": 0}),
    case("clients first negative", CLIENTS, lambda w: {"first": -1}),
    case("clients first over 200", CLIENTS, lambda w: {"first": 201}),
    case("clients cursor garbage", CLIENTS, lambda w: {"after": "garbage"}),
    case("clients cursor of another kind", CLIENTS, lambda w: {"after": w.purchase}),
    case("clients search with NUL", CLIENTS, lambda w: {"search": "Ad\x00"}),
    case("clients search too long", CLIENTS, lambda w: {"search": "a" * 321}),
    # ledger, top level and nested
    case("ledger first 0", LEDGER, lambda w: {"first": 0}),
    case("ledger first over 500", LEDGER, lambda w: {"first": 501}),
    case("ledger cursor letters", LEDGER, lambda w: {"after": "abc"}),
    case("ledger cursor negative", LEDGER, lambda w: {"after": "-1"}),
    case("ledger cursor empty", LEDGER, lambda w: {"after": ""}),
    case("ledger cursor decimal", LEDGER, lambda w: {"after": "1.5"}),
    case("ledger cursor superscript digit", LEDGER, lambda w: {"after": "\u00b2"}),
    case("ledger cursor arabic digits", LEDGER, lambda w: {"after": "\u0661\u0662"}),
    case("ledger cursor 19 digits", LEDGER, lambda w: {"after": "1" * 19}),
    case("nested ledger first 0", NESTED_LEDGER, lambda w: {"id": w.purchase, "first": 0}),
    case("nested ledger cursor", NESTED_LEDGER, lambda w: {"id": w.purchase, "after": "x"}),
    # bookings (the calendar)
    case("to equals from", BOOKINGS, lambda w: {"from": when(), "to": when()}),
    case("to before from", BOOKINGS, lambda w: {"from": when(), "to": when(-1)}),
    case("from naive", BOOKINGS, lambda w: {"from": NAIVE, "to": when()}),
    case("both naive", BOOKINGS, lambda w: {"from": NAIVE, "to": "2030-01-02T10:00:00"}),
    case("from before year 1", BOOKINGS, lambda w: {"from": BEFORE_YEAR_1_IN_UTC, "to": when()}),
    # createApiKey
    case("key name empty", CREATE_KEY, lambda w: {"name": ""}),
    case("key name blank", CREATE_KEY, lambda w: {"name": "   "}),
    case("key name too long", CREATE_KEY, lambda w: {"name": "n" * 101}),
    case("key name with NUL", CREATE_KEY, lambda w: {"name": "zap\x00"}),
    case("key scopes empty", CREATE_KEY, lambda w: {"name": "zap", "scopes": []}),
]


@pytest.mark.parametrize(("document", "variables"), BAD_USER_INPUT)
async def test_malformed_arguments_are_bad_user_input(
    api: Api, db: asyncpg.Connection, world: World, document: str, variables: Variables
) -> None:
    async with unchanged(db):
        body = await api.post(document, **variables(world))
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}
    assert error["message"] != "Unexpected error."
    assert body["data"] is None or not any(body["data"].values())


GRAPHQL_INVALID = [
    case("string for Int", SELL, lambda w: {"client": w.client, "total": "ten"}),
    case("float for Int", SELL, lambda w: {"client": w.client, "total": 2.5}),
    case("Int beyond 32 bits", SELL, lambda w: {"client": w.client, "total": 2**31}),
    case("not a DateTime", SELL, lambda w: {"client": w.client, "total": 5, "expires": "soon"}),
    case("null for ID!", USE, lambda w: {"id": None}),
    case("object for ID", USE, lambda w: {"id": {"id": w.purchase}}),
    case("string for Boolean", CANCEL, lambda w: {"id": w.confirmed, "late": "yes"}),
    case("unknown enum value", CREATE_KEY, lambda w: {"name": "zap", "scopes": ["ADMIN"]}),
    case("missing required variable", CREATE_BOOKING, lambda w: {"client": w.client}),
    case(
        "unknown input field",
        "mutation { createClient(input: {name: \"A\", nickname: \"B\"}) { id } }",
        lambda w: {},
    ),
    case("unknown field", "{ me { id password } }", lambda w: {}),
    case("unknown argument", "{ clients(last: 5) { nodes { id } } }", lambda w: {}),
    case("syntax error", "mutation { useSession(purchaseId: ) { id } }", lambda w: {}),
    case("secret is not on ApiKey", "{ apiKeys { id secret } }", lambda w: {}),
]  # fmt: skip


@pytest.mark.parametrize(("document", "variables"), GRAPHQL_INVALID)
async def test_wrong_graphql_types_fail_validation(
    api: Api, db: asyncpg.Connection, world: World, document: str, variables: Variables
) -> None:
    async with unchanged(db):
        assert await invalid(api, document, **variables(world))


# --- refusals by the integrity rules ----------------------------------------------------

DOMAIN_REFUSALS = [
    pytest.param(USE, lambda w: {"id": w.expired}, "PURCHASE_EXPIRED", id="use expired"),
    pytest.param(USE, lambda w: {"id": w.used_up}, "NO_SESSIONS_REMAINING", id="use used up"),
    pytest.param(
        RELEASE, lambda w: {"id": w.untouched}, "NOTHING_TO_RELEASE", id="release untouched"
    ),
    pytest.param(
        RELEASE, lambda w: {"id": w.expired}, "NOTHING_TO_RELEASE", id="release expired untouched"
    ),
    pytest.param(
        CREATE_BOOKING,
        lambda w: {
            "client": w.other_client,
            "purchase": w.purchase,
            "start": when(),
            "end": when(1),
        },
        "NOT_FOUND",
        id="book on another client's package",
    ),
    pytest.param(
        NO_SHOW, lambda w: {"id": w.cancelled}, "INVALID_TRANSITION", id="no-show cancelled"
    ),
    pytest.param(
        NO_SHOW, lambda w: {"id": w.completed}, "INVALID_TRANSITION", id="no-show completed"
    ),
    pytest.param(
        COMPLETE, lambda w: {"id": w.cancelled}, "INVALID_TRANSITION", id="complete cancelled"
    ),
    pytest.param(
        USE,
        lambda w: {"id": w.purchase, "key": w.use_key, "reason": "other"},
        "IDEMPOTENCY_KEY_REUSED",
        id="key reused with another reason",
    ),
    pytest.param(
        USE,
        lambda w: {"id": w.untouched, "key": w.use_key},
        "IDEMPOTENCY_KEY_REUSED",
        id="key reused on another package",
    ),
    pytest.param(
        RELEASE,
        lambda w: {"id": w.purchase, "key": w.use_key},
        "IDEMPOTENCY_KEY_REUSED",
        id="key reused by release",
    ),
    pytest.param(
        COMPLETE,
        lambda w: {"id": w.confirmed, "key": w.complete_key},
        "IDEMPOTENCY_KEY_REUSED",
        id="key reused on another booking",
    ),
    pytest.param(
        COMPLETE,
        lambda w: {"id": w.confirmed, "key": w.use_key},
        "IDEMPOTENCY_KEY_REUSED",
        id="key of useSession reused by completeBooking",
    ),
]


@pytest.mark.parametrize(("document", "variables", "code"), DOMAIN_REFUSALS)
async def test_integrity_rules_refuse_with_their_code(
    api: Api, db: asyncpg.Connection, world: World, document: str, variables: Variables, code: str
) -> None:
    async with unchanged(db):
        assert await refused(api, document, **variables(world)) == code


# --- what is accepted (decisions) -------------------------------------------------------


async def test_a_package_may_be_sold_already_expired(api: Api, world: World) -> None:
    """Decision: expiresAt in the past is accepted, like bookings in the past: trainers
    back-fill their diary (a package sold and used up before punchcard). Such a package
    shows EXPIRED and refuses useSession with PURCHASE_EXPIRED; its bookings from before
    the expiry can still be completed and charged."""
    sold = (await api.data(PURCHASE_Q, id=world.expired))["purchase"]
    assert (sold["status"], sold["sessionsUsed"], sold["revision"]) == ("EXPIRED", 0, 0)
    start = at(days=-10)
    made = await api.data(
        CREATE_BOOKING,
        client=world.client,
        purchase=world.expired,
        start=iso(start),
        end=iso(start + timedelta(hours=1)),
    )
    done = await api.data(COMPLETE, id=made["createBooking"]["id"])
    assert done["completeBooking"]["charged"] is True
    assert await refused(api, USE, id=world.expired) == "PURCHASE_EXPIRED"


PURCHASE_Q = "query($id: ID!) { purchase(id: $id) { status sessionsUsed revision expiresAt } }"


async def test_boundaries_are_accepted(api: Api, world: World) -> None:
    for total in (1, 1000):
        await api.data(SELL, client=world.client, total=total)
    await api.data(USE, id=world.untouched, key="k" * 255, reason="r" * 1000)
    await api.data(CREATE_CLIENT_FULL, name="x" * 200, email="a@" + "x" * 318, phone="1" * 320)
    await api.data(CREATE_CLIENT_FULL, name="Tz", timezone="America/New_York")
    await api.data(CREATE_KEY, name="n" * 100, scopes=["READ"])
    await api.data(CREATE_OFFER, name="x" * 200, total=1000, days=3650, price=10**8)
    await api.data(CREATE_OFFER, name="Free trial", total=1, days=1, price=0)
    await api.data(CLIENTS, first=200, search="a" * 320)
    await api.data(LEDGER, first=500, after="9" * 18)
    await api.data(CREATE_BOOKING, **booking_at(when(), when(24))(world))


async def test_times_with_an_offset_keep_their_instant(api: Api, world: World) -> None:
    sold = await api.data(SELL, client=world.client, total=3, expires="2031-06-01T12:00:00+05:30")
    expires = datetime.fromisoformat(sold["sellPackage"]["expiresAt"])
    assert expires == datetime.fromisoformat("2031-06-01T06:30:00+00:00")


# --- limits and masking -------------------------------------------------------------------

LIMITS = Settings.from_env()


def nested(depth: int, *root: str) -> str:
    """An operation whose leaf field is ``depth`` fields below its root field (depth 0)."""
    names = [*(root or ("clients", "nodes")), *["purchases", "client"] * depth][:depth]
    body = "id"
    for name in reversed(names):
        body = f"{name} {{ {body} }}"
    return f"{{ {body} }}"


def aliased(count: int, field: str) -> str:
    return "mutation { " + " ".join(f"a{i}: {field}" for i in range(count)) + " }"


def tokens(count: int) -> str:
    """A query of exactly ``count`` tokens that is cheap to validate."""
    statuses = "CONFIRMED " * (count - 18)
    return (
        '{ bookings(from: "2030-01-01T00:00:00+00:00", to: "2030-01-02T00:00:00+00:00", '
        f"status: [{statuses}]) {{ id }} }}"
    )


async def test_query_depth_limit(api: Api, db: asyncpg.Connection, world: World) -> None:
    await api.data(nested(LIMITS.max_query_depth))
    async with unchanged(db):
        message = await invalid(api, nested(LIMITS.max_query_depth + 1))
        assert "exceeds maximum operation depth" in message
        use = f'useSession(purchaseId: "{world.untouched}")'
        deep = "mutation " + nested(LIMITS.max_query_depth + 1, use, "client")
        assert "exceeds maximum operation depth" in await invalid(api, deep)


async def test_alias_limit(api: Api, db: asyncpg.Connection, world: World) -> None:
    await api.data(aliased(LIMITS.max_aliases, "me { id }").replace("mutation", "query"))
    use = f'useSession(purchaseId: "{world.untouched}") {{ id }}'
    async with unchanged(db):
        message = await invalid(api, aliased(LIMITS.max_aliases + 1, use))
    assert f"{LIMITS.max_aliases + 1} aliases found" in message


async def test_token_limit(api: Api, db: asyncpg.Connection, world: World) -> None:
    await api.data(tokens(LIMITS.max_tokens))
    async with unchanged(db):
        message = await invalid(api, tokens(LIMITS.max_tokens + 1))
        assert f"more than {LIMITS.max_tokens} tokens" in message
        padding = "__typename " * LIMITS.max_tokens
        mutation = f'mutation {{ useSession(purchaseId: "{world.untouched}") {{ id {padding} }} }}'
        assert "tokens" in await invalid(api, mutation)


INJECTED_FAULT = "fault injected: s3cret internals of table clients"

FAULTS = [
    pytest.param(
        f"""
        CREATE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql
            AS $$ BEGIN RAISE EXCEPTION '{INJECTED_FAULT}'; END $$;
        CREATE TRIGGER test_fault BEFORE INSERT ON clients
            FOR EACH ROW EXECUTE FUNCTION test_fault();
        """,
        CREATE_CLIENT_FULL,
        {"name": "Crash"},
        id="mutation fails in PostgreSQL",
    ),
    pytest.param(
        "ALTER TABLE api_keys RENAME COLUMN prefix TO s3cret_renamed",
        API_KEYS,
        {},
        id="query fails in PostgreSQL",
    ),
]


@pytest.mark.parametrize(("fault", "document", "variables"), FAULTS)
async def test_internal_errors_are_masked(
    api: Api,
    db: asyncpg.Connection,
    world: World,
    fault: str,
    document: str,
    variables: dict[str, Any],
) -> None:
    """A real failure inside PostgreSQL (this test's own database is given a fault: a
    trigger that raises, a renamed column) reaches the client as a generic error."""
    await db.execute(fault)
    async with unchanged(db):
        body = await api.post(document, **variables)
    (error,) = body["errors"]
    assert error["message"] == "Unexpected error."
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR"}
    assert body["data"] is None
    assert "s3cret" not in json.dumps(body)
