"""``graphql-ws``, the legacy subscriptions-transport-ws protocol (Apollo's older clients).

Client: ``connection_init``, ``start``, ``stop``, ``connection_terminate``.
Server: ``connection_ack``, ``connection_error`` (before refusing), ``ka`` (keep-alive,
after the ack and periodically), ``data``, ``error`` (one error), ``complete`` (also in
answer to ``stop``). A second ``start`` with an id in use replaces that operation.
"""

from __future__ import annotations

from punchcard.live.protocols.vocabulary import Vocabulary

LEGACY_WS = Vocabulary(
    name="graphql-ws",
    start="start",
    stop="stop",
    result="data",
    ping=None,
    pong=None,
    terminate="connection_terminate",
    keepalive="ka",
    rejects_with_message=True,
    duplicate_id_closes=False,
    single_error=True,
    completes_on_stop=True,
)
