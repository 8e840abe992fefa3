"""The ledger's invariants, checked in one set-based statement (``punchcard check``, the
sweeper's periodic pass, the per-test check in tests/conftest.py).

Each invariant is one SELECT below (``INVARIANTS``), naming what it finds wrong: the
purchase or booking, what differs, what the row says and what it should say. They read
the shared CTEs of ``BASE`` (one ordered pass over the ledger that replays each package's
entries, the per-package sums taken from it, one aggregate per booking), so the ledger is
read a bounded number of times whatever its size. The generic CHECK invariant is built
from the catalog (``CONSTRAINTS``: one SELECT per table evaluating its CHECKs), so a check
is two round trips: the catalog, then one statement for everything.

Run it as a role that sees every trainer's rows: ``punchcard_worker`` (its ``internal``
policies, db/roles.py) or a superuser. The owner sees nothing (``FORCE ROW LEVEL
SECURITY``) and would report every package clean.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass

from punchcard.db.types import Executor

MAX_ROWS_PER_CONSTRAINT = 100  # rows named per violated CHECK (the rest are alike)

# What each invariant's SELECT returns: every column text, so they UNION ALL.
#   invariant  the invariant's name (a metric label: bounded)
#   subject    "purchase", "booking", or the table a CHECK belongs to
#   ref        the row: pur_12, bkg_7, led_40, or a row id / ctid for other tables
#   field      what is compared ("sessions_used", "entry 3 (led_40) sessions_held_after")
#   found      what the row says
#   says       who disagrees ("ledger says", "CONFIRMED bookings")
#   expected   what it should be
BASE = """
WITH entries AS MATERIALIZED (
    SELECT e.id, e.purchase_id, e.revision, e.delta, e.held_delta, e.total_delta,
           e.sessions_used_after, e.sessions_held_after, e.sessions_total_after,
           row_number() OVER w AS n,
           coalesce(lag(e.sessions_used_after) OVER w, 0) AS used_before,
           coalesce(lag(e.sessions_held_after) OVER w, 0) AS held_before,
           coalesce(lag(e.sessions_total_after) OVER w,
                    e.sessions_total_after - e.total_delta) AS total_before,
           lead(e.id) OVER w IS NULL AS last
      FROM session_ledger AS e
    WINDOW w AS (PARTITION BY e.purchase_id ORDER BY e.revision)
), per_package AS MATERIALIZED (
    SELECT p.id, p.trainer_id, p.sessions_used, p.sessions_held, p.sessions_total,
           p.revision,
           coalesce(sum(e.delta), 0) AS ledger_used,
           coalesce(sum(e.held_delta), 0) AS ledger_held,
           count(e.id) AS entries,
           count(e.id) FILTER (WHERE e.revision <> e.n) AS misnumbered,
           min(e.revision) AS first_revision,
           max(e.revision) AS last_revision
      FROM purchases AS p
      LEFT JOIN entries AS e ON e.purchase_id = p.id
     GROUP BY p.id
), per_booking AS MATERIALIZED (
    SELECT b.id, b.charged, coalesce(c.net, 0) AS net,
           coalesce(c.lowest, 0) AS lowest, coalesce(c.highest, 0) AS highest
      FROM bookings AS b
      LEFT JOIN (
          SELECT r.booking_id, sum(r.delta) AS net, min(r.running) AS lowest,
                 max(r.running) AS highest
            FROM (SELECT e.booking_id, e.delta,
                         sum(e.delta) OVER (PARTITION BY e.booking_id ORDER BY e.id) AS running
                    FROM session_ledger AS e
                   WHERE e.booking_id IS NOT NULL) AS r
           GROUP BY r.booking_id
      ) AS c ON c.booking_id = b.id
)
"""

# purchases.sessions_used is the sum of the package's ledger deltas.
SESSIONS_USED = """
SELECT 'sessions_used', 'purchase', 'pur_' || id, 'sessions_used', sessions_used::text,
       'ledger says', ledger_used::text
  FROM per_package
 WHERE sessions_used <> ledger_used
