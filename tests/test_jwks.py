"""Asymmetric JWTs: RS256 and ES256 tokens checked against a JWKS served by a real HTTP
server on 127.0.0.1 (which counts its requests) or read from a file; an unknown ``kid``
re-reads the set at most once per refresh interval; JWT_ISSUER and JWT_AUDIENCE hold for
every algorithm; HS256 with JWT_SECRET keeps working beside the JWKS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from punchcard.gql.jwks import JwkSource
from punchcard.settings import Settings
from tests.conftest import Api, in_process
from tests.refusals import ME

ISSUER = "https://project.supabase.co/auth/v1"
CREATE_CLIENT = 'mutation { createClient(input: {name: "Ada"}) { id } }'


# -- keys and tokens ----------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """A private key and the public JWK a JWKS would publish for it."""

    kid: str
    algorithm: str  # RS256 or ES256
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @property
    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        exported = (
            RSAAlgorithm.to_jwk(public, as_dict=True)
            if self.algorithm == "RS256"
            else ECAlgorithm.to_jwk(public, as_dict=True)
        )
        return {**exported, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def public_bytes(self, encoding: serialization.Encoding) -> bytes:
        return self.private.public_key().public_bytes(
            encoding, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(
        self,
        subject: str = "jwks-trainer",
        *,
        ttl: int = 3600,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {"sub": subject, "iat": now, "exp": now + ttl, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(
            payload, self.private, algorithm=self.algorithm, headers={"kid": kid or self.kid}
        )


def rsa_signer(kid: str) -> Signer:
    return Signer(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def rsa_key() -> Signer:
    return rsa_signer("rsa-1")


@pytest.fixture(scope="module")
def rsa_next() -> Signer:
    """The key a rotation adds."""
    return rsa_signer("rsa-2")


@pytest.fixture(scope="module")
def ec_key() -> Signer:
    return Signer("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1()))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A token PyJWT would refuse to make: HS256 over ``secret`` (or no signature at all)."""
    signed = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if secret is None:
        return signed + "."
    return f"{signed}.{_b64(hmac.new(secret, signed.encode(), hashlib.sha256).digest())}"


def claims(subject: str = "mallory") -> dict[str, Any]:
    now = int(time.time())
    return {"sub": subject, "iat": now, "exp": now + 3600}


# -- the JWKS endpoint ----------------------------------------------------------------


@dataclass
class JwksServer:
    """A real HTTP server on 127.0.0.1 serving ``keys`` as a JWKS; counts GETs."""

    url: str = ""
    keys: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    delay: float = 0.0  # seconds before each answer
    status: int = 200
    body: bytes | None = None  # instead of the JWKS

    def answer(self) -> tuple[int, bytes]:
        self.requests += 1  # one handler thread at a time touches it (the GIL suffices)
        time.sleep(self.delay)
        return self.status, self.body or json.dumps({"keys": self.keys}).encode()


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    served = JwksServer()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                status, body = served.answer()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}/auth/v1/.well-known/jwks.json"
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@asynccontextmanager
async def api_with(settings: Settings, **changes: Any) -> AsyncIterator[Api]:
    """The app under test with these settings changed; the caller picks each token."""
    changed = replace(settings, **changes)
    async with in_process(changed) as (_, http):
        yield Api(http, changed, None)


async def answer(api: Api, token: str, document: str = ME) -> tuple[str | None, str | None]:
    """``(extensions.code, message)`` of the first error, or ``(None, None)``."""
    body = await api.with_token(token).post(document)
    if not body.get("errors"):
        return None, None
    error = body["errors"][0]
    return error["extensions"]["code"], error["message"]


async def trainer_row(db: asyncpg.Connection, subject: str) -> tuple[Any, ...] | None:
    row = await db.fetchrow("SELECT id, name, email FROM trainers WHERE subject = $1", subject)
    return None if row is None else tuple(row)


# -- accepted -------------------------------------------------------------------------


