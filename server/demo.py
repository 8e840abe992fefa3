"""``serve --demo``: a demo trainer with clients, packages and a week of bookings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from punchcard.db import bookings, clients, purchases, trainers

DEMO_SUBJECT = "demo-trainer"
CLIENTS = [
    ("Ada Lovelace", "ada@example.com", 10),
    ("Grace Hopper", "grace@example.com", 5),
    ("Alan Turing", "alan@example.com", 20),
    ("Katherine Johnson", "katherine@example.com", 8),
    ("Edsger Dijkstra", None, 1),
]


async def seed(database_url: str) -> str:
    """Create the demo data once (a second run finds it and adds nothing)."""
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        trainer = await trainers.provision(
            conn, subject=DEMO_SUBJECT, name="Demo Trainer", email="demo@example.com"
        )
        tid = trainer["id"]
        if await conn.fetchval("SELECT count(*) FROM clients WHERE trainer_id = $1", tid):
            return DEMO_SUBJECT
        today = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
        for index, (name, email, sessions) in enumerate(CLIENTS):
            client = await clients.create_client(
                conn, trainer_id=tid, name=name, email=email, phone=None, timezone=None
            )
            package = await purchases.sell_package(
                conn,
                trainer_id=tid,
                client_id=client["id"],
                sessions_total=sessions,
                expires_at=today + timedelta(days=90),
                offer_id=None,
            )
            for day in range(-3, 4):  # a week around today, one slot per client per day
                starts = today + timedelta(days=day, hours=index)
                await bookings.create_booking(
                    conn,
                    trainer_id=tid,
                    client_id=client["id"],
                    purchase_id=package["id"] if day % 2 == 0 else None,
                    auto_assign=day % 2 != 0,
                    # small packages fill up: the named ones book anyway, flagged overbooked
                    allow_overbook=day % 2 == 0,
                    starts_at=starts,
                    ends_at=starts + timedelta(hours=1),
                )
        return DEMO_SUBJECT
    finally:
        await conn.close()
