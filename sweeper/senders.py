"""Reminder senders: where a due booking reminder goes. Pluggable through ``Sender``.

``LogSender`` (the default) writes one log line. ``WebhookSender`` POSTs JSON to
``PUNCHCARD_REMINDER_WEBHOOK_URL``, signed like GitHub webhooks:
``X-Punchcard-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` under
``PUNCHCARD_REMINDER_WEBHOOK_SECRET``. A send either returns (delivered) or raises
``SendFailed`` (retried later with backoff). Delivery is at least once: every attempt
carries the same ``id`` (also the ``X-Punchcard-Delivery`` header), so a receiver that
records it drops the rare duplicate after a crash between sending and marking it sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from punchcard.db.types import Row
from punchcard.gql.ids import Kind, encode
from punchcard.settings import Settings

log = logging.getLogger("punchcard.reminders")

SIGNATURE_HEADER = "X-Punchcard-Signature"
DELIVERY_HEADER = "X-Punchcard-Delivery"
EVENT = "booking.reminder"


class SendFailed(Exception):
    """The reminder was not delivered; it is retried after a backoff."""


@dataclass(frozen=True, slots=True)
class Reminder:
    booking_id: int
    trainer_id: int
    client_id: int
    client_name: str
    client_email: str | None
    client_phone: str | None
    client_timezone: str | None
    starts_at: datetime
    ends_at: datetime
    remind_at: datetime
    timezone: str
    attempt: int

    @classmethod
    def from_row(cls, row: Row) -> Reminder:
        return cls(
            booking_id=row["booking_id"],
            trainer_id=row["trainer_id"],
            client_id=row["client_id"],
            client_name=row["client_name"],
            client_email=row["client_email"],
            client_phone=row["client_phone"],
            client_timezone=row["client_timezone"],
            starts_at=row["starts_at"],
            ends_at=row["ends_at"],
            remind_at=row["remind_at"],
            timezone=row["timezone"],
            attempt=row["attempts"],
        )

    @property
    def id(self) -> str:
        """The idempotency id: the same on every attempt for this booking's reminder."""
        return f"{encode(Kind.BOOKING, self.booking_id)}-reminder-{int(self.remind_at.timestamp())}"

    def local(self, moment: datetime, zone: str | None = None) -> datetime:
        """``moment`` on the wall clock of ``zone`` (default: the trainer's; UTC if the
        zone is unknown here)."""
        try:
            return moment.astimezone(ZoneInfo(zone or self.timezone))
        except (ZoneInfoNotFoundError, ValueError):
            return moment.astimezone(ZoneInfo("UTC"))

    @property
    def client_zone(self) -> str:
        """The zone the client reads the time in: their own if set, else the trainer's."""
        return self.client_timezone or self.timezone

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": EVENT,
            "attempt": self.attempt,
            "remindAt": self.remind_at.isoformat(),
            "booking": {
                "id": encode(Kind.BOOKING, self.booking_id),
                "startsAt": self.starts_at.isoformat(),
                "endsAt": self.ends_at.isoformat(),
                "startsAtLocal": self.local(self.starts_at).isoformat(),
                "timezone": self.timezone,
            },
            "client": {
                "id": encode(Kind.CLIENT, self.client_id),
                "name": self.client_name,
                "email": self.client_email,
                "phone": self.client_phone,
                # The time as the client reads it: in their own zone when they have one.
                "timezone": self.client_zone,
                "startsAtLocal": self.local(self.starts_at, self.client_zone).isoformat(),
            },
            "trainer": {"id": encode(Kind.TRAINER, self.trainer_id)},
        }


class Sender(Protocol):
    async def send(self, reminder: Reminder) -> None:
        """Deliver ``reminder`` or raise ``SendFailed``."""

    async def aclose(self) -> None: ...


class LogSender:
    """Reminders as log lines: the zero-setup default."""

    async def send(self, reminder: Reminder) -> None:
        log.info(
            "reminder %s: %s at %s (%s), attempt %d",
            reminder.id,
            reminder.client_name,
            reminder.local(reminder.starts_at).isoformat(),
            reminder.timezone,
            reminder.attempt,
        )

    async def aclose(self) -> None:
        pass


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``: ``sha256=<hex digest>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    """POST each reminder as signed JSON; any 2xx is a delivery."""

    def __init__(self, url: str, secret: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.secret = secret
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def send(self, reminder: Reminder) -> None:
        body = json.dumps(reminder.payload(), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "punchcard-sweeper",
            SIGNATURE_HEADER: sign(self.secret, body),
            DELIVERY_HEADER: reminder.id,
        }
        try:
            response = await self._http.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as error:
            raise SendFailed(f"{type(error).__name__}: {error}") from error
        if not response.is_success:
            raise SendFailed(f"HTTP {response.status_code}")

    async def aclose(self) -> None:
        await self._http.aclose()


def sender_from_settings(settings: Settings) -> Sender:
    if not settings.reminder_webhook_url:
        return LogSender()
    if not settings.reminder_webhook_secret:
        raise ValueError("PUNCHCARD_REMINDER_WEBHOOK_URL needs PUNCHCARD_REMINDER_WEBHOOK_SECRET")
    return WebhookSender(settings.reminder_webhook_url, settings.reminder_webhook_secret)
