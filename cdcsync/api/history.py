"""The last five minutes of per-second snapshots, for charts that do not start empty.

One sampler task takes the snapshot that ``/api/stream`` sends, once a second, for
every client at once: the stream sends the sampler's snapshots and ``/api/history``
returns the ring of them, so the same snapshot (same ``ts``) appears in both and the
dashboard can drop duplicates by timestamp. The ring keeps only what the charts draw.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import trio

__all__ = ["CAPACITY", "INTERVAL_S", "Sampler", "chart_fields"]

INTERVAL_S = 1
CAPACITY = 300  # five minutes at one snapshot per second

_FLOW_KEYS = (
    "name",
    "status",
    "received",
    "acked",
    "written",
    "dead_lettered",
    "dropped",
    "retries",
    "consumer_pending",
)


def chart_fields(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The part of a snapshot the dashboard's charts use (about a quarter of its size)."""
    out: dict[str, Any] = {
        "ts": snapshot["ts"],
        "flows": [
            {
                **{k: f.get(k) for k in _FLOW_KEYS},
                "destinations": [
                    {"name": d["name"], "last_batch_latency_ms": d["last_batch_latency_ms"]}
                    for d in f["destinations"]
                ],
            }
            for f in snapshot["flows"]
        ],
    }
    system = snapshot.get("system")
    if system is not None:
        out["system"] = {"cpu_percent": system["cpu_percent"], "rss_bytes": system["rss_bytes"]}
    return out


class Sampler:
    """Takes ``take()`` every second; keeps the newest in full and the last 300 trimmed."""

    def __init__(self, take: Callable[[], dict[str, Any]], capacity: int = CAPACITY) -> None:
        self._take = take
        self._ring: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._latest: dict[str, Any] | None = None
        self._changed = trio.Event()

    @property
    def latest(self) -> dict[str, Any] | None:
        """The newest full snapshot, or None before the first one."""
        return self._latest

    def history(self) -> list[dict[str, Any]]:
        """The kept snapshots, oldest first."""
        return list(self._ring)

    def sample(self) -> dict[str, Any]:
        """Take one snapshot now, keep it and wake the streams waiting for it."""
        snapshot = self._take()
        self._latest = snapshot
        self._ring.append(chart_fields(snapshot))
        self._changed.set()
        self._changed = trio.Event()
        return snapshot

    def reset(self) -> None:
        """Forget the history (counters were zeroed) and start again from a fresh snapshot."""
        self._ring.clear()
        self.sample()

    async def next_after(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        """The first snapshot newer than ``previous`` (at once if there is one already)."""
        while self._latest is None or self._latest is previous:
            await self._changed.wait()
        return self._latest

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sample once a second until cancelled; the first snapshot is taken before started()."""
        next_at = trio.current_time()
        self.sample()
        task_status.started()
        while True:
            # Behind (a blocked loop)? Skip the missed seconds rather than burst.
            next_at = max(next_at + INTERVAL_S, trio.current_time())
            await trio.sleep_until(next_at)
            self.sample()
