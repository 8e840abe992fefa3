"""Packages as of a moment, read from the ledger: ``sessionsAsOf`` and ``packageReport``.

Every change of a package's counts is one ledger entry carrying the counts after it
(migration 0007), so a package as of ``at`` is its last entry with ``created_at <= at``
(the index ``session_ledger_purchase_created`` finds it: one backward index step per
package). Before its first entry a package has the counts it was sold with (revision 0):
the first entry's counts minus that entry's deltas, or, with no entry yet, its total and
nothing used or held. A package sold after ``at`` did not exist then: no row.

``created_at`` is the entry's transaction time (``now()``). Two transactions on one
package are ordered by the row lock, so an entry of a transaction that began earlier may
carry the higher revision: around such an instant the answer is either side's counts,
never a mix within a package.

The rest is derived as of ``at`` too:

- ``expires_at``: the ``expiresAtAfter`` of the last entry at or before ``at`` that moved
  the expiry (``detail``, e.g. EXTEND, UNFREEZE); else the ``expiresAtBefore`` of the
  first later one; else the package's expiry now.
- ``status`` (the Purchase's derived status): CANCELLED after a CANCEL entry, FROZEN
  after a FREEZE not followed by an UNFREEZE; else EXPIRED once the expiry (as of ``at``)
  has passed or after an EXPIRE entry not followed by an EXTEND; else USED_UP when
  nothing remains; else ACTIVE.
- ``expiring_within_30_days``: the sessions remaining on an ACTIVE package expiring in
  ``(at, at + 30 days]`` (a frozen package's clock is stopped; a cancelled, expired or
  used-up one has nothing to expire).
- ``unused_value_cents``: remaining sessions x the offer's ``price_cents`` / the offer's
  ``sessions_total``, rounded half up to a cent, for packages that can still be used
  (ACTIVE, FROZEN; USED_UP is 0); 0 for CANCELLED and EXPIRED ones (nothing is owed on
  them any more); null when the package has no offer or the offer no price.

One statement for the whole report, whatever the number of packages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from punchcard.db.types import Executor, Row

EXPIRING_DAYS = 30

# $2 NULL: now, the transaction's time (the clock of the entries' created_at). The first
# row always comes, with as_of, whether or not there are packages.
_AS_OF = f"""
WITH clock AS (
    SELECT coalesce($2::timestamptz, now()) AS at
), pkg AS (
    SELECT p.id, p.client_id, p.offer_id, p.created_at, p.expires_at, p.sessions_total,
           clock.at
      FROM purchases AS p CROSS JOIN clock
     WHERE p.trainer_id = $1 AND p.created_at <= clock.at
       AND ($3::bigint IS NULL OR p.id = $3)
), counted AS (
    SELECT pkg.id, pkg.client_id, pkg.offer_id, pkg.created_at, pkg.at,
           coalesce(last.revision, 0) AS revision,
           coalesce(last.sessions_total_after, sold.sessions_total, pkg.sessions_total)
               AS sessions_total,
           coalesce(last.sessions_used_after, sold.sessions_used, 0) AS sessions_used,
           coalesce(last.sessions_held_after, sold.sessions_held, 0) AS sessions_held,
           CASE WHEN moved.found THEN moved.expires_at
                WHEN later.found THEN later.expires_at
                ELSE pkg.expires_at END AS expires_at,
           standing.kind AS standing, lapse.kind AS lapse
      FROM pkg
      -- the counts after the last entry at or before the moment
      LEFT JOIN LATERAL (
          SELECT e.revision, e.sessions_total_after, e.sessions_used_after,
                 e.sessions_held_after
            FROM session_ledger AS e
           WHERE e.purchase_id = pkg.id AND e.created_at <= pkg.at
           ORDER BY e.created_at DESC, e.id DESC
           LIMIT 1
      ) AS last ON true
      -- the counts it was sold with: before its first entry
      LEFT JOIN LATERAL (
          SELECT e.sessions_total_after - e.total_delta AS sessions_total,
                 e.sessions_used_after - e.delta AS sessions_used,
                 e.sessions_held_after - e.held_delta AS sessions_held
            FROM session_ledger AS e
           WHERE e.purchase_id = pkg.id
           ORDER BY e.created_at, e.id
           LIMIT 1
      ) AS sold ON true
      LEFT JOIN LATERAL (
          SELECT true AS found, (e.detail ->> 'expiresAtAfter')::timestamptz AS expires_at
            FROM session_ledger AS e
           WHERE e.purchase_id = pkg.id AND e.created_at <= pkg.at
             AND e.detail ? 'expiresAtAfter'
           ORDER BY e.created_at DESC, e.id DESC
           LIMIT 1
      ) AS moved ON true
      LEFT JOIN LATERAL (
          SELECT true AS found, (e.detail ->> 'expiresAtBefore')::timestamptz AS expires_at
            FROM session_ledger AS e
           WHERE e.purchase_id = pkg.id AND e.created_at > pkg.at
             AND e.detail ? 'expiresAtBefore'
           ORDER BY e.created_at, e.id
           LIMIT 1
      ) AS later ON true
      LEFT JOIN LATERAL (
          SELECT e.kind
            FROM session_ledger AS e
           WHERE e.purchase_id = pkg.id AND e.created_at <= pkg.at
             AND e.kind IN ('CANCEL', 'FREEZE', 'UNFREEZE')
           ORDER BY e.created_at DESC, e.id DESC
           LIMIT 1
      ) AS standing ON true
      LEFT JOIN LATERAL (
          SELECT e.kind
            FROM session_ledger AS e
           WHERE e.purchase_id = pkg.id AND e.created_at <= pkg.at
             AND e.kind IN ('EXPIRE', 'EXTEND')
           ORDER BY e.created_at DESC, e.id DESC
           LIMIT 1
      ) AS lapse ON true
), judged AS (
    SELECT c.*, c.sessions_total - c.sessions_used AS sessions_remaining,
           c.sessions_total - c.sessions_used - c.sessions_held AS sessions_available,
           CASE WHEN c.standing = 'CANCEL' THEN 'CANCELLED'
                WHEN c.standing = 'FREEZE' THEN 'FROZEN'
                WHEN c.lapse = 'EXPIRE' OR c.expires_at <= c.at THEN 'EXPIRED'
                WHEN c.sessions_used >= c.sessions_total THEN 'USED_UP'
                ELSE 'ACTIVE' END AS status
      FROM counted AS c
), report AS (
    SELECT j.id, j.client_id, j.offer_id, j.created_at, j.revision, j.sessions_total,
           j.sessions_used, j.sessions_held, j.sessions_remaining, j.sessions_available,
           j.expires_at, j.status, cl.name AS client_name, o.name AS offer_name,
           CASE WHEN j.status = 'ACTIVE' AND j.expires_at > j.at
                 AND j.expires_at <= j.at + make_interval(days => {EXPIRING_DAYS})
                THEN j.sessions_remaining ELSE 0 END AS expiring_within_30_days,
           round(o.price_cents::numeric / o.sessions_total)::bigint AS unit_price_cents,
           CASE WHEN o.price_cents IS NULL THEN NULL
                WHEN j.status IN ('CANCELLED', 'EXPIRED') THEN 0
                ELSE round(j.sessions_remaining * o.price_cents::numeric / o.sessions_total)::bigint
                END AS unused_value_cents
      FROM judged AS j
      JOIN clients AS cl ON cl.id = j.client_id
      LEFT JOIN offers AS o ON o.id = j.offer_id
)
SELECT clock.at AS as_of, r.*
  FROM clock LEFT JOIN report AS r ON true
 ORDER BY r.client_name, r.client_id, r.created_at, r.id
