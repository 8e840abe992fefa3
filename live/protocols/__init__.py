"""The two GraphQL-over-WebSocket vocabularies, one module each; ``live/connection.py``
speaks whichever the client chose, through the same ``Vocabulary``."""

from __future__ import annotations

from punchcard.live.protocols.legacy_ws import LEGACY_WS
from punchcard.live.protocols.transport_ws import TRANSPORT_WS
from punchcard.live.protocols.vocabulary import Vocabulary

# In order of preference when a client offers both.
PROTOCOLS: tuple[Vocabulary, ...] = (TRANSPORT_WS, LEGACY_WS)


def choose(offered: list[str]) -> Vocabulary | None:
    return next((p for p in PROTOCOLS if p.name in offered), None)


__all__ = ["LEGACY_WS", "PROTOCOLS", "TRANSPORT_WS", "Vocabulary", "choose"]
