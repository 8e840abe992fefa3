"""The API's connection pool: asyncpg's, with a bounded wait for a connection.

asyncpg's ``Pool.fetch`` and friends wait for a free connection as long as it takes: with
the pool exhausted (or PostgreSQL frozen) every request would hang. Here every query
acquires with ``acquire_timeout``; statements are bounded by the server's
``statement_timeout`` and asyncpg's ``command_timeout``, set when the pool is created
(``server/app.py``). Whatever fires surfaces as a retryable ``SERVICE_UNAVAILABLE``
(``UNAVAILABLE`` lists the exceptions that mean it).

The API's pool is a ``TenantPool``: it connects as ``punchcard_api``, whose row-level
security policies (migration 0004) show only the rows of the trainer in the
connection's ``app.trainer_id``. Every checkout names its trainer (``scoped``), and a
connection that last served someone else is switched first, one ``set_config`` round
trip; a connection already serving that trainer is not (the common case for a trainer's
burst of requests, and the hot path stays one round trip then). An unscoped checkout
gets ``app.trainer_id`` cleared: no rows. The setting lives for the session rather than
one transaction because a transaction would cost BEGIN and COMMIT round trips on every
single-statement request; what matters is that no connection is ever handed out
without being set for its caller, and ``acquire_as`` is the only way one is.
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


class ConnectionDone(RuntimeError):
    """A query on an atomic mutation's connection after its transaction ended."""


class OneConnection(_Queries):
    """One connection (in a transaction) behind the pool's interface, for the resolvers of
    one atomic mutation; a lock keeps concurrent loaders from overlapping on it.

    ``close`` waits for the query in flight and refuses every later one: when a field
    fails, graphql-core answers without waiting for its siblings, whose loaders may still
    query. They must not reach the connection once it is back in the pool, where it may
    already serve another request (and another trainer)."""

    __slots__ = ("_closed", "_conn", "_lock")

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self._closed = False

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._lock:
            if self._closed:
                raise ConnectionDone("this mutation's transaction has ended")
            yield self._conn

    async def close(self) -> None:
        async with self._lock:
            self._closed = True


class _Unknown:
    """What a connection's trainer is when nobody knows (new, or a switch was cut short)."""


UNKNOWN = _Unknown()
SCOPE_SQL = "SELECT set_config('app.trainer_id', $1, false)"


class TenantConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg is untyped
    """An asyncpg connection that remembers which trainer it is scoped to."""

    __slots__ = ("_trainer",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trainer: int | _Unknown | None = UNKNOWN

    async def scope_to(self, trainer_id: int | None) -> None:
        """Set ``app.trainer_id`` (None: nobody) unless it is set to that already."""
        if self._trainer == trainer_id:
            return
        self._trainer = UNKNOWN  # until PostgreSQL confirms: a cancel must not lie later
        await self.execute(SCOPE_SQL, "" if trainer_id is None else str(trainer_id))
        self._trainer = trainer_id


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

    def in_use(self) -> int:
        """Connections checked out now (open minus idle)."""
        busy: int = self._pool.get_size() - self._pool.get_idle_size()
        return busy


class TenantPool(Pool):
    """The API's pool (``connection_class=TenantConnection``): every checkout is scoped."""

    __slots__ = ()

    def acquire(self) -> Any:
        return self.acquire_as(None)

    @contextlib.asynccontextmanager
    async def acquire_as(self, trainer_id: int | None) -> AsyncIterator[asyncpg.Connection]:
        async with self._pool.acquire(timeout=self.acquire_timeout) as conn:
            await conn.scope_to(trainer_id)
            yield conn

    def scoped(self, trainer_id: int | None) -> TrainerScope:
        return TrainerScope(self, trainer_id)


class TrainerScope(_Queries):
    """The pool as one trainer sees it: what a request's resolvers query."""

    __slots__ = ("_pool", "trainer_id")

    def __init__(self, pool: TenantPool, trainer_id: int | None) -> None:
        self._pool = pool
        self.trainer_id = trainer_id

    def acquire(self) -> Any:
        return self._pool.acquire_as(self.trainer_id)


# What a request's resolvers query: one trainer's view of the pool, or an atomic
# mutation's one connection (scoped when it was acquired).
Database = TrainerScope | OneConnection
