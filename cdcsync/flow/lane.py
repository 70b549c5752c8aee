"""One run of a flow's pipeline, and the engine's side of partition hand-offs.

source -> batcher -> fan-out -> one sink task per destination -> acker, all in one nursery.
The lane is also the source's :class:`~cdcsync.plugin.Coordinator`: before the source reads a
partition it asks the lane, which takes every destination's writer fence for it (waiting as a
standby while another instance holds one) and answers with the lowest checkpoint; before the
source gives a partition up, the lane waits until everything sent of it is acknowledged and
then releases the fences. Any failure tears the whole lane down; the flow starts a new one
from the checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog
import trio

from cdcsync.errors import RetryableSinkError, SourceError
from cdcsync.flow import stages
from cdcsync.flow.batch import Batch, Delivery, Partition

if TYPE_CHECKING:
    from cdcsync.flow.pipeline import Flow
    from cdcsync.plugin import Destination

__all__ = ["Lane"]

log = structlog.get_logger("cdcsync.flow")

_STANDBY_POLL_S = 1.0


class _StoppedWhileWaiting(Exception):
    """The flow was stopped or paused while it waited for a writer fence (standby)."""


class Lane:
    """The stages of one pipeline run and the positions they carry."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.inflight: dict[int, Batch] = {}
        self.claimed: dict[Partition, str] = {}
        # Highest position acknowledged per partition (for clean hand-offs).
        self.acked: dict[Partition, int] = {}
        self._acked_changed = trio.Event()
        self._started = False  # the source runs: later assignments are rebalances

    # --- Coordinator (called by the source) ----------------------------------------------

    async def assigned(self, partitions: Mapping[Partition, str]) -> dict[Partition, int | None]:
        flow = self.flow
        wanted = {p: e for p, e in partitions.items() if p not in self.claimed}
        per_sink: list[dict[Partition, int | None]] = []
        if wanted:
            for sink in flow.sinks:  # sorted by name: two instances never deadlock on fences
                per_sink.append(await self._claim(sink, wanted))
            self.claimed.update(wanted)
            if self._started and flow.stats.status == "standby":
                flow.stats.status = "running"  # a rebalance waited for a fence (Kafka)
        start: dict[Partition, int | None] = {}
        for p in partitions:
            known = [cps[p] for cps in per_sink if cps.get(p) is not None]
            everyone = len(known) == len(per_sink)
            if known and (everyone or not flow.source.from_start):
                start[p] = min(k for k in known if k is not None)
            else:
                # A destination without a checkpoint needs the partition from its start.
                start[p] = None
        return start

    async def _claim(
        self, sink: Destination, wanted: dict[Partition, str]
    ) -> dict[Partition, int | None]:
        flow = self.flow
        name = sink.name
        dstats = flow.stats.destination(name)
        announced = False
        while True:
            try:
                got = await sink.claim(wanted)
            except RetryableSinkError as exc:
                dstats.status = "degraded"
                dstats.record_error(str(exc))
                raise SourceError(f"destination {name!r}: {exc}") from exc
            if got is not None:
                break
            if not announced:
                log.warning("another instance is writing; waiting as standby", destination=name)
                announced = True
            flow.stats.status = dstats.status = "standby"
            with trio.move_on_after(_STANDBY_POLL_S):
                await flow._run_stop.wait()
            if flow._run_stop.is_set():
                raise _StoppedWhileWaiting
        if len(got) == 1:
            (dstats.checkpoint,) = got.values()
        dstats.status = "running"
        dstats.clear_error()
        return got

    async def revoked(self, partitions: Mapping[Partition, int | None]) -> None:
        for p, last in partitions.items():
            while last is not None and self.acked.get(p, -1) < last:
                self._acked_changed = trio.Event()
                await self._acked_changed.wait()
        gone = [p for p in partitions if p in self.claimed]
        for sink in self.flow.sinks:
            await sink.release(gone)
        for p in gone:
            del self.claimed[p]
            self.acked.pop(p, None)

    # --- the pipeline ----------------------------------------------------------------------

    async def _ack(self, batch: Batch) -> None:
        """Acknowledge a committed batch, and bring the pending figure up to date at once.

        Polling alone left a drained stream showing the figure of the last poll for up to
        2 s; asking the server after every batch would cost a round trip per batch. A source
        that can work the figure out from what it already has offers ``local_pending()``.
        """
        flow = self.flow
        await flow.source.ack([i.delivery for i in batch.items])
        for p, seq in batch.last.items():
            if seq > self.acked.get(p, -1):
                self.acked[p] = seq
        self._acked_changed.set()
        flow.acks += 1
        figure = flow.local_pending()
        if figure is not None:
            flow.stats.pending = figure

    async def _recover_sink(self, sink: Destination) -> None:
        """After a failed write: reconnect and re-take the fences of the claimed partitions."""
        await sink.connect()
        got = await sink.claim(dict(self.claimed))
        if got is None:
            raise SourceError(f"destination {sink.name!r}: another instance took the writer fence")

    async def run(self) -> None:
        flow = self.flow
        source, sinks, stats = flow.source, flow.sinks, flow.stats
        src_send, src_recv = trio.open_memory_channel[Delivery](source.channel_size())
        batch_send, batch_recv = trio.open_memory_channel[list[Delivery]](0)
        done_send, done_recv = trio.open_memory_channel[tuple[int, str]](len(sinks) * 4)
        opts = flow.config.source.options
        async with trio.open_nursery() as nursery:
            sink_sends = []
            for sink in sinks:
                s, r = trio.open_memory_channel[Batch](0)
                sink_sends.append(s)
                nursery.start_soon(
                    stages.run_sink,
                    sink,
                    r,
                    done_send.clone(),
                    stats.destination(sink.name),
                    stats,
                    lambda sink=sink: self._recover_sink(sink),
                    name=f"flow={flow.name} sink={sink.name}",
                )
            done_send.close()
            nursery.start_soon(
                stages.run_fanout,
                batch_recv,
                sink_sends,
                self.inflight,
                stats,
                opts.format,
                opts.max_message_bytes,
                name=f"flow={flow.name} fanout",
            )
            nursery.start_soon(
                stages.run_batcher,
                src_recv,
                batch_send,
                flow.config.batch,
                name=f"flow={flow.name} batcher",
            )
            async with trio.open_nursery() as aux:
                aux.start_soon(flow._poll_pending, name=f"flow={flow.name} pending")
                keepalive = source.keepalive_s
                if keepalive is not None:
                    aux.start_soon(
                        stages.run_keepalive,
                        self.inflight,
                        source.in_progress,
                        float(keepalive),
                        name=f"flow={flow.name} keepalive",
                    )
                await nursery.start(self._run_source, src_send)
                self._started = True
                stats.status = "running"
                stats.clear_error()  # every destination is connected and the source reads
                flow._running_since = trio.current_time()
                log.info("flow running", partitions=[str(p) for p in self.claimed])
                await stages.run_acker(done_recv, self.inflight, len(sinks), self._ack, stats)
                aux.cancel_scope.cancel()

    async def _run_source(
        self,
        send: trio.MemorySendChannel[Delivery],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        flow = self.flow
        await flow.source.run(self, send, flow._run_stop, task_status=task_status)
        if not flow._run_stop.is_set():
            flow._reassigned = True  # the source returned for a new assignment
