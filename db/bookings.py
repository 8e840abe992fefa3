"""Bookings and their state transitions: every statement that touches them.

A CONFIRMED booking linked to a package holds one of its sessions (``sessions_held``):
``CREATE`` takes the hold with a guarded UPDATE in the same statement that writes the
booking. A booking is charged by its transition (rule 3). ``transition`` moves the bookings
whose status allows it (a guarded UPDATE: ten tabs completing one booking move it once),
locks their packages in id order, then ``SETTLE`` writes each booking's one ledger entry
(its hold used, given back or taken again; its charge refunded) in one set-based statement
that also notifies. The sweeper claims due bookings with ``SKIP LOCKED`` and settles them
the same way. A booking's ``charge_entry_id`` is its outstanding USE entry (migration 0008).
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
MAX_TRANSITION_RACES = 10
# A statement that lost its package to a concurrent change runs again on a fresh snapshot;
# every lost race means another caller's change committed, so this bound is never reached
# in practice (it keeps a pathological storm from looping forever).
MAX_RACES = 50

# Why autoAssignPackage picked the package it did (``bookings.assigned_reason``).
_ASSIGNED_REASON = """CASE
    WHEN NOT $6 THEN NULL
    WHEN held.id IS NULL THEN 'no package of the client has a session available at its start'
    WHEN pick.n = 1 THEN 'the only package with a session available'
    WHEN pick.expires_at IS NULL
        THEN format('fewest sessions available (%s) of %s packages with a session available'
                    ' and no expiry', pick.available, pick.n)
    WHEN pick.tied > 1
        THEN format('expires soonest (%s), fewest sessions available (%s), of %s packages'
                    ' with a session available', to_char(pick.expires_at AT TIME ZONE 'UTC',
                    'YYYY-MM-DD'), pick.available, pick.n)
    ELSE format('expires soonest (%s) of %s packages with a session available',
                to_char(pick.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), pick.n)
