"""The API's connection pool: asyncpg's, with a bounded wait for a connection.

asyncpg's ``Pool.fetch`` and friends wait for a free connection as long as it takes: with
the pool exhausted (or PostgreSQL frozen) every request would hang. Here every query
acquires with ``acquire_timeout``; statements are bounded by the server's
``statement_timeout`` and asyncpg's ``command_timeout``, set when the pool is created
(``server/app.py``). Whatever fires surfaces as a retryable ``SERVICE_UNAVAILABLE``
(``UNAVAILABLE`` lists the exceptions that mean it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from punchcard.db.types import Row

# Exceptions that mean "the database cannot answer now; the same request may work later".
UNAVAILABLE: tuple[type[BaseException], ...] = (
    TimeoutError,  # no connection free in time, or command_timeout
    OSError,  # refused, reset
    asyncpg.QueryCanceledError,  # statement_timeout (or an operator's cancel)
    asyncpg.PostgresConnectionError,  # cannot connect now, connection failure
    asyncpg.InterfaceError,  # the connection closed under the query
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, server restarting
    asyncpg.TooManyConnectionsError,
)


class _Queries:
    """fetch, fetchrow, fetchval and execute, each on a connection from ``acquire()``."""

    __slots__ = ()

    def acquire(self) -> Any:
        raise NotImplementedError

    async def fetch(self, query: str, *args: Any) -> list[Row]:
        async with self.acquire() as conn:
            rows: list[Row] = await conn.fetch(query, *args)
            return rows

    async def fetchrow(self, query: str, *args: Any) -> Row | None:
        async with self.acquire() as conn:
            row: Row | None = await conn.fetchrow(query, *args)
            return row

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as conn:
            status: str = await conn.execute(query, *args)
            return status


class OneConnection(_Queries):
    """One connection (in a transaction) behind the pool's interface, for the resolvers of
    one atomic mutation; a lock keeps concurrent loaders from overlapping on it."""

    __slots__ = ("_conn", "_lock")

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._lock:
            yield self._conn


class Pool(_Queries):
    """What the SQL modules call ``db``/``pool``: fetch, fetchrow, fetchval, execute and
    acquire, each waiting at most ``acquire_timeout`` seconds for a connection."""

    __slots__ = ("_pool", "acquire_timeout")

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float) -> None:
        self._pool = pool
        self.acquire_timeout = acquire_timeout

    def acquire(self) -> Any:
        return self._pool.acquire(timeout=self.acquire_timeout)

    async def close(self) -> None:
        await self._pool.close()

    def get_size(self) -> int:
        size: int = self._pool.get_size()
        return size


# What a request's resolvers query: the pool, or an atomic mutation's one connection.
Database = Pool | OneConnection