"""

# purchases.sessions_held is the sum of the package's ledger held_deltas.
SESSIONS_HELD = """
SELECT 'sessions_held', 'purchase', 'pur_' || id, 'sessions_held', sessions_held::text,
       'ledger says', ledger_held::text
  FROM per_package
 WHERE sessions_held <> ledger_held
"""

# The package's entries are numbered 1..revision: as many entries as its revision, the
# n-th in revision order numbered n (so no number twice, none missing).
REVISIONS = """
SELECT 'revisions', 'purchase', 'pur_' || id, 'revision', revision::text, 'ledger has',
       CASE WHEN entries = 0 THEN 'no entries'
            ELSE format('%s entries numbered %s..%s%s', entries, first_revision, last_revision,
                        CASE WHEN misnumbered > 0
                             THEN format(', %s out of sequence', misnumbered) ELSE '' END) END
  FROM per_package
 WHERE entries <> revision OR misnumbered > 0
"""

# Replayed in revision order (``entries``), each entry's counts after are the previous
# entry's plus its deltas (before the first: nothing used or held, its total less its
# change).
REPLAY = """
SELECT 'replay', 'purchase', 'pur_' || r.purchase_id,
       format('entry %s (led_%s) sessions_%s_after', r.revision, r.id, c.name),
       c.found::text, 'replay says', c.expected::text
  FROM (SELECT * FROM entries AS e
         WHERE e.sessions_used_after <> e.used_before + e.delta
            OR e.sessions_held_after <> e.held_before + e.held_delta
            OR e.sessions_total_after <> e.total_before + e.total_delta) AS r
 CROSS JOIN LATERAL (VALUES
       ('used', r.sessions_used_after, r.used_before + r.delta),
       ('held', r.sessions_held_after, r.held_before + r.held_delta),
       ('total', r.sessions_total_after, r.total_before + r.total_delta)
 ) AS c (name, found, expected)
 WHERE c.found <> c.expected
"""

# The newest entry's counts after are the package's counts.
LAST_ENTRY = """
SELECT 'last_entry', 'purchase', 'pur_' || p.id, 'sessions_' || c.name, c.found::text,
       format('last entry (led_%s) says', r.id), c.expected::text
  FROM entries AS r
  JOIN per_package AS p
    ON p.id = r.purchase_id
   AND (p.sessions_used, p.sessions_held, p.sessions_total)
       <> (r.sessions_used_after, r.sessions_held_after, r.sessions_total_after)
 CROSS JOIN LATERAL (VALUES
       ('used', p.sessions_used, r.sessions_used_after),
       ('held', p.sessions_held, r.sessions_held_after),
       ('total', p.sessions_total, r.sessions_total_after)
 ) AS c (name, found, expected)
 WHERE r.last AND c.found <> c.expected
"""

# Every CONFIRMED booking linked to a package holds one of its sessions, and nothing else.
HELD_BOOKINGS = """
SELECT 'held_bookings', 'purchase', 'pur_' || p.id, 'sessions_held', p.sessions_held::text,
       'CONFIRMED bookings', coalesce(b.n, 0)::text
  FROM per_package AS p
  LEFT JOIN (SELECT purchase_id, count(*) AS n FROM bookings
              WHERE status = 'CONFIRMED' AND purchase_id IS NOT NULL
              GROUP BY purchase_id) AS b ON b.purchase_id = p.id
 WHERE p.sessions_held <> coalesce(b.n, 0)
"""

# A booking's own entries use at most one session at any time (never charged twice), and
# its ``charged`` is what they add up to.
BOOKING_CHARGES = """
SELECT 'booking_charges', 'booking', 'bkg_' || id, 'charged', charged::text, 'ledger says',
       CASE WHEN lowest < 0 OR highest > 1
            THEN format('%s sessions used (between %s and %s along the way)',
                        net, lowest, highest)
            ELSE format('%s session%s used', net, CASE WHEN net = 1 THEN '' ELSE 's' END) END
  FROM per_booking
 WHERE lowest < 0 OR highest > 1 OR net NOT IN (0, 1) OR (net = 1) <> charged