async def test_an_rs256_token_provisions_and_acts_as_the_trainer(
    settings: Settings, db: asyncpg.Connection, jwks: JwksServer, rsa_key: Signer
) -> None:
    jwks.keys = [rsa_key.jwk]
    async with api_with(settings, jwt_jwks_url=jwks.url) as api:
        caller = api.with_token(rsa_key.token("rs-trainer", email="rs@example.com", name="Rosa"))
        me = (await caller.data(ME))["me"]
        assert (me["name"], me["email"]) == ("Rosa", "rs@example.com")
        row = await trainer_row(db, "rs-trainer")
        assert row is not None and row[1:] == ("Rosa", "rs@example.com")
        # It acts as that trainer: the client it creates is the trainer's.
        created = (await caller.data(CREATE_CLIENT))["createClient"]["id"]
        owner = await db.fetchval(
            "SELECT trainer_id FROM clients WHERE id = $1", int(created.split("_", 1)[1])
        )
        assert owner == row[0]
        # Another token signed by the same key needs no second fetch.
        assert (await api.with_token(rsa_key.token("rs-trainer", ttl=600)).data(ME))["me"] == me
    assert jwks.requests == 1


async def test_an_es256_token_is_accepted(
    settings: Settings, db: asyncpg.Connection, jwks: JwksServer, rsa_key: Signer, ec_key: Signer
) -> None:
    jwks.keys = [rsa_key.jwk, ec_key.jwk]
    async with api_with(settings, jwt_jwks_url=jwks.url) as api:
        me = (await api.with_token(ec_key.token("ec-trainer", name="Ece")).data(ME))["me"]
    assert me["name"] == "Ece"
    assert await trainer_row(db, "ec-trainer") is not None


async def test_hs256_with_jwt_secret_still_works_beside_the_jwks(
    settings: Settings, jwks: JwksServer, rsa_key: Signer
) -> None:
    jwks.keys = [rsa_key.jwk]
    async with api_with(settings, jwt_jwks_url=jwks.url) as api:
        assert (await api.as_trainer("hs-trainer", name="Hal").data(ME))["me"]["name"] == "Hal"
    assert jwks.requests == 0  # HS256 never looks at the JWKS


@pytest.mark.parametrize("form", ["path", "file URL"])
async def test_keys_from_a_file_and_a_rotation_there(
    settings: Settings, tmp_path: Path, rsa_key: Signer, rsa_next: Signer, ec_key: Signer, form: str
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_key.jwk, ec_key.jwk]}))
    location = str(path) if form == "path" else path.as_uri()
    async with api_with(settings, jwt_jwks_url=location, jwt_jwks_refresh_seconds=0.2) as api:
        assert await answer(api, rsa_key.token()) == (None, None)
        assert await answer(api, ec_key.token()) == (None, None)
        assert await answer(api, rsa_next.token()) == ("UNAUTHENTICATED", "invalid token")
        path.write_text(json.dumps({"keys": [rsa_key.jwk, rsa_next.jwk]}))
        await asyncio.sleep(0.3)
        assert await answer(api, rsa_next.token("next")) == (None, None)


# -- unknown kids: a rotation, and the throttle ----------------------------------------------


async def test_a_rotated_key_is_fetched_once_then_accepted(
    settings: Settings, jwks: JwksServer, rsa_key: Signer, rsa_next: Signer
) -> None:
    jwks.keys = [rsa_key.jwk]
    async with api_with(settings, jwt_jwks_url=jwks.url, jwt_jwks_refresh_seconds=0.3) as api:
        assert await answer(api, rsa_key.token()) == (None, None)
        assert jwks.requests == 1
        jwks.keys = [rsa_key.jwk, rsa_next.jwk]  # the issuer rotates
        jwks.delay = 0.2  # so that the misses below overlap one fetch
        await asyncio.sleep(0.35)  # past the refresh interval of the first fetch
        tokens = [rsa_next.token(f"rotated-{n}") for n in range(20)]
        results = await asyncio.gather(*(answer(api, token) for token in tokens))
        assert results == [(None, None)] * 20
        assert jwks.requests == 2  # twenty concurrent misses shared one fetch
        assert await answer(api, rsa_next.token("rotated-0", ttl=60)) == (None, None)
        assert await answer(api, rsa_key.token("old-key")) == (None, None)
    assert jwks.requests == 2


