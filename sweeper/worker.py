"""``punchcard sweep``: complete past bookings and send due reminders, in batches.

Modelled on procrastinate's worker. A pass runs batches until one comes back short:
first the completions (``db.bookings.sweep_batch``: one statement claims a batch with
``FOR UPDATE SKIP LOCKED`` and moves it to COMPLETED, one more charges the packages,
writes the ledger and notifies, all in one transaction: rule 3, the same ``SETTLE``
as ``completeBooking``), then the reminders (``db.reminders``: claim, send, mark), then
the idempotency keys past ``PUNCHCARD_IDEMPOTENCY_RETENTION_DAYS`` (``db.idempotency``),
then the package lifecycle's passes (``db.lifecycle``): frozen packages whose
``frozen_until`` passed thaw, then ACTIVE packages past their expiry become EXPIRED, each
batch claimed with ``SKIP LOCKED`` and changed by one statement with its ledger entries.
Beside the passes, every ``PUNCHCARD_CHECK_INTERVAL_SECONDS`` it checks the ledger's
invariants (``sweeper/ledger_check.py``: logs each drift, sets a gauge).
Between passes the sweeper waits for the first of: a NOTIFY on the change channel
(a booking was created or moved, possibly already due), the poll interval, or a stop
signal. It listens through ``db/listen.py`` (the same helper as the API's hub: a
dedicated connection, reconnected with backoff) and ignores its own notifications and
package-only changes, which never make a booking due.

SIGTERM / SIGINT only set the stop event: the batch in flight (one transaction, or one
round of reminder sends and their marks) always finishes, then the process exits 0.
A lost database connection is re-established after a pause; the next pass re-reads
everything, so nothing a missed notification announced is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from punchcard import metrics
from punchcard.db import bookings, idempotency, lifecycle, reminders, roles
from punchcard.db.listen import Listener
from punchcard.db.notify import CHANNEL, PURCHASE, Notice
from punchcard.settings import Settings
from punchcard.sweeper import ledger_check
from punchcard.sweeper.delivery import Deliverer
from punchcard.sweeper.senders import Reminder, Sender, SendFailed, sender_from_settings

log = logging.getLogger("punchcard.sweeper")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
RETRY_SECONDS = 5.0  # pause after a lost connection or an error (at most the poll interval)
SEND_CONCURRENCY = 8  # reminders sent at once within a batch


CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, server restarting
)


@dataclass(slots=True)
class Totals:
    completed: int = 0
    charged: int = 0
    unpaid: int = 0
    reminded: int = 0
    failed: int = 0
    purged: int = 0
    expired: int = 0
    thawed: int = 0


class Sweeper:
    def __init__(self, settings: Settings, sender: Sender, *, now: datetime | None = None) -> None:
        assert settings.database_url, "DATABASE_URL is resolved before the sweeper starts"
        self.url = roles.worker_url(settings)  # it works across trainers by design
        self.settings = settings
        self.sender = sender
        self.now = now  # None: the database's clock; set: a fixed moment (--now, tests)
        self.totals = Totals()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._own_pids: set[int] = set()
        self.deliverer = Deliverer(settings)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, reason: str = "stop requested") -> None:
        """Finish the batch in flight, then return from ``run`` (signal-handler safe)."""
        if not self._stop.is_set():
            log.info("%s: finishing the current batch, then stopping", reason)
        self._stop.set()
        self._wake.set()
        self.deliverer.wake()

    async def run(self, *, once: bool = False) -> None:
        """Sweep until stopped (or, with ``once``, one pass)."""
        listener = None
        if not once:
            # A NOTIFY wakes the next pass early; after every (re)connect of the LISTEN
            # connection a pass re-reads everything, so a missed notification costs nothing.
            listener = Listener(
                self.url,
                on_notify=self._on_notify,
                on_listen=self._on_listen,
                health_seconds=self.settings.live_health_seconds,
                name="sweeper-listener",
            )
            listener.start()
        delivering = None if once else asyncio.create_task(self._deliver_until_stopped())
        interval = self.settings.check_interval_seconds
        checking = None
        if not once and interval > 0:
            checking = asyncio.create_task(
                ledger_check.run_until_stopped(self.url, interval=interval, stop=self._stop)
            )
        try:
            await self._run(once=once)
            if once:
                await self._deliver_once()
        finally:
            if delivering is not None:
                self.stop("sweeper done")
                await delivering
            if checking is not None:
                self.stop("sweeper done")
                await checking
            if listener is not None:
                await listener.stop()
            await self.deliverer.aclose()

    def _on_listen(self) -> None:
        self._wake.set()
        self.deliverer.wake()

    async def _webhook_pool(self) -> asyncpg.Pool:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            self.url,
            min_size=1,
            max_size=2,
            statement_cache_size=self.settings.statement_cache_size,
        )
        return pool

    async def _deliver_once(self) -> None:
        pool = await self._webhook_pool()
        try:
            await self.deliverer.deliver_pass(pool)
        finally:
            await _close_pool(pool)

    async def _deliver_until_stopped(self) -> None:
        """The webhook deliverer beside the sweep loop, on its own connections; a lost
        connection or an error is retried after a pause, like the sweep loop."""
        while not self.stopping:
            try:
                pool = await self._webhook_pool()
                try:
                    await self.deliverer.run(pool, self._stop)
                finally:
                    await _close_pool(pool)
            except CONNECTION_ERRORS as error:
                metrics.sweeper_errors.inc()
                log.warning("webhooks: database connection lost (%s); reconnecting", error)
            except Exception:
                metrics.sweeper_errors.inc()
                log.exception("webhooks: error; retrying")
            if not self.stopping:
                await self._sleep(min(RETRY_SECONDS, self.settings.sweep_poll_seconds))

    async def _run(self, *, once: bool) -> None:
        while True:
            try:
                await self._run_connected(once=once)
                return
            except CONNECTION_ERRORS as error:
                if once:
                    raise
                metrics.sweeper_errors.inc()
                log.warning("database connection lost (%s); reconnecting", error)
            except Exception:
                if once:
                    raise
                metrics.sweeper_errors.inc()
                log.exception("sweeper error; retrying")
            if self.stopping:
                return
            self._wake.clear()  # a wake-up from the lost connection is no reason to hurry
            await self._sleep(min(RETRY_SECONDS, self.settings.sweep_poll_seconds))
            if self.stopping:
                return

    async def _run_connected(self, *, once: bool) -> None:
        self._own_pids.clear()
        pool: asyncpg.Pool = await asyncpg.create_pool(
            self.url,
            min_size=1,
            max_size=1,
            statement_cache_size=self.settings.statement_cache_size,
            init=self._register,
        )
        try:
            first = True
            while True:
                self._wake.clear()
                await self.sweep_pass(pool)
                if once or self.stopping:
                    return
                if first:
                    log.info(
                        "waiting for work (LISTEN %s, poll every %gs)",
                        CHANNEL,
                        self.settings.sweep_poll_seconds,
                    )
                    first = False
                await self._sleep(self.settings.sweep_poll_seconds)
        finally:
            await _close_pool(pool)

    async def _register(self, conn: asyncpg.Connection) -> None:
        self._own_pids.add(conn.get_server_pid())

    def _on_notify(self, notice: Notice, pid: int) -> None:
        self.deliverer.wake()  # every change wrote an event
        if pid in self._own_pids or notice.kind == PURCHASE:
            return
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        """Wait for the first of: a notification, ``seconds``, a stop request."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def sweep_pass(self, pool: asyncpg.Pool) -> None:
        """Complete, then remind, in batches until a batch comes back short.

        A reminder batch is short when it found fewer candidates than it asked for (some
        of them may have gone to another sweeper a moment earlier: that is not short).
        """
        while not self.stopping:
            if await self.complete_batch(pool) < self.settings.sweep_batch_size:
                break
        while not self.stopping:
            if await self.remind_batch(pool) < self.settings.reminder_batch_size:
                break
        while not self.stopping:
            if await self.purge_batch(pool) < self.settings.sweep_batch_size:
                break
        while not self.stopping:  # thaw first: a thawed package's expiry moved later
            if await self.thaw_batch(pool) < self.settings.sweep_batch_size:
                break
        while not self.stopping:
            if await self.expire_batch(pool) < self.settings.sweep_batch_size:
                break
        self.deliverer.wake()  # completions, reminders and expiries wrote events
        metrics.sweeper_last_pass.set(time.time())

    async def expire_batch(self, pool: asyncpg.Pool) -> int:
        """One batch of ACTIVE packages past their expiry marked EXPIRED, each with its
        EXPIRE entry (and ``purchase.expired`` event); returns the packages expired (one
        whose unchargeable booking a tab holds waits: a batch of those ends the pass)."""
        claimed, expired = await lifecycle.expire_batch(
            pool, limit=self.settings.sweep_batch_size, now=self.now
        )
        metrics.sweeper_batch.labels("expiries").observe(expired)
        if expired:
            self.totals.expired += expired
            log.info("%d packages expired", expired)
        return min(claimed, expired)

    async def thaw_batch(self, pool: asyncpg.Pool) -> int:
        """One batch of FROZEN packages whose ``frozen_until`` passed unfrozen (their
        expiry later by the frozen time); returns the packages claimed."""
        claimed, thawed = await lifecycle.thaw_batch(
            pool, limit=self.settings.sweep_batch_size, now=self.now
        )
        metrics.sweeper_batch.labels("thaws").observe(thawed)
        if thawed:
            self.totals.thawed += thawed
            log.info("%d frozen packages thawed", thawed)
        return claimed

    async def purge_batch(self, pool: asyncpg.Pool) -> int:
        """Idempotency keys past their retention, one batch (its own statement)."""
        purged = await idempotency.purge(
            pool,
            retention_seconds=self.settings.idempotency_retention_days * 86400,
            limit=self.settings.sweep_batch_size,
            now=self.now,
        )
        metrics.sweeper_batch.labels("purges").observe(purged)
        if purged:
            self.totals.purged += purged
            log.info("purged %d idempotency keys past their retention", purged)
        return purged

    async def complete_batch(self, pool: asyncpg.Pool) -> int:
        rows = await bookings.sweep_batch(
            pool,
            grace_minutes=self.settings.sweep_grace_minutes,
            batch_size=self.settings.sweep_batch_size,
            now=self.now,
        )
        metrics.sweeper_batch.labels("completions").observe(len(rows))
        if rows:
            charged = sum(1 for row in rows if row["charged"])
            unpaid = sum(1 for row in rows if row["unpaid"])
            metrics.sweeper_completed.labels("charged").inc(charged)
            metrics.sweeper_completed.labels("unpaid").inc(unpaid)
            metrics.sweeper_completed.labels("unpackaged").inc(len(rows) - charged - unpaid)
            self.totals.completed += len(rows)
            self.totals.charged += charged
            self.totals.unpaid += unpaid
            log.info(
                "completed %d bookings: %d charged, %d unpaid, %d without a package",
                len(rows),
                charged,
                unpaid,
                len(rows) - charged - unpaid,
            )
        return len(rows)

    async def remind_batch(self, pool: asyncpg.Pool) -> int:
        """Claim a batch of due reminders, send them, mark each sent or failed; returns
        the number of candidates the claim found."""
        rows, candidates = await reminders.claim(
            pool,
            limit=self.settings.reminder_batch_size,
            lease_seconds=self.settings.reminder_lease_seconds,
            now=self.now,
        )
        metrics.sweeper_batch.labels("reminders").observe(len(rows))
        if not rows:
            return candidates
        limit = asyncio.Semaphore(SEND_CONCURRENCY)

        async def attempt(reminder: Reminder) -> str | None:
            async with limit:
                try:
                    await self.sender.send(reminder)
                except SendFailed as error:
                    return str(error)
                except Exception as error:  # a sender bug must not lose the batch's marks
                    log.exception("reminder %s: sender error", reminder.id)
                    return f"{type(error).__name__}: {error}"
                return None

        batch = [Reminder.from_row(row) for row in rows]
        errors = await asyncio.gather(*(attempt(reminder) for reminder in batch))
        outcomes = list(zip(batch, errors, strict=True))
        sent = [r.booking_id for r, error in outcomes if error is None]
        failed = [(r.booking_id, error) for r, error in outcomes if error is not None]
        await reminders.mark_sent(pool, sent)
        await reminders.mark_failed(
            pool, failed, retry_seconds=self.settings.reminder_retry_seconds, now=self.now
        )
        self.totals.reminded += len(sent)
        self.totals.failed += len(failed)
        metrics.reminders_sent.inc(len(sent))
        metrics.reminder_failures.inc(len(failed))
        log.info("sent %d reminders, %d failed (retried with backoff)", len(sent), len(failed))
        return candidates


