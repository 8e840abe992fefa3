"""The baseline: a bare Starlette + asyncpg endpoint doing the same guarded UPDATE,
ledger insert and NOTIFY as ``useSession`` (the very same SQL), with the same pool.

No GraphQL, no auth, no error mapping: what punchcard costs on top of the database
work is the difference between the two.

    uvicorn benchmarks.baseline_app:app --loop uvloop --http httptools
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from punchcard.db.purchases import USE_SESSION
from punchcard.server.app import create_pool
from punchcard.settings import Settings

settings = Settings.from_env()
TRAINER_ID = 1


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # As the owner (a superuser on the embedded server): no row-level security, the bare
    # database work punchcard's API role is compared with.
    app.state.pool = await create_pool(settings, url=settings.database_url)
    yield
    await app.state.pool.close()


async def use(request: Request) -> Response:
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


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[Route("/use", use, methods=["POST"]), Route("/healthz", health)], lifespan=lifespan
)