async def test_random_unknown_kids_fetch_at_most_once_per_refresh_interval(
    settings: Settings, db: asyncpg.Connection, jwks: JwksServer, rsa_key: Signer
) -> None:
    jwks.keys = [rsa_key.jwk]
    async with api_with(settings, jwt_jwks_url=jwks.url) as api:  # the default 30 s interval
        random_kids = [rsa_key.token(kid=uuid.uuid4().hex) for _ in range(100)]
        results = await asyncio.gather(*(answer(api, token) for token in random_kids[:50]))
        assert results == [("UNAUTHENTICATED", "invalid token")] * 50
        assert jwks.requests == 1  # a cold start: fifty misses, one shared fetch
        for token in random_kids[50:]:
            assert await answer(api, token) == ("UNAUTHENTICATED", "invalid token")
        assert jwks.requests == 1  # fifty more, inside the interval: no fetch
        assert await answer(api, rsa_key.token("known")) == (None, None)
    assert jwks.requests == 1
    assert await trainer_row(db, "jwks-trainer") is None  # no refused subject provisioned


async def test_a_short_interval_allows_one_more_fetch_after_it(
    settings: Settings, jwks: JwksServer, rsa_key: Signer
) -> None:
    jwks.keys = [rsa_key.jwk]
    async with api_with(settings, jwt_jwks_url=jwks.url, jwt_jwks_refresh_seconds=1.5) as api:
        started = time.monotonic()
        for _ in range(5):
            assert (await answer(api, rsa_key.token(kid=uuid.uuid4().hex)))[0] == "UNAUTHENTICATED"
        assert time.monotonic() - started < 1.5, "too slow to stay inside the interval"
        assert jwks.requests == 1
        await asyncio.sleep(1.6)
        for _ in range(5):
            assert (await answer(api, rsa_key.token(kid=uuid.uuid4().hex)))[0] == "UNAUTHENTICATED"
    assert jwks.requests == 2


# -- refused ----------------------------------------------------------------------------


async def test_issuer_and_audience_hold_for_jwks_and_hs256_tokens(
    settings: Settings, db: asyncpg.Connection, jwks: JwksServer, rsa_key: Signer
) -> None:
    jwks.keys = [rsa_key.jwk]
    strict = {"jwt_jwks_url": jwks.url, "jwt_issuer": ISSUER, "jwt_audience": "authenticated"}
    async with api_with(settings, **strict) as api:
        right = {"iss": ISSUER, "aud": "authenticated"}
        assert await answer(api, rsa_key.token("right", **right)) == (None, None)
        assert (await api.as_trainer("hs-right").data(ME))["me"]["id"]  # issue_token adds both
        wrong = {
            "wrong issuer": rsa_key.token(
                "w1", iss="https://other.supabase.co/auth/v1", aud="authenticated"
            ),
            "no issuer": rsa_key.token("w2", aud="authenticated"),
            "wrong audience": rsa_key.token("w3", iss=ISSUER, aud="anon"),
            "no audience": rsa_key.token("w4", iss=ISSUER),
            "HS256, wrong issuer": api.as_trainer("w5", iss="https://evil.example").token,
            "HS256, wrong audience": api.as_trainer("w6", aud="anon").token,
        }
        for name, token in wrong.items():
            assert token is not None
            assert await answer(api, token) == ("UNAUTHENTICATED", "invalid token"), name
    assert await trainer_row(db, "right") is not None
    assert await db.fetchval("SELECT count(*) FROM trainers WHERE subject LIKE 'w_'") == 0


async def test_without_an_issuer_setting_any_issuer_passes(
    settings: Settings, jwks: JwksServer, rsa_key: Signer
) -> None:
    """The control for the test above: the same tokens pass when nothing is required."""
    jwks.keys = [rsa_key.jwk]
    async with api_with(settings, jwt_jwks_url=jwks.url) as api:
        assert await answer(api, rsa_key.token(iss="https://other.example")) == (None, None)


