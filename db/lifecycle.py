"""A package's lifecycle: cancel, freeze, unfreeze, extend, transfer, and the sweeper's
expiry and thaw. Every statement that changes a package's status, expiry or total is here.

Each change runs in one transaction: first ``LOCK`` takes the packages it touches
``FOR UPDATE`` in id order (the order every multi-package statement uses, so two
lifecycle calls, a booking's settle and the sweeper cannot deadlock) and returns their
current rows, which name the refusal when the change is not allowed; then one guarded
statement, on a fresh snapshot that no concurrent link, use or transfer can still move
under it, makes the change, writes ONE ledger entry per package changed (its kind,
deltas, counts after, revision, ``detail``, actor and source), NOTIFYs each package and
lets the ledger's trigger write the event (migration 0009). The guard repeats the rule
the lock's rows were checked against, so a change never rests on a read alone.

The sweeper's passes claim packages with ``FOR UPDATE SKIP LOCKED`` (a package a tab is
changing is taken by the next pass) and change a whole batch in one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from punchcard.db import checks
from punchcard.db.errors import Code, DomainError, bad_input, not_found
from punchcard.db.notify import BOOKINGS, PURCHASE, notify_sql
from punchcard.db.purchases import MAX_REASON, MAX_SESSIONS, PURCHASE_COLUMNS
from punchcard.db.types import Acquirer, Connection, Executor, Row

_P = "p." + PURCHASE_COLUMNS.replace(", ", ", p.")
_C = "c." + PURCHASE_COLUMNS.replace(", ", ", c.")

LOCK = f"""
SELECT {_P}, p.frozen_at, now() AS db_now,
       p.expires_at IS NOT NULL AND p.expires_at <= now() AS lapsed
  FROM purchases AS p
 WHERE p.trainer_id = $1 AND p.id = ANY($2::bigint[])
 ORDER BY p.id
   FOR UPDATE