"""

# An entry belongs to its package's trainer.
ENTRY_TRAINER = """
SELECT 'entry_trainer', 'purchase', 'pur_' || p.id, format('entry led_%s trainer_id', e.id),
       e.trainer_id::text, 'package''s trainer_id', p.trainer_id::text
  FROM session_ledger AS e
  JOIN purchases AS p ON p.id = e.purchase_id
 WHERE e.trainer_id <> p.trainer_id
"""

# A booking's package belongs to the booking's trainer and client.
BOOKING_PACKAGE = """
SELECT 'booking_package', 'booking', 'bkg_' || b.id,
       format('package pur_%s %s', p.id, c.name), c.found::text,
       'booking''s ' || c.name, c.expected::text
  FROM bookings AS b
  JOIN purchases AS p
    ON p.id = b.purchase_id AND (p.trainer_id, p.client_id) <> (b.trainer_id, b.client_id)
 CROSS JOIN LATERAL (VALUES
       ('trainer_id', p.trainer_id, b.trainer_id),
       ('client_id', p.client_id, b.client_id)
 ) AS c (name, found, expected)
 WHERE c.found <> c.expected
"""

# Sessions a transfer takes out of one package arrive in the other, of the same trainer:
# between two packages the TRANSFER_OUT and TRANSFER_IN entries naming each other add up
# to nothing, outs take (total_delta < 0) and ins give.
TRANSFERS = """
SELECT 'transfers', 'purchase', 'pur_' || t.purchase_id,
       format('transfers with pur_%s', coalesce(t.related_purchase_id::text, '?')),
       format('%s sessions net over %s entries', t.net, t.legs), 'double entry says',
       CASE WHEN t.related_purchase_id IS NULL THEN 'a related package'
            WHEN t.wrong_sign THEN 'outs negative, ins positive'
            WHEN t.other_trainer THEN 'the same trainer'
            ELSE '0 sessions net' END
  FROM (SELECT least(e.purchase_id, e.related_purchase_id) AS purchase_id,
               greatest(e.purchase_id, e.related_purchase_id) AS related_purchase_id,
               sum(e.total_delta) AS net, count(*) AS legs,
               bool_or((e.kind = 'TRANSFER_OUT') <> (e.total_delta < 0)) AS wrong_sign,
               bool_or(o.trainer_id IS DISTINCT FROM e.trainer_id) AS other_trainer
          FROM session_ledger AS e
          LEFT JOIN purchases AS o ON o.id = e.related_purchase_id
         WHERE e.kind IN ('TRANSFER_OUT', 'TRANSFER_IN')
         GROUP BY 1, 2) AS t
 WHERE t.net <> 0 OR t.related_purchase_id IS NULL OR t.wrong_sign OR t.other_trainer
"""

# Every row satisfies every CHECK constraint of the public tables: rows written while a
# constraint was NOT VALID are found here. CONSTRAINTS reads the catalog and writes one
# SELECT per table (one scan; only a row that breaks one of its CHECKs is looked at
# constraint by constraint); a row is named by its id (ctid without one), at most
# MAX_ROWS_PER_CONSTRAINT rows per constraint.
CONSTRAINTS = f"""
SELECT format(
$q$SELECT 'check_constraints', %L, %L || x.ref, x.conname, 'violated', 'CHECK', x.expr
  FROM (SELECT v.conname, v.expr, t.%s::text AS ref,
               row_number() OVER (PARTITION BY v.conname ORDER BY t.%s) AS n
          FROM %s AS t
         CROSS JOIN LATERAL (VALUES %s) AS v (conname, expr, bad)
         WHERE (%s) AND v.bad) AS x
 WHERE x.n <= {MAX_ROWS_PER_CONSTRAINT}$q$,
    CASE k.tab WHEN 'purchases' THEN 'purchase' WHEN 'bookings' THEN 'booking' ELSE k.tab END,
    CASE k.tab WHEN 'purchases' THEN 'pur_' WHEN 'bookings' THEN 'bkg_'
               WHEN 'session_ledger' THEN 'led_' ELSE '' END,
    k.ref, k.ref, k.tab, k.checks, k.any_false) AS sql
  FROM (SELECT c.conrelid::regclass::text AS tab,
               CASE WHEN bool_or(a.attname IS NOT NULL) THEN 'id' ELSE 'ctid' END AS ref,
               string_agg(format('(%L, %L, (%s) IS FALSE)', c.conname,
                                 pg_get_expr(c.conbin, c.conrelid),
                                 pg_get_expr(c.conbin, c.conrelid)),
                          ', ' ORDER BY c.conname) AS checks,
               string_agg(format('(%s) IS FALSE', pg_get_expr(c.conbin, c.conrelid)),
                          ' OR ' ORDER BY c.conname) AS any_false
          FROM pg_constraint AS c
          JOIN pg_class AS t ON t.oid = c.conrelid
          JOIN pg_namespace AS n ON n.oid = t.relnamespace
          LEFT JOIN pg_attribute AS a
            ON a.attrelid = c.conrelid AND a.attname = 'id' AND NOT a.attisdropped
         WHERE c.contype = 'c' AND n.nspname = 'public' AND t.relkind IN ('r', 'p')
           AND has_table_privilege(c.conrelid, 'SELECT')
         GROUP BY c.conrelid) AS k
 ORDER BY k.tab