def bad_tokens(rsa_key: Signer, ec_key: Signer, rogue: Signer) -> dict[str, str]:
    kid = {"kid": rsa_key.kid, "typ": "JWT"}
    return {
        "expired": rsa_key.token(ttl=-120),  # past exp by more than the 30 s leeway
        "alg none": handmade({**kid, "alg": "none"}, claims(), None),
        # HS256 only ever uses JWT_SECRET here (and PyJWT 2.15 also refuses a public key,
        # as PEM, DER or JWK, for an HMAC secret): none of these three can pass.
        "HS256 over the public key PEM": handmade(
            {**kid, "alg": "HS256"}, claims(), rsa_key.public_bytes(serialization.Encoding.PEM)
        ),
        "HS256 over the public key DER": handmade(
            {**kid, "alg": "HS256"}, claims(), rsa_key.public_bytes(serialization.Encoding.DER)
        ),
        "HS256 over the public JWK": handmade(
            {**kid, "alg": "HS256"}, claims(), json.dumps(rsa_key.jwk).encode()
        ),
        "RS384 (not allowed)": jwt.encode(
            claims(), rsa_key.private, "RS384", headers={"kid": rsa_key.kid}
        ),
        "ES256 naming the RSA key": jwt.encode(
            claims(), ec_key.private, "ES256", headers={"kid": rsa_key.kid}
        ),
        "RS256 naming the EC key": jwt.encode(
            claims(), rsa_key.private, "RS256", headers={"kid": ec_key.kid}
        ),
        "forged: another key, a served kid": rogue.token(kid=rsa_key.kid),
        "no kid": jwt.encode(claims(), rsa_key.private, "RS256"),
        "no exp": rsa_key.token(ttl=0, exp=None),
    }


async def test_bad_asymmetric_tokens_are_refused(
    settings: Settings, db: asyncpg.Connection, jwks: JwksServer, rsa_key: Signer, ec_key: Signer
) -> None:
    jwks.keys = [rsa_key.jwk, ec_key.jwk]
    rogue = rsa_signer(rsa_key.kid)
    async with api_with(settings, jwt_jwks_url=jwks.url) as api:
        assert await answer(api, rsa_key.token("control")) == (None, None)
        for name, token in bad_tokens(rsa_key, ec_key, rogue).items():
            code, message = await answer(api, token)
            assert code == "UNAUTHENTICATED", name
            assert message == ("token expired" if name == "expired" else "invalid token"), name
    assert await trainer_row(db, "mallory") is None
    assert await trainer_row(db, "jwks-trainer") is None


async def test_without_a_jwks_url_asymmetric_tokens_are_refused(
    settings: Settings, db: asyncpg.Connection, rsa_key: Signer, ec_key: Signer
) -> None:
    async with api_with(settings) as api:
        for token in (rsa_key.token(), ec_key.token()):
            assert await answer(api, token) == ("UNAUTHENTICATED", "invalid token")
        assert (await api.as_trainer("hs-only").data(ME))["me"]["id"]
    assert await trainer_row(db, "jwks-trainer") is None


# -- the JWKS cannot be read --------------------------------------------------------------


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/jwks.json"


async def expect_unavailable(api: Api, token: str) -> None:
    body = await api.with_token(token).post(ME)
    assert body["data"] is None, body
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "SERVICE_UNAVAILABLE", "retryable": True}, body
    assert "JWT_JWKS_URL" in error["message"]


