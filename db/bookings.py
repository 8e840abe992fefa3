"""Bookings and their state transitions: every statement that touches them.

A booking is charged by its transition (rule 3). ``transition`` moves the bookings
whose status allows it (a guarded UPDATE: ten tabs completing one booking move it
once), locks their packages in id order, then ``SETTLE`` charges (+1) or refunds (-1)
them in one set-based statement that also writes the ledger and notifies. The
sweeper claims due bookings with ``SKIP LOCKED`` and settles them the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from punchcard.db import checks, idempotency
from punchcard.db.errors import Code, DomainError, bad_input, not_found
from punchcard.db.notify import BOOKING, BOOKINGS, PURCHASE, notify_sql
from punchcard.db.types import Acquirer, Executor, Row

BOOKING_COLUMNS = (
    "id, trainer_id, client_id, purchase_id, starts_at, ends_at, status, charged, unpaid, "
    "late_cancel, completed_by, completed_at, created_at, overbooked, assigned_reason"
)
CHARGING = ("COMPLETED", "NO_SHOW")
MAX_LENGTH_HOURS = 24

CREATE = f"""
WITH owner AS (
    SELECT c.id FROM clients AS c WHERE c.id = $2 AND c.trainer_id = $1
), package AS (
    SELECT p.id FROM purchases AS p, owner
     WHERE p.trainer_id = $1 AND p.client_id = owner.id
       AND CASE WHEN $6 THEN p.status = 'ACTIVE'
                         AND p.sessions_used < p.sessions_total
                         AND (p.expires_at IS NULL OR p.expires_at > $4)
                ELSE p.id = $3 END
     ORDER BY p.expires_at NULLS LAST, p.id
     LIMIT 1
), created AS (
    INSERT INTO bookings
        (trainer_id, client_id, purchase_id, starts_at, ends_at, changed_by, change_source)
    SELECT $1, owner.id, package.id, $4, $5, $7, $8 FROM owner LEFT JOIN package ON true
     WHERE $3::bigint IS NULL OR package.id IS NOT NULL
    RETURNING {BOOKING_COLUMNS}
), notified AS (
    SELECT {notify_sql(trainer="b.trainer_id", kind=BOOKING, id="b.id")}
      FROM created AS b
)
SELECT b.*, (SELECT count(*) FROM owner) AS client_found
  FROM (SELECT 1) AS one LEFT JOIN (created AS b CROSS JOIN notified) ON true
"""


async def create_booking(
    db: Executor,
    *,
    trainer_id: int,
    client_id: int,
    purchase_id: int | None,
    auto_assign: bool,
    starts_at: datetime,
    ends_at: datetime,
    actor: str = "system",
    source: str = "MANUAL",
) -> Row:
    """Book a session, linked to the named package or, with ``auto_assign``, to the
    client's active package with sessions left that expires soonest (else unpackaged)."""
    starts_at = checks.moment("startsAt", starts_at)
    ends_at = checks.moment("endsAt", ends_at)
    if ends_at <= starts_at:
        raise bad_input("endsAt must be after startsAt")
    if (ends_at - starts_at).total_seconds() > MAX_LENGTH_HOURS * 3600:
        raise bad_input(f"a booking lasts at most {MAX_LENGTH_HOURS} hours")
    if purchase_id is not None and auto_assign:
        raise bad_input("name a purchaseId or ask for autoAssignPackage, not both")
    row = await db.fetchrow(
        CREATE, trainer_id, client_id, purchase_id, starts_at, ends_at, auto_assign, actor, source
    )
    assert row is not None
    if row["id"] is None:
        raise not_found("client" if not row["client_found"] else "purchase")
    return row


# The tail of TRANSITION and CLAIM_DUE: lock the moved bookings' packages in id order
# (the same order everywhere, so transitions and sweepers cannot deadlock) and return
# the moved booking ids for SETTLE, which then runs on a fresh snapshot of those rows.
_LOCK_MOVED_PACKAGES = """, locked AS (
    SELECT p.id FROM purchases AS p
     WHERE p.id IN (SELECT purchase_id FROM moved)
     ORDER BY p.id
       FOR UPDATE
)
SELECT coalesce(array_agg(m.id), '{}') AS ids, (SELECT count(*) FROM locked) AS packages
  FROM moved AS m
"""

