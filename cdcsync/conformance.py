"""The destination conformance suite: what every destination must do for the engine.

The engine's exactly-once guarantee rests on each destination keeping the destination
protocol (docs/plugins.md): a durable checkpoint stored with the batch's effects, items at
or below it skipped, bad items dead-lettered rather than fatal. A plugin author runs this
against their component from any async test (under Trio, inside
``cdcsync.bridge.open_bridge()`` when the component uses asyncio libraries)::

    from cdcsync.conformance import check_destination

    async def test_my_sink_conforms():
        async with open_bridge():
            await check_destination(lambda: MySink("flow", "dest", options), table="items")

``make`` builds a new instance over the same (empty, writable) storage each time it is
called; ``table`` is a table the destination can write rows ``{"id": int, "name": str}``
to. Each check raises ``AssertionError`` saying what the protocol expected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cdcsync.events import ChangeEvent, Op
from cdcsync.flow.batch import Batch, Delivery, Item, WriteResult

__all__ = ["check_destination"]

STREAM = ("CONFORMANCE", "2026-01-01T00:00:00+00:00")


def _batch(batch_id: int, seqs: range, table: str, *, bad: int = 0, tombstone: int = 0) -> Batch:
    """Inserts of key ``seq`` for each sequence; ``bad``/``tombstone``: that sequence is one."""
    items = []
    for seq in seqs:
        delivery = Delivery(seq, f"conformance.{table}", b"{}", None)
        if seq == bad:
            items.append(Item(delivery, None, "conformance: a message that did not decode"))
        elif seq == tombstone:
            items.append(Item(delivery, None))
        else:
            event = ChangeEvent(table, Op.INSERT, {"id": seq, "name": f"n{seq}"})
            items.append(Item(delivery, event))
    return Batch(batch_id, items)


def _expect(result: WriteResult, what: str, **counts: int) -> None:
    got = {k: getattr(result, k) for k in counts}
    assert got == counts, f"{what}: expected {counts}, the destination reported {got}"


async def check_destination(make: Callable[[], Any], *, table: str) -> None:
    """Run every check of the destination protocol against fresh instances from ``make``."""
    # problems() serves `cdcsync check --connect`: its own short-lived instance.
    probe = make()
    try:
        assert isinstance(await probe.problems(), list), "problems() must return a list"
    finally:
        await probe.close()

    sink = make()
    try:
        assert await sink.connect() is True, "connect() on a free destination must return True"
        checkpoint = await sink.prepare(STREAM)
        assert checkpoint is None, f"a new destination has no checkpoint, got {checkpoint!r}"

        result = await sink.write(_batch(1, range(1, 11), table))
        _expect(result, "a batch of 10 inserts", written=10, dead_lettered=0, skipped=0)

        # A redelivery of a committed batch must change nothing (exactly-once effect).
        result = await sink.write(_batch(2, range(1, 11), table))
        _expect(result, "the same batch again", written=0, dead_lettered=0, skipped=10)

        # A bad item is dead-lettered, a tombstone skipped; neither stops the batch.
        result = await sink.write(_batch(3, range(11, 16), table, bad=12, tombstone=13))
        _expect(
            result,
            "inserts with a bad item (seq 12) and a tombstone (seq 13)",
            written=3,
            dead_lettered=1,
            skipped=1,
        )
    finally:
        await sink.close()
        sink.abort()

    # The checkpoint survives the instance: a new one resumes after the last batch.
    sink = make()
    try:
        assert await sink.connect() is True, "connect() after the previous instance closed"
        checkpoint = await sink.prepare(STREAM)
        assert checkpoint == 15, (
            f"prepare() must return the last committed sequence (15) from durable storage, "
            f"got {checkpoint!r}"
        )
        # A batch straddling the checkpoint applies only what lies beyond it.
        result = await sink.write(_batch(4, range(13, 21), table))
        _expect(result, "seqs 13-20 after checkpoint 15", written=5, skipped=3)
    finally:
        await sink.close()
        sink.abort()
