"""The public keys asymmetric JWTs are checked against: a JWKS read from a URL or a file,
cached, and read again for an unknown ``kid`` at most once per refresh interval.

A read runs in a thread (PyJWT's ``PyJWKClient`` is blocking urllib), and every lookup
that misses while a read is under way waits for that same read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from jwt import PyJWK, PyJWKClient, PyJWKSet

log = logging.getLogger(__name__)

# A set older than this is read again on its next use (a key removed from it stops
# working then); if that read fails, the keys already held keep working.
MAX_AGE_SECONDS = 600.0


class KeysUnavailable(Exception):
    """The key set could not be read (endpoint down or slow, missing file, bad JSON)."""


def _reader(location: str, timeout_seconds: float) -> Callable[[], PyJWKSet]:
    """A blocking function that reads the set from an http(s) URL, a file:// URL or a path."""
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme in {"http", "https"}:
        client = PyJWKClient(
            location, cache_keys=False, cache_jwk_set=False, timeout=timeout_seconds
        )
        return client.get_jwk_set
    if scheme not in {"", "file"}:
        raise ValueError(
            f"JWT_JWKS_URL must be an http(s) URL, a file:// URL or a path: {location}"
        )
    path = Path(url2pathname(parts.path)) if scheme == "file" else Path(location)
    return lambda: PyJWKSet.from_json(path.read_text(encoding="utf-8"))


class JwkSource:
    """Signing keys by ``kid``; ``reads`` counts the attempts to read the set."""

    def __init__(self, location: str, *, refresh_seconds: float, timeout_seconds: float) -> None:
        self._read = _reader(location, timeout_seconds)
        self._refresh_seconds = refresh_seconds
        self._keys: dict[str, PyJWK] = {}
        self._read_at: float | None = None  # monotonic time of the last successful read
        self._tried_at: float | None = None  # ... of the last attempt, successful or not
        self._failure: str | None = None  # why the last attempt failed
        self._reading: asyncio.Task[None] | None = None
        self.reads = 0

    async def key(self, kid: str) -> PyJWK | None:
        """The key with this ``kid``, or None if the set has none. Raises KeysUnavailable
        when the key is not held and the set could not be read."""
        key = self._keys.get(kid)
        if key is not None and not self._stale():
            return key
        if self._reading is not None or self._may_read():
            await self._refresh()
            key = self._keys.get(kid, key)
        if key is None and self._failure is not None:
            raise KeysUnavailable(self._failure)
        return key

    def _stale(self) -> bool:
        return self._read_at is None or time.monotonic() - self._read_at >= MAX_AGE_SECONDS

    def _may_read(self) -> bool:
        return self._tried_at is None or time.monotonic() - self._tried_at >= self._refresh_seconds

    async def _refresh(self) -> None:
        if self._reading is None:
            self._reading = asyncio.create_task(self._read_once())
        # A caller that gives up (its request was cancelled) leaves the read to the others.
        await asyncio.shield(self._reading)

    async def _read_once(self) -> None:
        self._tried_at = time.monotonic()
        self.reads += 1
        try:
            jwk_set = await asyncio.to_thread(self._read)
        except Exception as error:  # whatever went wrong, the keys held so far stay
            self._failure = f"{type(error).__name__}: {error}"
            log.warning("could not read the JWKS: %s", self._failure)
            return
        finally:
            self._reading = None
        self._keys = {
            key.key_id: key
            for key in jwk_set.keys
            if key.key_id and key.public_key_use in {"sig", None}
        }
        self._read_at = time.monotonic()
        self._failure = None
