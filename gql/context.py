"""The per-request context: who is asking, the pool, the DataLoaders.

``build_context`` is the only way a ``Context`` is made: for an HTTP request, an
operation sent over a WebSocket and a live-update event alike. What the context holds
is fixed when it is built; resolvers read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from strawberry.types import Info as StrawberryInfo

from punchcard.db.errors import Code, DomainError, unavailable
from punchcard.db.pool import UNAVAILABLE, Database, Pool, TenantPool
from punchcard.gql.auth import Authenticator, Principal
from punchcard.gql.loaders import Loaders
from punchcard.settings import Settings

# Who is asking: a principal, the refusal of the credential sent, or None (none sent).
Caller = Principal | DomainError | None


@dataclass(frozen=True, slots=True)
class Services:
    """What every request shares, opened by the app's lifespan."""

    pool: TenantPool  # as punchcard_api: each request sees its trainer's rows only
    internal: Pool  # as punchcard_worker: across trainers (live feed, key checks)
    settings: Settings
    authenticator: Authenticator


class Context:
    __slots__ = ("_caller", "_loaders", "pool", "settings")

    def __init__(self, services: Services, caller: Caller, db: Database | None = None) -> None:
        trainer_id = caller.trainer_id if isinstance(caller, Principal) else None
        self.pool = db if db is not None else services.pool.scoped(trainer_id)
        self.settings = services.settings
        self._caller = caller
        self._loaders: Loaders | None = None

    @property
    def principal(self) -> Principal:
        """The caller; raises UNAUTHENTICATED for a missing or bad credential."""
        caller = self._caller
        if isinstance(caller, Principal):
            return caller
        if caller is not None:
            raise caller
        raise DomainError(Code.UNAUTHENTICATED, "send 'Authorization: Bearer <token>'")

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


def build_context(services: Services, caller: Caller, db: Database | None = None) -> Context:
    """The context of one request (or one live-update event); its queries see the
    caller's rows only, on ``db`` when given (an atomic mutation's connection)."""
    return Context(services, caller, db)


async def authenticate(services: Services, authorization: str | None) -> Caller:
    """The caller behind an ``Authorization`` value; a bad credential is kept to be raised
    on use, so it surfaces as a GraphQL error (UNAUTHENTICATED) like any other."""
    try:
        return await services.authenticator.authenticate(authorization)
    except DomainError as error:
        return error
    except UNAVAILABLE as error:  # provisioning or an API key lookup could not run
        return unavailable(error)


Info = StrawberryInfo[Context, None]
