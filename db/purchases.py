"""Packages (purchases) and the session ledger: every statement that touches them.

``use_session``/``release_session`` are one guarded statement each: the UPDATE's WHERE
clause is the integrity rule, the ledger row, the idempotency record and the NOTIFY ride
in the same statement, and the result is built from the RETURNING row. When nothing was
updated, the same round trip returns what is needed to say why.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from punchcard.db import checks, idempotency
from punchcard.db.errors import Code, DomainError, bad_input, not_found
from punchcard.db.notify import BOOKINGS, PURCHASE, notify_sql
from punchcard.db.types import Executor, Row

PURCHASE_COLUMNS = (
    "id, trainer_id, client_id, offer_id, sessions_total, sessions_used, sessions_held, "
    "expires_at, status, revision, created_at, frozen_until, sessions_expired, cancel_reason"
)
MAX_SESSIONS = 1000
MAX_REASON = 1000
# releaseSession runs again when a concurrent change moved the package under it (every
# lost race is another caller's committed change; the bound only stops a pathological storm).
MAX_RACES = 50

NOTIFY_CHANGED = notify_sql(
    trainer="c.trainer_id", kind=PURCHASE, id="c.id", r="c.revision", l="e.id"
)

_ADJUST = f"""
WITH changed AS (
    UPDATE purchases AS p
       SET sessions_used = p.sessions_used {{op}} 1,
           revision = p.revision + 1,
           updated_at = now()
     WHERE p.id = $1
       AND p.trainer_id = $2
       AND {{guard}}
       AND {idempotency.unused_sql(trainer="$2", key="$6")}
    RETURNING p.{PURCHASE_COLUMNS.replace(", ", ", p.")}
), entry AS (
    INSERT INTO session_ledger
        (trainer_id, purchase_id, kind, delta, sessions_used_after, sessions_held_after,
         sessions_total_after, revision, source, actor, reason, idempotency_key)
    SELECT c.trainer_id, c.id, '{{kind}}', {{op}}1, c.sessions_used, c.sessions_held,
           c.sessions_total, c.revision, $3, $4, $5, $6
      FROM changed AS c
    RETURNING id
), remembered AS (
    {idempotency.remember_sql(changed="changed", key="$6", request="$7")}
), notified AS (
    SELECT {NOTIFY_CHANGED}
      FROM changed AS c, entry AS e
)
SELECT c.*, e.id AS ledger_id,
       cur.id IS NOT NULL AS found,
       cur.status AS current_status,
       cur.expires_at IS NOT NULL AND cur.expires_at <= now() AS expired,
       cur.sessions_used + cur.sessions_held >= cur.sessions_total
           AND cur.sessions_used < cur.sessions_total AS all_held,
       cur.sessions_used + cur.sessions_held < cur.sessions_total AS had_room,
       false AS raced,
       k.request AS key_request, k.result AS key_result
  FROM (SELECT 1) AS one
  LEFT JOIN (changed AS c CROSS JOIN entry AS e CROSS JOIN notified AS n) ON true
  LEFT JOIN purchases AS cur ON c.id IS NULL AND cur.id = $1 AND cur.trainer_id = $2
  {idempotency.stored_join_sql(alias="k", unless="c.id IS NULL", trainer="$2", key="$6")}
"""

# Why a use was refused, read afresh (see ``_adjust``).
CURRENT = """
SELECT status AS current_status,
       expires_at IS NOT NULL AND expires_at <= now() AS expired,
       sessions_used + sessions_held >= sessions_total AND sessions_used < sessions_total
           AS all_held
  FROM purchases WHERE id = $1 AND trainer_id = $2
