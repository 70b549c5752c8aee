"""The stages of a flow, each a small loop between two channel ends.

source -> batcher -> fan-out -> one sink task per destination -> acker.
Every channel is bounded, so a slow destination slows its own flow and nothing
else; closing a send end drains the pipeline in order (graceful stop).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

import structlog
import trio

from cdcsync.config import BatchPolicy
from cdcsync.errors import DecodeError, RetryableSinkError
from cdcsync.events import FORMATS
from cdcsync.flow.batch import Batch, Delivery, Item, Partition, WriteResult
from cdcsync.stats import DestinationStats, FlowStats

__all__ = [
    "Backoff",
    "decode_batch",
    "last_positions",
    "run_acker",
    "run_batcher",
    "run_fanout",
    "run_keepalive",
    "run_sink",
]

log = structlog.get_logger("cdcsync.flow")


class Backoff:
    """Capped exponential backoff: 0.2 s, 0.4 s, ... up to ``cap`` seconds."""

    def __init__(self, first: float = 0.2, cap: float = 30.0) -> None:
        self.first, self.cap = first, cap
        self.delay = first

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.delay = self.first


def _drain(recv: trio.MemoryReceiveChannel[Delivery], out: list[Delivery], limit: int) -> bool:
    """Move what is already buffered into ``out`` without waiting; False once the channel ended."""
    while len(out) < limit:
        try:
            out.append(recv.receive_nowait())
        except trio.WouldBlock:
            return True
        except trio.EndOfChannel:
            return False
    return True


async def run_batcher(
    recv: trio.MemoryReceiveChannel[Delivery],
    send: trio.MemorySendChannel[list[Delivery]],
    policy: BatchPolicy,
) -> None:
    """Group deliveries into batches without adding latency when the sinks are idle.

    ``send`` has no buffer, so a hand-over completes exactly when the fan-out is
    waiting for work: then whatever has arrived goes at once. While a write is in
    flight the batch keeps filling, up to ``max_size``; it is handed over as soon as
    the fan-out is free again, and at the latest ``max_delay_ms`` after it started.
    """
    max_size, max_delay = policy.max_size, policy.max_delay_ms / 1000
    carry: list[Delivery] = []
    open_ = True
    async with recv, send:
        while open_ or carry:
            if carry:
                items, carry = carry, []
            else:
                try:
                    items = [await recv.receive()]
                except trio.EndOfChannel:
                    break
            if open_:
                open_ = _drain(recv, items, max_size)
            deadline = trio.current_time() + max_delay
            while True:
                if len(items) >= max_size or not open_:
                    await send.send(items)
                    break
                try:
                    send.send_nowait(items)
                    break
                except trio.WouldBlock:
                    pass
                # Race the hand-over against the next delivery: whichever comes first.
                sent, extra, ended = await _hand_over_or_more(send, recv, items, deadline)
                if sent:
                    carry, open_ = extra, not ended
                    break
                items.extend(extra)
                if ended:
                    open_ = False
                elif extra:
                    open_ = _drain(recv, items, max_size)
                elif trio.current_time() >= deadline:
                    await send.send(items)  # the window closed with the sinks still busy
                    break


async def _hand_over_or_more(
    send: trio.MemorySendChannel[list[Delivery]],
    recv: trio.MemoryReceiveChannel[Delivery],
    items: list[Delivery],
    deadline: float,
) -> tuple[bool, list[Delivery], bool]:
    """Wait until ``items`` is taken, a delivery arrives, or the deadline.

    Returns (sent, deliveries received meanwhile, input ended). A cancelled ``send``
    or ``receive`` in Trio moves nothing, so no delivery is lost or sent twice.
    """
    sent = ended = False
    extra: list[Delivery] = []
    with trio.move_on_at(deadline):
        async with trio.open_nursery() as race:

            async def hand_over() -> None:
                nonlocal sent
                await send.send(items)
                sent = True
                race.cancel_scope.cancel()

            async def more() -> None:
                nonlocal ended
                try:
                    extra.append(await recv.receive())
                except trio.EndOfChannel:
                    ended = True
                race.cancel_scope.cancel()

            race.start_soon(hand_over)
            race.start_soon(more)
    return sent, extra, ended


def last_positions(deliveries: list[Delivery]) -> dict[Partition, int]:
    """The highest position of each partition (deliveries are in order per partition)."""
    if not deliveries:
        return {}
    first = deliveries[0].partition
    last: dict[Partition, int] = {}
    if all(d.partition is first for d in deliveries):
        last[first] = deliveries[-1].seq
        return last
    for d in deliveries:
        last[d.partition] = d.seq
    return last


def decode_batch(deliveries: list[Delivery], fmt: str, max_bytes: int) -> list[Item]:
    """Items from deliveries; a message that cannot be decoded becomes its error, never a
    failure of the batch."""
    items: list[Item] = []
    append = items.append
    decoder = FORMATS[fmt]
    for d in deliveries:
        data = d.data
        if len(data) > max_bytes:
            append(Item(d, None, f"message of {len(data)} bytes exceeds {max_bytes}"))
            continue
        try:
            append(Item(d, decoder(data)))
        except DecodeError as exc:
            items.append(Item(d, None, str(exc)))
        except Exception as exc:
            # The decoders raise only DecodeError by design (and a property test holds them to
            # it), so this is a bug. It must still cost this message, not the flow: a restart
            # would read the same message again and fail again, forever, with every later
            # event waiting behind it. Not BaseException: Cancelled and KeyboardInterrupt
            # must go through.
            log.error("decoder failed unexpectedly", seq=d.seq, exc_info=exc)
            items.append(Item(d, None, f"cannot decode: {type(exc).__name__}: {exc}"))
    return items


async def run_fanout(
    recv: trio.MemoryReceiveChannel[list[Delivery]],
    sends: list[trio.MemorySendChannel[Batch]],
    inflight: dict[int, Batch],
    stats: FlowStats,
    fmt: str,
    max_bytes: int,
) -> None:
    """Decode each batch once and hand the same batch to every destination, in order."""
    next_id = 1
    async with recv:
        try:
            async for deliveries in recv:
                batch = Batch(next_id, decode_batch(deliveries, fmt, max_bytes), time.monotonic())
                batch.last = last_positions(deliveries)
                next_id += 1
                inflight[batch.id] = batch
                stats.received += len(deliveries)
                stats.rate.add(len(deliveries))
                for send in sends:
                    await send.send(batch)
        finally:
            for send in sends:
                await send.aclose()


async def run_sink(
    sink: object,
    recv: trio.MemoryReceiveChannel[Batch],
    done: trio.MemorySendChannel[tuple[int, str]],
    stats: DestinationStats,
    flow_stats: FlowStats,
    recover: Callable[[], Awaitable[None]],
) -> None:
    """Apply batches in order; on a retryable failure back off, reconnect and retry the batch.

    A destination that offers ``prepare(batch)`` (the CPU half of a write: filtering,
    resolving, planning) gets it called for the next batch while the current one is still
    being written, in a task of its own: the service's CPU for batch N+1 overlaps the
    database's work on batch N. Writes stay one at a time, in order.
    """
    prepare: Callable[[Batch], object] | None = getattr(sink, "prepare", None)
    if prepare is None:
        async with recv:
            await _write_batches(sink, _unprepared(recv), done, stats, flow_stats, recover)
        return
    ready_send, ready_recv = trio.open_memory_channel[tuple[Batch, object]](1)

    async def preparer() -> None:
        async with recv, ready_send:
            async for batch in recv:
                await ready_send.send((batch, prepare(batch)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(preparer, name=f"flow={flow_stats.name} prepare")
        async with ready_recv:
            await _write_batches(sink, ready_recv, done, stats, flow_stats, recover)


async def _unprepared(
    recv: trio.MemoryReceiveChannel[Batch],
) -> AsyncIterator[tuple[Batch, object]]:
    async for batch in recv:
        yield batch, None


async def _write_batches(
    sink: object,
    batches: AsyncIterable[tuple[Batch, object]],
    done: trio.MemorySendChannel[tuple[int, str]],
    stats: DestinationStats,
    flow_stats: FlowStats,
    recover: Callable[[], Awaitable[None]],
) -> None:
    write: Callable[..., Awaitable[WriteResult]] = sink.write  # type: ignore[attr-defined]
    name: str = sink.name  # type: ignore[attr-defined]
    backoff = Backoff()
    trips_seen: int | None = getattr(sink, "round_trips", None)
    async with done:
        async for batch, prepared in batches:
            failed = False
            while True:
                try:
                    if prepared is None:
                        result = await write(batch)
                    else:
                        result = await write(batch, prepared)
                    break
                except RetryableSinkError as exc:
                    prepared = None  # after a reconnect, work it all out again
                    if not failed:
                        stats.failed_batches += 1
                        failed = True
                    stats.retries += 1
                    stats.status = flow_stats.status = "degraded"
                    stats.record_error(str(exc))
                    flow_stats.record_error(str(exc))
                    delay = backoff.next()
                    log.warning(
                        "write failed, retrying",
                        flow=flow_stats.name,
                        destination=name,
                        error=str(exc),
                        retry_in_s=delay,
                    )
                    await trio.sleep(delay)
                    try:
                        await recover()
                    except RetryableSinkError as exc2:
                        stats.record_error(str(exc2))
                        flow_stats.record_error(str(exc2))
            backoff.reset()
            if failed:
                log.info("destination recovered", flow=flow_stats.name, destination=name)
                stats.status = "running"
                stats.clear_error()
                if all(d.status == "running" for d in flow_stats.destinations.values()):
                    flow_stats.status = "running"
                    flow_stats.clear_error()
            stats.batches += 1
            stats.written += result.written
            stats.dead_lettered += result.dead_lettered
            stats.skipped += result.skipped
            stats.rate.add(result.written)
            stats.last_batch_ms = round(result.seconds * 1000, 2)
            stats.latency.observe(result.seconds)
            if trips_seen is not None:  # the sink counts them: cumulative, failed tries too
                trips: int = sink.round_trips  # type: ignore[attr-defined]
                stats.round_trips = (stats.round_trips or 0) + trips - trips_seen
                trips_seen = trips
            checkpoints = sink.checkpoints()  # type: ignore[attr-defined]
            stats.checkpoint = next(iter(checkpoints.values())) if len(checkpoints) == 1 else None
            if result.dead_lettered:
                log.warning(
                    "events dead-lettered",
                    flow=flow_stats.name,
                    destination=name,
                    count=result.dead_lettered,
                )
            await done.send((batch.id, name))


async def run_acker(
    recv: trio.MemoryReceiveChannel[tuple[int, str]],
    inflight: dict[int, Batch],
    destinations: int,
    ack: Callable[[Batch], Awaitable[None]],
    stats: FlowStats,
) -> None:
    """Acknowledge a batch once every destination committed (or dead-lettered) all of it."""
    async with recv:
        async for batch_id, dest in recv:
            batch = inflight[batch_id]
            batch.done.add(dest)
            if len(batch.done) == destinations:
                del inflight[batch_id]
                await ack(batch)
                stats.acked += len(batch.items)


async def run_keepalive(
    inflight: dict[int, Batch],
    in_progress: Callable[[list[Delivery]], Awaitable[None]],
    ack_wait_s: float,
) -> None:
    """While a batch is still being written (or retried), stop JetStream redelivering it."""
    period = max(1.0, ack_wait_s / 3)
    while True:
        await trio.sleep(period)
        now = time.monotonic()
        old = [
            i.delivery for b in list(inflight.values()) if now - b.created > period for i in b.items
        ]
        if old:
            try:
                await in_progress(old)
            except Exception as exc:  # NATS down: the redelivery is harmless, the checkpoint dedups
                log.debug("in-progress ack failed", error=repr(exc))