"""

_LEDGER_COLUMNS = """(trainer_id, purchase_id, kind, delta, held_delta, total_delta,
         sessions_used_after, sessions_held_after, sessions_total_after, revision,
         source, actor, reason, related_purchase_id, detail)"""

# One notification per changed package, naming the newest entry the statement wrote.
_NOTIFY = notify_sql(
    trainer="c.trainer_id",
    kind=PURCHASE,
    id="c.id",
    r="c.revision",
    l="(SELECT max(e.id) FROM entries AS e WHERE e.purchase_id = c.id)",
)


async def _locked(conn: Executor, *, trainer_id: int, ids: Sequence[int]) -> dict[int, Row]:
    rows = await conn.fetch(LOCK, trainer_id, list(ids))
    return {row["id"]: row for row in rows}


def _refuse_unless(row: Row, allowed: Sequence[str], *, what: str = "this package") -> None:
    """The refusal for a package whose status (or lapsed expiry) rules the change out."""
    status = row["status"]
    if status not in allowed:
        if status == "CANCELLED":
            raise DomainError(Code.PURCHASE_CANCELLED, f"{what} was cancelled")
        if status == "FROZEN":
            raise DomainError(Code.PURCHASE_FROZEN, f"{what} is frozen; unfreeze it first")
        if status == "EXPIRED":
            raise DomainError(Code.PURCHASE_EXPIRED, f"{what} has expired")
        raise DomainError(Code.INVALID_TRANSITION, f"{what} is {status.lower()}, not frozen")
    if status == "ACTIVE" and row["lapsed"] and "EXPIRED" not in allowed:
        raise DomainError(Code.PURCHASE_EXPIRED, f"{what} has expired")


def _reason(reason: str | None) -> str | None:
    if reason is not None:
        checks.text("reason", reason, max_length=MAX_REASON)
    return reason


# --- cancel -------------------------------------------------------------------------------

# $1 package, $2 trainer, $3 reason, $4 actor, $5 source, $6 package to move its CONFIRMED
# bookings to (NULL: they become unpackaged). The CANCEL entry gives every hold back; the
# moved bookings take theirs on the target with one HOLD entry (guarded: it must have them
# available). Used sessions stay used; the unused ones are forfeited (the entry's detail).
CANCEL = f"""
WITH old AS (
    SELECT p.id, p.status, p.sessions_held FROM purchases AS p WHERE p.id = $1 AND p.trainer_id = $2
), moving AS (
    SELECT b.id FROM bookings AS b
     WHERE b.purchase_id = $1 AND b.trainer_id = $2 AND b.status = 'CONFIRMED'
), target AS (
    UPDATE purchases AS t
       SET sessions_held = t.sessions_held + m.n, revision = t.revision + 1, updated_at = now(),
           changed_by = $4, change_source = $5
      FROM (SELECT count(*)::int AS n FROM moving) AS m
     WHERE t.id = $6 AND t.trainer_id = $2 AND t.id <> $1 AND m.n > 0
       AND t.status = 'ACTIVE' AND (t.expires_at IS NULL OR t.expires_at > now())
       AND t.sessions_total - t.sessions_used - t.sessions_held >= m.n
    RETURNING t.id, t.trainer_id, t.revision, t.sessions_used, t.sessions_held,
              t.sessions_total, m.n
), cancelled AS (
    UPDATE purchases AS p
       SET status = 'CANCELLED', cancel_reason = $3, sessions_held = 0,
           frozen_at = NULL, frozen_until = NULL,
           revision = p.revision + 1, updated_at = now(), changed_by = $4, change_source = $5
      FROM old
     WHERE p.id = old.id AND p.status IN ('ACTIVE', 'FROZEN')
       AND ($6::bigint IS NULL OR NOT EXISTS (SELECT FROM moving) OR EXISTS (SELECT FROM target))
    RETURNING {_P}, old.status AS status_before, old.sessions_held AS held_before
), relinked AS (
    UPDATE bookings AS b
       SET purchase_id = (SELECT t.id FROM target AS t), overbooked = false,
           assigned_reason = NULL, changed_by = $4, change_source = $5, updated_at = now()
     WHERE b.id IN (SELECT id FROM moving) AND EXISTS (SELECT FROM cancelled)
    RETURNING b.id, b.trainer_id
), entries AS (
    INSERT INTO session_ledger {_LEDGER_COLUMNS}
    SELECT c.trainer_id, c.id, 'CANCEL', 0, -c.held_before, 0, c.sessions_used, 0,
           c.sessions_total, c.revision, $5, $4, $3, t.id,
           jsonb_build_object(
               'statusBefore', c.status_before,
               'sessionsForfeited', c.sessions_total - c.sessions_used,
               'bookingsUnlinked', CASE WHEN t.id IS NULL THEN (SELECT count(*) FROM moving)
                                        ELSE 0 END,
               'bookingsMoved', coalesce(t.n, 0),
               'movedTo', 'pur_' || t.id)
      FROM cancelled AS c LEFT JOIN target AS t ON true
    UNION ALL
    SELECT t.trainer_id, t.id, 'HOLD', 0, t.n, 0, t.sessions_used, t.sessions_held,
           t.sessions_total, t.revision, $5, $4, 'bookings moved from a cancelled package', c.id,
           jsonb_build_object('bookingsMoved', t.n, 'movedFrom', 'pur_' || c.id)
      FROM target AS t CROSS JOIN cancelled AS c
    RETURNING id, purchase_id
), changed AS (
    SELECT id, trainer_id, revision FROM cancelled
    UNION ALL
    SELECT id, trainer_id, revision FROM target
), notified AS (
    SELECT {_NOTIFY} FROM changed AS c
    UNION ALL
    SELECT {notify_sql(trainer="r.trainer_id", kind=BOOKINGS, n="count(*)")}
      FROM relinked AS r GROUP BY r.trainer_id
)
SELECT {_C}, (SELECT count(*) FROM moving) AS moving,
       c.sessions_total - c.sessions_used AS forfeited
  FROM (SELECT 1) AS one
  LEFT JOIN cancelled AS c ON true
 WHERE (SELECT count(*) FROM notified) >= 0