async def _close_pool(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), 5)
    except Exception:
        pool.terminate()


async def sweep(settings: Settings, *, once: bool = False, now: datetime | None = None) -> Totals:
    """Run a sweeper in this event loop until SIGTERM/SIGINT (or one pass with ``once``)."""
    sender = sender_from_settings(settings)
    sweeper = Sweeper(settings, sender, now=now)
    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        loop.add_signal_handler(sig, sweeper.stop, signal.Signals(sig).name)
    log.info(
        "sweeper started (%s; batch %d, grace %d min, poll %gs)",
        "one pass" if once else "until stopped",
        settings.sweep_batch_size,
        settings.sweep_grace_minutes,
        settings.sweep_poll_seconds,
    )
    exporter = _serve_metrics(settings)
    try:
        await sweeper.run(once=once)
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
        await sender.aclose()
        if exporter is not None:
            exporter.shutdown()
            exporter.server_close()
    totals = sweeper.totals
    log.info(
        "sweeper stopped: %d bookings completed (%d charged, %d unpaid), %d reminders sent",
        totals.completed,
        totals.charged,
        totals.unpaid,
        totals.reminded,
    )
    return totals


def _serve_metrics(settings: Settings) -> Any:
    """The sweeper's own ``/metrics`` on PUNCHCARD_SWEEPER_METRICS_PORT (a thread)."""
    port = settings.sweeper_metrics_port
    if port is None:
        return None
    from prometheus_client import start_http_server

    server, _ = start_http_server(port, addr=settings.host, registry=metrics.REGISTRY)
    log.info("sweeper metrics on http://%s:%d/metrics", settings.host, port)
    return server


def main(settings: Settings, *, once: bool = False, now: datetime | None = None) -> int:
    """``punchcard sweep``: exit 0 after a pass (``once``) or a stop signal."""
    previous: dict[signal.Signals, Callable[[int, Any], Any] | int] = {}
    for sig in SIGNALS:
        handler = signal.getsignal(sig)
        if handler is not None:
            previous[sig] = handler
    try:
        asyncio.run(sweep(settings, once=once, now=now))
    finally:
        for sig, handler in previous.items():  # the CLI's exit-on-signal handlers
            signal.signal(sig, handler)
    return 0
