"""Webhook delivery, in the sweeper process: number the outbox, claim due deliveries, POST
them per Standard Webhooks, record every attempt.

A pass: ``db.events.sequence_all`` numbers committed events and fans them out into
deliveries; then batches of due deliveries are claimed (``db.webhooks.claim``: ``SKIP
LOCKED`` and a lease, so several sweepers send each attempt once and a killed sweeper's
claims come back after the lease), sent concurrently with httpx and recorded in one
statement per batch (``db.webhooks.record``: the retry schedule, giving up, disabling).

Each request: ``POST`` of ``{"type", "timestamp", "data"}`` with ``webhook-id`` (the event's
id: the same on every retry and redelivery, for receivers to drop duplicates),
``webhook-timestamp`` (this attempt's, in seconds) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of id.timestamp.body>``), signed with the ``standardwebhooks``
package. Any 2xx is a delivery; redirects are not followed. Before each attempt the URL is
checked again after DNS (``gql/webhook_urls.py``) and the request goes to the checked
address. Between passes the deliverer waits for a wake-up (a NOTIFY on the change
channel, the sweeper's own pass), the next due retry, or the poll interval, and then
``COALESCE_SECONDS`` more, so a burst of changes costs a few passes, not one per change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import httpx
from standardwebhooks.webhooks import Webhook

from punchcard import metrics
from punchcard.db import events, webhooks
from punchcard.db.types import Row
from punchcard.gql.ids import Kind, encode
from punchcard.gql.webhook_urls import UnsafeUrl, check
from punchcard.settings import Settings

log = logging.getLogger("punchcard.webhooks")

USER_AGENT = "punchcard-webhooks"
MIN_WAIT_SECONDS = 0.05
# After a wake-up, gather the wake-ups of this long into one pass: a burst of changes
# (each NOTIFY wakes the deliverer) is numbered and delivered in batches, not one by one.
COALESCE_SECONDS = 0.05


def body_of(row: Row) -> str:
    """The request body: the event's type, time and data (stored JSON, sent as stored)."""
    timestamp = row["created_at"].astimezone(UTC).isoformat()
    return f'{{"type":{json.dumps(row["type"])},"timestamp":"{timestamp}","data":{row["data"]}}}'


def signed_headers(secret: str, message_id: str, body: str, *, now: float) -> dict[str, str]:
    moment = datetime.fromtimestamp(int(now), UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now)),
        "webhook-signature": Webhook(secret).sign(message_id, moment, body),
    }


class Deliverer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.delivered = 0
        self.failed = 0
        self._wake = asyncio.Event()
        self._http: httpx.AsyncClient | None = None

    def wake(self) -> None:
        self._wake.set()

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.settings.webhook_timeout_seconds,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=self.settings.webhook_concurrency),
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def run(self, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set (the batch in flight always finishes)."""
        while not stop.is_set():
            self._wake.clear()
            await self.deliver_pass(pool, stop)
            if stop.is_set():
                return
            due = await webhooks.seconds_to_next(pool)
            wait = self.settings.sweep_poll_seconds
            if due is not None:
                wait = min(wait, max(due, MIN_WAIT_SECONDS))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            if not stop.is_set():
                await asyncio.sleep(COALESCE_SECONDS)

    async def deliver_pass(self, pool: asyncpg.Pool, stop: asyncio.Event | None = None) -> int:
        """Sequence, then deliver due batches until one comes back short; returns attempts."""
        sequenced, fanned = await events.sequence_all(pool)
        if sequenced:
            log.debug("numbered %d events, %d deliveries queued", sequenced, fanned)
        attempts = 0
        batch_size = self.settings.webhook_batch_size
        while stop is None or not stop.is_set():
            rows = await webhooks.claim(
                pool, limit=batch_size, lease_seconds=self.settings.webhook_lease_seconds
            )
            if not rows:
                break
            outcomes = await self.send_all(rows)
            await webhooks.record(
                pool,
                outcomes,
                retry_delays=self.settings.webhook_retry_delays,
                disable_after_days=self.settings.webhook_disable_after_days,
            )
            ok = sum(1 for o in outcomes if o.ok)
            self.delivered += ok
            self.failed += len(outcomes) - ok
            metrics.webhook_attempts.labels("delivered").inc(ok)
            metrics.webhook_attempts.labels("failed").inc(len(outcomes) - ok)
            attempts += len(outcomes)
            if len(outcomes) - ok:
                log.info("webhooks: %d delivered, %d failed (retried)", ok, len(outcomes) - ok)
            if len(rows) < batch_size:
                break
        return attempts

    async def send_all(self, rows: Sequence[Row]) -> list[webhooks.Outcome]:
        limit = asyncio.Semaphore(self.settings.webhook_concurrency)

        async def one(row: Row) -> webhooks.Outcome:
            async with limit:
                return await self.send(row)

        return list(await asyncio.gather(*(one(row) for row in rows)))

    async def send(self, row: Row) -> webhooks.Outcome:
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            status = await self._post(row)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except UnsafeUrl as refused:
            error = f"refused: {refused}"
        except httpx.HTTPError as failure:
            error = (
                f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
            )
        except Exception as failure:  # a bug must not lose the batch's records
            log.exception("delivery %s: unexpected error", row["id"])
            error = f"{type(failure).__name__}: {failure}"
        return webhooks.Outcome(
            delivery_id=row["id"],
            attempt=row["attempts"],
            ok=error is None,
            status_code=status,
            latency_ms=int((time.monotonic() - started) * 1000),
            error=error,
        )

    async def _post(self, row: Row) -> int:
        target = await check(row["url"], allow_private=self.settings.webhook_allow_private)
        url = httpx.URL(row["url"])
        body = body_of(row)
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "host": url.netloc.decode("ascii"),
            **signed_headers(
                row["secret"], encode(Kind.EVENT, row["event_id"]), body, now=time.time()
            ),
        }
        request = self._client().build_request(
            "POST",
            url.copy_with(host=target.address),  # the address that was checked
            content=body.encode(),
            headers=headers,
            extensions={"sni_hostname": target.host} if url.scheme == "https" else {},
        )
        response = await self._client().send(request)
        await response.aclose()
        return response.status_code
