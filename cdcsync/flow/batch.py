"""The values that travel through a flow's channels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cdcsync.events import ChangeEvent

__all__ = ["Batch", "Delivery", "Item", "WriteResult"]


@dataclass(slots=True)
class Delivery:
    """One message as the source received it.

    ``seq`` is the JetStream stream sequence (for core NATS: a per-process counter);
    ``handle`` is whatever the source needs to acknowledge it (the reply subject).
    """

    seq: int
    subject: str
    data: bytes
    handle: Any = None
    received: float = 0.0


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


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one destination did with one batch."""

    written: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    seconds: float = 0.0