@pytest.mark.parametrize("failure", ["connection refused", "HTTP 500", "not JSON", "no keys"])
async def test_a_jwks_endpoint_that_fails_is_service_unavailable(
    settings: Settings, db: asyncpg.Connection, jwks: JwksServer, rsa_key: Signer, failure: str
) -> None:
    url = jwks.url
    if failure == "connection refused":
        url = closed_port_url()
    elif failure == "HTTP 500":
        jwks.status = 500
    elif failure == "not JSON":
        jwks.body = b"<html>maintenance</html>"
    else:
        jwks.body = b'{"keys": []}'
    async with api_with(settings, jwt_jwks_url=url) as api:
        await expect_unavailable(api, rsa_key.token())
        await expect_unavailable(api, rsa_key.token(kid="another"))  # throttled: no new fetch
        assert (await api.as_trainer("hs-trainer").data(ME))["me"]["id"]  # HS256 unaffected
    assert jwks.requests == (0 if failure == "connection refused" else 1)
    assert await trainer_row(db, "jwks-trainer") is None


async def test_a_jwks_endpoint_that_hangs_gives_up_after_the_timeout(
    settings: Settings, rsa_key: Signer
) -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/jwks.json"
        async with api_with(settings, jwt_jwks_url=url, jwt_jwks_timeout_seconds=0.5) as api:
            started = time.monotonic()
            await expect_unavailable(api, rsa_key.token())
            assert time.monotonic() - started < 3
            # Meanwhile the event loop was free: HS256 requests are answered.
            assert (await api.as_trainer("hs-trainer").data(ME))["me"]["id"]


async def test_a_missing_file_is_service_unavailable(
    settings: Settings, tmp_path: Path, rsa_key: Signer
) -> None:
    async with api_with(settings, jwt_jwks_url=str(tmp_path / "absent.json")) as api:
        await expect_unavailable(api, rsa_key.token())


async def test_keys_held_keep_working_while_the_endpoint_is_down(
    settings: Settings, jwks: JwksServer, rsa_key: Signer
) -> None:
    jwks.keys = [rsa_key.jwk]
    async with api_with(settings, jwt_jwks_url=jwks.url, jwt_jwks_refresh_seconds=0.2) as api:
        assert await answer(api, rsa_key.token("first")) == (None, None)
        jwks.status = 503
        await asyncio.sleep(0.3)
        await expect_unavailable(api, rsa_key.token(kid="new-kid"))  # tries, fails
        assert jwks.requests == 2
        assert await answer(api, rsa_key.token("second")) == (None, None)  # the held key


async def test_the_event_loop_is_not_blocked_while_a_fetch_is_slow(
    settings: Settings, jwks: JwksServer, rsa_key: Signer
) -> None:
    jwks.keys = [rsa_key.jwk]
    jwks.delay = 2.0
    async with api_with(settings, jwt_jwks_url=jwks.url) as api:
        slow = asyncio.create_task(answer(api, rsa_key.token()))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        assert (await api.as_trainer("hs-trainer").data(ME))["me"]["id"]
        assert time.monotonic() - started < 1.5  # answered while the fetch was still waiting
        assert not slow.done()
        assert await slow == (None, None)


# -- settings ---------------------------------------------------------------------------------


def test_the_settings_are_read_from_the_environment() -> None:
    read = Settings.from_env(
        {
            "JWT_JWKS_URL": "https://project.supabase.co/auth/v1/.well-known/jwks.json",
            "JWT_ISSUER": ISSUER,
            "PUNCHCARD_JWKS_REFRESH_SECONDS": "45",
            "PUNCHCARD_JWKS_TIMEOUT_SECONDS": "2.5",
        }
    )
    assert read.jwt_jwks_url == "https://project.supabase.co/auth/v1/.well-known/jwks.json"
    assert read.jwt_issuer == ISSUER
    assert (read.jwt_jwks_refresh_seconds, read.jwt_jwks_timeout_seconds) == (45.0, 2.5)
    unset = Settings.from_env({})
    assert (unset.jwt_jwks_url, unset.jwt_issuer) == (None, None)
    assert (unset.jwt_jwks_refresh_seconds, unset.jwt_jwks_timeout_seconds) == (30.0, 5.0)


def test_an_unsupported_jwks_scheme_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="JWT_JWKS_URL"):
        JwkSource("ftp://keys.example/jwks.json", refresh_seconds=30, timeout_seconds=5)
