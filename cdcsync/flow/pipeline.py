"""One flow: its supervisor and the wiring of its stages.

Each run of the pipeline starts from what PostgreSQL says was applied: the
writer locks are taken first (a second instance waits here as a standby), then
the checkpoints are read and the source is positioned just after the lowest one.
Any failure tears the whole pipeline down and starts it again the same way,
with capped backoff; that single recovery path is what keeps every restart,
reconnect and gap exactly-once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
import trio

from cdcsync import registry
from cdcsync.config import FlowConfig
from cdcsync.errors import (
    FatalSinkError,
    FatalSourceError,
    RetryableSinkError,
    SinkError,
    SourceError,
)
from cdcsync.flow.batch import Partition
from cdcsync.flow.lane import Lane, _StoppedWhileWaiting
from cdcsync.flow.partitions import HOLDING, Partitioned
from cdcsync.flow.stages import Backoff
from cdcsync.plugin import Destination, Source
from cdcsync.stats import FlowStats, instance_id

__all__ = ["Flow"]

log = structlog.get_logger("cdcsync.flow")


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The failure that brought a pipeline down, out of the group its nursery raised."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, trio.Cancelled):
            leaves.append(exc)

    walk(group)
    for kind in (FatalSinkError, FatalSourceError, SourceError, SinkError, OSError):
        for exc in leaves:
            if isinstance(exc, kind):
                return exc
    return leaves[0] if leaves else group


class Flow:
    """A flow's components, state and statistics; :meth:`run` supervises it.

    A partition of a partitioned flow is a flow too, made with the partition's ``source``
    and its own ``stats`` (see cdcsync/flow/partitions.py).
    """

    def __init__(
        self, config: FlowConfig, *, source: Source | None = None, stats: FlowStats | None = None
    ) -> None:
        self.config = config
        self.name = config.name
        self.stats = stats if stats is not None else FlowStats(config.name)
        if source is None:
            src_spec = registry.sources()[config.source.type]
            source = src_spec.factory(config.name, config.source.options)
        self.source: Source = source
        self.stats.jetstream = bool(self.source.positioned)
        # Optional in the source protocol: the pending figure without a network call.
        self.local_pending: Callable[[], int | None] = getattr(
            self.source, "local_pending", lambda: None
        )
        self.acks = 0
        self._dropped_seen = 0
        self.sinks: list[Destination] = []
        for dest in sorted(config.destinations, key=lambda d: d.name):
            spec = registry.destinations()[dest.type]
            self.sinks.append(spec.factory(config.name, dest.name, dest.options))
            self.stats.destination(dest.name)
        self._stopping = trio.Event()
        self._run_stop = trio.Event()  # ends the current pipeline run (stop or pause)
        self._resumed = trio.Event()
        self.paused = False
        self._reassigned = False  # set by a lane whose source returned for a new assignment
        self._running_since: float | None = None
        self.stopped = trio.Event()
        # Optional in the source protocol: partitions that the instances share.
        offer = getattr(self.source, "partitioning", None)
        partitioning = offer() if callable(offer) else None
        self.partitioned = Partitioned(self, partitioning) if partitioning is not None else None

    def stop(self) -> None:
        """Stop reading; in-flight batches are committed and acknowledged before run() returns."""
        self._stopping.set()
        self._run_stop.set()
        self._resumed.set()
        if self.partitioned is not None:
            self.partitioned.stop()

    def pause(self) -> None:
        """Stop reading and drain; the durable consumer stays, nothing is acked early."""
        if not self.paused:
            self.paused = True
            self._resumed = trio.Event()
            self._run_stop.set()
            if self.partitioned is not None:
                self.partitioned.pause()
            log.info("flow pausing", flow=self.name)

    def resume(self) -> None:
        """Start reading again from the checkpoints."""
        if self.paused:
            self.paused = False
            self._resumed.set()
            if self.partitioned is not None:
                self.partitioned.resume()
            log.info("flow resuming", flow=self.name)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the pipeline until stopped, restarting it after failures.

        A :class:`FatalSinkError` or :class:`FatalSourceError` before the flow ever ran (a
        mapped table missing or without a key, a NATS server too old) is raised: the service
        refuses to start rather than guess.
        """
        if self.partitioned is not None:
            await self._run_partitioned(task_status)
            return
        bound = structlog.contextvars.bind_contextvars(flow=self.name)
        task_status.started()
        backoff = Backoff(first=0.5, cap=30.0)
        ever_ran = False
        try:
            while not self._stopping.is_set():
                if self.paused:
                    self.stats.status = "paused"
                    async with trio.open_nursery() as paused:
                        # The backlog growing while paused is what an operator watches.
                        paused.start_soon(self._poll_pending, name=f"flow={self.name} pending")
                        await self._resumed.wait()
                        paused.cancel_scope.cancel()
                    continue
                self._run_stop = trio.Event()
                try:
                    try:
                        await self._run_once()
                    except BaseExceptionGroup as group:
                        raise _first_error(group) from group
                    ever_ran = True
                    if self._stopping.is_set():
                        break
                    if self.paused or self._reassigned:
                        # Paused, or the source's assignment changed (a rebalance): run
                        # again at once, from the checkpoints.
                        self._reassigned = False
                        backoff.reset()
                        continue
                    raise SourceError("source stopped unexpectedly")
                except (FatalSinkError, FatalSourceError) as exc:
                    self.stats.status = "failed"
                    self.stats.record_error(str(exc))
                    log.error("flow failed", error=str(exc))
                    if not ever_ran:
                        raise
                    await self._stopping.wait()
                    break
                except Exception as exc:
                    # Whatever broke (source, destination, or a bug), the cure is the same:
                    # tear down and start again from the checkpoints. Other flows go on.
                    if self._stopping.is_set():
                        break
                    self._note_failure(exc)
                    if self._running_since is not None:
                        ever_ran = True
                        if trio.current_time() - self._running_since > 60:
                            backoff.reset()  # it ran fine for a while: not a crash loop
                    self._running_since = None
                    delay = backoff.next()
                    expected = isinstance(exc, (SourceError, SinkError, OSError))
                    log.warning(
                        "flow restarting",
                        error=str(exc) or type(exc).__name__,
                        retry_in_s=delay,
                        exc_info=None if expected else exc,
                    )
                    with trio.move_on_at(trio.current_time() + delay):
                        await self._stopping.wait()
        finally:
            self.stats.status = "stopped" if self.stats.status != "failed" else "failed"
            with trio.CancelScope(shield=True):
                await self._close()
            structlog.contextvars.reset_contextvars(**bound)
            self.stopped.set()

    async def _run_partitioned(self, task_status: trio.TaskStatus[None]) -> None:
        """One pipeline per partition this instance owns (cdcsync/flow/partitions.py)."""
        assert self.partitioned is not None
        bound = structlog.contextvars.bind_contextvars(flow=self.name)
        task_status.started()
        try:
            await self.partitioned.run()
        finally:
            self.stats.status = "stopped" if self.stats.status != "failed" else "failed"
            with trio.CancelScope(shield=True):
                await self._close()
            structlog.contextvars.reset_contextvars(**bound)
            self.stopped.set()

    def partitions(self) -> list[dict[str, Any]]:
        """Each partition: its owner instance, position, lag and status (for the API)."""
        if self.partitioned is not None:
            return self.partitioned.view()
        if not self.source.positioned:
            return []
        status = self.stats.status
        here = status in HOLDING
        # The partitions this instance writes (a JetStream stream's one, or the Kafka
        # partitions the group gave it), each at the lowest position over the destinations.
        held: dict[Partition, list[int | None]] = {}
        for sink in self.sinks:
            for p, seq in sink.checkpoints().items():
                held.setdefault(p, []).append(seq)
        lags: dict[Partition, int] = {}
        lag_of = getattr(self.source, "lag", None)
        if callable(lag_of):
            lags = lag_of()
        if not held and not lags:
            return [
                {
                    "index": 0,
                    "owner": instance_id() if here else None,
                    "here": here,
                    "status": status,
                    "position": None,
                    "lag": self.stats.pending,
                }
            ]
        out = []
        for p in sorted(set(held) | set(lags), key=lambda q: (q.stream, q.index)):
            seqs = held.get(p, [])
            complete = len(seqs) == len(self.sinks) and None not in seqs
            out.append(
                {
                    "index": p.index,
                    "stream": p.stream,
                    "owner": instance_id() if here else None,
                    "here": here,
                    "status": status,
                    "position": min(s for s in seqs if s is not None) if complete else None,
                    "lag": lags.get(p, self.stats.pending if p.sole else None),
                }
            )
        return out

    def _note_failure(self, exc: BaseException) -> None:
        self.stats.status = "degraded"
        self.stats.record_error(str(exc) or type(exc).__name__)
        self.stats.restarts += 1

    async def _close(self) -> None:
        for sink in self.sinks:
            try:
                await sink.close()
            except Exception:
                sink.abort()
        await self.source.close()

    async def _connect_sinks(self) -> None:
        for sink in self.sinks:
            try:
                await sink.connect()
            except RetryableSinkError as exc:
                dstats = self.stats.destination(sink.name)
                dstats.status = "degraded"
                dstats.record_error(str(exc))
                raise SourceError(f"destination {sink.name!r}: {exc}") from exc

    async def _run_once(self) -> None:
        self.stats.status = "starting"
        await self.source.connect()
        await self._connect_sinks()
        lane = Lane(self)
        try:
            await lane.run()
        except _StoppedWhileWaiting:
            pass
        self._running_since = None

    async def _poll_pending(self) -> None:
        """The server's pending figure every 2 s: the backlog that grows while nothing is
        delivered (paused, or at ``max_ack_pending``), and a check on the local figure."""
        while True:
            acks = self.acks
            figure = await self.source.pending()
            # An ack during the round trip made the local figure newer than this answer.
            if acks == self.acks or self.local_pending() is None:
                self.stats.pending = figure
            self._count_dropped()
            await trio.sleep(2)

    def _count_dropped(self) -> None:
        """Carry the source's shed-message count (core NATS) into the flow's statistics."""
        dropped = int(getattr(self.source, "dropped", 0) or 0)
        self.stats.dropped += max(0, dropped - self._dropped_seen)
        self._dropped_seen = dropped

    def describe(self) -> dict[str, Any]:
        """Configuration with secrets redacted, for the API."""
        src = self.config.source
        return {
            "name": self.name,
            "source": {"type": src.type, **src.options.redacted()},
            "batch": {
                "max_size": self.config.batch.max_size,
                "max_delay_ms": self.config.batch.max_delay_ms,
            },
            "destinations": [
                {"name": d.name, "type": d.type, **d.options.redacted()}
                for d in self.config.destinations
            ],
        }