"""

USE_SESSION = _ADJUST.format(
    op="+",
    kind="USE",
    guard="p.sessions_used + p.sessions_held < p.sessions_total AND p.status = 'ACTIVE' "
    "AND (p.expires_at IS NULL OR p.expires_at > now())",
)
# releaseSession (Reinstate) gives back a manual use first: while the package's used
# sessions outnumber its charged bookings, the RELEASE names no booking. Otherwise it
# releases the charge of the package's most recently charged booking: the entry names that
# booking, which becomes uncharged (its status stays), so a later reopen or cancel refunds
# nothing and a later complete charges once. The booking is locked before the package (the
# order transitions use) and the decision is read from the statement's snapshot, so the
# UPDATE applies only while the package is still at the revision that snapshot saw; a
# concurrent change makes ``raced`` true and the caller runs the statement again.
RELEASE_SESSION = f"""
WITH seen AS (
    SELECT p.revision, p.sessions_used, p.status,
           p.sessions_used > (SELECT count(*) FROM bookings AS b
                               WHERE b.purchase_id = p.id AND b.charge_entry_id IS NOT NULL)
               AS manual
      FROM purchases AS p
     WHERE p.id = $1 AND p.trainer_id = $2
), charge AS (
    SELECT b.id FROM bookings AS b
     WHERE b.purchase_id = $1 AND b.trainer_id = $2 AND b.charge_entry_id IS NOT NULL
       AND NOT coalesce((SELECT manual FROM seen), true)
     ORDER BY b.charge_entry_id DESC
     LIMIT 1
       FOR UPDATE
), changed AS (
    UPDATE purchases AS p
       SET sessions_used = p.sessions_used - 1,
           revision = p.revision + 1,
           updated_at = now()
     WHERE p.id = $1
       AND p.trainer_id = $2
       AND p.sessions_used > 0
       AND p.status <> 'CANCELLED'
       AND p.revision = (SELECT revision FROM seen)
       AND ((SELECT manual FROM seen) OR EXISTS (SELECT 1 FROM charge))
       AND {idempotency.unused_sql(trainer="$2", key="$6")}
    RETURNING p.{PURCHASE_COLUMNS.replace(", ", ", p.")}
), entry AS (
    INSERT INTO session_ledger
        (trainer_id, purchase_id, kind, delta, sessions_used_after, sessions_held_after,
         sessions_total_after, revision, source, booking_id, actor, reason, idempotency_key)
    SELECT c.trainer_id, c.id, 'RELEASE', -1, c.sessions_used, c.sessions_held,
           c.sessions_total, c.revision, $3, (SELECT id FROM charge), $4, $5, $6
      FROM changed AS c
    RETURNING id, booking_id
), uncharged AS (
    UPDATE bookings AS b
       SET charge_entry_id = NULL, charged = false,
           changed_by = $4, change_source = $3, updated_at = now()
      FROM entry AS e
     WHERE b.id = e.booking_id
    RETURNING b.trainer_id
), remembered AS (
    {idempotency.remember_sql(changed="changed", key="$6", request="$7")}
), notified AS (
    SELECT {NOTIFY_CHANGED}
      FROM changed AS c, entry AS e
    UNION ALL
    SELECT {notify_sql(trainer="u.trainer_id", kind=BOOKINGS, n="count(*)")}
      FROM uncharged AS u
     GROUP BY u.trainer_id
)
SELECT c.*, e.id AS ledger_id, e.booking_id AS released_booking_id,
       cur.id IS NOT NULL AS found,
       cur.status AS current_status,
       false AS expired,
       false AS all_held,
       false AS had_room,
       c.id IS NULL AND coalesce((SELECT sessions_used FROM seen), 0) > 0
           AND (SELECT status FROM seen) <> 'CANCELLED' AS raced,
       (SELECT count(*) FROM notified) AS notices,
       k.request AS key_request, k.result AS key_result
  FROM (SELECT 1) AS one
  LEFT JOIN (changed AS c CROSS JOIN entry AS e) ON true
  LEFT JOIN purchases AS cur ON c.id IS NULL AND cur.id = $1 AND cur.trainer_id = $2
  {idempotency.stored_join_sql(alias="k", unless="c.id IS NULL", trainer="$2", key="$6")}
