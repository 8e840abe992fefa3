"""Webhook endpoints, their deliveries and attempts: every statement that touches them.

A delivery is one event for one endpoint (created by the sequencer, ``db/events.py``, or by
``redeliver``). ``CLAIM`` leases due deliveries of enabled endpoints with ``SKIP LOCKED``:
it bumps ``attempts`` and moves ``next_attempt_at`` past the lease, so another sweeper
skips them, and a sweeper killed mid-send leaves them to be claimed again when the lease
runs out (the same event, so the same ``webhook-id``). ``RECORD`` writes one attempt row per
send and moves each delivery on: DELIVERED after a 2xx, else PENDING at the next step of
the retry schedule, or FAILED once the schedule is exhausted; it ignores a delivery whose
lease another sweeper has since taken (``attempts`` moved on). An endpoint failing for
longer than the disable window, or whose delivery exhausted the schedule, is disabled with
the reason; its pending deliveries wait (nothing is lost) until it is enabled again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from punchcard.db.types import Executor, Row

ENDPOINT_COLUMNS = (
    "id, trainer_id, url, description, event_types, enabled, disabled_reason, failing_since, "
    "created_at, updated_at"
)
DELIVERY_COLUMNS = (
    "d.id, d.trainer_id, d.endpoint_id, d.event_id, d.status, d.attempts, d.next_attempt_at, "
    "d.delivered_at, d.last_status_code, d.last_error, d.created_at, "
    "(SELECT type FROM events AS e WHERE e.id = d.event_id) AS event_type"
)

CREATE = f"""
INSERT INTO webhook_endpoints (trainer_id, url, description, event_types, secret)
VALUES ($1, $2, $3, $4, $5)
RETURNING {ENDPOINT_COLUMNS}
"""

# NULL arguments leave a field as it is; enabling clears the reason it was disabled for.
UPDATE = f"""
UPDATE webhook_endpoints
   SET url = coalesce($3, url),
       description = CASE WHEN $4::boolean THEN nullif($5, '') ELSE description END,
       event_types = coalesce($6, event_types),
       enabled = coalesce($7, enabled),
       disabled_reason = CASE WHEN $7 THEN NULL ELSE disabled_reason END,
       failing_since = CASE WHEN $7 THEN NULL ELSE failing_since END,
       updated_at = now()
 WHERE trainer_id = $1 AND id = $2
RETURNING {ENDPOINT_COLUMNS}
"""

DELETE = (
    f"DELETE FROM webhook_endpoints WHERE trainer_id = $1 AND id = $2 RETURNING {ENDPOINT_COLUMNS}"
)

ROTATE = f"""
UPDATE webhook_endpoints SET secret = $3, updated_at = now()
 WHERE trainer_id = $1 AND id = $2
RETURNING {ENDPOINT_COLUMNS}
"""

OF_TRAINER = f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE trainer_id = $1 ORDER BY id"


async def create_endpoint(
    db: Executor,
    *,
    trainer_id: int,
    url: str,
    description: str | None,
    event_types: Sequence[str],
    secret: str,
) -> Row:
    row = await db.fetchrow(CREATE, trainer_id, url, description, list(event_types), secret)
    assert row is not None
    return row


async def update_endpoint(
    db: Executor,
    *,
    trainer_id: int,
    endpoint_id: int,
    url: str | None,
    description: str | None,
    set_description: bool,
    event_types: Sequence[str] | None,
    enabled: bool | None,
) -> Row | None:
    return await db.fetchrow(
        UPDATE,
        trainer_id,
        endpoint_id,
        url,
        set_description,
        description,
        list(event_types) if event_types is not None else None,
        enabled,
    )


async def delete_endpoint(db: Executor, *, trainer_id: int, endpoint_id: int) -> Row | None:
    return await db.fetchrow(DELETE, trainer_id, endpoint_id)


async def rotate_secret(
    db: Executor, *, trainer_id: int, endpoint_id: int, secret: str
) -> Row | None:
    return await db.fetchrow(ROTATE, trainer_id, endpoint_id, secret)


async def endpoints_of(db: Executor, *, trainer_id: int) -> list[Row]:
    return list(await db.fetch(OF_TRAINER, trainer_id))


REDELIVER = f"""
WITH event AS (
    SELECT id FROM events WHERE trainer_id = $1 AND id = $2
), endpoint AS (
    SELECT id, enabled FROM webhook_endpoints WHERE trainer_id = $1 AND id = $3
), queued AS (
    INSERT INTO webhook_deliveries (trainer_id, endpoint_id, event_id)
    SELECT $1, endpoint.id, event.id FROM event, endpoint WHERE endpoint.enabled
    RETURNING *
)
SELECT {DELIVERY_COLUMNS},
       (SELECT count(*) FROM event) AS event_found,
       (SELECT count(*) FROM endpoint) AS endpoint_found,
       (SELECT bool_or(enabled) FROM endpoint) AS endpoint_enabled
  FROM (SELECT 1) AS one LEFT JOIN queued AS d ON true