END"""

# Book a session and take its package's hold in one statement. The package is the named
# one ($3) or, with autoAssignPackage ($6), the client's ACTIVE package with a session
# available that is valid at the booking's start: soonest expiry, then fewest available,
# then id. The hold is a guarded UPDATE (used + held < total, unless $9 allowOverbook), so
# concurrent bookings on a package's last sessions take exactly as many holds as it has.
# A booking is written only with its hold (or, unpackaged, when there is no package to
# hold); a hold lost to a concurrent booking writes nothing, and the caller runs it again.
CREATE = f"""
WITH owner AS (
    SELECT c.id FROM clients AS c WHERE c.id = $2 AND c.trainer_id = $1
), candidates AS (
    SELECT p.id, p.expires_at, p.sessions_total - p.sessions_used - p.sessions_held AS available
      FROM purchases AS p, owner
     WHERE $6 AND p.trainer_id = $1 AND p.client_id = owner.id AND p.status = 'ACTIVE'
       AND p.sessions_used + p.sessions_held < p.sessions_total
       AND (p.expires_at IS NULL OR p.expires_at > $4)
), pick AS (
    SELECT c.id, c.expires_at, c.available, (SELECT count(*) FROM candidates) AS n,
           (SELECT count(*) FROM candidates AS o
             WHERE o.expires_at IS NOT DISTINCT FROM c.expires_at) AS tied
      FROM candidates AS c
     ORDER BY c.expires_at NULLS LAST, c.available, c.id
     LIMIT 1
), named AS (
    SELECT p.id, p.status, p.expires_at, p.sessions_used, p.sessions_held, p.sessions_total
      FROM purchases AS p, owner
     WHERE p.id = $3 AND p.trainer_id = $1 AND p.client_id = owner.id
), held AS (
    UPDATE purchases AS p
       SET sessions_held = p.sessions_held + 1, revision = p.revision + 1, updated_at = now()
     WHERE p.id = coalesce((SELECT id FROM pick), (SELECT id FROM named))
       AND p.trainer_id = $1
       AND p.status = 'ACTIVE'
       AND (p.expires_at IS NULL OR p.expires_at > $4)
       AND ($9 OR p.sessions_used + p.sessions_held < p.sessions_total)
    RETURNING p.id, p.trainer_id, p.sessions_used, p.sessions_held, p.sessions_total, p.revision
), created AS (
    INSERT INTO bookings
        (trainer_id, client_id, purchase_id, starts_at, ends_at, changed_by, change_source,
         overbooked, assigned_reason)
    SELECT $1, owner.id, held.id, $4, $5, $7, $8,
           coalesce(held.sessions_used + held.sessions_held > held.sessions_total, false),
           {_ASSIGNED_REASON}
      FROM owner LEFT JOIN held ON true LEFT JOIN pick ON true
     WHERE held.id IS NOT NULL OR ($3::bigint IS NULL AND pick.id IS NULL)
    RETURNING {BOOKING_COLUMNS}
), entry AS (
    INSERT INTO session_ledger
        (trainer_id, purchase_id, kind, delta, held_delta, sessions_used_after,
         sessions_held_after, sessions_total_after, revision, source, booking_id, actor, reason)
    SELECT h.trainer_id, h.id, 'HOLD', 0, 1, h.sessions_used, h.sessions_held, h.sessions_total,
           h.revision, $8, b.id, $7, 'booking holds a session'
      FROM held AS h, created AS b
    RETURNING id
), notified AS (
    SELECT {notify_sql(trainer="b.trainer_id", kind=BOOKING, id="b.id")}
      FROM created AS b
    UNION ALL
    SELECT {notify_sql(trainer="c.trainer_id", kind=PURCHASE, id="c.id", r="c.revision", l="e.id")}
      FROM held AS c, entry AS e
)
SELECT b.*, (SELECT count(*) FROM owner) AS client_found,
       n.status AS named_status,
       n.expires_at IS NOT NULL AND n.expires_at <= $4 AS named_expired,
       n.sessions_used + n.sessions_held >= n.sessions_total AS named_full,
       (SELECT count(*) FROM notified) AS notices
  FROM (SELECT 1) AS one
  LEFT JOIN created AS b ON true
  LEFT JOIN named AS n ON true
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
    allow_overbook: bool = False,
    actor: str = "system",
    source: str = "MANUAL",
) -> Row:
    """Book a session holding one of the named package's sessions or, with ``auto_assign``,
    of the client's package picked by the auto-assign rule (else unpackaged)."""
    starts_at = checks.moment("startsAt", starts_at)
    ends_at = checks.moment("endsAt", ends_at)
    if ends_at <= starts_at:
        raise bad_input("endsAt must be after startsAt")
    if (ends_at - starts_at).total_seconds() > MAX_LENGTH_HOURS * 3600:
        raise bad_input(f"a booking lasts at most {MAX_LENGTH_HOURS} hours")
    if purchase_id is not None and auto_assign:
        raise bad_input("name a purchaseId or ask for autoAssignPackage, not both")
    if allow_overbook and purchase_id is None:
        raise bad_input("allowOverbook needs a purchaseId (auto-assign never overbooks)")
    for _ in range(MAX_RACES):
        row = await db.fetchrow(
            CREATE,
            trainer_id,
            client_id,
            purchase_id,
            starts_at,
            ends_at,
            auto_assign,
            actor,
            source,
            allow_overbook,
        )
        assert row is not None
        if row["id"] is not None:
            return row
        if not row["client_found"]:
            raise not_found("client")
        if purchase_id is not None:
            _refuse_named(row, allow_overbook)
        # The package's last session went to a concurrent booking: look again.
    raise raced("package")


