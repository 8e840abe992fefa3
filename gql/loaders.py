"""DataLoaders, one set per request: a nested field costs one SQL statement per level."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from strawberry.dataloader import DataLoader

from punchcard.db import bookings, clients, offers, purchases
from punchcard.db.pool import Database

Row = Mapping[str, Any]
Fetch = Callable[..., Awaitable[list[Row]]]
LedgerPageKey = tuple[int, int, int]  # (purchase id, after cursor, rows wanted)


def _by_id(pool: Database, trainer_id: int, fetch: Fetch) -> DataLoader[int, Row | None]:
    async def load(ids: Sequence[int]) -> list[Row | None]:
        rows = {row["id"]: row for row in await fetch(pool, trainer_id=trainer_id, ids=ids)}
        return [rows.get(i) for i in ids]

    return DataLoader(load_fn=load)


async def prefetch(loader: DataLoader[int, Row | None], ids: list[int]) -> dict[int, Row]:
    """The rows of ``ids`` (distinct) by id, in the loader's one statement, without the
    future per key ``load_many`` costs; primed into the loader, so a field that loads
    one of them later reads it from there."""
    if not ids:
        return {}
    rows = await loader.load_fn(ids)
    found: dict[int, Row] = {}
    for i, row in zip(ids, rows, strict=True):
        if isinstance(row, BaseException):  # what a load function may answer for a key
            raise row
        if row is not None:
            found[i] = row
    loader.prime_many(found)
    return found


class Loaders:
    """Created lazily per request; each loader batches every key asked for in one tick."""

    def __init__(self, pool: Database, trainer_id: int) -> None:
        self.client = _by_id(pool, trainer_id, clients.by_ids)
        self.purchase = _by_id(pool, trainer_id, purchases.by_ids)
        self.booking = _by_id(pool, trainer_id, bookings.by_ids)
        self.offer = _by_id(pool, trainer_id, offers.by_ids)

        async def purchases_of(client_ids: Sequence[int]) -> list[list[Row]]:
            grouped: dict[int, list[Row]] = defaultdict(list)
            for row in await purchases.by_clients(
                pool, trainer_id=trainer_id, client_ids=client_ids
            ):
                grouped[row["client_id"]].append(row)
            return [grouped[i] for i in client_ids]

        self.purchases_of_client: DataLoader[int, list[Row]] = DataLoader(load_fn=purchases_of)

        async def ledger_pages(keys: Sequence[LedgerPageKey]) -> list[list[Row]]:
            """Pages of many purchases' ledgers: one statement per distinct (after, limit)."""
            pages: dict[LedgerPageKey, list[Row]] = defaultdict(list)
            for after, limit in {(k[1], k[2]) for k in keys}:
                ids = [k[0] for k in keys if (k[1], k[2]) == (after, limit)]
                rows = await purchases.ledger_pages(
                    pool, trainer_id=trainer_id, purchase_ids=ids, after=after, limit=limit
                )
                for row in rows:
                    pages[(row["purchase_id"], after, limit)].append(row)
            return [pages[key] for key in keys]

        self.ledger_page: DataLoader[LedgerPageKey, list[Row]] = DataLoader(load_fn=ledger_pages)