"""


async def redeliver(db: Executor, *, trainer_id: int, event_id: int, endpoint_id: int) -> Row:
    """Queue ``event_id`` again for ``endpoint_id`` (a new delivery, the same webhook-id).
    The row's ``id`` is NULL when the event or endpoint is not found or it is disabled."""
    row = await db.fetchrow(REDELIVER, trainer_id, event_id, endpoint_id)
    assert row is not None
    return row


DELIVERIES_PAGE = f"""
SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries AS d
 WHERE d.trainer_id = $1 AND d.endpoint_id = $2 AND ($3::bigint IS NULL OR d.id < $3)
 ORDER BY d.id DESC
 LIMIT $4
"""

ATTEMPTS_OF = """
SELECT id, delivery_id, attempt, status_code, latency_ms, error, created_at
  FROM webhook_attempts
 WHERE trainer_id = $1 AND delivery_id = ANY ($2::bigint[])
 ORDER BY delivery_id, id
"""


async def deliveries_page(
    db: Executor, *, trainer_id: int, endpoint_id: int, before: int | None, limit: int
) -> list[Row]:
    """An endpoint's deliveries, newest first, older than the cursor ``before``."""
    return list(await db.fetch(DELIVERIES_PAGE, trainer_id, endpoint_id, before, limit))


async def attempts_of(db: Executor, *, trainer_id: int, delivery_ids: Sequence[int]) -> list[Row]:
    return list(await db.fetch(ATTEMPTS_OF, trainer_id, list(delivery_ids)))


# --- the sweeper's side ----------------------------------------------------------------

CLAIM = """
WITH due AS (
    SELECT d.id FROM webhook_deliveries AS d
      JOIN webhook_endpoints AS w ON w.id = d.endpoint_id
     WHERE d.status = 'PENDING' AND d.next_attempt_at <= now() AND w.enabled
     ORDER BY d.next_attempt_at, d.id
     LIMIT $1
       FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries AS d
   SET attempts = d.attempts + 1,
       next_attempt_at = now() + make_interval(secs => $2),
       updated_at = now()
  FROM due, events AS e, webhook_endpoints AS w
 WHERE d.id = due.id AND d.status = 'PENDING' AND d.next_attempt_at <= now()
   AND e.id = d.event_id AND w.id = d.endpoint_id
RETURNING d.id, d.trainer_id, d.attempts, d.endpoint_id, w.url, w.secret,
          e.id AS event_id, e.type, e.data::text AS data, e.created_at
"""


