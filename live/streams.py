"""The streams behind ``purchaseUpdated``, ``clientUpdated`` and ``bookingsChanged``.

The subscription resolvers (``resolvers/subscriptions.py``) only turn arguments into one
of these :class:`~punchcard.live.source.Stream` s; the hub (``live/hub.py``) serves it,
grouping every subscriber of the same document. A stream knows two things:
``sync`` — one read of the current state, answering what a joining (or re-syncing)
subscriber and the group itself have missed — and ``cut`` — which rows of a change-feed
batch are news for the group. Positions are PostgreSQL snapshots (``db/changes.py``);
``purchaseUpdated`` also counts revisions, which a row lock makes gap-free per purchase.

Messages, first to last:

* without a resume point, the first message is the current state (``snapshot: true``);
* with ``afterRevision``/``after``, the first messages are exactly what was missed (none
  if nothing was), unless the position is unknown to the database (a restored backup):
  then the current state (``snapshot: true``) replaces it;
* then one message per change: ``purchaseUpdated`` one per revision, the others one per
  batch of changes (a cursor may cover several transactions committed together).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from punchcard.db import changes
from punchcard.db.changes import Changes, Snapshot
from punchcard.db.errors import not_found
from punchcard.db.types import Executor, Row
from punchcard.gql.types import Booking, LedgerEntry, Purchase
from punchcard.gql.updates import BookingsChange, ClientUpdate, PurchaseUpdate
from punchcard.live.source import Sync

NO_ROWS = 2**62  # a lower bound no transaction id reaches: "no ledger rows, please"
NO_REVISIONS = 2**31 - 1


def _as_of(purchase: Row, entry: Row) -> Purchase:
    """The package right after ``entry``: its counts and revision then, the rest as now
    (a transfer changes the total, a hold the held count)."""
    return Purchase.from_row(
        {
            **purchase,
            "sessions_used": entry["sessions_used_after"],
            "sessions_held": entry["sessions_held_after"],
            "sessions_total": entry["sessions_total_after"],
            "revision": entry["revision"],
        }
    )


@dataclass(frozen=True, slots=True)
class PurchaseMark:
    snapshot: Snapshot
    revision: int
    row: Row


@dataclass(frozen=True, slots=True)
class PurchaseStream:
    trainer_id: int
    purchase_id: int
    resume: int | None
    latest_value: ClassVar[bool] = True  # each message is the whole package: may skip ahead
    reads_purchases: ClassVar[bool] = True
    reads_bookings: ClassVar[bool] = False

    def updates(self, after: int, row: Row, ledger: Sequence[Row]) -> list[PurchaseUpdate]:
        """One message per revision after ``after`` (ledger rows sorted by revision)."""
        out = [
            PurchaseUpdate(
                revision=e["revision"],
                snapshot=False,
                purchase=_as_of(row, e),
                entry=LedgerEntry.from_row(e),
            )
            for e in ledger
            if e["revision"] > after and e["purchase_id"] == self.purchase_id
        ]
        last = out[-1].revision if out else after
        if row["revision"] > last:  # a change that wrote no ledger row
            out.append(self.current(row, snapshot=False))
        return out

    @staticmethod
    def current(row: Row, *, snapshot: bool) -> PurchaseUpdate:
        return PurchaseUpdate(
            revision=row["revision"], snapshot=snapshot, purchase=Purchase.from_row(row), entry=None
        )

    async def sync(
        self, db: Executor, mark: PurchaseMark | None, resumes: Sequence[int | None]
    ) -> Sync:
        since = [r for r in resumes if r is not None] + ([mark.revision] if mark else [])
        read = await changes.purchase(
            db,
            trainer_id=self.trainer_id,
            purchase_id=self.purchase_id,
            after_revision=min(since, default=NO_REVISIONS),
        )
        if read is None:
            raise not_found("purchase")
        row = read.purchases[0]
        answers: list[list[Any]] = []
        for resume in resumes:
            if resume is None or resume > row["revision"]:
                answers.append([self.current(row, snapshot=True)])
            else:
                answers.append(list(self.updates(resume, row, read.ledger)))
        missed = self.updates(mark.revision, row, read.ledger) if mark else []
        return Sync(PurchaseMark(read.snapshot, row["revision"], row), missed, answers)

    def cut(self, feed: Changes, mark: PurchaseMark) -> tuple[list[Any], PurchaseMark]:
        # Every revision updates the purchase row, so news always comes with the row.
        row = next((p for p in feed.purchases if p["id"] == self.purchase_id), mark.row)
        events = self.updates(mark.revision, row, feed.ledger)
        revision = max([mark.revision, *(e.revision for e in events)])
        return events, PurchaseMark(feed.snapshot, revision, row)

    def resume_at(self, mark: PurchaseMark) -> int:
        return mark.revision


@dataclass(frozen=True, slots=True)
class ClientMark:
    snapshot: Snapshot
    purchase_ids: frozenset[int]


def _news(rows: Sequence[Row], seen: Snapshot | None) -> list[Row]:
    """The rows written by transactions ``seen`` had not seen (all of them when None)."""
    if seen is None:
        return list(rows)
    return [r for r in rows if not seen.sees(r["changed_xid"])]


def _known(resume: Snapshot | None, now: Snapshot) -> Snapshot | None:
    """A resume point the database has reached, else None (answer with a snapshot)."""
    return resume if resume is not None and now.covers(resume) else None


@dataclass(frozen=True, slots=True)
class ClientStream:
    trainer_id: int
    client_id: int
    resume: Snapshot | None
    latest_value: ClassVar[bool] = False  # deltas: a backlog is re-synced from the database
    reads_purchases: ClassVar[bool] = True
    reads_bookings: ClassVar[bool] = False

    def update(
        self, at: Snapshot, purchases: Sequence[Row], ledger: Sequence[Row], *, snapshot: bool
    ) -> ClientUpdate:
        return ClientUpdate(
            cursor=str(at),
            snapshot=snapshot,
            purchases=[Purchase.from_row(p) for p in purchases],
            entries=[LedgerEntry.from_row(e) for e in ledger],
            client_id=self.client_id,
        )

    def delta(self, read: Changes, seen: Snapshot, ids: frozenset[int]) -> list[Any]:
        purchases = [p for p in _news(read.purchases, seen) if p["client_id"] == self.client_id]
        ids = ids | {p["id"] for p in purchases}
        ledger = [e for e in _news(read.ledger, seen) if e["purchase_id"] in ids]
        if not purchases and not ledger:
            return []
        return [self.update(read.snapshot, purchases, ledger, snapshot=False)]

    async def sync(
        self, db: Executor, mark: ClientMark | None, resumes: Sequence[Snapshot | None]
    ) -> Sync:
        since = [r.xmin for r in resumes if r is not None] + ([mark.snapshot.xmin] if mark else [])
        read = await changes.client(
            db, trainer_id=self.trainer_id, client_id=self.client_id, lo=min(since, default=NO_ROWS)
        )
        if read is None:
            raise not_found("client")
        ids = frozenset(p["id"] for p in read.purchases)
        answers: list[list[Any]] = []
        for resume in resumes:
            seen = _known(resume, read.snapshot)
            if seen is None:
                answers.append([self.update(read.snapshot, read.purchases, (), snapshot=True)])
            else:
                answers.append(self.delta(read, seen, ids))
        missed = self.delta(read, mark.snapshot, mark.purchase_ids) if mark else []
        return Sync(ClientMark(read.snapshot, ids), missed, answers)

    def cut(self, feed: Changes, mark: ClientMark) -> tuple[list[Any], ClientMark]:
        events = self.delta(feed, mark.snapshot, mark.purchase_ids)
        ids = mark.purchase_ids | {
            p["id"] for p in feed.purchases if p["client_id"] == self.client_id
        }
        return events, ClientMark(feed.snapshot, ids)

    def resume_at(self, mark: ClientMark) -> Snapshot:
        return mark.snapshot


@dataclass(frozen=True, slots=True)
class BookingsMark:
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class BookingsStream:
    trainer_id: int
    start: datetime
    end: datetime
    resume: Snapshot | None
    latest_value: ClassVar[bool] = False
    reads_purchases: ClassVar[bool] = False
    reads_bookings: ClassVar[bool] = True

    def in_range(self, rows: Sequence[Row]) -> list[Row]:
        return [b for b in rows if b["starts_at"] < self.end and b["ends_at"] > self.start]

    def change(self, at: Snapshot, rows: Sequence[Row], *, snapshot: bool) -> BookingsChange:
        ordered = sorted(rows, key=lambda b: (b["starts_at"], b["id"]))
        return BookingsChange(
            cursor=str(at), snapshot=snapshot, bookings=[Booking.from_row(b) for b in ordered]
        )

    def delta(self, read: Changes, seen: Snapshot) -> list[Any]:
        rows = self.in_range(_news(read.bookings, seen))
        return [self.change(read.snapshot, rows, snapshot=False)] if rows else []

    async def sync(
        self, db: Executor, mark: BookingsMark | None, resumes: Sequence[Snapshot | None]
    ) -> Sync:
        read = await changes.bookings(
            db, trainer_id=self.trainer_id, start=self.start, end=self.end
        )
        answers: list[list[Any]] = []
        for resume in resumes:
            seen = _known(resume, read.snapshot)
            if seen is None:
                answers.append([self.change(read.snapshot, read.bookings, snapshot=True)])
            else:
                answers.append(self.delta(read, seen))
        missed = self.delta(read, mark.snapshot) if mark else []
        return Sync(BookingsMark(read.snapshot), missed, answers)

    def cut(self, feed: Changes, mark: BookingsMark) -> tuple[list[Any], BookingsMark]:
        return self.delta(feed, mark.snapshot), BookingsMark(feed.snapshot)

    def resume_at(self, mark: BookingsMark) -> Snapshot:
        return mark.snapshot
