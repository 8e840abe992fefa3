"""``graphql-transport-ws`` (the graphql-ws library's protocol, GraphQL over WebSocket).

Client: ``connection_init``, ``subscribe``, ``complete``, ``ping``, ``pong``.
Server: ``connection_ack``, ``next``, ``error`` (a list of errors), ``complete``, ``pong``.
A second ``subscribe`` with an id in use closes the socket with 4409.
"""

from __future__ import annotations

from punchcard.live.protocols.vocabulary import Vocabulary

TRANSPORT_WS = Vocabulary(
    name="graphql-transport-ws",
    start="subscribe",
    stop="complete",
    result="next",
    ping="ping",
    pong="pong",
    terminate=None,
    keepalive=None,
    rejects_with_message=False,
    duplicate_id_closes=True,
    single_error=False,
    completes_on_stop=False,
)
