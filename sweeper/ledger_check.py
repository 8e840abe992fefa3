"""The sweeper's periodic ledger check: ``punchcard check``'s invariants every
``PUNCHCARD_CHECK_INTERVAL_SECONDS`` (the first right after start), on a connection of its
own so a long check never holds up completions or reminders.

Each pass logs every drift it finds (a WARNING per drift, at most ``MAX_LOGGED`` a pass,
then one line with the rest's count) and sets the gauges of ``punchcard.metrics``:
``punchcard_ledger_drift{invariant}`` (drifts found, 0 when it holds) and
``punchcard_ledger_check_last_success_timestamp_seconds`` (when a check last finished:
alert on its age to know the check itself stopped). A failed check (lost connection, a
statement timeout) is logged and counted in ``punchcard_sweeper_errors``, and retried
after ``RETRY_SECONDS``; the gauges keep the last finished check's values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg

from punchcard import metrics
from punchcard.db import integrity

log = logging.getLogger("punchcard.sweeper.check")

MAX_LOGGED = 100  # drifts logged one by one per pass
RETRY_SECONDS = 30.0  # after a failed check (at most the interval)


async def check_once(db: asyncpg.Connection) -> list[integrity.Drift]:
    """Run every invariant, log the drifts and set the gauges; returns the drifts."""
    started = time.monotonic()
    drifts = await integrity.check(db)
    took = time.monotonic() - started
    for invariant, found in integrity.counts(drifts).items():
        metrics.ledger_drift.labels(invariant).set(found)
    metrics.ledger_check_duration.set(took)
    metrics.ledger_check_last_success.set(time.time())
    for drift in drifts[:MAX_LOGGED]:
        log.warning(
            "ledger drift (%s): %s",
            drift.invariant,
            drift.line(),
            extra={"invariant": drift.invariant, "subject": drift.subject, "ref": drift.ref},
        )
    if len(drifts) > MAX_LOGGED:
        log.warning(
            "ledger drift: %d more not logged (punchcard check lists them all)",
            len(drifts) - MAX_LOGGED,
        )
    if drifts:
        log.warning("ledger check: %d drifts (%.2fs)", len(drifts), took)
    else:
        log.info("ledger check: clean (%.2fs)", took)
    return drifts


async def run_until_stopped(url: str, *, interval: float, stop: asyncio.Event) -> None:
    """Check now, then every ``interval`` seconds, until ``stop`` is set."""
    while not stop.is_set():
        pause = interval
        try:
            conn = await asyncpg.connect(url)
            try:
                await check_once(conn)
            finally:
                await conn.close(timeout=5)
        except Exception:
            metrics.sweeper_errors.inc()
            log.exception("ledger check failed; retrying")
            pause = min(RETRY_SECONDS, interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