"""

INVARIANTS: dict[str, str] = {
    "sessions_used": SESSIONS_USED,
    "sessions_held": SESSIONS_HELD,
    "revisions": REVISIONS,
    "replay": REPLAY,
    "last_entry": LAST_ENTRY,
    "held_bookings": HELD_BOOKINGS,
    "booking_charges": BOOKING_CHARGES,
    "entry_trainer": ENTRY_TRAINER,
    "booking_package": BOOKING_PACKAGE,
    "transfers": TRANSFERS,
}
CHECK_CONSTRAINTS = "check_constraints"  # the generic one: its SELECTs come from CONSTRAINTS
NAMES = (*INVARIANTS, CHECK_CONSTRAINTS)


@dataclass(frozen=True, slots=True)
class Drift:
    """One thing an invariant found wrong."""

    invariant: str  # one of NAMES
    subject: str  # "purchase", "booking" or a table name
    ref: str  # pur_12, bkg_7, or the row's id
    field: str  # what was compared
    found: str  # what the row says
    says: str  # who disagrees
    expected: str  # what it should be

    def line(self) -> str:
        """``purchase pur_12: sessions_used 5, ledger says 4``."""
        return f"{self.subject} {self.ref}: {self.field} {self.found}, {self.says} {self.expected}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def statement(names: Collection[str], constraint_selects: Sequence[str]) -> str:
    """The one statement that checks the invariants ``names`` (in NAMES' order) and, when
    ``check_constraints`` is among them, the CHECK constraints' SELECTs."""
    selects = [sql.strip() for name, sql in INVARIANTS.items() if name in names]
    if CHECK_CONSTRAINTS in names:
        selects.extend(constraint_selects)
    if not selects:
        return ""
    return BASE + "\nUNION ALL\n".join(f"({select})" for select in selects)


async def check(db: Executor, *, skip: Collection[str] = ()) -> list[Drift]:
    """Every drift the invariants (all of them, less ``skip``) find: the catalog's CHECK
    constraints, then one statement for everything."""
    unknown = set(skip) - set(NAMES)
    if unknown:
        raise ValueError(f"unknown invariants: {', '.join(sorted(unknown))}")
    names = [name for name in NAMES if name not in skip]
    if not names:
        return []
    constraint_selects: list[str] = []
    if CHECK_CONSTRAINTS in names:
        constraint_selects = [row["sql"] for row in await db.fetch(CONSTRAINTS)]
    sql = statement(names, constraint_selects)
    if not sql:  # only check_constraints asked for, and no table has a CHECK to read
        return []
    rows = await db.fetch(sql)
    return [Drift(*row.values()) for row in rows]


def counts(drifts: Collection[Drift]) -> dict[str, int]:
    """Drifts per invariant, every invariant present (0 when clean)."""
    found = dict.fromkeys(NAMES, 0)
    for drift in drifts:
        found[drift.invariant] += 1
    return found