def _refuse_named(row: Row, allow_overbook: bool) -> None:
    """Why the named package took no hold; returns when it should have (a lost race)."""
    status = row["named_status"]
    if status is None:
        raise not_found("purchase")
    if status == "FROZEN":
        raise DomainError(Code.PURCHASE_FROZEN, "this package is frozen; unfreeze it first")
    if status == "CANCELLED":
        raise DomainError(Code.PURCHASE_CANCELLED, "this package was cancelled")
    if status == "EXPIRED" or row["named_expired"]:
        raise DomainError(Code.PURCHASE_EXPIRED, "this package has expired by the booking's start")
    if row["named_full"] and not allow_overbook:
        raise DomainError(
            Code.NO_SESSIONS_AVAILABLE,
            "every session of this package is used or held by a confirmed booking "
            "(allowOverbook: true books it anyway)",
        )


def raced(kind: str) -> DomainError:
    return DomainError(
        Code.SERVICE_UNAVAILABLE, f"this {kind} kept changing under concurrent callers; retry"
    )


# The tail of TRANSITION and CLAIM_DUE: lock the moved bookings' packages in id order
# (the same order everywhere, so transitions and sweepers cannot deadlock) and return
# the moved booking ids, and whether each held a session before it moved, for SETTLE,
# which then runs on a fresh snapshot of those rows.
_LOCK_MOVED_PACKAGES = """, locked AS (
    SELECT p.id FROM purchases AS p
     WHERE p.id IN (SELECT purchase_id FROM moved)
     ORDER BY p.id
       FOR UPDATE
)
SELECT coalesce(array_agg(m.id ORDER BY m.id), '{}') AS ids,
       coalesce(array_agg(m.held ORDER BY m.id), '{}') AS held,
       (SELECT count(*) FROM locked) AS packages
  FROM moved AS m
"""

# Move bookings whose status allows it (completing or a no-show only once started), then
# lock their packages. A cancel's lateness ($5) is the caller's when given; when NULL it is
# the trainer's policy: late iff late_cancel_hours is set, the booking is CONFIRMED and
# now() is past starts_at - late_cancel_hours (undoing a completed booking is never late).
TRANSITION = f"""
WITH was AS (
    SELECT b.id, b.status FROM bookings AS b
     WHERE b.id = ANY($1::bigint[]) AND b.trainer_id = $2 AND b.status = ANY($3::text[])
       AND ($4 NOT IN ('COMPLETED', 'NO_SHOW') OR b.starts_at <= now())
       FOR UPDATE
), moved AS (
    UPDATE bookings AS b
       SET status = $4,
           late_cancel = CASE
               WHEN $4 <> 'CANCELLED' THEN false
               WHEN $5::boolean IS NOT NULL THEN $5
               WHEN w.status <> 'CONFIRMED' THEN false
               ELSE coalesce(now() > b.starts_at - make_interval(hours => t.late_cancel_hours),
                             false)
           END,
           completed_by = CASE WHEN $4 = ANY($7::text[]) THEN $6 END,
           completed_at = CASE WHEN $4 = ANY($7::text[]) THEN now() END,
           changed_by = $8, change_source = $6,
           updated_at = now()
      FROM was AS w, trainers AS t
     WHERE b.id = w.id AND t.id = b.trainer_id
    RETURNING b.id, b.purchase_id, w.status = 'CONFIRMED' AND b.purchase_id IS NOT NULL AS held
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
    RETURNING b.id, b.purchase_id, b.purchase_id IS NOT NULL AS held
){_LOCK_MOVED_PACKAGES}"""