# Move bookings whose status allows it, then lock their packages in id order (the
# same order everywhere, so concurrent transitions and sweepers cannot deadlock).
TRANSITION = f"""
WITH moved AS (
    UPDATE bookings AS b
       SET status = $4,
           late_cancel = $5,
           completed_by = CASE WHEN $4 = ANY($7::text[]) THEN $6 END,
           completed_at = CASE WHEN $4 = ANY($7::text[]) THEN now() END,
           changed_by = $8, change_source = $6,
           updated_at = now()
     WHERE b.id = ANY($1::bigint[]) AND b.trainer_id = $2 AND b.status = ANY($3::text[])
    RETURNING b.id, b.purchase_id
){_LOCK_MOVED_PACKAGES}"""

# Claim due bookings across all trainers, skipping rows another worker (or a tab's
# transaction) holds; one statement per batch. $3 is the sweeper's clock (NULL: now()).
CLAIM_DUE = f"""
WITH due AS (
    SELECT b.id FROM bookings AS b
     WHERE b.status = 'CONFIRMED'
       AND b.ends_at < coalesce($3::timestamptz, now()) - make_interval(mins => $1)
     ORDER BY b.ends_at, b.id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE bookings AS b
       SET status = 'COMPLETED', completed_by = 'SWEEPER', completed_at = now(),
           changed_by = 'sweeper', change_source = 'SWEEPER', updated_at = now()
      FROM due
     WHERE b.id = due.id AND b.status = 'CONFIRMED'
    RETURNING b.id, b.purchase_id
){_LOCK_MOVED_PACKAGES}"""

# Charge ($2 = +1) or refund ($2 = -1) the moved bookings $1 against their packages,
# whose rows this transaction already holds. Bookings of one package are numbered so
# each ledger row gets its own sessions_used_after and revision; a charge that would
# overfill the package (or hits an expired or cancelled one) leaves the booking unpaid.
# A counted package's notification names the newest ledger row this statement wrote.
NOTIFY_COUNTED = notify_sql(
    trainer="c.trainer_id",
    kind=PURCHASE,
    id="c.id",
    r="c.revision",
    l="(SELECT max(e.id) FROM entries AS e WHERE e.purchase_id = c.id)",
)

SETTLE = f"""
WITH candidates AS (
    SELECT b.id, b.trainer_id, b.purchase_id,
           row_number() OVER (PARTITION BY b.purchase_id ORDER BY b.starts_at, b.id) AS n
      FROM bookings AS b
      JOIN purchases AS p ON p.id = b.purchase_id
     WHERE b.id = ANY($1::bigint[])
       AND b.charged = ($2 < 0)
       -- an EXPIRED package still charges the bookings that started before it expired
       AND ($2 < 0 OR (p.status IN ('ACTIVE', 'EXPIRED')
                       AND (p.expires_at IS NULL OR b.starts_at < p.expires_at)))
), planned AS (
    SELECT c.*, p.sessions_used + $2 * c.n AS used_after, p.revision + c.n AS revision_after,
           p.sessions_held AS held_after, p.sessions_total AS total_after
      FROM candidates AS c
      JOIN purchases AS p ON p.id = c.purchase_id
     WHERE p.sessions_used + $2 * c.n BETWEEN 0 AND p.sessions_total
), counted AS (
    UPDATE purchases AS p
       SET sessions_used = p.sessions_used + $2 * t.n,
           revision = p.revision + t.n,
           updated_at = now()
      FROM (SELECT purchase_id, count(*)::int AS n FROM planned GROUP BY purchase_id) AS t
     WHERE p.id = t.purchase_id
    RETURNING p.id, p.trainer_id, p.revision
), entries AS (
    INSERT INTO session_ledger
        (trainer_id, purchase_id, kind, delta, sessions_used_after, sessions_held_after,
         sessions_total_after, revision, source, booking_id, actor, reason)
    SELECT trainer_id, purchase_id, CASE WHEN $2 > 0 THEN 'USE' ELSE 'RELEASE' END, $2,
           used_after, held_after, total_after, revision_after, $3, id, $4, $5
      FROM planned
    RETURNING id, purchase_id
), flagged AS (
    UPDATE bookings AS b
       SET charged = CASE WHEN b.id IN (SELECT id FROM planned) THEN $2 > 0 ELSE b.charged END,
           unpaid = $2 > 0 AND b.purchase_id IS NOT NULL AND NOT b.charged
                    AND b.id NOT IN (SELECT id FROM planned),
           updated_at = now()
     WHERE b.id = ANY($1::bigint[])
    RETURNING b.{BOOKING_COLUMNS.replace(", ", ", b.")}
), notified AS (
    SELECT {NOTIFY_COUNTED}
      FROM counted AS c
    UNION ALL
    SELECT {notify_sql(trainer="f.trainer_id", kind=BOOKINGS, n="count(*)")}
      FROM flagged AS f
     GROUP BY f.trainer_id
)
SELECT f.* FROM flagged AS f WHERE (SELECT count(*) FROM notified) >= 0 ORDER BY f.id
"""

