"""punchcard deployed as a user would run it: two API processes (behind a load balancer,
no sticky sessions) and one sweeper, all on one PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from tests.live import PURCHASE_UPDATED, http_client, serve_env, servers, socket, token
from tests.processes import start, stop

CREATE_BOOKING = """
mutation($c: ID!, $p: ID!, $s: DateTime!, $e: DateTime!) {
  createBooking(input: {clientId: $c, purchaseId: $p, startsAt: $s, endsAt: $e}) { id }
}"""


async def test_two_api_processes_and_a_sweeper_share_one_database(
    tmp_path: Path, db_url: str, db: asyncpg.Connection
) -> None:
    env = serve_env(db_url, PUNCHCARD_SWEEP_GRACE_MINUTES="0", PUNCHCARD_SWEEP_POLL_SECONDS="60")
    bearer = token("trainer-deployed")
    sweeper = start(["sweep"], env, tmp_path / "sweep.log")
    try:
        with servers(env, tmp_path, 2) as (api_a, api_b):
            async with (
                http_client(api_a, bearer) as a,
                http_client(api_b, bearer) as b,
                socket(api_b, bearer) as tab,
            ):
                created = await a.data('mutation { createClient(input: {name: "D"}) { id } }')
                client = created["createClient"]["id"]
                sold = await a.data(
                    "mutation($c: ID!) { sellPackage(input: {clientId: $c, sessionsTotal: 3}) "
                    "{ id } }",
                    c=client,
                )
                purchase = sold["sellPackage"]["id"]
                await tab.subscribe("p", PURCHASE_UPDATED, id=purchase)
                assert (await tab.data("p"))["purchaseUpdated"]["revision"] == 0

                # A session used through process B; two past bookings made through
                # process A are the sweeper's (a NOTIFY wakes it long before its poll).
                await b.data(
                    "mutation($p: ID!) { useSession(purchaseId: $p) { revision } }", p=purchase
                )
                now = datetime.now(UTC)
                for hours in (3, 2):
                    begins = now - timedelta(hours=hours)
                    await a.data(
                        CREATE_BOOKING,
                        c=client,
                        p=purchase,
                        s=begins.isoformat(),
                        e=(begins + timedelta(minutes=30)).isoformat(),
                    )
                # each booking holds a session (CALENDAR), then the sweeper uses it: the
                # sweeper may complete the first before the second is made
                updates = [(await tab.data("p"))["purchaseUpdated"] for _ in range(5)]
                assert [u["revision"] for u in updates] == [1, 2, 3, 4, 5]
                sources = [u["entry"]["source"] for u in updates]
                assert sources[0] == "MANUAL" and sources[-1] == "SWEEPER"
                assert sorted(sources[1:]) == ["CALENDAR", "CALENDAR", "SWEEPER", "SWEEPER"]
                assert updates[-1]["purchase"]["sessionsRemaining"] == 0

                # both API processes answer alike, from the one database
                query = "query($p: ID!) { purchase(id: $p) { sessionsUsed revision } }"
                assert await a.data(query, p=purchase) == await b.data(query, p=purchase)
                statuses = await db.fetch("SELECT status, charged FROM bookings")
                assert {(r["status"], r["charged"]) for r in statuses} == {("COMPLETED", True)}
                ledger = await db.fetchval("SELECT sum(delta) FROM session_ledger")
                assert ledger == await db.fetchval("SELECT sum(sessions_used) FROM purchases")
    finally:
        assert stop(sweeper) == 0