"""

TOTALLED = (
    "sessions_total",
    "sessions_used",
    "sessions_held",
    "sessions_remaining",
    "sessions_available",
    "expiring_within_30_days",
)


@dataclass(frozen=True, slots=True)
class Totals:
    packages: int
    sessions_total: int
    sessions_used: int
    sessions_held: int
    sessions_remaining: int
    sessions_available: int
    expiring_within_30_days: int
    unused_value_cents: int  # over the packages with a price (the others are null)

    @classmethod
    def of(cls, rows: Sequence[Row]) -> Totals:
        sums = {column: sum(row[column] for row in rows) for column in TOTALLED}
        value = sum(row["unused_value_cents"] or 0 for row in rows)
        return cls(packages=len(rows), unused_value_cents=value, **sums)


async def package_report(
    db: Executor, *, trainer_id: int, as_of: datetime | None
) -> tuple[datetime, list[Row]]:
    """The moment (``as_of``, checked by the caller, or now) and every package of the
    trainer sold by then, with its counts as of then, by client name then sale."""
    rows = await db.fetch(_AS_OF, trainer_id, as_of, None)
    return rows[0]["as_of"], [row for row in rows if row["id"] is not None]


async def sessions_as_of(
    db: Executor, *, trainer_id: int, purchase_id: int, at: datetime
) -> Row | None:
    """One package as of ``at``; None if it was not sold yet then (or is not the trainer's)."""
    row: Row | None = await db.fetchrow(_AS_OF, trainer_id, at, purchase_id)
    return row if row is not None and row["id"] is not None else None
