"""API keys for integrations: ``apiKeys``, ``createApiKey``, ``revokeApiKey``."""

from __future__ import annotations

import strawberry

from punchcard.db import checks, trainers
from punchcard.db.errors import Code, DomainError, bad_input, not_found
from punchcard.gql.auth import Principal, new_api_key_secret
from punchcard.gql.context import Info
from punchcard.gql.ids import Kind, decode
from punchcard.gql.types import ApiKey, ApiKeyScope, CreatedApiKey


def _signed_in_trainer(info: Info) -> Principal:
    """Keys are managed by the trainer in person: an API key cannot mint or revoke keys."""
    principal = info.context.principal
    if principal.via_api_key:
        raise DomainError(Code.FORBIDDEN, "API keys are managed with a trainer's token")
    return principal


@strawberry.type
class Query:
    @strawberry.field
    async def api_keys(self, info: Info) -> list[ApiKey]:
        principal = _signed_in_trainer(info)
        rows = await trainers.api_keys_of(info.context.pool, principal.trainer_id)
        return [ApiKey.from_row(row) for row in rows]


@strawberry.type
class Mutation:
    @strawberry.mutation(description="A key for an integration; the secret is shown only here.")
    async def create_api_key(
        self, info: Info, name: str, scopes: list[ApiKeyScope] | None = None
    ) -> CreatedApiKey:
        principal = _signed_in_trainer(info)
        name = checks.text("name", name.strip(), min_length=1, max_length=100)
        if scopes is not None and not scopes:
            raise bad_input("scopes must name at least one of READ, WRITE")
        chosen = sorted({s.value for s in scopes}) if scopes else ["READ", "WRITE"]
        secret = new_api_key_secret()
        row = await trainers.create_api_key(
            info.context.pool,
            trainer_id=principal.trainer_id,
            name=name,
            secret=secret,
            scopes=chosen,
        )
        return CreatedApiKey(secret=secret, api_key=ApiKey.from_row(row))

    @strawberry.mutation
    async def revoke_api_key(self, info: Info, id: strawberry.ID) -> ApiKey:
        principal = _signed_in_trainer(info)
        row = await trainers.revoke_api_key(
            info.context.pool, trainer_id=principal.trainer_id, key_id=decode(Kind.API_KEY, id)
        )
        if row is None:
            raise not_found("API key")
        return ApiKey.from_row(row)
