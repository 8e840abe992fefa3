"""The NOTIFY payload is written and parsed in one place (db/notify.py): what the SQL
writes, the parser reads back; anything else parses to "not ours" without raising."""

from __future__ import annotations

import asyncpg
import pytest

from punchcard.db.notify import BOOKINGS, PURCHASE, Notice, notify_sql


async def test_what_the_sql_writes_the_parser_reads(db: asyncpg.Connection) -> None:
    heard: list[str] = []
    await db.add_listener("punchcard_changes", lambda *args: heard.append(args[3]))
    await db.execute(f"SELECT {notify_sql(trainer='7', kind=PURCHASE, id='42', r='3', l='9')}")
    await db.execute(f"SELECT {notify_sql(trainer='8', kind=BOOKINGS, n='2')}")
    for _ in range(100):
        if len(heard) == 2:
            break
        await db.execute("SELECT 1")  # notifications arrive between statements
    assert [Notice.parse(p) for p in heard] == [Notice(7, "purchase", 42), Notice(8, "bookings")]
    assert len(heard[0]) < 8000


@pytest.mark.parametrize(
    ("payload", "notice"),
    [
        ('{"k": "booking"}', Notice(None, "booking")),
        ('{"t": "7", "k": 3}', Notice(None, None)),
        ('{"t": true}', Notice(None, None)),
        ("[1, 2]", Notice(None, None)),
        ("not json", Notice(None, None)),
        ("", Notice(None, None)),
    ],
)
def test_anything_else_is_not_ours(payload: str, notice: Notice) -> None:
    assert Notice.parse(payload) == notice
