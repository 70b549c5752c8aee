"""The public API for sources and destinations: everything a plugin needs, and nothing else.

cdcsync's own ``nats``, ``kafka``, ``postgres`` and ``mysql`` components import only from
this package (and their own modules), exactly as a third-party package would; a test
enforces it. The engine (batching, fan-out, acknowledgements, retries, fences, standby,
statistics) calls components only through the two protocols below. See docs/plugins.md.

Positions are per :class:`Partition`: a Kafka partition, one partition of a partitioned
JetStream stream, or a plain JetStream stream (its only partition). A destination keeps, in
the same transaction as the rows, the last applied position of every partition it writes,
and holds a writer fence per partition, so that each partition has one writer at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import trio

from cdcsync.bridge import aio, call_trio, open_bridge
from cdcsync.config import (
    CheckedStr,
    EnvBool,
    EnvEnum,
    EnvInt,
    EnvStr,
    described,
    redact_url,
    scrub,
    url_secrets,
    userinfo_problem,
)
from cdcsync.errors import (
    CdcSyncError,
    ConfigError,
    DecodeError,
    FatalSinkError,
    FatalSourceError,
    RetryableSinkError,
    SinkError,
    SourceError,
)
from cdcsync.events import UNAVAILABLE, ChangeEvent, Op
from cdcsync.flow.batch import UNPOSITIONED, Batch, Delivery, Item, Partition, WriteResult
from cdcsync.registry import ComponentSpec
from cdcsync.sinks.reasons import ReasonGroup, Reasons
from cdcsync.sinks.reasons import group as group_reasons
from cdcsync.stats import instance_id

__all__ = [
    "UNAVAILABLE",
    "UNPOSITIONED",
    "Batch",
    "CdcSyncError",
    "ChangeEvent",
    "CheckedStr",
    "ComponentSpec",
    "ConfigError",
    "Coordinator",
    "DeadLetter",
    "DecodeError",
    "Decoder",
    "Delivery",
    "Destination",
    "EnvBool",
    "EnvEnum",
    "EnvInt",
    "EnvStr",
    "FatalSinkError",
    "FatalSourceError",
    "Item",
    "Op",
    "Partition",
    "PartitionState",
    "Partitioning",
    "ReasonGroup",
    "Reasons",
    "ReplayResult",
    "RetryableSinkError",
    "SinkError",
    "Source",
    "SourceError",
    "WriteResult",
    "aio",
    "call_trio",
    "described",
    "group_reasons",
    "instance_id",
    "open_bridge",
    "redact_url",
    "scrub",
    "url_secrets",
    "userinfo_problem",
]


@dataclass(frozen=True)
class DeadLetter:
    """A message a destination could not apply, as it stored it with the reason."""

    id: int
    flow: str
    destination: str
    subject: str | None
    stream_seq: int | None
    partition: int | None
    error: str
    table_name: str | None
    failed_at: dt.datetime
    payload: bytes
    reason: str = ""  # ``error`` with what varies per event masked (cdcsync.sinks.reasons)


@dataclass(frozen=True)
class ReplayResult:
    applied: int
    still_failing: int
    missing: tuple[int, ...] = ()  # ids asked for that the destination does not hold


# Turns stored deliveries back into items with the flow's format (for dead-letter replay).
Decoder = Callable[[list[Delivery]], list[Item]]


class Coordinator(Protocol):
    """What the engine offers a running source: where each partition starts, and hand-offs.

    A source calls :meth:`assigned` before it reads a partition and :meth:`revoked` before it
    stops reading one it will not own any more (Kafka rebalances, partition ownership).
    """

    async def assigned(self, partitions: Mapping[Partition, str]) -> dict[Partition, int | None]:
        """Take every destination's writer fence for ``partitions`` and read their checkpoints.

        ``partitions`` maps each partition to its epoch (e.g. the stream's creation time: a
        checkpoint of another epoch is for a stream that no longer exists). Waits while
        another instance holds a fence (standby). Returns, per partition, the position to
        start after, or None to start where the source's configuration says.
        """
        ...

    async def revoked(self, partitions: Mapping[Partition, int | None]) -> None:
        """Hand ``partitions`` off cleanly: waits until everything delivered of them (up to the
        given last position sent, None: nothing sent) is committed by every destination and
        acknowledged, then releases their fences. Keep the flow's channel moving meanwhile."""
        ...


@dataclass(frozen=True)
class PartitionState:
    """A partition as the instance that runs it reports it (API and dashboard)."""

    owner: str  # the instance (:func:`instance_id`)
    status: str  # running, degraded, paused, failed (the flow statuses)
    position: int | None = None  # the lowest checkpoint over the destinations
    lag: int | None = None  # messages not yet delivered or not yet acknowledged