"""


# Cancel changes the package's CONFIRMED bookings, so it locks them BEFORE the packages,
# in the order every booking transition takes them (the booking, then its package): a
# transition holding one of them and waiting for the package would otherwise deadlock with
# a cancel holding the package and waiting for the booking.
LOCK_CONFIRMED = """
SELECT coalesce(array_agg(id), '{}') AS ids FROM (
    SELECT b.id FROM bookings AS b
     WHERE b.purchase_id = $1 AND b.trainer_id = $2 AND b.status = 'CONFIRMED'
     ORDER BY b.id
       FOR UPDATE
) AS confirmed
"""
# Once the package is locked no booking can join it (a hold needs the package's row), but
# one may have joined between the two locks: take those too, without waiting (a transition
# may hold one while it waits for the package we hold). Locked elsewhere: start again.
LOCK_LATECOMERS = """
SELECT count(*) FROM (
    SELECT b.id FROM bookings AS b
     WHERE b.purchase_id = $1 AND b.trainer_id = $2 AND b.status = 'CONFIRMED'
       AND NOT b.id = ANY($3::bigint[])
       FOR UPDATE NOWAIT
) AS late
"""
MAX_ATTEMPTS = 5


async def cancel_in(
    conn: Connection,
    *,
    trainer_id: int,
    purchase_id: int,
    reason: str | None,
    move_to: int | None,
    actor: str,
    source: str,
) -> Row:
    """Cancel a package inside the caller's transaction (the API's, Stripe's refund):
    the row as cancelled, with ``forfeited`` (its unused sessions) and ``moving`` (its
    CONFIRMED bookings, unlinked or moved to ``move_to``). Each attempt is a savepoint, so
    one that meets a booking locked by a transition gives its locks back and tries again."""
    reason = _reason(reason)
    for _ in range(MAX_ATTEMPTS):
        try:
            async with conn.transaction():
                return await _cancel_once(
                    conn,
                    trainer_id=trainer_id,
                    purchase_id=purchase_id,
                    reason=reason,
                    move_to=move_to,
                    actor=actor,
                    source=source,
                )
        except asyncpg.LockNotAvailableError:
            continue
    raise DomainError(
        Code.SERVICE_UNAVAILABLE, "this package's bookings kept changing under the cancel; retry"
    )


async def _cancel_once(
    conn: Executor,
    *,
    trainer_id: int,
    purchase_id: int,
    reason: str | None,
    move_to: int | None,
    actor: str,
    source: str,
) -> Row:
    confirmed = await conn.fetchval(LOCK_CONFIRMED, purchase_id, trainer_id)
    ids = [purchase_id] if move_to is None else [purchase_id, move_to]
    locked = await _locked(conn, trainer_id=trainer_id, ids=ids)
    if purchase_id not in locked:
        raise not_found("purchase")
    package = locked[purchase_id]
    _refuse_unless(package, ("ACTIVE", "FROZEN"))
    if move_to is not None:
        if move_to not in locked:
            raise not_found("purchase to move the bookings to")
        if move_to == purchase_id:
            raise bad_input("moveBookingsTo must name another package")
        target = locked[move_to]
        if target["client_id"] != package["client_id"]:
            raise bad_input("moveBookingsTo must name a package of the same client")
        _refuse_unless(target, ("ACTIVE",), what="the package to move the bookings to")
    await conn.fetchval(LOCK_LATECOMERS, purchase_id, trainer_id, confirmed)
    row = await conn.fetchrow(CANCEL, purchase_id, trainer_id, reason, actor, source, move_to)
    assert row is not None
    if row["id"] is None:  # the lock's rows allowed it: only the target's room can refuse
        raise DomainError(
            Code.NO_SESSIONS_AVAILABLE,
            f"the package to move the bookings to cannot hold all {row['moving']} of them",
        )
    return row


async def cancel_package(
    pool: Acquirer,
    *,
    trainer_id: int,
    purchase_id: int,
    reason: str | None,
    move_to: int | None,
    actor: str,
    source: str,
) -> Row:
    async with pool.acquire() as conn, conn.transaction():
        return await cancel_in(
            conn,
            trainer_id=trainer_id,
            purchase_id=purchase_id,
            reason=reason,
            move_to=move_to,
            actor=actor,
            source=source,
        )


# --- freeze, unfreeze, extend: one package, one entry ------------------------------------------


def _single(kind: str, *, assignments: str, guard: str, detail: str) -> str:
    """A guarded UPDATE of package $1 (trainer $2; $3 actor, $4 source, $5 argument) with
    its ``kind`` entry; ``old`` is the package before (locked, so current)."""
    return f"""