# Settle the moved bookings $1 (with $2: did each hold a session before it moved) against
# their packages, whose rows this transaction already holds. Each booking's package change
# is at most one ledger entry, from where it was to where it is now:
#
#   a hold that becomes a use (completed, no-show, late cancel)   USE      +1 used, -1 held
#   ... when the use cannot be applied (see below)                UNHOLD   -1 held, unpaid
#   a hold given back (plain cancel)                              UNHOLD   -1 held
#   a charged booking reopened                                    RELEASE  -1 used, +1 held
#   an uncharged booking reopened                                 HOLD     +1 held
#   a charged booking cancelled (not late)                        RELEASE  -1 used
#   an uncharged completed booking cancelled late                 USE      +1 used
#
# A use needs the package ACTIVE (or EXPIRED by the sweeper) and valid at the booking's
# start, and room: used + 1 <= total for a held booking (its own hold becomes the use),
# used + held + 1 <= total otherwise. Bookings of one package are numbered (by start) so
# each entry gets its own counts after and revision. The booking's charge_entry_id follows
# its entries: set to its USE, cleared by its RELEASE (the schema ties ``charged`` to it).
# A hold taken on a package with nothing available leaves the booking overbooked.
NOTIFY_COUNTED = notify_sql(
    trainer="c.trainer_id",
    kind=PURCHASE,
    id="c.id",
    r="c.revision",
    l="(SELECT max(e.id) FROM entries AS e WHERE e.purchase_id = c.id)",
)

SETTLE = f"""
WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::boolean[]) AS i (id, held_before)
), moved AS (
    SELECT b.id, b.trainer_id, b.purchase_id, b.starts_at, b.charge_entry_id, i.held_before,
           b.status = 'CONFIRMED' AS takes_hold,
           b.status IN ('COMPLETED', 'NO_SHOW') OR (b.status = 'CANCELLED' AND b.late_cancel)
               AS wants_charge,
           b.charge_entry_id IS NULL AND p.status IN ('ACTIVE', 'EXPIRED')
               AND (p.expires_at IS NULL OR b.starts_at < p.expires_at) AS chargeable,
           p.sessions_used, p.sessions_held, p.sessions_total, p.revision
      FROM input AS i
      JOIN bookings AS b ON b.id = i.id
      JOIN purchases AS p ON p.id = b.purchase_id
), ranked AS (
    SELECT m.*, count(*) FILTER (WHERE m.wants_charge AND m.chargeable) OVER w AS use_rank
      FROM moved AS m
    WINDOW w AS (PARTITION BY m.purchase_id ORDER BY m.starts_at, m.id)
), acted AS (
    SELECT r.*,
           CASE WHEN r.wants_charge AND r.chargeable
                     AND r.sessions_used + r.use_rank
                         + CASE WHEN r.held_before THEN 0 ELSE r.sessions_held END
                         <= r.sessions_total THEN 1
                WHEN NOT r.wants_charge AND r.charge_entry_id IS NOT NULL THEN -1
                ELSE 0 END AS d,
           CASE WHEN r.held_before THEN -1 WHEN r.takes_hold THEN 1 ELSE 0 END AS h
      FROM ranked AS r
), planned AS (
    SELECT a.*,
           (a.sessions_used + sum(a.d) OVER w)::int AS used_after,
           (a.sessions_held + sum(a.h) OVER w)::int AS held_after,
           (a.revision + row_number() OVER w)::int AS revision_after,
           CASE WHEN a.d = 1 THEN 'USE' WHEN a.d = -1 THEN 'RELEASE'
                WHEN a.h = 1 THEN 'HOLD' ELSE 'UNHOLD' END AS kind
      FROM acted AS a
     WHERE a.d <> 0 OR a.h <> 0
    WINDOW w AS (PARTITION BY a.purchase_id ORDER BY a.starts_at, a.id)
), counted AS (
    UPDATE purchases AS p
       SET sessions_used = p.sessions_used + t.d,
           sessions_held = p.sessions_held + t.h,
           revision = p.revision + t.n,
           updated_at = now()
      FROM (SELECT purchase_id, sum(d)::int AS d, sum(h)::int AS h, count(*)::int AS n
              FROM planned GROUP BY purchase_id) AS t
     WHERE p.id = t.purchase_id
    RETURNING p.id, p.trainer_id, p.revision
), entries AS (
    INSERT INTO session_ledger
        (trainer_id, purchase_id, kind, delta, held_delta, sessions_used_after,
         sessions_held_after, sessions_total_after, revision, source, booking_id, actor, reason)
    SELECT trainer_id, purchase_id, kind, d, h, used_after, held_after, sessions_total,
           revision_after, $3, id, $4,
           CASE kind WHEN 'USE' THEN 'booking charged' WHEN 'RELEASE' THEN 'booking refunded'
                     WHEN 'HOLD' THEN 'booking holds a session'
                     ELSE 'booking gave its hold back' END
      FROM planned
    RETURNING id, purchase_id, booking_id, delta
), flagged AS (
    UPDATE bookings AS b
       SET charge_entry_id = CASE e.delta WHEN 1 THEN e.id WHEN -1 THEN NULL
                                          ELSE b.charge_entry_id END,
           charged = CASE e.delta WHEN 1 THEN true WHEN -1 THEN false ELSE b.charged END,
           unpaid = (b.status IN ('COMPLETED', 'NO_SHOW')
                     OR (b.status = 'CANCELLED' AND b.late_cancel))
                    AND b.purchase_id IS NOT NULL
                    AND NOT CASE e.delta WHEN 1 THEN true WHEN -1 THEN false
                                         ELSE b.charged END,
           overbooked = CASE WHEN pl.h = 1 THEN pl.used_after + pl.held_after > pl.sessions_total
                             ELSE b.overbooked END,
           updated_at = now()
      FROM input AS i
      LEFT JOIN entries AS e ON e.booking_id = i.id
      LEFT JOIN planned AS pl ON pl.id = i.id
     WHERE b.id = i.id
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
# Why a transition moved nothing: the booking as it is (and whether it has started).
CURRENT = f"""
SELECT {BOOKING_COLUMNS}, starts_at > now() AS not_started
  FROM bookings WHERE id = $1 AND trainer_id = $2