class Partitioning(Protocol):
    """Optional capability of a source split into partitions that several instances share.

    A source offers it from ``partitioning()`` (returning None when its configuration is
    not partitioned). The engine then runs every partition this instance should own as its
    own pipeline, with its own source (:meth:`source`) and its own destination instances (one
    writer connection per partition and destination), and the single-partition contract of
    :class:`Source` and :class:`Coordinator` holds for each of them. Who owns what is only a
    wish: the destinations' writer fences decide, so two instances that briefly disagree
    cannot both write a partition (the second waits as a standby).
    """

    instance: str  # this instance's name among the members
    partitions: Sequence[Partition]  # every partition of the flow, in order

    async def run(
        self,
        wanted: Callable[[frozenset[Partition]], None],
        report: Callable[[], Mapping[Partition, PartitionState]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Take part in the membership until cancelled.

        Calls ``wanted`` (never blocking) with the partitions this instance should own, each
        time that changes; publishes ``report()`` (the partitions it runs) to the others.
        Raises only what retrying cannot cure (:class:`FatalSourceError`); the rest (a
        broker away for a while) it rides out, and gives its partitions up (``wanted`` with
        nothing) when it cannot tell the others it is alive.
        """
        ...

    async def leave(self) -> None:
        """Leave at once (the instance is stopping), so the others need not wait for the
        membership to expire before they take over."""
        ...

    def view(self) -> Mapping[Partition, PartitionState]:
        """Every partition that some other instance reported running, as last reported."""
        ...

    def source(self, partition: Partition) -> Source:
        """A new source that reads only ``partition``."""
        ...


@runtime_checkable
class Source(Protocol):
    """Delivers a flow's messages, in order within each partition, into a Trio channel."""

    flow: str
    options: Any  # has ``format`` and ``max_message_bytes``

    @property
    def positioned(self) -> bool:
        """True when deliveries have positions that are checkpointed and acknowledged
        (exactly-once); False for at-most-once sources (core NATS)."""
        ...

    @property
    def from_start(self) -> bool:
        """True when a partition without any checkpoint is read from its beginning."""
        ...

    @property
    def keepalive_s(self) -> float | None:
        """How often unacknowledged in-flight deliveries need :meth:`in_progress`, or None."""
        ...

    def channel_size(self) -> int:
        """Deliveries that may be in flight at once (the source's own protocol bound)."""
        ...

    async def connect(self) -> None: ...

    async def run(
        self,
        coordinator: Coordinator,
        send: trio.MemorySendChannel[Delivery],
        stop: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver until ``stop`` is set, then close ``send`` (the flow drains and acks what
        was sent). Raise :class:`SourceError` on anything that could skip a message; return
        early (without ``stop``) when the assignment changed and the engine should run again.
        """
        ...

    async def ack(self, deliveries: list[Delivery]) -> None:
        """Every destination committed these (in order within each partition)."""
        ...

    async def in_progress(self, deliveries: list[Delivery]) -> None: ...

    async def pending(self) -> int | None:
        """Messages not yet delivered or not yet acknowledged, if the source can tell."""
        ...

    async def problems(self) -> list[str]:
        """What stops this source from working, in plain words (``cdcsync check --connect``)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Destination(Protocol):
    """Applies batches exactly once per partition position, as the only writer."""

    flow: str
    name: str

    async def connect(self) -> None:
        """Open the connection (no fence yet). RetryableSinkError: try again later;
        FatalSinkError: the configuration cannot work (e.g. a refused login)."""
        ...

    async def claim(
        self, partitions: Mapping[Partition, str]
    ) -> dict[Partition, int | None] | None:
        """Take the writer fence of every partition (all or none) and return their checkpoints,
        or None when another instance holds one (the engine waits as a standby and retries).
        :data:`UNPOSITIONED` fences the (flow, destination) pair and has no checkpoint."""
        ...

    async def release(self, partitions: Collection[Partition]) -> None:
        """Give up the fences of ``partitions`` (after they were drained)."""
        ...

    async def write(self, batch: Batch) -> WriteResult:
        """Apply a batch atomically with its dead letters and each partition's new position;
        skip items at or below their partition's checkpoint. RetryableSinkError: the same
        batch is retried after :meth:`connect` and :meth:`claim` again.

        Optional: ``prepare(batch)`` (a plain function, no I/O) returning anything, which the
        engine then passes to ``write(batch, prepared)``. The engine calls it for the next
        batch while the current one is still being written, so the CPU half of a write
        overlaps the database's half; ``write(batch)`` alone must still work (a retry calls
        it so). docs/semantics.md, "Batches in flight", says why the order holds.
        """
        ...

    def checkpoints(self) -> Mapping[Partition, int]:
        """The last applied position of each partition this instance knows of."""
        ...

    async def problems(self) -> list[str]: ...

    async def close(self) -> None: ...

    def abort(self) -> None:
        """Drop the connection at once (and with it every fence)."""
        ...

    async def dead_letters(
        self,
        *,
        limit: int,
        ids: Sequence[int] | None = None,
        offset: int = 0,
        reason: str | None = None,
    ) -> list[DeadLetter]:
        """This (flow, destination)'s dead letters, the last to fail first (operator tools,
        API): ``limit`` after skipping ``offset``; only those of ``reason`` when given."""
        ...

    async def dead_letter_reasons(self, *, limit: int = 1000) -> Reasons:
        """The newest dead letters grouped by reason, commonest first."""
        ...

    async def replay(self, decode: Decoder, *, ids: Sequence[int] | None = None) -> ReplayResult:
        """Apply dead letters again (all, or ``ids``) in the order they failed; those applied
        leave the table, the others get their new reason. No checkpoint moves."""
        ...

    async def purge(self, before: dt.datetime) -> int: ...
