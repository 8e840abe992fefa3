"""The contract between subscription resolvers and the hub: a resolver returns a
:class:`LiveSource` wrapping a :class:`Stream`; the hub (``live/hub.py``) serves it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from punchcard.db.changes import Changes
from punchcard.db.errors import Code, DomainError
from punchcard.db.types import Executor

T = TypeVar("T")


@dataclass(slots=True)
class Sync:
    """One read's answer: the group's new position (``mark``, which has a ``snapshot``),
    what its subscribers missed since the old one, and per resume point asked (in order)
    the messages a joiner starting there gets."""

    mark: Any
    missed: list[Any]
    answers: list[list[Any]]


class Stream(Protocol):
    """What one subscription field streams (implemented in ``live/streams.py``).

    Messages are root values for the subscription field; ``mark``s are positions."""

    latest_value: ClassVar[bool]  # every message is the whole state: a backlog may skip ahead
    reads_purchases: ClassVar[bool]  # which changes it needs from the feed
    reads_bookings: ClassVar[bool]

    @property
    def trainer_id(self) -> int: ...

    @property
    def resume(self) -> Any:
        """Where the subscriber asked to start (hashable); None for the current state."""

    async def sync(self, db: Executor, mark: Any, resumes: Sequence[Any]) -> Sync:
        """Read the current state once: the group's news since ``mark`` (None: a new group)
        and, for each resume point, what a subscriber starting there must be sent."""

    def cut(self, feed: Changes, mark: Any) -> tuple[list[Any], Any]:
        """The messages in a feed batch for a group at ``mark``, and its new mark."""

    def resume_at(self, mark: Any) -> Any:
        """The resume point of a subscriber whose last message brought it to ``mark``."""


class LiveSource(AsyncIterator[T]):
    """What a subscription resolver returns: the stream, for the hub to serve.

    Subscriptions are served over the WebSocket endpoint, which groups subscribers;
    iterating this directly (strawberry's own per-subscriber execution) is refused."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def __aiter__(self) -> LiveSource[T]:
        return self

    async def __anext__(self) -> T:
        raise DomainError(
            Code.BAD_USER_INPUT,
            "subscribe over a WebSocket at /graphql (graphql-transport-ws or graphql-ws)",
        )
