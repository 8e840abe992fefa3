"""Authentication: a missing or bad credential is UNAUTHENTICATED for every operation and
changes nothing (not even a provisioned trainer); an unknown ``sub`` is provisioned once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import jwt
import pytest

from punchcard.gql.auth import issue_token
from punchcard.server.app import create_app
from punchcard.settings import Settings
from tests.conftest import Api
from tests.refusals import ME, MUTATIONS, QUERIES, World, build_world, refused, unchanged


@pytest.fixture
async def world(api: Api) -> World:
    return await build_world(api)


def _b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "mallory", "iat": now, "exp": now + 3600, **overrides}
    return {k: v for k, v in claims.items() if v is not None}


def _signed(settings: Settings, **overrides: Any) -> str:
    return jwt.encode(_claims(**overrides), settings.jwt_secret, algorithm="HS256")


def _hs512(settings: Settings) -> str:
    """Signed with the right secret, by an algorithm the server does not accept."""
    signed = f"{_b64({'alg': 'HS512', 'typ': 'JWT'})}.{_b64(_claims())}"
    mac = hmac.new(settings.jwt_secret.encode(), signed.encode(), hashlib.sha512).digest()
    return f"{signed}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _unsigned(settings: Settings) -> str:
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."


def _tampered(settings: Settings) -> str:
    """Mallory's genuine token with its payload swapped for trainer A's."""
    header, _, signature = _signed(settings).split(".")
    return f"{header}.{_b64(_claims(sub='trainer-a'))}.{signature}"


# Each builds the whole Authorization header (None: no header at all).
BAD_CREDENTIALS: dict[str, Callable[[Settings], str | None]] = {
    "missing": lambda s: None,
    "empty header": lambda s: "",
    "expired": lambda s: "Bearer " + issue_token(s, "mallory", ttl_seconds=-60),
    "forged (wrong secret)": lambda s: "Bearer "
    + jwt.encode(_claims(), "not-the-secret-" * 3, algorithm="HS256"),
    "alg none": lambda s: "Bearer " + _unsigned(s),
    "alg HS512 (not allowed)": lambda s: "Bearer " + _hs512(s),
    "no sub": lambda s: "Bearer " + _signed(s, sub=None),
    "empty sub": lambda s: "Bearer " + _signed(s, sub=""),
    "sub not a string": lambda s: "Bearer " + _signed(s, sub=42),
    "sub too long": lambda s: "Bearer " + _signed(s, sub="m" * 256),
    "sub with NUL": lambda s: "Bearer " + _signed(s, sub="mal\x00lory"),
    "no exp": lambda s: "Bearer " + _signed(s, exp=None),
    "not yet valid": lambda s: "Bearer " + _signed(s, nbf=int(time.time()) + 3600),
    "tampered payload": lambda s: "Bearer " + _tampered(s),
    "garbage token": lambda s: "Bearer not-a-jwt",
    "three garbage parts": lambda s: "Bearer a.b.c",
    "scheme only": lambda s: "Bearer",
    "scheme and spaces": lambda s: "Bearer    ",
    "basic auth": lambda s: "Basic dHJhaW5lci1hOnNlY3JldA==",
    "token without scheme": lambda s: issue_token(s, "mallory"),
    "token and trailing junk": lambda s: "Bearer " + issue_token(s, "mallory") + " junk",
    "unknown API key": lambda s: "Bearer pc_" + "A" * 43,
    "API key prefix only": lambda s: "Bearer pc_",
}  # fmt: skip


async def post_with_header(
    api: Api, authorization: str | None, document: str, **variables: Any
) -> dict[str, Any]:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await api.http.post(
        "/graphql", json={"query": document, "variables": variables}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def unauthenticated(body: dict[str, Any]) -> bool:
    return not any((body.get("data") or {}).values()) and [
        e["extensions"]["code"] for e in body["errors"]
    ] == ["UNAUTHENTICATED"]


@pytest.mark.parametrize("credential", BAD_CREDENTIALS)
async def test_bad_credentials_are_unauthenticated_and_change_nothing(
    api: Api, db: asyncpg.Connection, world: World, credential: str
) -> None:
    header = BAD_CREDENTIALS[credential](api.settings)
    calls = [QUERIES[name] for name in ("me", "clients", "purchase")] + [
        MUTATIONS[name]
        for name in ("useSession", "completeBooking", "createClient", "createApiKey")
    ]
    async with unchanged(db):  # also: no trainer was provisioned for "mallory"
        for document, variables in calls:
            body = await post_with_header(api, header, document, **variables(world))
            assert unauthenticated(body), body


OPERATIONS = {**{f"query {k}": v for k, v in QUERIES.items()}, **MUTATIONS}


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_every_operation_needs_a_token(
    api: Api, db: asyncpg.Connection, world: World, operation: str
) -> None:
    document, variables = OPERATIONS[operation]
    async with unchanged(db):
        assert await refused(api.with_token(None), document, **variables(world)) == (
            "UNAUTHENTICATED"
        )


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_the_same_calls_work_with_the_token(api: Api, world: World, operation: str) -> None:
    """The control for the refusals above: the owner's token makes each call succeed."""
    document, variables = OPERATIONS[operation]
    await api.data(document, **variables(world))


