"""Shared by tests/test_lifecycle.py and tests/test_expiry.py: the lifecycle's documents,
a package's ledger as rows, and the replay check every test ends with."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from punchcard.db import roles
from punchcard.settings import Settings
from tests.helpers import row_id

FIELDS = (
    "id sessionsTotal sessionsUsed sessionsHeld sessionsAvailable revision status expiresAt "
    "frozenUntil sessionsExpired cancelReason client { id }"
)
CANCEL_PACKAGE = f"""
mutation($id: ID!, $reason: String, $to: ID) {{
  cancelPackage(id: $id, reason: $reason, moveBookingsTo: $to) {{ {FIELDS} }}
}}"""
FREEZE = f"""
mutation($id: ID!, $until: DateTime) {{ freezePackage(id: $id, until: $until) {{ {FIELDS} }} }}"""
UNFREEZE = f"mutation($id: ID!) {{ unfreezePackage(id: $id) {{ {FIELDS} }} }}"
# freeze then unfreeze in one document: a call that works on any ACTIVE package
FREEZE_THEN_UNFREEZE = f"""
mutation($id: ID!) {{
  freezePackage(id: $id) {{ id }}
  unfreezePackage(id: $id) {{ {FIELDS} }}
}}"""
EXTEND = f"""
mutation($id: ID!, $expires: DateTime!) {{
  extendPackage(id: $id, expiresAt: $expires) {{ {FIELDS} }}
}}"""
TRANSFER = f"""
mutation($from: ID!, $to: ID!, $sessions: Int!) {{
  transferSessions(fromPurchaseId: $from, toClientId: $to, sessions: $sessions) {{
    fromPurchase {{ {FIELDS} }} toPurchase {{ {FIELDS} }}
  }}
}}"""

ENTRIES = """
SELECT kind, delta, held_delta, total_delta, sessions_used_after, sessions_held_after,
       sessions_total_after, revision, source, actor, reason, related_purchase_id,
       booking_id, detail::text AS detail
  FROM session_ledger WHERE purchase_id = $1 ORDER BY id
"""


async def entries(db: asyncpg.Connection, purchase: str) -> list[dict[str, Any]]:
    """A package's ledger, oldest first, ``detail`` parsed."""
    rows = await db.fetch(ENTRIES, row_id(purchase))
    out = []
    for row in rows:
        entry = dict(row)
        entry["detail"] = json.loads(entry["detail"]) if entry["detail"] else None
        out.append(entry)
    return out


PACKAGES = """
SELECT id, sessions_total, sessions_used, sessions_held, revision FROM purchases ORDER BY id
"""


async def assert_ledger_replays(db: asyncpg.Connection) -> None:
    """For every package: used = Σ delta, held = Σ held_delta, revisions 1..n with no gap
    (n = its revision), and every entry's counts-after the running sums."""
    for package in await db.fetch(PACKAGES):
        rows = await db.fetch(ENTRIES, package["id"])
        assert [r["revision"] for r in rows] == list(range(1, package["revision"] + 1)), package
        total = package["sessions_total"] - sum(r["total_delta"] for r in rows)
        used = held = 0
        for r in rows:
            used += r["delta"]
            held += r["held_delta"]
            total += r["total_delta"]
            after = (r["sessions_used_after"], r["sessions_held_after"], r["sessions_total_after"])
            assert after == (used, held, total), (package, r)
        assert (used, held, total) == (
            package["sessions_used"],
            package["sessions_held"],
            package["sessions_total"],
        ), package


async def event_types(db: asyncpg.Connection, purchase: str) -> list[str]:
    """Types of the events about a package, in order."""
    rows = await db.fetch(
        "SELECT type FROM events WHERE data -> 'purchase' ->> 'id' = $1 ORDER BY id", purchase
    )
    return [r["type"] for r in rows]


@pytest.fixture
async def worker_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool as the sweeper connects (punchcard_worker, row-level security on)."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        roles.worker_url(settings), min_size=1, max_size=4
    )
    yield pool
    await pool.close()
