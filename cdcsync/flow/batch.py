"""The values that travel through a flow's channels, and where a message sits in its source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cdcsync.events import ChangeEvent

__all__ = ["UNPOSITIONED", "Batch", "Delivery", "Item", "Partition", "WriteResult"]


@dataclass(frozen=True, slots=True)
class Partition:
    """A totally ordered part of a source: positions are kept, fenced and acked per partition.

    A Kafka partition is ``Partition(topic, n)``; a JetStream stream split into partitions is
    ``Partition(stream, n)``; a plain JetStream stream is its only partition,
    ``Partition(stream, 0, sole=True)``. ``sole`` keeps the writer fence of such a stream
    named as it was before partitions existed (see docs/semantics.md). Sources create one
    object per partition and share it between their deliveries.
    """

    stream: str
    index: int = 0
    sole: bool = False

    def __str__(self) -> str:
        return self.stream if self.sole else f"{self.stream}[{self.index}]"


# Core NATS: no stream, no positions; deliveries carry a per-process counter only.
UNPOSITIONED = Partition("", 0, sole=True)


@dataclass(slots=True)
class Delivery:
    """One message as the source received it.

    ``seq`` is its position in ``partition`` (JetStream stream sequence, Kafka offset; for
    core NATS a per-process counter); ``handle`` is whatever the source needs to
    acknowledge it.
    """

    seq: int
    subject: str
    data: bytes
    handle: Any = None
    received: float = 0.0
    partition: Partition = UNPOSITIONED


@dataclass(slots=True)
class Item:
    """A delivery and what decoding made of it: an event, nothing (tombstone), or an error."""

    delivery: Delivery
    event: ChangeEvent | None
    error: str | None = None


@dataclass(slots=True)
class Batch:
    id: int
    items: list[Item]
    created: float = 0.0
    done: set[str] = field(default_factory=set)
    # The highest position of each partition in the batch (filled by the engine).
    last: dict[Partition, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one destination did with one batch."""

    written: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    seconds: float = 0.0
