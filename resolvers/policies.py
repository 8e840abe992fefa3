"""A trainer's settings and a client's details: ``updateTrainer`` and ``updateClient``.

Every input field is optional and only the fields given change (each statement sets only
its own columns, so concurrent updates of different fields keep each other's). An
explicit null clears a field that can be empty (a client's email, phone or zone, the
trainer's ``lateCancelHours``); for the others it is BAD_USER_INPUT.
"""

from __future__ import annotations

from typing import Any

import strawberry

from punchcard.db import clients, trainers
from punchcard.gql.context import Info
from punchcard.gql.ids import Kind, decode
from punchcard.gql.timezones import check_timezone
from punchcard.gql.types import Client, Trainer


@strawberry.input(description="Only the fields given change.")
class UpdateTrainerInput:
    name: str | None = strawberry.UNSET
    timezone: str | None = strawberry.field(
        default=strawberry.UNSET, description="An IANA zone, e.g. Europe/Berlin."
    )
    reminder_hours_before: int | None = strawberry.field(
        default=strawberry.UNSET, description=f"0 to {trainers.MAX_REMINDER_HOURS}; 0: none."
    )
    late_cancel_hours: int | None = strawberry.field(
        default=strawberry.UNSET,
        description=f"0 to {trainers.MAX_LATE_CANCEL_HOURS}; null clears the policy.",
    )


@strawberry.input(description="Only the fields given change; null clears email, phone, zone.")
class UpdateClientInput:
    name: str | None = strawberry.UNSET
    email: str | None = strawberry.UNSET
    phone: str | None = strawberry.UNSET
    timezone: str | None = strawberry.UNSET


def given(values: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The input's fields that were sent (null included), by column name; a zone sent
    must be one the IANA database knows."""
    changes = {name: getattr(values, name) for name in fields}
    changes = {name: value for name, value in changes.items() if value is not strawberry.UNSET}
    if changes.get("timezone") is not None:
        check_timezone(changes["timezone"])
    return changes


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Change the signed-in trainer's settings.")
    async def update_trainer(self, info: Info, input: UpdateTrainerInput) -> Trainer:
        writer = info.context.writer()
        row = await trainers.update_trainer(
            info.context.pool,
            trainer_id=writer.trainer_id,
            changes=given(input, trainers.SETTINGS),
        )
        return Trainer.from_row(row)

    @strawberry.mutation(description="Change a client's details. Errors: NOT_FOUND.")
    async def update_client(
        self, info: Info, id: strawberry.ID, input: UpdateClientInput
    ) -> Client:
        writer = info.context.writer()
        row = await clients.update_client(
            info.context.pool,
            trainer_id=writer.trainer_id,
            client_id=decode(Kind.CLIENT, id),
            changes=given(input, clients.FIELDS),
        )
        return Client.from_row(row)