"""


async def _adjust(
    db: Executor,
    sql: str,
    exhausted: DomainError,
    *,
    trainer_id: int,
    purchase_id: int,
    source: str,
    actor: str,
    reason: str | None,
    key: str | None,
    request: str,
) -> Row:
    if reason is not None:
        checks.text("reason", reason, max_length=MAX_REASON)
    for _ in range(MAX_RACES):
        try:
            row = await db.fetchrow(
                sql, purchase_id, trainer_id, source, actor, reason, key, request
            )
        except asyncpg.UniqueViolationError:
            # A concurrent call with the same key committed first; ours rolled back whole.
            assert key is not None
            first = await idempotency.first_result(
                db, trainer_id=trainer_id, key=key, request=request
            )
            if first is None:  # pragma: no cover - the violation proves the key exists
                raise
            return first
        assert row is not None
        if not row["raced"] or row["key_request"] is not None:
            break
    else:
        raise DomainError(
            Code.SERVICE_UNAVAILABLE, "this package kept changing under concurrent callers; retry"
        )
    if row["id"] is not None:
        return row
    if key is not None and row["key_request"] is not None:
        first = idempotency.replay(
            {"request": row["key_request"], "result": row["key_result"]}, request
        )
        assert first is not None
        return first
    if not row["found"]:
        raise not_found("purchase")
    if exhausted.code is not Code.NO_SESSIONS_REMAINING:
        if row["current_status"] == "CANCELLED":  # a cancelled package's counts are final
            raise DomainError(Code.PURCHASE_CANCELLED, "this package was cancelled")
        raise exhausted
    if row["current_status"] == "ACTIVE" and not row["expired"] and row["had_room"]:
        # The statement's snapshot predates the change that refused it (a cancel or a
        # freeze committed while the UPDATE waited for the row): say why from the row now.
        row = await db.fetchrow(CURRENT, purchase_id, trainer_id) or row
    if row["current_status"] == "CANCELLED":
        raise DomainError(Code.PURCHASE_CANCELLED, "this package was cancelled")
    if row["current_status"] == "FROZEN":
        raise DomainError(Code.PURCHASE_FROZEN, "this package is frozen; unfreeze it first")
    if row["expired"] or row["current_status"] == "EXPIRED":
        raise DomainError(Code.PURCHASE_EXPIRED, "this package has expired")
    if row["all_held"]:
        raise DomainError(
            Code.NO_SESSIONS_AVAILABLE,
            "every session left on this package is held by a confirmed booking",
        )
    raise exhausted


async def use_session(
    db: Executor,
    *,
    trainer_id: int,
    purchase_id: int,
    source: str,
    actor: str,
    reason: str | None,
    key: str | None,
    request: str,
) -> Row:
    """Count one session: one guarded UPDATE + ledger row + NOTIFY, one round trip."""
    return await _adjust(
        db,
        USE_SESSION,
        DomainError(Code.NO_SESSIONS_REMAINING, "no sessions left on this package"),
        trainer_id=trainer_id,
        purchase_id=purchase_id,
        source=source,
        actor=actor,
        reason=reason,
        key=key,
        request=request,
    )


async def release_session(
    db: Executor,
    *,
    trainer_id: int,
    purchase_id: int,
    source: str,
    actor: str,
    reason: str | None,
    key: str | None,
    request: str,
) -> Row:
    """Give one session back (Reinstate): the mirror of ``use_session``."""
    return await _adjust(
        db,
        RELEASE_SESSION,
        DomainError(Code.NOTHING_TO_RELEASE, "no used session to release on this package"),
        trainer_id=trainer_id,
        purchase_id=purchase_id,
        source=source,
        actor=actor,
        reason=reason,
        key=key,
        request=request,
    )


SELL = f"""
WITH owner AS (
    SELECT c.id AS client_id FROM clients AS c WHERE c.id = $2 AND c.trainer_id = $1
), offer AS (
    SELECT o.id, o.valid_days FROM offers AS o WHERE o.id = $5 AND o.trainer_id = $1
), sold AS (
    INSERT INTO purchases
        (trainer_id, client_id, offer_id, sessions_total, expires_at, changed_by, change_source)
    SELECT $1, owner.client_id, offer.id, $3,
           coalesce($4, now() + make_interval(days => offer.valid_days)), $6, $7
      FROM owner LEFT JOIN offer ON true
     WHERE $5::bigint IS NULL OR offer.id IS NOT NULL
    RETURNING {PURCHASE_COLUMNS}
), notified AS (
    SELECT {notify_sql(trainer="s.trainer_id", kind=PURCHASE, id="s.id", r="s.revision")}
      FROM sold AS s
)
SELECT s.*, (SELECT count(*) FROM owner) AS client_found
  FROM (SELECT 1) AS one LEFT JOIN (sold AS s CROSS JOIN notified) ON true
