"""What a GraphQL-over-WebSocket protocol calls things: one ``Vocabulary`` per protocol."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLFormattedError


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """How one protocol names what every connection does."""

    name: str  # the WebSocket subprotocol
    start: str  # client: start an operation
    stop: str  # client: stop an operation
    result: str  # server: one result of an operation
    ping: str | None  # client ping the server answers (None: the protocol has none)
    pong: str | None  # client pong the server ignores
    terminate: str | None  # client: close the connection
    keepalive: str | None  # server: periodic keep-alive message (None: none)
    rejects_with_message: bool  # send ``connection_error`` before refusing the init
    duplicate_id_closes: bool  # a second start with a live id closes the socket (4409)
    completes_on_stop: bool  # answer ``stop`` with ``complete``
    single_error: bool  # an ``error`` message carries one error, not a list

    def error_payload(self, errors: list[GraphQLFormattedError]) -> Any:
        """An ``error`` message's payload: the list, or (legacy) the first error."""
        if self.single_error:
            return errors[0] if errors else {}
        return errors

    def result_prefix(self, op_id: str) -> bytes:
        """A result frame up to its payload (the payload and ``}`` follow)."""
        return f'{{"id":{json.dumps(op_id)},"type":"{self.result}","payload":'.encode()
