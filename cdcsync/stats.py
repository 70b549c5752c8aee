"""Live counters of every flow: the one source for the API, logs and (later) metrics.

Plain attributes updated from Trio tasks (one thread, no locks). Rates are
kept in one-second buckets over the last ten seconds.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BATCH_BUCKETS_S",
    "DestinationStats",
    "ErrorState",
    "FlowStats",
    "Histogram",
    "PartitionStats",
    "Rate",
    "instance_id",
]

_WINDOW = 10
_INSTANCE: list[str] = []


def instance_id() -> str:
    """This process's name among the instances of a deployment: host, pid and a random tag
    (a restarted process is a new instance), with only ``[A-Za-z0-9_-]``."""
    if not _INSTANCE:
        host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())
        _INSTANCE.append(f"{host[:40] or 'host'}-{os.getpid()}-{secrets.token_hex(2)}")
    return _INSTANCE[0]


# Batch write durations, seconds (Prometheus histogram buckets).
BATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Cumulative-bucket histogram, Prometheus style."""

    __slots__ = ("buckets", "count", "counts", "total")

    def __init__(self, buckets: tuple[float, ...] = BATCH_BUCKETS_S) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def reset(self) -> None:
        self.counts = [0] * len(self.buckets)
        self.count = 0
        self.total = 0.0


class Rate:
    """Events per second over the last ten seconds."""

    __slots__ = ("_buckets", "_clock")

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[int, int] = {}

    def add(self, n: int) -> None:
        now = int(self._clock())
        self._buckets[now] = self._buckets.get(now, 0) + n
        if len(self._buckets) > _WINDOW + 2:
            for sec in [s for s in self._buckets if s <= now - _WINDOW]:
                del self._buckets[sec]

    def per_second(self) -> float:
        now = int(self._clock())
        total = sum(n for s, n in self._buckets.items() if now - _WINDOW < s <= now)
        return round(total / _WINDOW, 1)

    def reset(self) -> None:
        self._buckets.clear()


class ErrorState:
    """``last_error`` is the trouble a flow or destination is in now, ``None`` once healthy.

    ``last_error_at`` (seconds since the epoch) stays after recovery: an operator who finds
    everything running still sees that, and when, something went wrong (the logs say what).
    A stale error next to ``running`` would say the opposite of the status.
    """

    last_error: str | None
    last_error_at: float | None

    def record_error(self, error: str) -> None:
        self.last_error = error
        self.last_error_at = round(time.time(), 3)

    def clear_error(self) -> None:
        self.last_error = None


@dataclass
class DestinationStats(ErrorState):
    name: str
    status: str = "starting"
    written: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    batches: int = 0
    failed_batches: int = 0
    retries: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_batch_ms: float | None = None
    checkpoint: int | None = None
    # Requests to the database that writing the batches took (None: the destination does
    # not count them): divided by ``batches``, what a batch costs in round trips.
    round_trips: int | None = None
    rate: Rate = field(default_factory=Rate)
    latency: Histogram = field(default_factory=Histogram)

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "written": self.written,
            "dead_lettered": self.dead_lettered,
            "skipped": self.skipped,
            "batches": self.batches,
            "failed_batches": self.failed_batches,
            "retries": self.retries,
            "round_trips": self.round_trips,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_batch_latency_ms": self.last_batch_ms,
            "events_per_second": self.rate.per_second(),
            "checkpoint": self.checkpoint,
        }

    def reset(self) -> None:
        self.written = self.dead_lettered = self.skipped = 0
        self.batches = self.failed_batches = self.retries = 0
        if self.round_trips is not None:
            self.round_trips = 0
        self.last_error = self.last_error_at = None
        self.rate.reset()
        self.latency.reset()


