"""Opaque, typed IDs: ``pur_42`` is purchase 42. Clients treat them as strings."""

from __future__ import annotations

import re
from enum import StrEnum

from punchcard.db.errors import bad_input, not_found


class Kind(StrEnum):
    TRAINER = "trn"
    CLIENT = "cli"
    OFFER = "ofr"
    PURCHASE = "pur"
    BOOKING = "bkg"
    LEDGER = "led"
    API_KEY = "key"
    EVENT = "evt"
    WEBHOOK_ENDPOINT = "whe"
    WEBHOOK_DELIVERY = "whd"
    WEBHOOK_ATTEMPT = "wha"


NAMES = {
    Kind.TRAINER: "trainer",
    Kind.CLIENT: "client",
    Kind.OFFER: "offer",
    Kind.PURCHASE: "purchase",
    Kind.BOOKING: "booking",
    Kind.LEDGER: "ledger entry",
    Kind.API_KEY: "API key",
    Kind.EVENT: "event",
    Kind.WEBHOOK_ENDPOINT: "webhook endpoint",
    Kind.WEBHOOK_DELIVERY: "webhook delivery",
    Kind.WEBHOOK_ATTEMPT: "webhook attempt",
}

_ID = re.compile(r"([a-z]{3})_([1-9][0-9]{0,17})")


def encode(kind: Kind, value: int) -> str:
    # A StrEnum member is its str: concatenated without the (slow) ``.value`` property.
    return kind + "_" + str(value)


def lookup(kind: Kind, value: str) -> int | None:
    """The row id behind ``value``, or None for a well-formed id of another kind (which
    names no row of this kind: a query answers null). Malformed ids are BAD_USER_INPUT."""
    match = _ID.fullmatch(value)
    if match is None:
        raise bad_input(f"malformed {NAMES[kind]} id {value[:40]!r}")
    return int(match.group(2)) if match.group(1) == kind.value else None


def decode(kind: Kind, value: str) -> int:
    """The row id behind ``value``; a well-formed id of another kind is simply not found."""
    row_id = lookup(kind, value)
    if row_id is None:
        raise not_found(NAMES[kind])
    return row_id
