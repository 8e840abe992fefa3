"""The probes of third-party private parts (punchcard/internals.py) pass on the versions
pyproject.toml pins, and each turns its optimisation off, with one log line, when what
it needs is missing."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import strawberry

from punchcard import internals
from punchcard.live.outbox import Outbox
from punchcard.server.app import schema_for
from punchcard.settings import Settings


def test_every_probe_passes_on_the_pinned_versions() -> None:
    verdicts = internals.probe_all(schema_for(Settings()))
    assert verdicts == {
        "strawberry_core": True,
        "strawberry_basic_fields": True,
        "uvicorn_websocket": True,
        "embedded_server_registry": True,
        "embedded_initdb": True,
    }


def test_strawberry_probe_turns_off_without_the_graphql_core_schema(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Unlike:
        execution_context_class = schema_for(Settings()).execution_context_class

    with caplog.at_level(logging.WARNING, "punchcard.internals"):
        assert internals.strawberry_core(Unlike()) is None
    assert [r.message for r in caplog.records] == [
        "running documents directly off: strawberry's Schema._schema is not a GraphQLSchema"
    ]


def test_strawberry_probe_hands_over_what_it_checked() -> None:
    schema = schema_for(Settings())
    core = internals.strawberry_core(schema)
    assert core is not None
    from graphql import parse

    errors = core.validate(core.graphql_schema, parse("{ nope }"), schema.validation_rules)
    assert "Cannot query field 'nope'" in errors[0].message


def test_direct_writes_need_the_uvicorn_protocol_behind_the_raw_send() -> None:
    probe = internals.uvicorn_websocket()
    assert probe is not None

    async def plain_send(message: Any) -> None:
        """An ASGI send that is not uvicorn's: no direct writes."""

    assert probe.protocol(plain_send) is None
    assert Outbox(plain_send, raw_send=plain_send)._direct is None
    assert Outbox(plain_send)._direct is None


def test_direct_writes_refuse_a_protocol_missing_an_attribute() -> None:
    probe = internals.uvicorn_websocket()
    assert probe is not None

    class Hollow(probe.protocol_class):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:  # no conn, transport, writable, close_sent
            pass

        async def send(self, message: Any) -> None:
            pass

    assert probe.protocol(Hollow().send) is None


def test_embedded_registry_probe_matches_the_server_class() -> None:
    registry = internals.embedded_server_registry()
    assert registry is not None
    server_class = internals.embedded_server_class()
    assert registry.instances is server_class._instances


def test_a_schema_is_built_once_per_set_of_limits() -> None:
    default = schema_for(Settings())
    assert schema_for(Settings()) is default
    strict = schema_for(Settings(max_query_depth=3))
    assert strict is not default and isinstance(strict, strawberry.Schema)
    assert strict.limits.max_depth == 3 and default.limits.max_depth == 10


def test_the_planner_reads_plain_fields_and_calls_plain_resolvers_directly() -> None:
    """What gql/planned.py skips strawberry's wrappers for, and what it leaves to them."""
    schema = schema_for(Settings())
    core = internals.strawberry_core(schema)
    assert core is not None
    types = core.graphql_schema.type_map
    booking, purchase = types["Booking"].fields, types["Purchase"].fields
    info = schema.config.info_class
    assert internals.basic_attribute(booking["startsAt"]) == "starts_at"
    assert internals.basic_attribute(booking["client"]) is None  # it has a resolver
    assert internals.direct_resolver(booking["client"], info) is not None
    # Scalar arguments are passed as graphql-core coerced them, under their Python names
    assert internals.direct_resolver(purchase["ledger"], info) is not None
    assert internals._argument_names(
        purchase["ledger"], purchase["ledger"].extensions[internals.STRAWBERRY_DEFINITION]
    ) == {"first": ("first", False), "after": ("after", False)}
    bookings = types["Query"].fields["bookings"]  # from: DateTime!, status: [BookingStatus!]
    assert internals._argument_names(
        bookings, bookings.extensions[internals.STRAWBERRY_DEFINITION]
    ) == {"from": ("from_", False), "to": ("to", False), "status": ("status", True)}
    # An input object is strawberry's to convert
    mutation = types["Mutation"].fields
    assert internals.direct_resolver(mutation["createClient"], info) is None
    assert internals.direct_resolver(booking["startsAt"], info) is None  # no resolver


def test_fields_with_extensions_keep_strawberrys_wrappers() -> None:
    from strawberry.extensions import FieldExtension

    class Shout(FieldExtension):
        def resolve(self, next_: Any, source: Any, info: Any, **kwargs: Any) -> Any:
            return str(next_(source, info, **kwargs)).upper()

    @strawberry.type
    class Query:
        plain: str = strawberry.field(default="x", extensions=[Shout()])

        @strawberry.field(extensions=[Shout()])
        def loud(self, info: strawberry.Info) -> str:
            return "x"

    fields = strawberry.Schema(query=Query)._schema.type_map["Query"].fields
    assert internals.basic_attribute(fields["plain"]) is None
    assert internals.direct_resolver(fields["loud"], strawberry.Info) is None
