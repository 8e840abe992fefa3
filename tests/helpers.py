"""GraphQL documents and small builders shared by the tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tests.conftest import Api

PURCHASE_FIELDS = "id sessionsTotal sessionsUsed sessionsRemaining revision status expiresAt"
BOOKING_FIELDS = "id status charged unpaid lateCancel completedBy purchase { id sessionsUsed }"

CREATE_CLIENT = "mutation($name: String!) { createClient(input: {name: $name}) { id name } }"
SELL = f"""
mutation($client: ID!, $total: Int!, $expires: DateTime) {{
  sellPackage(input: {{clientId: $client, sessionsTotal: $total, expiresAt: $expires}}) {{
    {PURCHASE_FIELDS}
  }}
}}"""
USE = f"""
mutation($id: ID!, $key: String, $reason: String) {{
  useSession(purchaseId: $id, idempotencyKey: $key, reason: $reason) {{ {PURCHASE_FIELDS} }}
}}"""
RELEASE = f"""
mutation($id: ID!, $key: String, $reason: String) {{
  releaseSession(purchaseId: $id, idempotencyKey: $key, reason: $reason) {{ {PURCHASE_FIELDS} }}
}}"""
CREATE_BOOKING = f"""
mutation($client: ID!, $purchase: ID, $auto: Boolean, $start: DateTime!, $end: DateTime!,
         $overbook: Boolean) {{
  createBooking(input: {{clientId: $client, purchaseId: $purchase, autoAssignPackage: $auto,
                         startsAt: $start, endsAt: $end, allowOverbook: $overbook}}) {{
    {BOOKING_FIELDS}
  }}
}}"""
COMPLETE = f"""
mutation($id: ID!, $key: String) {{
  completeBooking(id: $id, idempotencyKey: $key) {{ {BOOKING_FIELDS} }}
}}"""
NO_SHOW = f"mutation($id: ID!) {{ markNoShow(id: $id) {{ {BOOKING_FIELDS} }} }}"
CANCEL = f"""
mutation($id: ID!, $late: Boolean) {{
  cancelBooking(id: $id, lateCancel: $late) {{ {BOOKING_FIELDS} }}
}}"""
REOPEN = f"mutation($id: ID!) {{ reopenBooking(id: $id) {{ {BOOKING_FIELDS} }} }}"


def at(days: float = 0, hours: float = 0) -> datetime:
    return datetime.now(UTC) + timedelta(days=days, hours=hours)


def iso(moment: datetime) -> str:
    return moment.isoformat()


async def client(api: Api, name: str = "Ada") -> str:
    data = await api.data(CREATE_CLIENT, name=name)
    client_id: str = data["createClient"]["id"]
    return client_id


async def package(
    api: Api, client_id: str | None = None, total: int = 10, expires: datetime | None = None
) -> dict[str, Any]:
    client_id = client_id or await client(api)
    data = await api.data(
        SELL, client=client_id, total=total, expires=iso(expires) if expires else None
    )
    sold: dict[str, Any] = data["sellPackage"]
    return sold


async def lapsed_package(
    api: Api, client_id: str | None = None, total: int = 10, *, days_ago: float = 1
) -> dict[str, Any]:
    """A package whose expiry passed ``days_ago`` days ago. Selling one already expired is
    refused, so it is sold valid for a day and its expiry moved back as time would have
    (``expires_at`` is no count: the ledger does not replay it)."""
    sold = await package(api, client_id, total=total, expires=at(days=1))
    conn = await asyncpg.connect(api.settings.database_url)
    try:
        moved = await conn.fetchval(
            "UPDATE purchases SET expires_at = $2 WHERE id = $1 RETURNING expires_at",
            row_id(sold["id"]),
            at(days=-days_ago),
        )
    finally:
        await conn.close()
    return {**sold, "expiresAt": moved.isoformat()}


async def booking(
    api: Api,
    client_id: str,
    purchase_id: str | None = None,
    *,
    start: datetime | None = None,
    auto: bool | None = None,
    overbook: bool | None = None,
) -> dict[str, Any]:
    start = start or at(hours=-2)
    data = await api.data(
        CREATE_BOOKING,
        client=client_id,
        purchase=purchase_id,
        auto=auto,
        overbook=overbook,
        start=iso(start),
        end=iso(start + timedelta(hours=1)),
    )
    created: dict[str, Any] = data["createBooking"]
    return created


def row_id(opaque: str) -> int:
    return int(opaque.split("_", 1)[1])


# Bookings a test INSERTs directly (bypassing createBooking) hold no session yet: this gives
# each package one HOLD entry for its CONFIRMED bookings that are not counted, the way
# migration 0007 recorded the holds of existing bookings, so the books balance again.
HOLD_SEEDED = """
WITH missing AS (
    SELECT p.id, count(b.id)::int - p.sessions_held AS n
      FROM purchases AS p
      JOIN bookings AS b ON b.purchase_id = p.id AND b.status = 'CONFIRMED'
     GROUP BY p.id
    HAVING count(b.id) > p.sessions_held
), taken AS (
    UPDATE purchases AS p
       SET sessions_held = p.sessions_held + m.n, revision = p.revision + 1
      FROM missing AS m
     WHERE p.id = m.id
    RETURNING p.id, p.trainer_id, p.revision, p.sessions_used, p.sessions_held,
              p.sessions_total, m.n
)
INSERT INTO session_ledger
    (trainer_id, purchase_id, kind, delta, held_delta, sessions_used_after,
     sessions_held_after, sessions_total_after, revision, source, actor, reason)
SELECT trainer_id, id, 'HOLD', 0, n, sessions_used, sessions_held, sessions_total, revision,
       'MANUAL', 'test', 'seeded bookings hold their sessions'
  FROM taken
"""


async def hold_seeded(db: Any) -> None:
    """Take the holds of bookings inserted behind the API's back (``HOLD_SEEDED``)."""
    await db.execute(HOLD_SEEDED)
