"""useSession / releaseSession: the guarded UPDATE under many concurrent callers."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg

from tests.conftest import Api
from tests.helpers import RELEASE, USE, package, row_id


async def ledger_of(db: asyncpg.Connection, purchase_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM session_ledger WHERE purchase_id = $1 ORDER BY revision",
        row_id(purchase_id),
    )


def outcomes(results: list[dict[str, object]]) -> Counter[str]:
    return Counter(
        "ok" if "errors" not in r else r["errors"][0]["extensions"]["code"]  # type: ignore[index]
        for r in results
    )


async def test_use_session_counts_and_returns_the_new_state(
    api: Api, db: asyncpg.Connection
) -> None:
    sold = await package(api, total=3)
    assert (sold["sessionsUsed"], sold["revision"], sold["status"]) == (0, 0, "ACTIVE")
    used = (await api.data(USE, id=sold["id"], reason="walk-in"))["useSession"]
    assert used["sessionsUsed"] == 1
    assert used["sessionsRemaining"] == 2
    assert used["revision"] == 1
    (entry,) = await ledger_of(db, sold["id"])
    assert (entry["delta"], entry["sessions_used_after"], entry["revision"]) == (1, 1, 1)
    assert (entry["source"], entry["actor"], entry["reason"]) == (
        "MANUAL",
        "trainer:trainer-a",
        "walk-in",
    )


async def test_fifty_concurrent_uses_of_five_sessions(api: Api, db: asyncpg.Connection) -> None:
    sold = await package(api, total=5)
    results = await asyncio.gather(*(api.post(USE, id=sold["id"]) for _ in range(50)))
    assert outcomes(results) == {"ok": 5, "NO_SESSIONS_REMAINING": 45}
    revisions = sorted(r["data"]["useSession"]["revision"] for r in results if "errors" not in r)
    assert revisions == [1, 2, 3, 4, 5]
    ledger = await ledger_of(db, sold["id"])
    assert [e["sessions_used_after"] for e in ledger] == [1, 2, 3, 4, 5]
    row = await db.fetchrow(
        "SELECT sessions_used, revision FROM purchases WHERE id = $1", row_id(sold["id"])
    )
    assert (row["sessions_used"], row["revision"]) == (5, 5)


async def test_fifty_concurrent_releases_of_five_used(api: Api, db: asyncpg.Connection) -> None:
    sold = await package(api, total=5)
    for _ in range(5):
        await api.data(USE, id=sold["id"])
    results = await asyncio.gather(*(api.post(RELEASE, id=sold["id"]) for _ in range(50)))
    assert outcomes(results) == {"ok": 5, "NOTHING_TO_RELEASE": 45}
    ledger = await ledger_of(db, sold["id"])
    assert [e["delta"] for e in ledger] == [1] * 5 + [-1] * 5
    assert [e["sessions_used_after"] for e in ledger] == [1, 2, 3, 4, 5, 4, 3, 2, 1, 0]
    assert (
        await db.fetchval("SELECT sessions_used FROM purchases WHERE id = $1", row_id(sold["id"]))
        == 0
    )


async def test_concurrent_use_and_release_keep_count_equal_to_ledger(
    api: Api, db: asyncpg.Connection
) -> None:
    sold = await package(api, total=4)
    calls = [api.post(USE if i % 3 else RELEASE, id=sold["id"]) for i in range(90)]
    results = await asyncio.gather(*calls)
    ok = sum(1 for r in results if "errors" not in r)
    ledger = await ledger_of(db, sold["id"])
    assert len(ledger) == ok
    row = await db.fetchrow(
        "SELECT sessions_used, revision FROM purchases WHERE id = $1", row_id(sold["id"])
    )
    assert row["sessions_used"] == sum(e["delta"] for e in ledger)
    assert row["revision"] == len(ledger)
    assert [e["revision"] for e in ledger] == list(range(1, len(ledger) + 1))
    # each ledger row's count follows from the one before it
    running = 0
    for entry in ledger:
        running += entry["delta"]
        assert entry["sessions_used_after"] == running
        assert 0 <= running <= 4


async def test_same_idempotency_key_concurrently_changes_once(
    api: Api, db: asyncpg.Connection
) -> None:
    sold = await package(api, total=10)
    results = await asyncio.gather(
        *(api.post(USE, id=sold["id"], key="tab-click-1") for _ in range(20))
    )
    assert outcomes(results) == {"ok": 20}
    assert {r["data"]["useSession"]["revision"] for r in results} == {1}
    assert {r["data"]["useSession"]["sessionsUsed"] for r in results} == {1}
    assert len(await ledger_of(db, sold["id"])) == 1


async def test_same_idempotency_key_sequentially_replays_first_result(
    api: Api, db: asyncpg.Connection
) -> None:
    sold = await package(api, total=10)
    first = (await api.data(USE, id=sold["id"], key="k-1"))["useSession"]
    await api.data(USE, id=sold["id"])  # another change in between
    again = (await api.data(USE, id=sold["id"], key="k-1"))["useSession"]
    assert again == first
    ledger = await ledger_of(db, sold["id"])
    assert len(ledger) == 2
    assert ledger[0]["idempotency_key"] == "k-1"


async def test_idempotency_key_with_other_arguments_is_refused(
    api: Api, db: asyncpg.Connection
) -> None:
    one = await package(api, total=10)
    two = await package(api, total=10)
    await api.data(USE, id=one["id"], key="k-2")
    assert await api.error(USE, id=two["id"], key="k-2") == "IDEMPOTENCY_KEY_REUSED"
    assert await api.error(USE, id=one["id"], key="k-2", reason="other") == "IDEMPOTENCY_KEY_REUSED"
    assert await api.error(RELEASE, id=one["id"], key="k-2") == "IDEMPOTENCY_KEY_REUSED"
    assert len(await ledger_of(db, two["id"])) == 0
    assert len(await ledger_of(db, one["id"])) == 1


async def test_idempotency_keys_are_per_trainer(api: Api, other: Api) -> None:
    mine = await package(api, total=3)
    theirs = await package(other, total=3)
    assert (await api.data(USE, id=mine["id"], key="shared"))["useSession"]["sessionsUsed"] == 1
    assert (await other.data(USE, id=theirs["id"], key="shared"))["useSession"]["sessionsUsed"] == 1


async def test_release_with_a_key_replays_too(api: Api, db: asyncpg.Connection) -> None:
    sold = await package(api, total=2)
    await api.data(USE, id=sold["id"])
    await api.data(USE, id=sold["id"])
    results = await asyncio.gather(
        *(api.post(RELEASE, id=sold["id"], key="undo") for _ in range(10))
    )
    assert outcomes(results) == {"ok": 10}
    assert (
        await db.fetchval("SELECT sessions_used FROM purchases WHERE id = $1", row_id(sold["id"]))
        == 1
    )
