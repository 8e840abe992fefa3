"""Types shared by the SQL modules (asyncpg ships no type hints)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

Row = Mapping[str, Any]


class Executor(Protocol):
    """What the SQL functions need: an asyncpg ``Pool`` or ``Connection``."""

    async def fetch(self, query: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, query: str, *args: Any) -> Row | None: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...

    async def execute(self, query: str, *args: Any) -> str: ...


class Connection(Executor, Protocol):
    """A connection: statements and (nested: savepoints) ``async with conn.transaction()``."""

    def transaction(self) -> Any: ...


class Acquirer(Protocol):
    """A pool: ``async with pool.acquire() as conn`` (asyncpg's, or ``db.pool.Pool``)."""

    def acquire(self) -> Any: ...


class Queryable(Executor, Acquirer, Protocol):
    """A pool that both runs statements and lends connections for transactions."""
