"""Turn an ``Authorization`` header into a principal: a trainer acting by JWT or API key."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt

from punchcard.db import trainers
from punchcard.db.errors import Code, DomainError
from punchcard.db.pool import Pool
from punchcard.gql.jwks import JwkSource, KeysUnavailable
from punchcard.settings import Settings

API_KEY_PREFIX = "pc_"
TOKEN_CACHE_MAX = 10_000
SECRET_ALGORITHM = "HS256"  # checked with JWT_SECRET
KEY_ALGORITHMS = frozenset({"RS256", "ES256"})  # checked with the JWKS key named by ``kid``


@dataclass(frozen=True, slots=True)
class Principal:
    trainer_id: int
    actor: str  # written to the ledger: who did it
    via_api_key: bool
    can_write: bool
    expires_at: float | None  # epoch seconds; the WebSocket closes then
    api_key_id: int | None = None  # the key's sockets close when it is revoked

    @classmethod
    def reader(cls, trainer_id: int) -> Principal:
        """The trainer's rows, read-only: what a live-update event is executed as."""
        return cls(trainer_id, "live", via_api_key=False, can_write=False, expires_at=None)

    @property
    def manual_source(self) -> str:
        """Ledger source for a hand-made change: a person in the app or an integration."""
        return "INTEGRATION" if self.via_api_key else "MANUAL"

    @property
    def calendar_source(self) -> str:
        return "INTEGRATION" if self.via_api_key else "CALENDAR"


def unauthenticated(message: str) -> DomainError:
    return DomainError(Code.UNAUTHENTICATED, message)


def new_api_key_secret() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def issue_token(
    settings: Settings, subject: str, *, ttl_seconds: int = 3600, **claims: object
) -> str:
    """A JWT as Supabase would issue it (HS256, ``sub`` = the trainer)."""
    now = int(time.time())
    payload = {"sub": subject, "iat": now, "exp": now + ttl_seconds, **claims}
    if settings.jwt_audience and "aud" not in claims:
        payload["aud"] = settings.jwt_audience
    if settings.jwt_issuer and "iss" not in claims:
        payload["iss"] = settings.jwt_issuer
    return jwt.encode(payload, settings.jwt_secret, algorithm="HS256")


def _text_claim(value: object, max_length: int) -> str | None:
    """A string claim PostgreSQL can store (no NUL, bounded), else None."""
    if isinstance(value, str) and len(value) <= max_length and "\x00" not in value:
        return value
    return None


class Authenticator:
    """Verifies tokens; verified JWTs are cached briefly (never past their expiry)."""

    def __init__(self, settings: Settings, pool: Pool) -> None:
        self._settings = settings
        self._pool = pool
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._keys = (
            JwkSource(
                settings.jwt_jwks_url,
                refresh_seconds=settings.jwt_jwks_refresh_seconds,
                timeout_seconds=settings.jwt_jwks_timeout_seconds,
            )
            if settings.jwt_jwks_url
            else None
        )

    async def authenticate(self, authorization: str | None) -> Principal | None:
        """None when no credentials were sent; raises UNAUTHENTICATED for bad ones."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthenticated("use 'Authorization: Bearer <token>'")
        if token.startswith(API_KEY_PREFIX):
            return await self._api_key(token)
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        principal = await self._jwt(token)
        if len(self._cache) >= TOKEN_CACHE_MAX:
            self._cache.clear()
        valid_until = now + self._settings.token_cache_seconds
        if principal.expires_at is not None:
            valid_until = min(valid_until, principal.expires_at)
        self._cache[token] = (principal, valid_until)
        return principal

    async def _verification_key(self, token: str) -> tuple[str, str | jwt.PyJWK]:
        """The algorithm the token's header names and the key to check it with. Only
        HS256 uses the secret and only RS256/ES256 use a JWKS key, so a token cannot pick
        a public key as its HMAC secret (or ``none``)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthenticated("invalid token") from None
        algorithm = header.get("alg")
        if algorithm == SECRET_ALGORITHM:
            return algorithm, self._settings.jwt_secret
        kid = header.get("kid")
        if (
            not isinstance(algorithm, str)
            or algorithm not in KEY_ALGORITHMS
            or not isinstance(kid, str)
            or self._keys is None
        ):
            raise unauthenticated("invalid token")
        try:
            key = await self._keys.key(kid)
        except KeysUnavailable:
            raise DomainError(
                Code.SERVICE_UNAVAILABLE,
                "the signing keys (JWT_JWKS_URL) could not be read; retry shortly",
            ) from None
        if key is None or key.algorithm_name != algorithm:
            raise unauthenticated("invalid token")
        return algorithm, key

    async def _jwt(self, token: str) -> Principal:
        algorithm, key = await self._verification_key(token)
        required = ["sub", "exp"] + (["iss"] if self._settings.jwt_issuer else [])
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._settings.jwt_audience,
                issuer=self._settings.jwt_issuer,
                leeway=self._settings.jwt_leeway_seconds,
                options={
                    "require": required,
                    "verify_aud": bool(self._settings.jwt_audience),
                },
            )
        except jwt.ExpiredSignatureError:
            raise unauthenticated("token expired") from None
        except jwt.PyJWTError:
            raise unauthenticated("invalid token") from None
        subject = _text_claim(claims["sub"], 255)
        if not subject:
            raise unauthenticated("invalid token subject")
        email = _text_claim(claims.get("email"), 320)
        name = _text_claim(claims.get("name"), 320)
        name = name if name is not None else (email or "")
        trainer = await trainers.provision(self._pool, subject=subject, name=name, email=email)
        return Principal(
            trainer_id=trainer["id"],
            actor=f"trainer:{subject}",
            via_api_key=False,
            can_write=True,
            # Accepted up to the leeway past ``exp``: sockets close then, caches forget it.
            expires_at=float(claims["exp"]) + self._settings.jwt_leeway_seconds,
        )

    async def _api_key(self, secret: str) -> Principal:
        key = await trainers.api_key_by_secret(self._pool, secret)
        if key is None:
            raise unauthenticated("unknown or revoked API key")
        return Principal(
            trainer_id=key["trainer_id"],
            actor=f"api_key:{key['id']}",
            via_api_key=True,
            can_write="WRITE" in key["scopes"],
            expires_at=None,
            api_key_id=key["id"],
        )
