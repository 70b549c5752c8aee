"""The source conformance suite: what every positioned source must do for the engine.

Exactly-once rests on the source as much as on the destinations (docs/dev/positions.md): it
asks the coordinator for a partition before delivering any of it and starts just after the
position it was given; positions increase within a partition; after a restart, a failed
run or a pause it delivers again everything that was not acknowledged, and nothing at or
below the checkpoints; a hand-off names the last position sent; ``close()`` leaves nothing
behind that keeps the next instance waiting; a consumer that stops receiving slows the
source down without losing anything. A plugin author runs it from any async test (under
Trio, inside ``cdcsync.plugin.open_bridge()``)::

    from cdcsync.conformance import check_source

    async def test_my_source_conforms():
        async with open_bridge():
            await check_source(lambda: MySource("flow", options), publish)

``make`` builds a new instance over the same (empty) stream or topics each time, configured
to start from the beginning where it has no checkpoint; ``publish(payloads)`` appends
messages to them. The suite plays the engine: it is the coordinator, keeps the checkpoints
(as the destinations would), receives deliveries and acknowledges them. Each check raises
``AssertionError`` saying what the protocol expected.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from cdcsync.flow.batch import Delivery, Partition

__all__ = ["check_source"]

_WAIT_S = 30.0
_STOP_S = 20.0
_Key = tuple[str, int]


def _key(p: Partition) -> _Key:
    return (p.stream, p.index)


class _Engine:
    """The suite's stand-in for the engine: coordinator, checkpoints, fences and acks."""

    def __init__(self) -> None:
        self.checkpoints: dict[_Key, int] = {}  # survives instances, like a destination's
        self.held: set[_Key] = set()
        self.start: dict[_Key, int | None] = {}  # what assigned() answered in this run
        self.problems: list[str] = []
        self.acked: dict[_Key, int] = {}
        self.changed = trio.Event()
        self.sent: dict[_Key, int] = {}  # highest position received in this run

    async def assigned(self, partitions: Mapping[Partition, str]) -> dict[Partition, int | None]:
        out: dict[Partition, int | None] = {}
        for p in partitions:
            k = _key(p)
            self.held.add(k)
            out[p] = self.start[k] = self.checkpoints.get(k)
        return out

    async def revoked(self, partitions: Mapping[Partition, int | None]) -> None:
        for p, last in partitions.items():
            k = _key(p)
            got = self.sent.get(k)
            if got is not None and (last is None or last < got):
                self.problems.append(
                    f"revoked() named {last} as the last position sent of {p}, but {got} "
                    f"was delivered: the engine would hand {p} off before it is committed"
                )
            while last is not None and self.acked.get(k, -1) < last:
                await self.changed.wait()
            self.held.discard(k)

    def note(self, d: Delivery) -> None:
        k = _key(d.partition)
        if k not in self.held:
            self.problems.append(f"{d.partition} position {d.seq} delivered before assigned()")
        start = self.start.get(k)
        if start is not None and d.seq <= start:
            self.problems.append(
                f"{d.partition} position {d.seq} delivered although assigned() said to start "
                f"after {start}"
            )
        before = self.sent.get(k)
        if before is not None and d.seq <= before:
            self.problems.append(f"{d.partition}: position {d.seq} delivered after {before}")
        self.sent[k] = d.seq

    def commit(self, deliveries: list[Delivery]) -> None:
        """What the destinations do with a batch: move each partition's checkpoint."""
        for d in deliveries:
            k = _key(d.partition)
            self.checkpoints[k] = max(self.checkpoints.get(k, -1), d.seq)

    def acknowledged(self, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            k = _key(d.partition)
            self.acked[k] = max(self.acked.get(k, -1), d.seq)
        self.changed.set()
        self.changed = trio.Event()


class _Run:
    """One ``connect()`` + ``run()`` of a source, its deliveries received (and acknowledged
    after the suite's "commit" when ``ack``)."""

    def __init__(self, source: Any, engine: _Engine, *, ack: bool) -> None:
        self.source, self.engine, self.ack = source, engine, ack
        self.stop = trio.Event()
        self.ended = trio.Event()
        self.closed = trio.Event()  # the source closed its send channel
        self.hold = trio.Event()  # cleared: the consumer stops receiving (backpressure)
        self.hold.set()
        self.error: BaseException | None = None
        self.got: list[Delivery] = []
        self.arrived = trio.Event()
        self.scope = trio.CancelScope()

    async def start(self, nursery: trio.Nursery) -> None:
        self.engine.sent.clear()
        self.engine.start.clear()
        await self.source.connect()
        send, recv = trio.open_memory_channel[Delivery](self.source.channel_size())
        nursery.start_soon(self._consume, recv)
        await nursery.start(self._run, send)

    async def _run(
        self, send: trio.MemorySendChannel[Delivery], *, task_status: trio.TaskStatus[None]
    ) -> None:
        try:
            with self.scope:
                await self.source.run(self.engine, send, self.stop, task_status=task_status)
        except Exception as exc:
            self.error = exc
        finally:
            self.ended.set()

    async def _consume(self, recv: trio.MemoryReceiveChannel[Delivery]) -> None:
        async with recv:
            while True:
                await self.hold.wait()
                try:
                    batch = [await recv.receive()]
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    break
                while True:
                    try:
                        batch.append(recv.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                for d in batch:
                    self.engine.note(d)
                self.got += batch
                self.arrived.set()
                self.arrived = trio.Event()
                if self.ack:
                    self.engine.commit(batch)
                    await self.source.ack(batch)
                    self.engine.acknowledged(batch)
        self.closed.set()

    async def wait_for(self, count: int, what: str) -> None:
        with trio.move_on_after(_WAIT_S):
            while len(self.got) < count:
                if self.error is not None:
                    raise AssertionError(f"{what}: run() failed: {self.error!r}") from self.error
                with trio.move_on_after(0.5):
                    await self.arrived.wait()
            return
        raise AssertionError(f"{what}: {len(self.got)} of {count} delivered within {_WAIT_S} s")

    async def finish(self, what: str) -> None:
        """Set ``stop``: run() must return and close its channel, after a hand-off."""
        self.stop.set()
        with trio.move_on_after(_STOP_S):
            await self.ended.wait()
            await self.closed.wait()
        assert self.ended.is_set(), f"{what}: run() did not return within {_STOP_S} s of stop"
        assert self.closed.is_set(), f"{what}: run() returned without closing its channel"
        if self.error is not None:
            raise AssertionError(f"{what}: run() failed: {self.error!r}") from self.error

    async def abort(self) -> None:
        """Cancel run() as a failing pipeline does: no stop, no hand-off."""
        self.scope.cancel()
        with trio.move_on_after(_STOP_S):
            await self.ended.wait()
        assert self.ended.is_set(), f"run() ignored cancellation for {_STOP_S} s"


def _payloads(tag: str, n: int) -> list[bytes]:
    return [f'{{"conformance": "{tag}", "n": {i}}}'.encode() for i in range(n)]


def _exactly(run: _Run, want: list[bytes], what: str, skip: int = 0) -> None:
    got = [d.data for d in run.got[skip:]]
    missing = set(want) - set(got)
    assert not missing, f"{what}: {len(missing)} published messages never delivered"
    assert len(got) == len(want), (
        f"{what}: {len(got)} deliveries for {len(want)} messages: "
        f"{len(got) - len(set(got))} delivered twice, {len(set(got) - set(want))} unexpected"
    )
    by_partition: dict[_Key, set[int]] = {}
    for d in run.got[skip:]:
        by_partition.setdefault(_key(d.partition), set()).add(id(d.partition))
    shared = all(len(ids) == 1 for ids in by_partition.values())
    assert shared, f"{what}: deliveries of one partition must share one Partition object"


def _no_problems(engine: _Engine, what: str) -> None:
    assert not engine.problems, f"{what}: " + "; ".join(engine.problems[:5])


async def _pending_reaches_zero(source: Any, what: str) -> None:
    figure = None
    with trio.move_on_after(15):
        while True:
            figure = await source.pending()
            if figure is None or figure == 0:
                return
            await trio.sleep(0.2)
    raise AssertionError(f"{what}: pending() still {figure} 15 s after everything was acked")


async def check_source(
    make: Callable[[], Any],
    publish: Callable[[list[bytes]], Awaitable[None]],
    *,
    takeover_s: float = 10.0,
) -> None:
    """Run every check of the source protocol against fresh instances from ``make``.

    ``takeover_s``: how soon a new instance must deliver after the previous one was
    cancelled and closed (a source that left something behind makes it wait).
    """
    tag = uuid.uuid4().hex[:8]
    probe = make()
    try:
        found = await probe.problems()
        assert found == [], f"problems() of a working setup must be [], got {found!r}"
    finally:
        await probe.close()

    engine = _Engine()
    first = make()
    assert first.positioned, "the suite is for positioned sources (exactly-once)"
    assert first.from_start, "make() must build a source that starts from the beginning"
    async with trio.open_nursery() as nursery:
        # Delivers what was there before it started, then what arrives while it runs.
        a, b = _payloads(f"{tag}-a", 20), _payloads(f"{tag}-b", 10)
        await publish(a)
        run = _Run(first, engine, ack=True)
        await run.start(nursery)
        await run.wait_for(len(a), "a first run")
        await publish(b)
        await run.wait_for(len(a) + len(b), "messages published while running")
        _exactly(run, a + b, "a first run")
        await _pending_reaches_zero(first, "a first run")
        await run.finish("stopping a run")
        _no_problems(engine, "a first run")

        # Pause and resume: the same instance runs again after its checkpoints.
        c = _payloads(f"{tag}-c", 10)
        await publish(c)
        run = _Run(first, engine, ack=True)
        await run.start(nursery)
        await run.wait_for(len(c), "a resumed run")
        await trio.sleep(0.5)  # nothing older may follow
        _exactly(run, c, "a resumed run (exactly what was published while stopped)")
        await run.finish("stopping a resumed run")

        # A failed pipeline: deliveries never acknowledged come again, nothing older does.
        d = _payloads(f"{tag}-d", 10)
        await publish(d)
        run = _Run(first, engine, ack=False)
        await run.start(nursery)
        await run.wait_for(len(d), "a run whose batch then fails")
        await run.abort()
        run = _Run(first, engine, ack=True)
        await run.start(nursery)
        await run.wait_for(len(d), "the run after a failed batch")
        await trio.sleep(0.5)
        _exactly(run, d, "the run after a failed batch (the unacknowledged ones again)")
        _no_problems(engine, "redelivery after a failed batch")
        await run.abort()
        await first.close()

        # close() leaves nothing that holds the next instance back; positions survive it.
        second = make()
        e = _payloads(f"{tag}-e", 10)
        await publish(e)
        started = trio.current_time()
        run = _Run(second, engine, ack=True)
        await run.start(nursery)
        await run.wait_for(1, "a new instance after close()")
        took = trio.current_time() - started
        assert took <= takeover_s, (
            f"a new instance delivered {took:.1f} s after the previous one closed "
            f"(at most {takeover_s} s): close() must release everything"
        )
        await run.wait_for(len(e), "a new instance after close()")
        await trio.sleep(0.5)
        _exactly(run, e, "a new instance (exactly what the checkpoints had not covered)")

        # Backpressure: a consumer that stops receiving loses nothing, and the source waits.
        f = _payloads(f"{tag}-f", min(3 * second.channel_size() + 10, 3000))
        run.hold = trio.Event()
        await publish(f)
        await trio.sleep(2)
        assert run.error is None, f"run() failed while its channel was full: {run.error!r}"
        run.hold.set()
        await run.wait_for(len(e) + len(f), "after the channel was full")
        _exactly(run, e + f, "after the channel was full")
        await run.finish("stopping the new instance")
        _no_problems(engine, "the new instance")
        await second.close()
        await second.close()  # twice is harmless
        nursery.cancel_scope.cancel()
