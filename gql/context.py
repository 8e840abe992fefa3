"""The per-request context: who is asking, the pool, the DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
from strawberry.types import Info as StrawberryInfo

from db.errors import Code, DomainError
from gql.auth import Authenticator, Principal
from gql.loaders import Loaders
from gql.settings import Settings


@dataclass(slots=True)
class Context:
    pool: asyncpg.Pool
    settings: Settings
    _principal: Principal | None = None
    _auth_error: DomainError | None = None
    _loaders: Loaders | None = field(default=None, repr=False)

    @classmethod
    async def build(
        cls,
        pool: asyncpg.Pool,
        settings: Settings,
        authenticator: Authenticator,
        authorization: str | None,
    ) -> Context:
        """The context of one request; a bad credential is kept to be raised on use, so
        it surfaces as a GraphQL error (UNAUTHENTICATED) like any other."""
        context = cls(pool=pool, settings=settings)
        try:
            context._principal = await authenticator.authenticate(authorization)
        except DomainError as error:
            context._auth_error = error
        return context

    @property
    def principal(self) -> Principal:
        """The caller; raises UNAUTHENTICATED for a missing or bad credential."""
        if self._auth_error is not None:
            raise self._auth_error
        if self._principal is None:
            raise DomainError(Code.UNAUTHENTICATED, "send 'Authorization: Bearer <token>'")
        return self._principal

    @property
    def trainer_id(self) -> int:
        return self.principal.trainer_id

    def writer(self) -> Principal:
        """The caller, who must be allowed to change data (API keys need WRITE scope)."""
        principal = self.principal
        if not principal.can_write:
            raise DomainError(Code.FORBIDDEN, "this API key has read-only scope")
        return principal

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            self._loaders = Loaders(self.pool, self.trainer_id)
        return self._loaders


Info = StrawberryInfo[Context, None]