BY_ID = f"SELECT {BOOKING_COLUMNS} FROM bookings WHERE id = $1 AND trainer_id = $2"


def charges(status: str, late_cancel: bool) -> bool:
    """Does a booking in this state consume a session?"""
    return status in CHARGING or (status == "CANCELLED" and late_cancel)


async def settle(
    conn: Executor, ids: Sequence[int], *, delta: int, source: str, actor: str
) -> list[Row]:
    reason = "booking charged" if delta > 0 else "booking refunded"
    return list(await conn.fetch(SETTLE, list(ids), delta, source, actor, reason))


async def _transition(
    conn: Executor,
    *,
    trainer_id: int,
    booking_id: int,
    allowed_from: Sequence[str],
    to_status: str,
    late_cancel: bool,
    source: str,
    actor: str,
) -> Row:
    moved = await conn.fetchrow(
        TRANSITION,
        [booking_id],
        trainer_id,
        list(allowed_from),
        to_status,
        late_cancel,
        source,
        list(CHARGING),
        actor,
    )
    assert moved is not None
    if moved["ids"]:
        delta = 1 if charges(to_status, late_cancel) else -1
        (row,) = await settle(conn, moved["ids"], delta=delta, source=source, actor=actor)
        return row
    current = await conn.fetchrow(BY_ID, booking_id, trainer_id)
    if current is None:
        raise not_found("booking")
    if current["status"] == to_status:
        return current  # already there: another tab, the sweeper or a retry got here first
    raise DomainError(
        Code.INVALID_TRANSITION,
        f"a {current['status']} booking cannot become {to_status}"
        + ("; reopen it first" if current["status"] != "CONFIRMED" else ""),
    )


async def transition(
    pool: Acquirer,
    *,
    trainer_id: int,
    booking_id: int,
    allowed_from: Sequence[str],
    to_status: str,
    late_cancel: bool = False,
    source: str,
    actor: str,
    key: str | None = None,
    request: str = "",
) -> Row:
    """Move one booking and settle its package in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        if key is not None and not await idempotency.claim(
            conn, trainer_id=trainer_id, key=key, request=request
        ):
            first = await idempotency.first_result(
                conn, trainer_id=trainer_id, key=key, request=request
            )
            assert first is not None
            return first
        row = await _transition(
            conn,
            trainer_id=trainer_id,
            booking_id=booking_id,
            allowed_from=allowed_from,
            to_status=to_status,
            late_cancel=late_cancel,
            source=source,
            actor=actor,
        )
        if key is not None:
            await idempotency.store(conn, trainer_id=trainer_id, key=key, result=row)
        return row


async def sweep_batch(
    pool: Acquirer, *, grace_minutes: int, batch_size: int, now: datetime | None = None
) -> list[Row]:
    """Complete and charge one batch of due bookings; an empty list means none are due."""
    async with pool.acquire() as conn, conn.transaction():
        moved = await conn.fetchrow(CLAIM_DUE, grace_minutes, batch_size, now)
        assert moved is not None
        if not moved["ids"]:
            return []
        return await settle(conn, moved["ids"], delta=1, source="SWEEPER", actor="sweeper")


CALENDAR = f"""
SELECT {BOOKING_COLUMNS} FROM bookings
 WHERE trainer_id = $1 AND starts_at < $3 AND ends_at > $2
   AND ($4::text[] IS NULL OR status = ANY($4::text[]))
 ORDER BY starts_at, id
 LIMIT $5
"""


async def calendar(
    db: Executor,
    *,
    trainer_id: int,
    start: datetime,
    end: datetime,
    statuses: Sequence[str] | None,
    limit: int,
) -> list[Row]:
    start, end = checks.moment("from", start), checks.moment("to", end)
    if end <= start:
        raise bad_input("`to` must be after `from`")
    return list(
        await db.fetch(
            CALENDAR, trainer_id, start, end, list(statuses) if statuses else None, limit
        )
    )


BY_IDS = f"SELECT {BOOKING_COLUMNS} FROM bookings WHERE trainer_id = $1 AND id = ANY($2::bigint[])"


async def by_ids(db: Executor, *, trainer_id: int, ids: Sequence[int]) -> list[Row]:
    return list(await db.fetch(BY_IDS, trainer_id, list(ids)))
