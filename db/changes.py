"""What changed since a snapshot: the reads behind live updates.

Every purchase, booking and ledger row carries ``changed_xid``, the id of the transaction
that wrote it last (migration 0003). Each read below returns, in the same statement, the
``pg_current_snapshot()`` it ran in. The rows that changed after an earlier read are
exactly those whose current version is visible now while their ``changed_xid`` was not
visible in that earlier snapshot (the writer was still running or had not started).
That is :meth:`Snapshot.sees`, evaluated in Python on the rows a read returns.

Why not "ledger id > last id seen": identity values are taken before commit, so the
transaction holding id 41 may commit after the one holding 42; a reader that saw 42 and
resumes after it never sees 41. Snapshot visibility has no such gap: a transaction that
was running (in ``xip``) or not yet started (``>= xmax``) when a snapshot was taken is
not visible in it, whatever its id, so it is read the first time a later snapshot sees it
committed — and never again, because that later snapshot becomes the new position.

Reads are narrowed in SQL by ``changed_xid >= snapshot.xmin`` (everything below xmin was
visible), and only then filtered exactly in Python. Rows never leave a trainer's scope:
every statement is bounded by ``trainer_id``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from punchcard.db.types import Executor, Row

MAX_BOOKINGS = 2000


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A ``pg_snapshot``: who had committed when a statement ran."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """``xmin:xmax:xip,...`` as PostgreSQL prints it; ValueError when it is not one."""
        parts = text.split(":")
        if len(parts) != 3 or len(text) > 10_000:
            raise ValueError("not a snapshot")
        xmin, xmax = int(parts[0]), int(parts[1])
        xip = frozenset(int(x) for x in parts[2].split(",")) if parts[2] else frozenset()
        if not 0 < xmin <= xmax or any(not xmin <= x < xmax for x in xip):
            raise ValueError("not a snapshot")
        return cls(xmin, xmax, xip)

    def __str__(self) -> str:
        return f"{self.xmin}:{self.xmax}:{','.join(map(str, sorted(self.xip)))}"

    def sees(self, xid: int) -> bool:
        """Had transaction ``xid`` committed (or aborted) when this snapshot was taken?"""
        return xid < self.xmin or (xid < self.xmax and xid not in self.xip)

    def covers(self, other: Snapshot) -> bool:
        """Does this snapshot see everything ``other`` sees (was it taken no earlier)?"""
        if self.xmax < other.xmax:
            return False
        return all(x in other.xip for x in self.xip if x < other.xmax)


@dataclass(frozen=True, slots=True)
class Changes:
    """Rows read in one statement at ``snapshot``; which of them are new is up to the reader."""

    snapshot: Snapshot
    purchases: Sequence[Row] = ()
    ledger: Sequence[Row] = ()  # ordered by purchase, then revision
    bookings: Sequence[Row] = ()


def _changes(row: Row, **rows: Sequence[Row]) -> Changes:
    return Changes(Snapshot.parse(row["snapshot"]), **rows)


FEED = """
WITH w AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bool[], $4::bool[])
        AS w (trainer_id, lo, want_purchases, want_bookings)
)
SELECT pg_current_snapshot()::text AS snapshot,
       ARRAY(SELECT p FROM purchases AS p JOIN w ON w.want_purchases
              AND p.trainer_id = w.trainer_id AND p.changed_xid >= w.lo) AS purchases,
       ARRAY(SELECT l FROM session_ledger AS l JOIN w ON w.want_purchases
              AND l.trainer_id = w.trainer_id AND l.changed_xid >= w.lo
              ORDER BY l.purchase_id, l.revision) AS ledger,
       ARRAY(SELECT b FROM bookings AS b JOIN w ON w.want_bookings
              AND b.trainer_id = w.trainer_id AND b.changed_xid >= w.lo) AS bookings
"""


@dataclass(frozen=True, slots=True)
class Want:
    """One trainer's share of a feed read: rows written at or after ``lo``, of these kinds."""

    lo: int
    purchases: bool = False  # purchases and their ledger
    bookings: bool = False


async def feed(db: Executor, wants: Mapping[int, Want]) -> Changes:
    """Everything the given trainers changed since their ``lo``, in one statement."""
    trainers = list(wants)
    row = await db.fetchrow(
        FEED,
        trainers,
        [wants[t].lo for t in trainers],
        [wants[t].purchases for t in trainers],
        [wants[t].bookings for t in trainers],
    )
    assert row is not None
    return _changes(row, purchases=row["purchases"], ledger=row["ledger"], bookings=row["bookings"])


PURCHASE = """
SELECT pg_current_snapshot()::text AS snapshot,
       (SELECT p FROM purchases AS p WHERE p.id = $2 AND p.trainer_id = $1) AS purchase,
       ARRAY(SELECT l FROM session_ledger AS l
              WHERE l.purchase_id = $2 AND l.trainer_id = $1 AND l.revision > $3
              ORDER BY l.revision) AS ledger
"""


async def purchase(
    db: Executor, *, trainer_id: int, purchase_id: int, after_revision: int
) -> Changes | None:
    """The purchase now and its ledger after ``after_revision``; None when not the trainer's."""
    row = await db.fetchrow(PURCHASE, trainer_id, purchase_id, after_revision)
    assert row is not None
    if row["purchase"] is None:
        return None
    return _changes(row, purchases=[row["purchase"]], ledger=row["ledger"])


CLIENT = """
SELECT pg_current_snapshot()::text AS snapshot,
       EXISTS (SELECT 1 FROM clients WHERE id = $2 AND trainer_id = $1) AS found,
       ARRAY(SELECT p FROM purchases AS p WHERE p.client_id = $2 AND p.trainer_id = $1
              ORDER BY p.expires_at NULLS LAST, p.id) AS purchases,
       ARRAY(SELECT l FROM session_ledger AS l JOIN purchases AS p ON p.id = l.purchase_id
              WHERE p.client_id = $2 AND p.trainer_id = $1
                AND l.trainer_id = $1 AND l.changed_xid >= $3
              ORDER BY l.purchase_id, l.revision) AS ledger
"""


async def client(db: Executor, *, trainer_id: int, client_id: int, lo: int) -> Changes | None:
    """All the client's purchases now and their ledger rows written at or after ``lo``."""
    row = await db.fetchrow(CLIENT, trainer_id, client_id, lo)
    assert row is not None
    if not row["found"]:
        return None
    return _changes(row, purchases=row["purchases"], ledger=row["ledger"])


BOOKINGS = f"""
SELECT pg_current_snapshot()::text AS snapshot,
       ARRAY(SELECT b FROM bookings AS b
              WHERE b.trainer_id = $1 AND b.starts_at < $3 AND b.ends_at > $2
              ORDER BY b.starts_at, b.id
              LIMIT {MAX_BOOKINGS}) AS bookings
"""


async def bookings(db: Executor, *, trainer_id: int, start: datetime, end: datetime) -> Changes:
    """The bookings overlapping ``[start, end)`` now (at most MAX_BOOKINGS)."""
    row = await db.fetchrow(BOOKINGS, trainer_id, start, end)
    assert row is not None
    return _changes(row, bookings=row["bookings"])
