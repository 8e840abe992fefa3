"""The hub: this process's live subscriptions, fanned out from one change feed.

Subscribers are grouped by (trainer, document text, operation name, the variables that
shape events — everything but the resume point). A group executes each event once
against the schema (graphql-core's per-event executor: field selection, aliases,
variables, errors as usual), JSON-encodes it once, and hands the same payload to each
subscriber, which splices it into its protocol envelope (the operation id differs) and
puts the frame in its socket's :class:`~punchcard.live.outbox.Outbox`.

Where events come from: NOTIFY (see ``db/listen.py``) only names the trainer whose
rows changed. The feed loop batches the wake-ups, reads what changed for all of them in
one statement (``db.changes.feed``) and lets each group ``cut`` its news out of it. Every
group remembers its position (a PostgreSQL snapshot, plus the revision for a purchase),
so a lost notification, a dropped LISTEN connection or a restarted PostgreSQL loses
nothing: the next read (after reconnecting, or the periodic poll) starts from there.

Joining (and re-syncing a subscriber that fell behind) goes through the same group:
one read answers every subscriber waiting to join and, in the same snapshot, brings the
group's existing subscribers up to it, so nobody sees a change twice or misses one.

Slow consumers: a stream whose messages carry the whole state (``purchaseUpdated``) keeps
only the newest waiting frame per subscriber (revisions are skipped — visible in the
numbers — only while a socket is backed up). Streams of deltas never drop one silently:
a subscriber whose socket is backed up stops receiving, and once the socket drains it
is re-synced from its last delivered position in one coalesced message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Any

from graphql import ExecutionResult, GraphQLError
from graphql.execution import Executor, create_source_event_stream, execute_subscription_event

from punchcard import metrics
from punchcard.db import changes
from punchcard.db.changes import Changes, Want
from punchcard.db.notify import Notice
from punchcard.db.pool import Pool
from punchcard.gql.auth import Principal
from punchcard.gql.context import Context, Services, build_context
from punchcard.gql.documents import Operation
from punchcard.gql.engine import Engine
from punchcard.gql.results import encode
from punchcard.live.outbox import Outbox, Writer
from punchcard.live.source import LiveSource, Stream
from punchcard.tasks import cancel

log = logging.getLogger(__name__)

Key = tuple[int, str, str | None, str]
FANOUT_SAMPLES = 100_000
BATCH_MIN = 256  # subscribers from which a fan-out is written as one batch


class OperationErrors(Exception):
    """The operation was refused before it started (variables, arguments, not found)."""

    def __init__(self, errors: Sequence[GraphQLError]) -> None:
        super().__init__(errors[0].message if errors else "refused")
        self.errors = list(errors)


def as_graphql_error(error: Exception) -> GraphQLError:
    if isinstance(error, GraphQLError):
        return error
    return GraphQLError(str(error), original_error=error)


class Subscriber:
    """One subscription on one socket: ``prefix + payload + b"}"`` is its frame (the
    prefix is the protocol envelope up to the payload, with its operation id)."""

    __slots__ = ("closed", "error", "group", "lagging", "mark", "outbox", "prefix")

    def __init__(self, group: Group, outbox: Outbox, prefix: bytes) -> None:
        self.group = group
        self.outbox = outbox
        self.prefix = prefix
        self.mark: Any = None  # the group position its last accepted frame brought it to
        self.lagging = False
        self.closed = False
        self.error: Exception | None = None

    def send(self, payload: bytes, mark: Any, *, force: bool = False) -> bool:
        """Hand the frame to the outbox; False when it was not (closed, or lagging)."""
        if self.closed or (self.lagging and not force):
            return False
        outbox = self.outbox
        if not force and outbox.busy and not self.group.stream.latest_value:
            self.lagging = True
            self.group.hub.resync_later(self)
            return False
        if not outbox.put(self, self.prefix + payload + b"}"):
            self.group.hub.conflated += 1
        self.mark = mark
        return True


class Group:
    """Subscribers of one document with the same event-shaping variables."""

    __slots__ = ("executor", "hub", "joining", "key", "lock", "mark", "stream", "subscribers")

    def __init__(self, hub: Hub, key: Key, stream: Stream, executor: Executor[Any]) -> None:
        self.hub = hub
        self.key = key
        self.stream = stream
        self.executor = executor
        self.subscribers: dict[Subscriber, None] = {}
        self.joining: list[tuple[Subscriber, Any]] = []
        self.mark: Any = None
        self.lock = asyncio.Lock()

    async def execute(self, root: Any) -> bytes:
        """Run the document for one event (fresh DataLoaders) and encode it: once per group."""
        executor = self.executor.build_per_event_executor(root)
        executor.context_value = self.hub.context(self.stream.trainer_id)
        result = execute_subscription_event(executor)
        if isawaitable(result):
            result = await result
        self.hub.executions += 1
        return encode(result)

    async def deliver(self, root: Any, mark: Any, exclude: frozenset[Subscriber]) -> None:
        sent = 0
        if self.hub.naive:  # the baseline: what executing per subscriber costs
            for sub in list(self.subscribers):
                if sub not in exclude:
                    sent += sub.send(await self.execute(root), mark)
        else:
            payload = await self.execute(root)
            if len(self.subscribers) >= BATCH_MIN and self.hub.writer is not None:
                sent = self.deliver_batch(payload, mark, exclude)
            else:
                for sub in self.subscribers:
                    if sub not in exclude:
                        sent += sub.send(payload, mark)
        self.hub.frames += sent

    def deliver_batch(self, payload: bytes, mark: Any, exclude: frozenset[Subscriber]) -> int:
        """The same frames, with the writes of every ready socket spread over threads."""
        assert self.hub.writer is not None
        batch = self.hub.writer.batch()
        tail = payload + b"}"
        sent = 0
        for sub in self.subscribers:
            if sub.closed or sub.lagging or sub in exclude:
                continue
            outbox = sub.outbox
            if outbox.batchable:
                batch.add(outbox, sub.prefix + tail)
                sub.mark = mark
                sent += 1
            else:
                sent += sub.send(payload, mark)
        self.hub.batched += batch.write()
        return sent

    async def apply(self, feed: Changes, since: float) -> None:
        """Deliver this group's news from a feed batch (read at ``feed.snapshot``)."""
        try:
            async with self.lock:
                mark = self.mark
                if mark is None or not feed.snapshot.covers(mark.snapshot):
                    return  # not joined yet, or a join already read past this batch
                roots, self.mark = self.stream.cut(feed, mark)
                for root in roots:
                    await self.deliver(root, self.mark, frozenset())
                if roots and self.subscribers:
                    took = time.perf_counter() - since
                    self.hub.fanout.append(took)
                    metrics.fanout_seconds.observe(took)
        except Exception:
            log.exception("live update of %s failed", self.key[2] or "subscription")
        finally:
            self.hub.drop_if_empty(self)

    async def sync(self) -> None:
        """Answer everyone waiting to join (or re-sync) with one read."""
        async with self.lock:
            batch = [(s, r) for s, r in self.joining if not s.closed]
            self.joining = []
            if not batch:
                return
            resumes = list(dict.fromkeys(r for _, r in batch))
            try:
                db = self.hub.services.pool.scoped(self.stream.trainer_id)
                result = await self.stream.sync(db, self.mark, resumes)
            except Exception as error:
                for sub, _ in batch:
                    sub.error = error
                return
            first = self.mark is None
            self.mark = result.mark
            joiners = frozenset(s for s, _ in batch)
            for root in result.missed:
                await self.deliver(root, result.mark, joiners)
            for resume, roots in zip(resumes, result.answers, strict=True):
                subs = [s for s, r in batch if r == resume]
                for root in roots:
                    payload = await self.execute(root)
                    for sub in subs:
                        self.hub.frames += sub.send(payload, result.mark, force=True)
            for sub in joiners:
                if not sub.closed:
                    sub.mark = result.mark
                    sub.lagging = False
                    self.subscribers[sub] = None
            if first:  # changes committed while joining are after this read: look again
                self.hub.nudge(self.stream.trainer_id)