@dataclass
class FlowStats(ErrorState):
    name: str
    status: str = "starting"
    received: int = 0
    acked: int = 0
    restarts: int = 0
    dropped: int = 0  # core NATS only: shed because the flow could not keep up
    last_error: str | None = None
    last_error_at: float | None = None
    pending: int | None = None
    jetstream: bool = False
    destinations: dict[str, DestinationStats] = field(default_factory=dict)
    rate: Rate = field(default_factory=Rate)

    def destination(self, name: str) -> DestinationStats:
        if name not in self.destinations:
            self.destinations[name] = DestinationStats(name)
        return self.destinations[name]

    def snapshot(self) -> dict[str, Any]:
        dests = [d.snapshot() for d in self.destinations.values()]
        return {
            "name": self.name,
            "status": self.status,
            "received": self.received,
            "acked": self.acked,
            "dropped": self.dropped,
            "written": sum(d["written"] for d in dests),
            "dead_lettered": sum(d["dead_lettered"] for d in dests),
            "failed_batches": sum(d["failed_batches"] for d in dests),
            "retries": sum(d["retries"] for d in dests),
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "events_per_second": self.rate.per_second(),
            "consumer_pending": self.pending,
            "destinations": dests,
        }

    def reset(self) -> None:
        self.received = self.acked = self.restarts = self.dropped = 0
        self.last_error = self.last_error_at = None
        self.rate.reset()
        for d in self.destinations.values():
            d.reset()


# --- one partition of a flow ---------------------------------------------------------------
#
# A partitioned flow runs each partition it owns as its own pipeline with its own statistics
# (what the stages update, unchanged). Their counters also add up, as they change, into the
# flow's statistics, so that everything reading a flow's figures (API, metrics, dashboard)
# sees the flow's totals without knowing about partitions.

_FLOW_COUNTERS = frozenset({"received", "acked", "restarts", "dropped"})
_DEST_COUNTERS = frozenset(
    {"written", "dead_lettered", "skipped", "batches", "failed_batches", "retries", "round_trips"}
)


class _TeeRate(Rate):
    __slots__ = ("_parent",)

    def __init__(self, parent: Rate) -> None:
        super().__init__()
        self._parent = parent

    def add(self, n: int) -> None:
        super().add(n)
        self._parent.add(n)


class _TeeHistogram(Histogram):
    __slots__ = ("_parent",)

    def __init__(self, parent: Histogram) -> None:
        super().__init__(parent.buckets)
        self._parent = parent

    def observe(self, value: float) -> None:
        super().observe(value)
        self._parent.observe(value)


def _tee(obj: Any, name: str, value: Any, counters: frozenset[str]) -> None:
    """Set ``name``; a counter's increase also goes to ``obj.parent`` (None counts as 0:
    ``round_trips`` is None until a destination that counts them wrote)."""
    parent = obj.__dict__.get("parent")
    if parent is not None and name in counters and value is not None:
        grown = value - (getattr(obj, name) or 0)
        object.__setattr__(parent, name, (getattr(parent, name) or 0) + grown)
    object.__setattr__(obj, name, value)
    changed = obj.__dict__.get("on_change")
    if changed is not None and name in ("status", "pending", "checkpoint", "last_error"):
        changed()


@dataclass
class _PartitionDestinationStats(DestinationStats):
    parent: DestinationStats | None = None
    on_change: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.parent is not None:
            self.rate = _TeeRate(self.parent.rate)
            self.latency = _TeeHistogram(self.parent.latency)

    def __setattr__(self, name: str, value: Any) -> None:
        _tee(self, name, value, _DEST_COUNTERS)
        if name == "last_batch_ms" and self.parent is not None:
            self.parent.last_batch_ms = value

    def record_error(self, error: str) -> None:
        super().record_error(error)
        if self.parent is not None:
            self.parent.record_error(error)


@dataclass
class PartitionStats(FlowStats):
    """The statistics of one partition's pipeline; counters add up into ``parent``'s."""

    parent: FlowStats | None = None
    index: int = 0
    on_change: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.parent is not None:
            self.rate = _TeeRate(self.parent.rate)

    def __setattr__(self, name: str, value: Any) -> None:
        _tee(self, name, value, _FLOW_COUNTERS)

    def destination(self, name: str) -> DestinationStats:
        if name not in self.destinations:
            parent = self.parent.destination(name) if self.parent is not None else None
            self.destinations[name] = _PartitionDestinationStats(
                name, parent=parent, on_change=self.on_change
            )
        return self.destinations[name]

    def record_error(self, error: str) -> None:
        super().record_error(error)
        if self.parent is not None:
            self.parent.record_error(error)

    @property
    def position(self) -> int | None:
        """The partition's lowest checkpoint over the destinations (None: one has none)."""
        found = [d.checkpoint for d in self.destinations.values()]
        if not found or any(c is None for c in found):
            return None
        return min(c for c in found if c is not None)