async def test_an_unknown_subject_is_provisioned_on_first_use(
    api: Api, db: asyncpg.Connection, world: World
) -> None:
    newcomer = api.as_trainer("new-sub", email="nina@example.com", name="Nina")
    before = await db.fetchval("SELECT count(*) FROM trainers")
    results = await asyncio.gather(*(newcomer.post(ME) for _ in range(10)))
    (me,) = {json.dumps(r["data"]["me"], sort_keys=True) for r in results}
    assert json.loads(me)["name"] == "Nina"
    assert json.loads(me)["email"] == "nina@example.com"
    assert json.loads(me)["id"] != world.trainer
    assert await db.fetchval("SELECT count(*) FROM trainers") == before + 1
    row = await db.fetchrow("SELECT subject, name, email FROM trainers WHERE subject = 'new-sub'")
    assert tuple(row) == ("new-sub", "Nina", "nina@example.com")
    # A fresh token for the same subject is the same trainer, with none of A's rows.
    again = api.as_trainer("new-sub", ttl_seconds=600)
    assert (await again.data(ME))["me"] == json.loads(me)
    assert (await again.data(QUERIES["clients"][0]))["clients"]["nodes"] == []
    assert await db.fetchval("SELECT count(*) FROM trainers") == before + 1


async def test_odd_profile_claims_do_not_block_sign_in(api: Api, db: asyncpg.Connection) -> None:
    """Only ``sub`` is required: a name or email claim PostgreSQL cannot store is dropped."""
    odd = api.as_trainer("odd-claims", name="Nul\x00l", email=["not", "a", "string"])
    me = (await odd.data(ME))["me"]
    assert (me["name"], me["email"]) == ("", None)


async def test_a_token_for_another_audience_is_refused(
    api: Api, db: asyncpg.Connection, settings: Settings, world: World
) -> None:
    """Tokens carry no audience unless JWT_AUDIENCE is set; with it set, another's is refused."""
    audience = Settings(
        database_url=settings.database_url, jwt_secret=settings.jwt_secret, jwt_audience="mine"
    )
    app = create_app(audience)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as http,
    ):
        strict = Api(http, audience, None)
        assert (await strict.as_trainer("trainer-a").data(ME))["me"]["id"] == world.trainer
        async with unchanged(db):
            for aud in ("theirs", None):
                token = issue_token(settings, "trainer-a", aud=aud) if aud else _signed(settings)
                assert await refused(strict.with_token(token), ME) == "UNAUTHENTICATED"
