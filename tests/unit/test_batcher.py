"""run_batcher: no added latency for an idle sink; bounded, time-boxed batches for a busy one.

All timing runs on Trio's ``autojump_clock``: virtual time jumps forward whenever every
task is blocked, so "handed over at once" means no virtual time passed.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from cdcsync.config import BatchPolicy
from cdcsync.flow.batch import Delivery
from cdcsync.flow.stages import run_batcher


def d(seq: int) -> Delivery:
    return Delivery(seq=seq, subject="s", data=b"{}")


def seqs(batch: list[Delivery]) -> list[int]:
    return [x.seq for x in batch]


class Sink:
    """A receiver that takes one batch, then is busy for ``busy`` seconds, and so on.

    Records (virtual time taken, seqs) for every batch it receives.
    """

    def __init__(self, recv: trio.MemoryReceiveChannel[list[Delivery]], busy: float) -> None:
        self.recv = recv
        self.busy = busy
        self.got: list[tuple[float, list[int]]] = []
        self.closed = trio.Event()

    async def run(self) -> None:
        async with self.recv:
            async for batch in self.recv:
                self.got.append((trio.current_time(), seqs(batch)))
                await trio.sleep(self.busy)
        self.closed.set()


def channels(capacity: int = 100):  # type: ignore[no-untyped-def]
    src_send, src_recv = trio.open_memory_channel[Delivery](capacity)
    batch_send, batch_recv = trio.open_memory_channel[list[Delivery]](0)
    return src_send, src_recv, batch_send, batch_recv


async def test_idle_receiver_gets_a_single_delivery_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With the receiver waiting, one delivery is handed over with no max_delay_ms wait."""
    src_send, src_recv, batch_send, batch_recv = channels()
    sink = Sink(batch_recv, busy=0)
    policy = BatchPolicy(max_size=100, max_delay_ms=5_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        nursery.start_soon(run_batcher, src_recv, batch_send, policy)
        async with src_send:
            start = trio.current_time()
            await trio.sleep(1)
            await src_send.send(d(1))
            await trio.sleep(1)
            await src_send.send(d(2))
    assert [(round(t - start, 3), s) for t, s in sink.got] == [(1, [1]), (2, [2])]


async def test_deliveries_accumulate_up_to_max_size_while_receiver_is_busy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While the receiver is busy, deliveries gather into batches of at most max_size."""
    src_send, src_recv, batch_send, batch_recv = channels()
    sink = Sink(batch_recv, busy=10)
    policy = BatchPolicy(max_size=3, max_delay_ms=60_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        nursery.start_soon(run_batcher, src_recv, batch_send, policy)
        async with src_send:
            await src_send.send(d(1))  # the idle sink takes it at once, then is busy until t=10
            await trio.sleep(0.1)
            for seq in range(2, 9):
                await src_send.send(d(seq))
                await trio.sleep(0.1)
    start = sink.got[0][0]
    assert [(round(t - start, 3), s) for t, s in sink.got] == [
        (0, [1]),
        (10, [2, 3, 4]),  # full: waits for the sink, no more than max_size
        (20, [5, 6, 7]),
        (30, [8]),  # input closed: the partial batch is flushed
    ]


async def test_partial_batch_closes_after_max_delay_even_if_receiver_stays_busy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A partial batch stops growing max_delay_ms after its first delivery; later ones wait."""
    src_send, src_recv, batch_send, batch_recv = channels()
    sink = Sink(batch_recv, busy=3)
    policy = BatchPolicy(max_size=100, max_delay_ms=1_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        nursery.start_soon(run_batcher, src_recv, batch_send, policy)
        async with src_send:
            start = trio.current_time()
            await src_send.send(d(1))  # handed over at t=0; the sink is busy until t=3
            await trio.sleep(0.1)
            await src_send.send(d(2))  # opens a window that closes at t=1.1
            await trio.sleep(0.4)
            await src_send.send(d(3))  # t=0.5: inside the window
            await trio.sleep(1.5)
            await src_send.send(d(4))  # t=2.0: after the window, so in the next batch
            await trio.sleep(0.5)
            await src_send.send(d(5))  # t=2.5: waits with 4 while [2, 3] waits for the sink
            await trio.sleep(10)
    assert [(round(t - start, 3), s) for t, s in sink.got] == [
        (0, [1]),
        (3, [2, 3]),  # the window closed at 1.1; the hand-over needs the sink (t=3)
        (6, [4, 5]),
    ]


async def test_busy_receiver_never_waits_longer_than_max_delay_for_more(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A receiver that comes back after the window gets the batch immediately, not later."""
    src_send, src_recv, batch_send, batch_recv = channels()
    policy = BatchPolicy(max_size=100, max_delay_ms=2_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_batcher, src_recv, batch_send, policy)
        async with batch_recv, src_send:
            await src_send.send(d(1))
            await trio.sleep(5)  # nobody receives: the window opens at t=0 and closes at t=2
            await src_send.send(d(2))  # arrives after the window closed
            asked_at = trio.current_time()
            assert seqs(await batch_recv.receive()) == [1]
            assert trio.current_time() == asked_at
            assert seqs(await batch_recv.receive()) == [2]
            assert trio.current_time() == asked_at


async def test_buffered_backlog_is_split_into_max_size_batches(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A backlog already waiting is handed over in order, max_size deliveries at a time."""
    src_send, src_recv, batch_send, batch_recv = channels()
    for seq in range(1, 11):
        src_send.send_nowait(d(seq))
    await src_send.aclose()
    policy = BatchPolicy(max_size=4, max_delay_ms=1_000)
    got = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_batcher, src_recv, batch_send, policy)
        async with batch_recv:
            async for batch in batch_recv:
                got.append(seqs(batch))
    assert got == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]


async def test_closing_input_flushes_partial_batch_and_closes_output(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When the input closes, the last partial batch is handed over and the output ends."""
    src_send, src_recv, batch_send, batch_recv = channels()
    sink = Sink(batch_recv, busy=5)
    policy = BatchPolicy(max_size=100, max_delay_ms=60_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        nursery.start_soon(run_batcher, src_recv, batch_send, policy)
        start = trio.current_time()
        await src_send.send(d(1))
        await trio.sleep(1)
        await src_send.send(d(2))
        await src_send.send(d(3))
        await src_send.aclose()  # t=1, long before max_delay_ms
        await sink.closed.wait()
        closed_at = trio.current_time()
    assert [(round(t - start, 3), s) for t, s in sink.got] == [(0, [1]), (5, [2, 3])]
    assert round(closed_at - start, 3) == 10  # the sink finished the last batch, then saw the end


async def test_closing_an_empty_input_closes_output(autojump_clock: trio.testing.MockClock) -> None:
    """With nothing pending, closing the input ends the output with no empty batch."""
    src_send, src_recv, batch_send, batch_recv = channels()
    await src_send.aclose()
    with trio.fail_after(1):
        await run_batcher(src_recv, batch_send, BatchPolicy())
    async with batch_recv:
        with pytest.raises(trio.EndOfChannel):
            await batch_recv.receive()


async def test_partial_batch_goes_as_soon_as_the_receiver_is_free(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A delivery that arrived during a write is handed over when the write ends, not at
    max_delay_ms (the window is an upper bound, never a wait on an idle sink)."""
    src_send, src_recv, batch_send, batch_recv = channels()
    sink = Sink(batch_recv, busy=0.010)
    policy = BatchPolicy(max_size=100, max_delay_ms=50)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        nursery.start_soon(run_batcher, src_recv, batch_send, policy)
        await src_send.send(d(1))
        await trio.sleep(0.005)
        await src_send.send(d(2))
        await trio.sleep(0.100)
        await src_send.aclose()
    assert sink.got == [(0.0, [1]), (pytest.approx(0.010), [2])]


async def test_no_delivery_lost_or_doubled_when_hand_over_and_arrivals_race(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Under a stream of arrivals racing a busy receiver, every delivery is handed over once,
    in order."""
    src_send, src_recv, batch_send, batch_recv = channels(capacity=1000)
    sink = Sink(batch_recv, busy=0.003)
    policy = BatchPolicy(max_size=7, max_delay_ms=4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        nursery.start_soon(run_batcher, src_recv, batch_send, policy)
        for i in range(500):
            await src_send.send(d(i))
            await trio.sleep(0.0007 * (i % 5))
        await src_send.aclose()
    handed = [s for _, batch in sink.got for s in batch]
    assert handed == list(range(500))
    assert all(len(batch) <= 7 for _, batch in sink.got)