async def claim(db: Executor, *, limit: int, lease_seconds: float) -> list[Row]:
    """Lease up to ``limit`` due deliveries to this sweeper."""
    return list(await db.fetch(CLAIM, limit, lease_seconds))


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result: ``status_code`` None when no HTTP answer came back."""

    delivery_id: int
    attempt: int
    ok: bool
    status_code: int | None
    latency_ms: int
    error: str | None


# $6: the retry delays in seconds (delay i follows failed attempt i); $7: days an endpoint
# may fail before it is disabled.
RECORD = """
WITH r AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::boolean[], $4::int[], $5::int[],
                         $8::text[])
        AS r (delivery_id, attempt, ok, status_code, latency_ms, error)
), logged AS (
    INSERT INTO webhook_attempts
        (trainer_id, delivery_id, attempt, status_code, latency_ms, error)
    SELECT d.trainer_id, d.id, r.attempt, r.status_code, r.latency_ms, r.error
      FROM r JOIN webhook_deliveries AS d ON d.id = r.delivery_id
), moved AS (
    UPDATE webhook_deliveries AS d
       SET status = CASE WHEN r.ok THEN 'DELIVERED'
                         WHEN d.attempts > cardinality($6::float8[]) THEN 'FAILED'
                         ELSE 'PENDING' END,
           delivered_at = CASE WHEN r.ok THEN now() END,
           next_attempt_at = CASE
               WHEN r.ok OR d.attempts > cardinality($6::float8[]) THEN d.next_attempt_at
               ELSE now() + make_interval(secs => ($6::float8[])[d.attempts]) END,
           last_status_code = r.status_code,
           last_error = r.error,
           updated_at = now()
      FROM r
     WHERE d.id = r.delivery_id AND d.status = 'PENDING' AND d.attempts = r.attempt
    RETURNING d.endpoint_id, d.event_id, d.status, r.ok, r.error, r.status_code
), per_endpoint AS (
    SELECT endpoint_id, bool_or(ok) AS any_ok,
           min(CASE WHEN status = 'FAILED' THEN 'evt_' || event_id END) AS gave_up_on,
           min(coalesce(error, 'HTTP ' || status_code)) AS some_error
      FROM moved GROUP BY endpoint_id
), locked AS (  -- in id order, so sweepers recording at once cannot deadlock
    SELECT id FROM webhook_endpoints
     WHERE id IN (SELECT endpoint_id FROM per_endpoint)
     ORDER BY id
       FOR NO KEY UPDATE
)
UPDATE webhook_endpoints AS w
   SET failing_since = CASE WHEN s.any_ok THEN NULL ELSE coalesce(w.failing_since, now()) END,
       enabled = CASE WHEN s.any_ok THEN w.enabled
                      WHEN s.gave_up_on IS NOT NULL
                        OR w.failing_since < now() - make_interval(days => $7) THEN false
                      ELSE w.enabled END,
       disabled_reason = CASE
           WHEN s.any_ok OR NOT w.enabled THEN w.disabled_reason
           WHEN s.gave_up_on IS NOT NULL THEN
               format('every retry of %s failed (last: %s); enable the endpoint to resume',
                      s.gave_up_on, s.some_error)
           WHEN w.failing_since < now() - make_interval(days => $7) THEN
               format('deliveries failing since %s (last: %s); enable the endpoint to resume',
                      w.failing_since, s.some_error)
           ELSE w.disabled_reason END,
       updated_at = now()
  FROM per_endpoint AS s
 WHERE w.id = s.endpoint_id AND w.id IN (SELECT id FROM locked)
"""


async def record(
    db: Executor,
    outcomes: Sequence[Outcome],
    *,
    retry_delays: Sequence[float],
    disable_after_days: float,
) -> None:
    if not outcomes:
        return
    await db.execute(
        RECORD,
        [o.delivery_id for o in outcomes],
        [o.attempt for o in outcomes],
        [o.ok for o in outcomes],
        [o.status_code for o in outcomes],
        [o.latency_ms for o in outcomes],
        list(retry_delays),
        disable_after_days,
        [o.error[:500] if o.error else None for o in outcomes],
    )


NEXT_DUE = """
SELECT extract(epoch FROM min(d.next_attempt_at) - now())::float8
  FROM webhook_deliveries AS d JOIN webhook_endpoints AS w ON w.id = d.endpoint_id
 WHERE d.status = 'PENDING' AND w.enabled
"""


async def seconds_to_next(db: Executor) -> float | None:
    """Seconds until the next pending delivery is due (negative: overdue), None if none."""
    value: float | None = await db.fetchval(NEXT_DUE)
    return value