"""


async def settle(
    conn: Executor, ids: Sequence[int], held: Sequence[bool], *, source: str, actor: str
) -> list[Row]:
    """Write each moved booking's package change (``SETTLE``); ``held[i]``: did booking
    ``ids[i]`` hold a session before it moved."""
    return list(await conn.fetch(SETTLE, list(ids), list(held), source, actor))


async def _transition(
    conn: Executor,
    *,
    trainer_id: int,
    booking_id: int,
    allowed_from: Sequence[str],
    to_status: str,
    late_cancel: bool | None,
    source: str,
    actor: str,
) -> Row:
    # A refusal is diagnosed from the booking as it is now: if it has meanwhile moved into
    # a state this transition leaves (a reopen racing a complete saw CONFIRMED, then
    # COMPLETED), the guarded statement runs again rather than answer from the stale look.
    for _ in range(MAX_TRANSITION_RACES):
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
            (row,) = await settle(conn, moved["ids"], moved["held"], source=source, actor=actor)
            return row
        current = await conn.fetchrow(CURRENT, booking_id, trainer_id)
        if current is None:
            raise not_found("booking")
        if current["status"] == to_status:
            return current  # already there: another tab, the sweeper or a retry got here first
        if current["status"] == "CONFIRMED" and to_status in CHARGING and current["not_started"]:
            raise DomainError(
                Code.BOOKING_NOT_STARTED,
                f"this booking starts at {current['starts_at'].isoformat()}",
            )
        if current["status"] not in allowed_from:
            raise DomainError(
                Code.INVALID_TRANSITION,
                f"a {current['status']} booking cannot become {to_status}"
                + ("; reopen it first" if current["status"] != "CONFIRMED" else ""),
            )
    raise DomainError(
        Code.SERVICE_UNAVAILABLE, "this booking kept changing under concurrent callers; retry"
    )


async def transition(
    pool: Acquirer,
    *,
    trainer_id: int,
    booking_id: int,
    allowed_from: Sequence[str],
    to_status: str,
    late_cancel: bool | None = False,
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
        return await settle(conn, moved["ids"], moved["held"], source="SWEEPER", actor="sweeper")


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
