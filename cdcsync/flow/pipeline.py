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
from cdcsync.errors import FatalSinkError, RetryableSinkError, SinkError, SourceError
from cdcsync.flow import stages
from cdcsync.flow.batch import Batch, Delivery
from cdcsync.stats import FlowStats

__all__ = ["Flow"]

log = structlog.get_logger("cdcsync.flow")

_STANDBY_POLL_S = 1.0


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
    for kind in (FatalSinkError, SourceError, SinkError, OSError):
        for exc in leaves:
            if isinstance(exc, kind):
                return exc
    return leaves[0] if leaves else group


class Flow:
    """A flow's components, state and statistics; :meth:`run` supervises it."""

    def __init__(self, config: FlowConfig) -> None:
        self.config = config
        self.name = config.name
        self.stats = FlowStats(config.name)
        src_spec = registry.sources()[config.source.type]
        self.source: Any = src_spec.factory(config.name, config.source.options)
        self.stats.jetstream = bool(getattr(self.source, "jetstream", False))
        # Optional in the source protocol: the pending figure without a network call.
        self._local_pending: Callable[[], int | None] = getattr(
            self.source, "local_pending", lambda: None
        )
        self._acks = 0
        self._dropped_seen = 0
        self.sinks: list[Any] = []
        for dest in sorted(config.destinations, key=lambda d: d.name):
            spec = registry.destinations()[dest.type]
            self.sinks.append(spec.factory(config.name, dest.name, dest.options))
            self.stats.destination(dest.name)
        self._stopping = trio.Event()
        self._run_stop = trio.Event()  # ends the current pipeline run (stop or pause)
        self._resumed = trio.Event()
        self.paused = False
        self._running_since: float | None = None
        self._identity: tuple[str, str] | None = None
        self.stopped = trio.Event()

    def stop(self) -> None:
        """Stop reading; in-flight batches are committed and acknowledged before run() returns."""
        self._stopping.set()
        self._run_stop.set()
        self._resumed.set()

    def pause(self) -> None:
        """Stop reading and drain; the durable consumer stays, nothing is acked early."""
        if not self.paused:
            self.paused = True
            self._resumed = trio.Event()
            self._run_stop.set()
            log.info("flow pausing", flow=self.name)

    def resume(self) -> None:
        """Start reading again from the checkpoints."""
        if self.paused:
            self.paused = False
            self._resumed.set()
            log.info("flow resuming", flow=self.name)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the pipeline until stopped, restarting it after failures.

        A :class:`FatalSinkError` before the flow ever ran (a mapped table missing or
        without a key) is raised: the service refuses to start rather than guess.
        """
        bound = structlog.contextvars.bind_contextvars(flow=self.name)
        task_status.started()
        backoff = stages.Backoff(first=0.5, cap=30.0)
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
                    if self.paused:
                        backoff.reset()
                        continue
                    raise SourceError("source stopped unexpectedly")
                except FatalSinkError as exc:
                    self.stats.status = "failed"
                    self.stats.last_error = str(exc)
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

    def _note_failure(self, exc: BaseException) -> None:
        self.stats.status = "degraded"
        self.stats.last_error = str(exc)
        self.stats.restarts += 1

    async def _close(self) -> None:
        for sink in self.sinks:
            try:
                await sink.close()
            except Exception:
                sink.abort()
        await self.source.close()

    async def _acquire(self) -> list[int | None]:
        """Connect every destination as its writer (waiting as standby) and read checkpoints."""
        checkpoints: list[int | None] = []
        for sink in self.sinks:  # sorted by name: two instances never deadlock on the locks
            dstats = self.stats.destination(sink.name)
            announced = False
            while True:
                try:
                    got = await sink.connect()
                except RetryableSinkError as exc:
                    dstats.status = "degraded"
                    raise SourceError(f"destination {sink.name!r}: {exc}") from exc
                if got:
                    break
                if not announced:
                    log.warning(
                        "another instance is writing; waiting as standby", destination=sink.name
                    )
                    announced = True
                self.stats.status = dstats.status = "standby"
                sink.abort()
                with trio.move_on_after(_STANDBY_POLL_S):
                    await self._run_stop.wait()
                if self._run_stop.is_set():
                    return []
            try:
                cp = await sink.prepare(self._identity)
            except RetryableSinkError as exc:
                raise SourceError(f"destination {sink.name!r}: {exc}") from exc
            dstats.checkpoint = cp
            dstats.status = "running"
            checkpoints.append(cp)
        return checkpoints

    def _start_after(self, checkpoints: list[int | None]) -> int | None:
        known = [cp for cp in checkpoints if cp is not None]
        js = getattr(self.config.source.options, "jetstream", None)
        if known and (len(known) == len(checkpoints) or (js is not None and js.deliver == "new")):
            return min(known)
        return None  # a destination without a checkpoint needs the stream from the start

    async def _recover_sink(self, sink: Any) -> None:
        """After a failed write: reconnect, re-take the writer lock, re-read the checkpoint."""
        try:
            got = await sink.connect()
        except RetryableSinkError:
            raise
        if not got:
            raise SourceError(f"destination {sink.name!r}: another instance took the writer lock")
        await sink.prepare(self._identity)

    async def _run_once(self) -> None:
        self.stats.status = "starting"
        await self.source.connect()
        self._identity = await self.source.identity()
        checkpoints = await self._acquire()
        if self._run_stop.is_set():
            return
        start_after = self._start_after(checkpoints)
        inflight: dict[int, Batch] = {}
        src_send, src_recv = trio.open_memory_channel[Delivery](self.source.channel_size())
        batch_send, batch_recv = trio.open_memory_channel[list[Delivery]](0)
        done_send, done_recv = trio.open_memory_channel[tuple[int, str]](len(self.sinks) * 4)
        opts = self.config.source.options
        async with trio.open_nursery() as nursery:
            sink_sends = []
            for sink in self.sinks:
                s, r = trio.open_memory_channel[Batch](0)
                sink_sends.append(s)
                nursery.start_soon(
                    stages.run_sink,
                    sink,
                    r,
                    done_send.clone(),
                    self.stats.destination(sink.name),
                    self.stats,
                    lambda sink=sink: self._recover_sink(sink),
                    name=f"flow={self.name} sink={sink.name}",
                )
            done_send.close()
            nursery.start_soon(
                stages.run_fanout,
                batch_recv,
                sink_sends,
                inflight,
                self.stats,
                opts.format,
                opts.max_message_bytes,
                name=f"flow={self.name} fanout",
            )
            nursery.start_soon(
                stages.run_batcher,
                src_recv,
                batch_send,
                self.config.batch,
                name=f"flow={self.name} batcher",
            )
            async with trio.open_nursery() as aux:
                aux.start_soon(self._poll_pending, name=f"flow={self.name} pending")
                js = getattr(opts, "jetstream", None)
                if js is not None:
                    aux.start_soon(
                        stages.run_keepalive,
                        inflight,
                        self.source.in_progress,
                        float(js.ack_wait_s),
                        name=f"flow={self.name} keepalive",
                    )
                await nursery.start(self.source.run, start_after, src_send, self._run_stop)
                self.stats.status = "running"
                self._running_since = trio.current_time()
                log.info("flow running", start_after=start_after)
                await stages.run_acker(done_recv, inflight, len(self.sinks), self._ack, self.stats)
                aux.cancel_scope.cancel()
        self._running_since = None

    async def _ack(self, deliveries: list[Delivery]) -> None:
        """Acknowledge a committed batch, and bring the pending figure up to date at once.

        Polling alone left a drained stream showing the figure of the last poll for up to
        2 s (plus the API's sampling); asking the server after every batch would cost a
        round trip per batch. The source works the figure out from what it already has.
        """
        await self.source.ack(deliveries)
        self._acks += 1
        figure = self._local_pending()
        if figure is not None:
            self.stats.pending = figure

    async def _poll_pending(self) -> None:
        """The server's pending figure every 2 s: the backlog that grows while nothing is
        delivered (paused, or at ``max_ack_pending``), and a check on the local figure."""
        while True:
            acks = self._acks
            figure = await self.source.pending()
            # An ack during the round trip made the local figure newer than this answer.
            if acks == self._acks or self._local_pending() is None:
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