"""


async def sell_package(
    db: Executor,
    *,
    trainer_id: int,
    client_id: int,
    sessions_total: int,
    expires_at: datetime | None,
    offer_id: int | None,
    actor: str = "system",
    source: str = "MANUAL",
) -> Row:
    if not 1 <= sessions_total <= MAX_SESSIONS:
        raise bad_input(f"sessionsTotal must be between 1 and {MAX_SESSIONS}")
    if expires_at is not None:
        expires_at = checks.moment("expiresAt", expires_at)
        if expires_at <= datetime.now(UTC):
            raise bad_input("expiresAt has passed: a package cannot be sold already expired")
    row = await db.fetchrow(
        SELL, trainer_id, client_id, sessions_total, expires_at, offer_id, actor, source
    )
    assert row is not None
    if row["id"] is None:
        raise not_found("client" if not row["client_found"] else "offer")
    return row


BY_IDS = f"""
SELECT {PURCHASE_COLUMNS} FROM purchases WHERE trainer_id = $1 AND id = ANY($2::bigint[])
"""

BY_CLIENTS = f"""
SELECT {PURCHASE_COLUMNS} FROM purchases
 WHERE trainer_id = $1 AND client_id = ANY($2::bigint[])
 ORDER BY client_id, expires_at NULLS LAST, id
"""


async def by_ids(db: Executor, *, trainer_id: int, ids: Sequence[int]) -> list[Row]:
    return list(await db.fetch(BY_IDS, trainer_id, list(ids)))


async def by_clients(db: Executor, *, trainer_id: int, client_ids: Sequence[int]) -> list[Row]:
    return list(await db.fetch(BY_CLIENTS, trainer_id, list(client_ids)))


LEDGER_COLUMNS = (
    "id, trainer_id, purchase_id, kind, delta, held_delta, total_delta, sessions_used_after, "
    "sessions_held_after, sessions_total_after, revision, source, booking_id, actor, reason, "
    "idempotency_key, created_at, related_purchase_id, detail"
)

LEDGER_PAGE = f"""
SELECT {LEDGER_COLUMNS} FROM session_ledger
 WHERE trainer_id = $1 AND ($2::bigint IS NULL OR purchase_id = $2) AND id > $3
 ORDER BY id
 LIMIT $4
"""


async def ledger_page(
    db: Executor, *, trainer_id: int, purchase_id: int | None, after: int, limit: int
) -> list[Row]:
    """Ledger rows in order, oldest first, resuming after the cursor ``after``."""
    return list(await db.fetch(LEDGER_PAGE, trainer_id, purchase_id, after, limit))


LEDGER_PAGES = f"""
SELECT l.* FROM unnest($2::bigint[]) AS wanted (purchase_id)
CROSS JOIN LATERAL (
    SELECT {LEDGER_COLUMNS} FROM session_ledger AS e
     WHERE e.trainer_id = $1 AND e.purchase_id = wanted.purchase_id AND e.id > $3
     ORDER BY e.id
     LIMIT $4
) AS l
"""


async def ledger_pages(
    db: Executor, *, trainer_id: int, purchase_ids: Sequence[int], after: int, limit: int
) -> list[Row]:
    """One ledger page per purchase, all in one statement (``Purchase.ledger`` batched)."""
    return list(await db.fetch(LEDGER_PAGES, trainer_id, list(purchase_ids), after, limit))
