"""The event feed: sequencing the outbox and paging it (every event is written by a trigger;
``purchase.expired`` from the sweeper's EXPIRE ledger entry, migration 0009).

Triggers (migration 0006) insert an ``events`` row in the same transaction as every change,
with ``seq`` NULL. ``sequence`` numbers a trainer's committed, unsequenced events in id
order under the trainer's ``event_counters`` row lock, in its own short transaction: the
lock is taken by the first statement and the numbering runs in a second one, whose fresh
snapshot sees every event committed before the lock was granted. Sequencers of a trainer
run one after another, each numbering past the last, so ``seq`` only grows in the order
events became visible, with no gaps; a commit that lands late (its id taken long before)
simply gets the next number, and ``events(after:)`` paging by ``seq`` never skips it.
Hot mutations never touch the counter. The same transaction fans each newly numbered event
out to one delivery per enabled endpoint of the trainer that wants its type.

The sweeper sequences every trainer with pending events; the ``events`` query sequences
the caller's trainer first, so reading never depends on the sweeper being up.
"""

from __future__ import annotations

from collections.abc import Sequence

from punchcard.db.types import Acquirer, Executor, Queryable, Row

TYPES = (
    "session.used",
    "session.released",
    "session.held",
    "session.unheld",
    "booking.created",
    "booking.completed",
    "booking.no_show",
    "booking.cancelled",
    "booking.reopened",
    "purchase.created",
    "purchase.expired",
    "purchase.cancelled",
    "purchase.low_balance",
    "purchase.frozen",
    "purchase.unfrozen",
    "purchase.extended",
    "sessions.transferred",
    "reminder.due",
)
SEQUENCE_BATCH = 1000

EVENT_COLUMNS = "id, trainer_id, seq, type, data::text AS data, created_at"

LOCK_COUNTER = """
INSERT INTO event_counters AS c (trainer_id) VALUES ($1)
ON CONFLICT (trainer_id) DO UPDATE SET last_seq = c.last_seq
RETURNING last_seq
"""

NUMBER = """
WITH pending AS (
    SELECT e.id, $2 + row_number() OVER (ORDER BY e.id) AS seq
      FROM events AS e
     WHERE e.trainer_id = $1 AND e.seq IS NULL
     ORDER BY e.id
     LIMIT $3
), numbered AS (
    UPDATE events AS e SET seq = p.seq
      FROM pending AS p
     WHERE e.id = p.id
    RETURNING e.id, e.trainer_id, e.type, e.seq
), counted AS (
    UPDATE event_counters SET last_seq = (SELECT max(seq) FROM numbered)
     WHERE trainer_id = $1 AND EXISTS (SELECT FROM numbered)
), fanned AS (
    INSERT INTO webhook_deliveries (trainer_id, endpoint_id, event_id)
    SELECT n.trainer_id, w.id, n.id
      FROM numbered AS n
      JOIN webhook_endpoints AS w
        ON w.trainer_id = n.trainer_id AND w.enabled
       AND (w.event_types = '{}' OR n.type = ANY (w.event_types))
    RETURNING 1
)
SELECT (SELECT count(*) FROM numbered) AS sequenced, (SELECT count(*) FROM fanned) AS fanned
"""

PENDING_TRAINERS = "SELECT DISTINCT trainer_id FROM events WHERE seq IS NULL LIMIT $1"


async def sequence(pool: Acquirer, *, trainer_id: int) -> tuple[int, int]:
    """Number the trainer's committed, unsequenced events; (events numbered, deliveries
    created). Each batch of up to ``SEQUENCE_BATCH`` is its own short transaction."""
    sequenced = fanned = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            last = await conn.fetchval(LOCK_COUNTER, trainer_id)
            row = await conn.fetchrow(NUMBER, trainer_id, last, SEQUENCE_BATCH)
        sequenced += row["sequenced"]
        fanned += row["fanned"]
        if row["sequenced"] < SEQUENCE_BATCH:
            return sequenced, fanned


async def sequence_all(pool: Queryable, *, limit: int = 1000) -> tuple[int, int]:
    """``sequence`` every trainer with unsequenced events (the sweeper's step)."""
    sequenced = fanned = 0
    trainers = [row["trainer_id"] for row in await pool.fetch(PENDING_TRAINERS, limit)]
    for trainer_id in trainers:
        s, f = await sequence(pool, trainer_id=trainer_id)
        sequenced += s
        fanned += f
    return sequenced, fanned


PAGE = f"""
SELECT {EVENT_COLUMNS} FROM events
 WHERE trainer_id = $1 AND seq > $2 AND ($3::text[] IS NULL OR type = ANY ($3::text[]))
 ORDER BY seq
 LIMIT $4
"""


async def page(
    db: Executor, *, trainer_id: int, after: int, types: Sequence[str] | None, limit: int
) -> list[Row]:
    """Sequenced events after ``after`` (a ``seq``), in order."""
    return list(await db.fetch(PAGE, trainer_id, after, list(types) if types else None, limit))


BY_ID = f"SELECT {EVENT_COLUMNS} FROM events WHERE trainer_id = $1 AND id = $2"


async def by_id(db: Executor, *, trainer_id: int, event_id: int) -> Row | None:
    return await db.fetchrow(BY_ID, trainer_id, event_id)