@dataclass
class Hub:
    services: Services
    engine: Engine
    naive: bool = False
    groups: dict[Key, Group] = field(default_factory=dict)
    by_trainer: dict[int, set[Group]] = field(default_factory=dict)
    fanout: deque[float] = field(default_factory=lambda: deque(maxlen=FANOUT_SAMPLES))
    executions: int = 0
    frames: int = 0
    batched: int = 0  # socket writes done by punchcard.live.outbox.Batch
    conflated: int = 0
    resyncs: int = 0
    feed_reads: int = 0
    notifications: int = 0
    _pending: set[int] = field(default_factory=set)
    _everyone: bool = False
    _since: float | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _feed: asyncio.Task[None] | None = None
    writer: Writer | None = None

    # -- lifecycle ------------------------------------------------------------------

    @property
    def pool(self) -> Pool:
        """Where the change feed reads every trainer's changes at once (the worker role)."""
        return self.services.internal

    def start(self) -> None:
        self.writer = Writer(self.services.settings.live_writer_threads)
        self._feed = asyncio.get_running_loop().create_task(self._run_feed(), name="live-feed")

    async def stop(self) -> None:
        await cancel([self._feed, *self._tasks])
        if self.writer is not None:
            self.writer.close()

    def context(self, trainer_id: int) -> Context:
        """An event's context: the trainer's rows, read-only."""
        return build_context(self.services, Principal.reader(trainer_id))

    # -- subscribing ----------------------------------------------------------------

    async def subscribe(
        self,
        operation: Operation,
        variables: dict[str, Any] | None,
        principal: Principal,
        outbox: Outbox,
        prefix: bytes,
    ) -> Subscriber:
        """A subscriber waiting to join its group (``join`` it); OperationErrors if refused."""
        executor = self.engine.subscription(
            operation, variables, self.context(principal.trainer_id)
        )
        if isinstance(executor, list):
            raise OperationErrors(executor)
        source = create_source_event_stream(executor)
        if isawaitable(source):
            source = await source
        if isinstance(source, ExecutionResult):
            raise OperationErrors(source.errors or [])
        if not isinstance(source, LiveSource):
            raise OperationErrors([GraphQLError("not a live subscription")])
        stream = source.stream
        shape = operation.group_variables(variables)
        key = (principal.trainer_id, operation.text, operation.name, shape)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(self, key, stream, executor)
            self.by_trainer.setdefault(principal.trainer_id, set()).add(group)
        sub = Subscriber(group, outbox, prefix)
        group.joining.append((sub, stream.resume))
        return sub

    async def join(self, sub: Subscriber) -> None:
        """Send ``sub`` its first messages and start its live ones; raises what refused it.

        The read runs in its own task: cancelling one joiner never leaves the others of
        its batch (or the group) half done."""
        group = sub.group
        try:
            await asyncio.shield(self._sync(group))
        finally:
            self.drop_if_empty(group)
        if sub.error is not None:
            error, sub.error = sub.error, None
            raise error

    async def _sync(self, group: Group) -> None:
        try:
            await group.sync()
        finally:
            self.drop_if_empty(group)

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub.closed:
            return
        sub.closed = True
        group = sub.group
        group.subscribers.pop(sub, None)
        if any(s is sub for s, _ in group.joining):
            group.joining = [(s, r) for s, r in group.joining if s is not sub]
        self.drop_if_empty(group)

    def drop_if_empty(self, group: Group) -> None:
        if group.subscribers or group.joining or group.lock.locked():
            return
        if self.groups.get(group.key) is group:
            del self.groups[group.key]
            trainer_groups = self.by_trainer.get(group.stream.trainer_id)
            if trainer_groups is not None:
                trainer_groups.discard(group)
                if not trainer_groups:
                    del self.by_trainer[group.stream.trainer_id]

    def resync_later(self, sub: Subscriber) -> None:
        """Re-sync ``sub`` from its last delivered position once its socket drains."""
        self.resyncs += 1
        task = asyncio.get_running_loop().create_task(self._resync(sub))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resync(self, sub: Subscriber) -> None:
        delay = 0.05
        while not sub.closed:
            await sub.outbox.drained()
            if sub.closed:
                return
            group = sub.group
            group.joining.append((sub, group.stream.resume_at(sub.mark)))
            try:
                await self.join(sub)
                return
            except Exception as error:
                log.warning("re-syncing a lagging subscriber failed (%s); retrying", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- the change feed ------------------------------------------------------------

    def notify(self, notice: Notice, pid: int) -> None:
        """A NOTIFY arrived (the listener's callback): wake the feed for its trainer."""
        self.notifications += 1
        trainer = notice.trainer_id
        if trainer is None:
            self._everyone = True  # not ours to parse: look at everything
        else:
            if trainer not in self.by_trainer:
                return
            self._pending.add(trainer)
        self._wakeup()

    def nudge(self, trainer_id: int) -> None:
        self._pending.add(trainer_id)
        self._wakeup()

    def refresh(self) -> None:
        """Re-read every live group's changes (after LISTEN (re)connects, and periodically)."""
        self._everyone = True
        self._wakeup()

    def _wakeup(self) -> None:
        if self._since is None:
            self._since = time.perf_counter()
        self._wake.set()

    async def _run_feed(self) -> None:
        delay = 0.05
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.services.settings.live_poll_seconds)
            except TimeoutError:
                self._everyone = True
            self._wake.clear()
            pending, self._pending = self._pending, set()
            everyone, self._everyone = self._everyone, False
            since, self._since = self._since or time.perf_counter(), None
            trainers = list(self.by_trainer) if everyone else pending & self.by_trainer.keys()
            wants: dict[int, Want] = {}
            groups: list[Group] = []
            for trainer in trainers:
                marked = [g for g in self.by_trainer[trainer] if g.mark is not None]
                if marked:
                    wants[trainer] = Want(
                        lo=min(g.mark.snapshot.xmin for g in marked),
                        purchases=any(g.stream.reads_purchases for g in marked),
                        bookings=any(g.stream.reads_bookings for g in marked),
                    )
                    groups += marked
            if not wants:
                continue
            try:
                feed = await changes.feed(self.pool, wants)
            except Exception as error:
                log.warning("reading the change feed failed (%r); retrying", error)
                self._pending |= wants.keys()
                self._since = since
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                self._wake.set()
                continue
            delay = 0.05
            self.feed_reads += 1
            await asyncio.gather(*(g.apply(feed, since) for g in groups))

    # -- numbers --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        subscribers = sum(len(g.subscribers) for g in self.groups.values())
        return {
            "groups": len(self.groups),
            "subscribers": subscribers,
            "joining": sum(len(g.joining) for g in self.groups.values()),
            "trainers": len(self.by_trainer),
            "hub_tasks": len(self._tasks),
            "executions": self.executions,
            "frames": self.frames,
            "batched": self.batched,
            "conflated": self.conflated,
            "resyncs": self.resyncs,
            "feed_reads": self.feed_reads,
            "notifications": self.notifications,
            "fanout_samples": len(self.fanout),
        }