WITH old AS (
    SELECT p.* FROM purchases AS p WHERE p.id = $1 AND p.trainer_id = $2
), c AS (
    UPDATE purchases AS p
       SET {assignments}, revision = p.revision + 1, updated_at = now(),
           changed_by = $3, change_source = $4
      FROM old
     WHERE p.id = old.id AND {guard}
    RETURNING {_P}
), entries AS (
    INSERT INTO session_ledger {_LEDGER_COLUMNS}
    SELECT c.trainer_id, c.id, '{kind}', 0, 0, 0, c.sessions_used, c.sessions_held,
           c.sessions_total, c.revision, $4, $3, NULL, NULL, {detail}
      FROM c CROSS JOIN old
    RETURNING id, purchase_id
), notified AS (
    SELECT {_NOTIFY} FROM c
)
SELECT c.* FROM c WHERE (SELECT count(*) FROM notified) >= 0
"""


FREEZE = _single(
    "FREEZE",
    assignments="status = 'FROZEN', frozen_at = now(), frozen_until = $5",
    guard="p.status = 'ACTIVE' AND (p.expires_at IS NULL OR p.expires_at > now())"
    " AND ($5::timestamptz IS NULL OR $5 > now())",
    detail="jsonb_build_object('frozenUntil', $5::timestamptz, 'expiresAt', c.expires_at)",
)

# The expiry moves later by the time it was frozen (to frozen_until at most: past that it
# would have thawed by itself); a package without an expiry keeps none.
UNFREEZE = _single(
    "UNFREEZE",
    assignments="status = 'ACTIVE', frozen_at = NULL, frozen_until = NULL, "
    "expires_at = p.expires_at + (least(now(), coalesce(p.frozen_until, now())) - p.frozen_at)",
    guard="p.status = 'FROZEN' AND $5::int IS NULL",
    detail="jsonb_build_object('frozenAt', old.frozen_at, 'frozenUntil', old.frozen_until, "
    "'expiresAtBefore', old.expires_at, 'expiresAtAfter', c.expires_at)",
)

# A later expiry; an EXPIRED package extended into the future is ACTIVE again.
EXTEND = _single(
    "EXTEND",
    assignments="expires_at = $5, sessions_expired = NULL, "
    "status = CASE WHEN p.status = 'EXPIRED' THEN 'ACTIVE' ELSE p.status END",
    guard="p.status IN ('ACTIVE', 'FROZEN', 'EXPIRED') AND p.expires_at IS NOT NULL"
    " AND $5 > p.expires_at AND $5 > now()",
    detail="jsonb_build_object('expiresAtBefore', old.expires_at, 'expiresAtAfter', c.expires_at, "
    "'statusBefore', old.status, 'sessionsExpiredBefore', old.sessions_expired)",
)


async def _change_one(
    pool: Acquirer,
    sql: str,
    *,
    trainer_id: int,
    purchase_id: int,
    allowed: Sequence[str],
    actor: str,
    source: str,
    argument: datetime | None,
    check: _Check | None = None,
) -> Row:
    async with pool.acquire() as conn, conn.transaction():
        locked = await _locked(conn, trainer_id=trainer_id, ids=[purchase_id])
        if purchase_id not in locked:
            raise not_found("purchase")
        package = locked[purchase_id]
        _refuse_unless(package, allowed)
        if check is not None:
            check(package)
        row: Row | None = await conn.fetchrow(sql, purchase_id, trainer_id, actor, source, argument)
        if row is None:  # pragma: no cover - the lock's rows were checked against the guard
            raise DomainError(Code.INVALID_TRANSITION, "this package cannot change that way now")
        return row


class _Check:
    """A check of the locked package beyond its status (a time that must be in the future)."""

    def __init__(self, label: str, moment: datetime | None, *, later_than_expiry: bool) -> None:
        self.label = label
        self.moment = moment
        self.later_than_expiry = later_than_expiry

    def __call__(self, package: Row) -> None:
        if self.moment is None:
            return
        if self.moment <= package["db_now"]:
            raise bad_input(f"{self.label} must be in the future")
        if self.later_than_expiry:
            if package["expires_at"] is None:
                raise bad_input("this package never expires: there is nothing to extend")
            if self.moment <= package["expires_at"]:
                raise bad_input(f"{self.label} must be later than the current expiry")


async def freeze_package(
    pool: Acquirer,
    *,
    trainer_id: int,
    purchase_id: int,
    until: datetime | None,
    actor: str,
    source: str,
) -> Row:
    """ACTIVE → FROZEN (until ``until``, or until unfrozen): no use while frozen."""
    if until is not None:
        until = checks.moment("until", until)
    return await _change_one(
        pool,
        FREEZE,
        trainer_id=trainer_id,
        purchase_id=purchase_id,
        allowed=("ACTIVE",),
        actor=actor,
        source=source,
        argument=until,
        check=_Check("until", until, later_than_expiry=False),
    )


async def unfreeze_package(
    pool: Acquirer, *, trainer_id: int, purchase_id: int, actor: str, source: str
) -> Row:
    """FROZEN → ACTIVE, its expiry later by the time it was frozen."""
    async with pool.acquire() as conn, conn.transaction():
        locked = await _locked(conn, trainer_id=trainer_id, ids=[purchase_id])
        if purchase_id not in locked:
            raise not_found("purchase")
        _refuse_unless(locked[purchase_id], ("FROZEN",))
        row: Row | None = await conn.fetchrow(
            UNFREEZE, purchase_id, trainer_id, actor, source, None
        )
        assert row is not None  # locked and FROZEN: the guard holds
        return row


async def extend_package(
    pool: Acquirer,
    *,
    trainer_id: int,
    purchase_id: int,
    expires_at: datetime,
    actor: str,
    source: str,
) -> Row:
    """A later expiry (in the future); an EXPIRED package becomes ACTIVE again."""
    expires_at = checks.moment("expiresAt", expires_at)
    return await _change_one(
        pool,
        EXTEND,
        trainer_id=trainer_id,
        purchase_id=purchase_id,
        allowed=("ACTIVE", "FROZEN", "EXPIRED"),
        actor=actor,
        source=source,
        argument=expires_at,
        check=_Check("expiresAt", expires_at, later_than_expiry=True),
    )


# --- transfer -----------------------------------------------------------------------------

# $1 source, $2 trainer, $3 receiving client, $4 sessions, $5 actor, $6 source (surface).
# Double entry: TRANSFER_OUT takes $4 off the source's total (guarded: never more than it
# has available, and it keeps at least one), TRANSFER_IN creates the client's new package
# (same offer and expiry) with them, at revision 1; each entry names the other package.
TRANSFER = f"""
WITH owner AS (
    SELECT c.id FROM clients AS c WHERE c.id = $3 AND c.trainer_id = $2
), src AS (
    UPDATE purchases AS p
       SET sessions_total = p.sessions_total - $4, revision = p.revision + 1,
           updated_at = now(), changed_by = $5, change_source = $6
     WHERE p.id = $1 AND p.trainer_id = $2 AND EXISTS (SELECT FROM owner)
       AND p.status = 'ACTIVE' AND (p.expires_at IS NULL OR p.expires_at > now())
       AND p.sessions_total - p.sessions_used - p.sessions_held >= $4
       AND p.sessions_total - $4 >= 1
    RETURNING {_P}
), dst AS (
    INSERT INTO purchases
        (trainer_id, client_id, offer_id, sessions_total, expires_at, revision,
         changed_by, change_source)
    SELECT s.trainer_id, owner.id, s.offer_id, $4, s.expires_at, 1, $5, $6
      FROM src AS s CROSS JOIN owner
    RETURNING {PURCHASE_COLUMNS}
), entries AS (
    INSERT INTO session_ledger {_LEDGER_COLUMNS}
    SELECT s.trainer_id, s.id, 'TRANSFER_OUT', 0, 0, -$4, s.sessions_used, s.sessions_held,
           s.sessions_total, s.revision, $6, $5, NULL, d.id,
           jsonb_build_object('sessions', $4, 'toPurchaseId', 'pur_' || d.id,
                              'toClientId', 'cli_' || d.client_id)
      FROM src AS s CROSS JOIN dst AS d
    UNION ALL
    SELECT d.trainer_id, d.id, 'TRANSFER_IN', 0, 0, $4, 0, 0, d.sessions_total, d.revision,
           $6, $5, NULL, s.id,
           jsonb_build_object('sessions', $4, 'fromPurchaseId', 'pur_' || s.id,
                              'fromClientId', 'cli_' || s.client_id)
      FROM src AS s CROSS JOIN dst AS d
    RETURNING id, purchase_id
), changed AS (
    SELECT id, trainer_id, revision FROM src
    UNION ALL
    SELECT id, trainer_id, revision FROM dst
), notified AS (
    SELECT {_NOTIFY} FROM changed AS c
)
SELECT 'from' AS side, s.* FROM src AS s WHERE (SELECT count(*) FROM notified) >= 0
UNION ALL
SELECT 'to' AS side, d.* FROM dst AS d
"""

CLIENT_FOUND = "SELECT EXISTS (SELECT FROM clients WHERE id = $1 AND trainer_id = $2)"


async def transfer_sessions(
    pool: Acquirer,
    *,
    trainer_id: int,
    purchase_id: int,
    client_id: int,
    sessions: int,
    actor: str,
    source: str,
) -> tuple[Row, Row]:
    """Move ``sessions`` available sessions of a package to a new package of a client of
    the same trainer, in one transaction; (the source, the new package)."""
    if not 1 <= sessions <= MAX_SESSIONS:
        raise bad_input(f"sessions must be between 1 and {MAX_SESSIONS}")
    async with pool.acquire() as conn, conn.transaction():
        locked = await _locked(conn, trainer_id=trainer_id, ids=[purchase_id])
        if purchase_id not in locked:
            raise not_found("purchase")
        if not await conn.fetchval(CLIENT_FOUND, client_id, trainer_id):
            raise not_found("client")
        package = locked[purchase_id]
        _refuse_unless(package, ("ACTIVE",))
        total, used, held = (
            package[k] for k in ("sessions_total", "sessions_used", "sessions_held")
        )
        available = total - used - held
        if sessions > available:
            raise DomainError(
                Code.NO_SESSIONS_AVAILABLE,
                f"this package has {max(available, 0)} sessions available to transfer",
            )
        if sessions >= total:
            raise bad_input(
                "a package keeps at least one session: transfer at most "
                f"{total - 1} (or cancel it and sell the client a new package)"
            )
        rows = await conn.fetch(
            TRANSFER, purchase_id, trainer_id, client_id, sessions, actor, source
        )
        assert len(rows) == 2, rows  # locked and checked: the guard holds
        sides = {row["side"]: row for row in rows}
        return sides["from"], sides["to"]


# --- the sweeper: expiry and thaw, a batch per statement ----------------------------------------

# $1 the sweeper's clock (NULL: now()), $2 the batch size. Expiry changes the bookings that
# can never be charged (CONFIRMED, starting at or after the expiry), so it takes them before
# their packages, in the order every booking transition does (the booking, then its
# package), skipping any a tab holds: DUE_EXPIRED picks the batch without locking,
# LOCK_UNCHARGEABLE locks those bookings, CLAIM_EXPIRED then the packages.
DUE_EXPIRED = """
SELECT coalesce(array_agg(id), '{}') AS ids FROM (
    SELECT p.id FROM purchases AS p
     WHERE p.status = 'ACTIVE' AND p.expires_at <= coalesce($1::timestamptz, now())
     ORDER BY p.expires_at, p.id
     LIMIT $2
) AS due
"""
LOCK_UNCHARGEABLE = """
SELECT coalesce(array_agg(id), '{}') AS ids FROM (
    SELECT b.id FROM bookings AS b
      JOIN purchases AS p ON p.id = b.purchase_id
     WHERE p.id = ANY($1::bigint[])
       AND b.status = 'CONFIRMED' AND b.starts_at >= p.expires_at
     ORDER BY b.id
       FOR UPDATE OF b SKIP LOCKED
) AS unchargeable
"""
CLAIM_EXPIRED = """
SELECT coalesce(array_agg(id), '{}') AS ids FROM (
    SELECT p.id FROM purchases AS p
     WHERE p.id = ANY($2::bigint[])
       AND p.status = 'ACTIVE' AND p.expires_at <= coalesce($1::timestamptz, now())
     ORDER BY p.id
       FOR UPDATE SKIP LOCKED
) AS due
"""

# The claimed packages $1 become EXPIRED. A CONFIRMED booking starting at or after the
# expiry can never be charged: it is unlinked and its hold given back in the EXPIRE entry;
# bookings that started before keep theirs (they still charge once completed). What is
# neither used nor held expires unused (sessions_expired). Only the bookings $2 this
# transaction locked are touched: a package with such a booking locked elsewhere (a tab
# cancelling or reopening it) waits for the next pass.
EXPIRE = f"""
WITH eligible AS (
    SELECT p.id FROM purchases AS p
     WHERE p.id = ANY($1::bigint[]) AND p.status = 'ACTIVE'
       AND NOT EXISTS (SELECT FROM bookings AS b
                        WHERE b.purchase_id = p.id AND b.status = 'CONFIRMED'
                          AND b.starts_at >= p.expires_at AND NOT b.id = ANY($2::bigint[]))
), unheld AS (
    UPDATE bookings AS b
       SET purchase_id = NULL, overbooked = false, assigned_reason = NULL,
           changed_by = 'sweeper', change_source = 'SWEEPER', updated_at = now()
      FROM purchases AS p
     WHERE p.id IN (SELECT id FROM eligible) AND b.purchase_id = p.id
       AND b.id = ANY($2::bigint[])
       AND b.status = 'CONFIRMED' AND b.starts_at >= p.expires_at
    RETURNING b.id, b.trainer_id, p.id AS purchase_id
), counts AS (
    SELECT p.id, p.sessions_held AS held_before,
           -- each unlinked booking held one (never below zero if holds had drifted)
           least(p.sessions_held, count(u.id)::int) AS unheld, count(u.id)::int AS unlinked
      FROM purchases AS p LEFT JOIN unheld AS u ON u.purchase_id = p.id
     WHERE p.id IN (SELECT id FROM eligible)
     GROUP BY p.id
), c AS (
    UPDATE purchases AS p
       SET status = 'EXPIRED', sessions_held = p.sessions_held - n.unheld,
           sessions_expired = greatest(
               p.sessions_total - p.sessions_used - (p.sessions_held - n.unheld), 0),
           revision = p.revision + 1, updated_at = now(),
           changed_by = 'sweeper', change_source = 'SWEEPER'
      FROM counts AS n
     WHERE p.id = n.id
    RETURNING {_P}, n.unheld, n.unlinked
), entries AS (
    INSERT INTO session_ledger {_LEDGER_COLUMNS}
    SELECT c.trainer_id, c.id, 'EXPIRE', 0, -c.unheld, 0, c.sessions_used, c.sessions_held,
           c.sessions_total, c.revision, 'SWEEPER', 'sweeper', 'the package expired', NULL,
           jsonb_build_object('expiresAt', c.expires_at, 'sessionsExpired', c.sessions_expired,
                              'bookingsUnlinked', c.unlinked)
      FROM c
    RETURNING id, purchase_id
), notified AS (
    SELECT {_NOTIFY} FROM c
    UNION ALL
    SELECT {notify_sql(trainer="u.trainer_id", kind=BOOKINGS, n="count(*)")}
      FROM unheld AS u GROUP BY u.trainer_id
)
SELECT count(*) AS expired FROM c WHERE (SELECT count(*) FROM notified) >= 0
"""

CLAIM_THAWED = """
SELECT coalesce(array_agg(id), '{}') AS ids FROM (
    SELECT p.id FROM purchases AS p
     WHERE p.status = 'FROZEN' AND p.frozen_until <= coalesce($1::timestamptz, now())
     ORDER BY p.frozen_until, p.id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
) AS due
"""

# Thaw the claimed packages $1: the same rule as unfreezePackage, the frozen time being
# frozen_until - frozen_at.
THAW = f"""
WITH old AS (
    SELECT p.id, p.expires_at, p.frozen_at, p.frozen_until FROM purchases AS p
     WHERE p.id = ANY($1::bigint[]) AND p.status = 'FROZEN' AND p.frozen_until IS NOT NULL
), c AS (
    UPDATE purchases AS p
       SET status = 'ACTIVE', frozen_at = NULL, frozen_until = NULL,
           expires_at = p.expires_at + (p.frozen_until - p.frozen_at),
           revision = p.revision + 1, updated_at = now(),
           changed_by = 'sweeper', change_source = 'SWEEPER'
      FROM old
     WHERE p.id = old.id
    RETURNING {_P}, old.frozen_at AS was_frozen_at, old.frozen_until AS was_frozen_until,
              old.expires_at AS expires_before
), entries AS (
    INSERT INTO session_ledger {_LEDGER_COLUMNS}
    SELECT c.trainer_id, c.id, 'UNFREEZE', 0, 0, 0, c.sessions_used, c.sessions_held,
           c.sessions_total, c.revision, 'SWEEPER', 'sweeper',
           'frozen until ' || c.was_frozen_until, NULL,
           jsonb_build_object('frozenAt', c.was_frozen_at, 'frozenUntil', c.was_frozen_until,
                              'expiresAtBefore', c.expires_before, 'expiresAtAfter', c.expires_at)
      FROM c
    RETURNING id, purchase_id
), notified AS (
    SELECT {_NOTIFY} FROM c
)
SELECT count(*) AS thawed FROM c WHERE (SELECT count(*) FROM notified) >= 0
"""


async def _sweep(
    pool: Acquirer, claim: str, apply: str, *, limit: int, now: datetime | None
) -> tuple[int, int]:
    """(packages claimed, packages changed) of one batch, in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        ids = await conn.fetchval(claim, now, limit)
        if not ids:
            return 0, 0
        changed: int = await conn.fetchval(apply, ids)
        return len(ids), changed


async def expire_batch(
    pool: Acquirer, *, limit: int, now: datetime | None = None
) -> tuple[int, int]:
    """Mark one batch of ACTIVE packages past their expiry EXPIRED; (claimed, expired)."""
    async with pool.acquire() as conn, conn.transaction():
        due = await conn.fetchval(DUE_EXPIRED, now, limit)
        if not due:
            return 0, 0
        unchargeable = await conn.fetchval(LOCK_UNCHARGEABLE, due)
        ids = await conn.fetchval(CLAIM_EXPIRED, now, due)
        if not ids:
            return 0, 0
        expired: int = await conn.fetchval(EXPIRE, ids, unchargeable)
        return len(ids), expired


async def thaw_batch(pool: Acquirer, *, limit: int, now: datetime | None = None) -> tuple[int, int]:
    """Unfreeze one batch of packages whose ``frozen_until`` passed; (claimed, thawed)."""
    return await _sweep(pool, CLAIM_THAWED, THAW, limit=limit, now=now)
