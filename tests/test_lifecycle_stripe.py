"""Stripe's refund cancels through ``cancelPackage``'s statement (db/lifecycle.py): a
CANCEL entry as ``stripe:<event id>``, the package's CONFIRMED bookings unpackaged, and a
package already frozen, expired or cancelled handled like the API handles it."""

from __future__ import annotations

import asyncpg

from punchcard.db import lifecycle
from tests.helpers import at, booking, row_id
from tests.lifecycle import CANCEL_PACKAGE, FREEZE, assert_ledger_replays, entries, worker_pool
from tests.test_stripe import Shop, accepted, refunded, sale, settings, shop

__all__ = ["settings", "shop", "worker_pool"]  # fixtures, used by name


async def test_a_refund_of_a_frozen_package_cancels_it_and_unlinks_its_bookings(
    shop: Shop, db: asyncpg.Connection
) -> None:
    package = (await accepted(shop.http, sale(shop)))["purchaseId"]
    future = await booking(shop.api, shop.client, package, start=at(days=3))
    await shop.api.data(FREEZE, id=package)
    refund = refunded()
    answer = await accepted(shop.http, refund)
    assert (answer["outcome"], answer["purchaseId"]) == ("REFUNDED", package)
    hold, _freeze, cancel = await entries(db, package)
    assert (hold["kind"], cancel["held_delta"]) == ("HOLD", -1)  # the booking's hold, given back
    assert (cancel["kind"], cancel["revision"], cancel["actor"], cancel["source"]) == (
        "CANCEL",
        3,
        f"stripe:{refund['id']}",
        "INTEGRATION",
    )
    assert cancel["detail"]["statusBefore"] == "FROZEN"
    assert cancel["detail"]["bookingsUnlinked"] == 1
    assert (
        await db.fetchval("SELECT purchase_id FROM bookings WHERE id = $1", row_id(future["id"]))
        is None
    )
    await assert_ledger_replays(db)


async def test_a_refund_of_a_cancelled_or_expired_package_changes_nothing(
    shop: Shop, db: asyncpg.Connection, worker_pool: asyncpg.Pool
) -> None:
    cancelled = (await accepted(shop.http, sale(shop, intent="pi_a", session="cs_a")))["purchaseId"]
    await shop.api.data(CANCEL_PACKAGE, id=cancelled)
    expired = (await accepted(shop.http, sale(shop, intent="pi_b", session="cs_b")))["purchaseId"]
    await lifecycle.expire_batch(worker_pool, limit=10, now=at(days=400))  # past its 90 days
    for package, intent, reason in [
        (cancelled, "pi_a", "the package was already cancelled"),
        (expired, "pi_b", "the package had expired: nothing was left to cancel"),
    ]:
        before = await entries(db, package)
        answer = await accepted(shop.http, refunded(intent=intent))
        assert (answer["outcome"], answer["reason"]) == ("REFUNDED", reason)
        assert await entries(db, package) == before
    await assert_ledger_replays(db)
