"""The baseline: bare Starlette + asyncpg endpoints doing the database work of
``useSession`` and of the calendar, with the same pool settings.

- ``POST /use {"id": N}``: verifies the Bearer JWT (HS256, ``JWT_SECRET``) and runs the
  same guarded UPDATE, ledger insert and NOTIFY as ``useSession`` (the very same SQL).
- ``POST /calendar``: a month of bookings with each one's client and package, one join,
  rows to dicts, JSON (the range of ``db.bookings.CALENDAR``).

No GraphQL, no error mapping, no row-level security (it connects as the owner): what
punchcard costs on top of the database work is the difference between the two.

    uvicorn benchmarks.baseline_app:app --loop uvloop --http httptools
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from punchcard.db.purchases import USE_SESSION
from punchcard.server.app import create_pool
from punchcard.settings import Settings

settings = Settings.from_env()
TRAINER_ID = 1
MONTH = (datetime(2027, 3, 1, tzinfo=UTC), datetime(2027, 4, 1, tzinfo=UTC))
CALENDAR = """
SELECT b.id, b.starts_at, b.ends_at, b.status, b.charged,
       c.id AS client_id, c.name AS client_name,
       p.id AS purchase_id, p.sessions_total - p.sessions_used AS sessions_remaining,
       p.expires_at
  FROM bookings AS b
  JOIN clients AS c ON c.id = b.client_id
  LEFT JOIN purchases AS p ON p.id = b.purchase_id
 WHERE b.trainer_id = $1 AND b.starts_at < $3 AND b.ends_at > $2
 ORDER BY b.starts_at, b.id
"""


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # As the owner (a superuser on the embedded server): no row-level security, the bare
    # database work punchcard's API role is compared with.
    app.state.pool = await create_pool(settings, url=settings.database_url)
    yield
    await app.state.pool.close()


def _verified(request: Request) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    try:
        jwt.decode(
            token, settings.jwt_secret, algorithms=["HS256"], options={"require": ["sub", "exp"]}
        )
    except jwt.PyJWTError:
        return False
    return True


async def use(request: Request) -> Response:
    if not _verified(request):
        return JSONResponse({"errors": [{"message": "unauthenticated"}]}, status_code=401)
    body = await request.json()
    row = await request.app.state.pool.fetchrow(
        USE_SESSION, int(body["id"]), TRAINER_ID, "MANUAL", "trainer:bench", None, None, ""
    )
    if row["id"] is None:
        return JSONResponse({"errors": [{"message": "no sessions left"}]})
    return JSONResponse(
        {
            "data": {
                "useSession": {
                    "sessionsUsed": row["sessions_used"],
                    "sessionsRemaining": row["sessions_total"] - row["sessions_used"],
                    "revision": row["revision"],
                }
            }
        }
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


async def calendar(request: Request) -> Response:
    if not _verified(request):
        return JSONResponse({"errors": [{"message": "unauthenticated"}]}, status_code=401)
    rows = await request.app.state.pool.fetch(CALENDAR, TRAINER_ID, *MONTH)
    bookings = [
        {
            "id": str(r["id"]),
            "startsAt": _iso(r["starts_at"]),
            "endsAt": _iso(r["ends_at"]),
            "status": r["status"],
            "charged": r["charged"],
            "client": {"id": str(r["client_id"]), "name": r["client_name"]},
            "purchase": None
            if r["purchase_id"] is None
            else {
                "id": str(r["purchase_id"]),
                "sessionsRemaining": r["sessions_remaining"],
                "expiresAt": _iso(r["expires_at"]),
            },
        }
        for r in rows
    ]
    return JSONResponse({"data": {"bookings": bookings}})


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/use", use, methods=["POST"]),
        Route("/calendar", calendar, methods=["POST"]),
        Route("/healthz", health),
    ],
    lifespan=lifespan,
)
