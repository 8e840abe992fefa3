"""GraphQL documents and small builders shared by the tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

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
mutation($client: ID!, $purchase: ID, $auto: Boolean, $start: DateTime!, $end: DateTime!) {{
  createBooking(input: {{clientId: $client, purchaseId: $purchase, autoAssignPackage: $auto,
                         startsAt: $start, endsAt: $end}}) {{ {BOOKING_FIELDS} }}
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


async def booking(
    api: Api,
    client_id: str,
    purchase_id: str | None = None,
    *,
    start: datetime | None = None,
    auto: bool | None = None,
) -> dict[str, Any]:
    start = start or at(hours=-2)
    data = await api.data(
        CREATE_BOOKING,
        client=client_id,
        purchase=purchase_id,
        auto=auto,
        start=iso(start),
        end=iso(start + timedelta(hours=1)),
    )
    created: dict[str, Any] = data["createBooking"]
    return created


def row_id(opaque: str) -> int:
    return int(opaque.split("_", 1)[1])
