"""A partitioned flow: one pipeline per partition this instance owns, run concurrently.

Used when the flow's source offers :class:`~cdcsync.plugin.Partitioning`. Each partition
this instance should own (as the membership says) runs as a child :class:`Flow` with the
partition's own source and its own destination instances (one writer connection per
partition and destination), through the same single-lane supervision as any flow: fences
and standby, checkpoints, restarts with backoff, pause, drain. A partition the membership
takes away is stopped like a flow (drained, committed, acknowledged, connections closed,
which releases its fences) before another instance can take its fences. The children's
statistics add up into the flow's (:class:`~cdcsync.stats.PartitionStats`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog
import trio

from cdcsync.errors import FatalSinkError, FatalSourceError
from cdcsync.flow.batch import Partition
from cdcsync.flow.stages import Backoff
from cdcsync.plugin import Partitioning, PartitionState
from cdcsync.stats import PartitionStats

if TYPE_CHECKING:
    from cdcsync.flow.pipeline import Flow

__all__ = ["HOLDING", "Partitioned"]

log = structlog.get_logger("cdcsync.flow")

# A partition in one of these states has (or is about to take back) its writer fences.
HOLDING = frozenset({"running", "degraded", "paused", "failed"})
_ORDER = ("failed", "degraded", "running", "paused", "starting", "standby")


class Partitioned:
    """The partitions of one flow in this process, and the membership that assigns them."""

    def __init__(self, flow: Flow, partitioning: Partitioning) -> None:
        self.flow = flow
        self.partitioning = partitioning
        self.children: dict[Partition, Flow] = {}
        self.stats: dict[Partition, PartitionStats] = {}
        self.wanted: frozenset[Partition] = frozenset()
        self.failed: dict[Partition, BaseException] = {}  # fatal at start, not restarted
        self._changed = trio.Event()
        self.ever_ran = False

    # --- what the membership and the API see -------------------------------------------------

    def _wanted(self, partitions: frozenset[Partition]) -> None:
        self.wanted = partitions
        self._changed.set()

    def report(self) -> dict[Partition, PartitionState]:
        """The partitions this instance runs, for the other members."""
        me = self.partitioning.instance
        out = {}
        for p in self.children:
            st = self.stats[p]
            if st.status in HOLDING:
                out[p] = PartitionState(me, st.status, st.position, st.pending)
        return out

    def view(self) -> list[dict[str, Any]]:
        """Every partition: who runs it, where it is, how far behind, in what state."""
        remote = self.partitioning.view()
        mine = self.report()
        out = []
        for p in self.partitioning.partitions:
            state = mine.get(p) or remote.get(p)
            child = self.children.get(p)
            status = state.status if state is not None else "unowned"
            if state is None and child is not None:
                status = child.stats.status  # here, but waiting for the fences (standby)
            out.append(
                {
                    "index": p.index,
                    "owner": state.owner if state is not None else None,
                    "here": p in mine,
                    "status": status,
                    "position": state.position if state is not None else None,
                    "lag": state.lag if state is not None else None,
                }
            )
        return out

    # --- the flow's controls -----------------------------------------------------------------

    def pause(self) -> None:
        for child in self.children.values():
            child.pause()

    def resume(self) -> None:
        for child in self.children.values():
            child.resume()

    def stop(self) -> None:
        self._changed.set()

    # --- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until the flow is stopped; raises a fatal error met before anything ran."""
        flow = self.flow
        flow.stats.status = "starting"
        fatal: list[BaseException] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._membership, fatal)
            try:
                await self._supervise(nursery, fatal)
            finally:
                with trio.CancelScope(shield=True):
                    await self._leave()  # bounded: the others can take over while we drain
                await self._drain()  # not shielded: a second signal must still stop us
            nursery.cancel_scope.cancel()
        if fatal:
            raise fatal[0]

    async def _membership(self, fatal: list[BaseException]) -> None:
        """The source's membership; what it does not ride out itself is a bug: log it, keep
        the partitions running here (their fences keep them safe), and join again."""
        backoff = Backoff(first=1.0, cap=30.0)
        while True:
            try:
                await self.partitioning.run(self._wanted, self.report)
                return
            except (FatalSourceError, FatalSinkError) as exc:
                self._fatal(exc, fatal)
                return
            except Exception as exc:
                delay = backoff.next()
                self.flow.stats.record_error(f"partition membership: {exc!r}")
                log.error("partition membership failed", retry_in_s=delay, exc_info=exc)
                await trio.sleep(delay)

    def _fatal(self, exc: BaseException, fatal: list[BaseException]) -> None:
        """Before anything ran the service refuses to start; later the flow shows ``failed``."""
        flow = self.flow
        flow.stats.record_error(str(exc))
        if not self.ever_ran:
            log.error("flow failed", error=str(exc))
            fatal.append(exc)
            flow._stopping.set()
            self._changed.set()
            return
        flow.stats.status = "failed"
        log.error("flow failed", error=str(exc))

    async def _supervise(self, nursery: trio.Nursery, fatal: list[BaseException]) -> None:
        flow = self.flow
        while not flow._stopping.is_set():
            self._changed = trio.Event()
            for p in sorted(self.wanted - self.children.keys(), key=lambda p: p.index):
                if p not in self.failed:
                    self._start(nursery, p, fatal)
            for p, child in self.children.items():
                if p not in self.wanted:
                    child.stop()  # drains, commits, acks, then closes (releasing the fences)
            for p in list(self.failed):
                if p not in self.wanted:
                    del self.failed[p]
            self._refresh()
            await self._changed.wait()

    def _start(self, nursery: trio.Nursery, p: Partition, fatal: list[BaseException]) -> None:
        from cdcsync.flow.pipeline import Flow

        flow = self.flow
        stats = self.stats.get(p)
        if stats is None:
            stats = self.stats[p] = PartitionStats(
                flow.name, parent=flow.stats, index=p.index, on_change=self._refresh
            )
            stats.jetstream = flow.stats.jetstream
        child = Flow(flow.config, source=self.partitioning.source(p), stats=stats)
        if flow.paused:
            child.pause()
        self.children[p] = child
        nursery.start_soon(self._run_child, p, child, fatal)

    async def _run_child(self, p: Partition, child: Flow, fatal: list[BaseException]) -> None:
        bound = structlog.contextvars.bind_contextvars(partition=p.index)
        try:
            await child.run()
        except (FatalSinkError, FatalSourceError) as exc:
            self.failed[p] = exc
            self._fatal(exc, fatal)
        finally:
            structlog.contextvars.reset_contextvars(**bound)
            if self.children.get(p) is child:
                del self.children[p]
            self._changed.set()
            self._refresh()

    async def _leave(self) -> None:
        """Leave the membership: the others take our partitions as our fences go."""
        try:
            with trio.move_on_after(3):
                await self.partitioning.leave()
        except Exception as exc:
            log.debug("leaving the membership failed", error=str(exc))

    async def _drain(self) -> None:
        """Stop every partition: each drains, commits, acknowledges and closes."""
        children = list(self.children.values())
        for child in children:
            child.stop()
        for child in children:
            await child.stopped.wait()

    def _refresh(self) -> None:
        """The flow's status, errors and pending figure, from its partitions'."""
        flow = self.flow
        stats = flow.stats
        kids = [c.stats for c in self.children.values()]
        found = {k.status for k in kids}
        if "running" in found:
            self.ever_ran = True
        if flow._stopping.is_set() and not kids:
            return
        if stats.status == "failed" and self.failed:
            status = "failed"
        elif flow.paused and not found - {"paused", "standby"}:
            status = "paused"
        else:
            status = next((s for s in _ORDER if s in found), "standby")
            if status == "starting" and not kids:
                status = "standby"
        stats.status = status
        held = [k.pending for k in kids if k.status in HOLDING and k.pending is not None]
        stats.pending = sum(held) if held else None
        if not self.failed and not any(k.last_error for k in kids):
            stats.clear_error()
        for name, dstats in stats.destinations.items():
            states = {k.destinations[name].status for k in kids if name in k.destinations}
            dstats.status = next((s for s in _ORDER if s in states), "standby")
            if not any(k.destinations[name].last_error for k in kids if name in k.destinations):
                dstats.clear_error()

    def held(self) -> Mapping[int, PartitionStats]:
        """The statistics of the partitions this instance runs now, by index (metrics)."""
        held = sorted((p for p in self.children), key=lambda p: p.index)
        return {p.index: self.stats[p] for p in held if self.stats[p].status in HOLDING}
