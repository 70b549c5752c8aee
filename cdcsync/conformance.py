"""The destination conformance suite: what every destination must do for the engine (and,
re-exported from cdcsync/source_conformance.py, the sources' suite :func:`check_source`).

The engine's exactly-once guarantee rests on each destination keeping the destination
protocol (:class:`cdcsync.plugin.Destination`, docs/plugins.md): a writer fence and a durable
checkpoint per partition, stored with the batch's effects; items at or below their
partition's checkpoint skipped; bad items dead-lettered rather than fatal. A plugin author
runs this against their component from any async test (under Trio, inside
``cdcsync.plugin.open_bridge()`` when the component uses asyncio libraries)::

    from cdcsync.conformance import check_destination

    async def test_my_sink_conforms():
        async with open_bridge():
            await check_destination(lambda: MySink("flow", "dest", options), table="items")

``make`` builds a new instance over the same (empty, writable) storage each time it is
called; ``table`` is a table the destination can write rows ``{"id": int, "name": str}``
to. Each check raises ``AssertionError`` saying what the protocol expected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cdcsync.events import ChangeEvent, Op
from cdcsync.flow.batch import Batch, Delivery, Item, Partition, WriteResult
from cdcsync.source_conformance import check_source

__all__ = ["EPOCH", "PARTITIONS", "FixedStart", "check_destination", "check_source"]

EPOCH = "2026-01-01T00:00:00+00:00"
P0 = Partition("CONFORMANCE", 0, sole=True)
# Two partitions of another stream (as Kafka's), for the per-partition checks.
PA, PB = Partition("conformance.topic", 0), Partition("conformance.topic", 1)
PARTITIONS = (P0, PA, PB)


def _batch(
    batch_id: int,
    seqs: range,
    table: str,
    *,
    bad: int = -1,
    tombstone: int = -1,
    partition: Partition = P0,
    key_offset: int = 0,
) -> Batch:
    """Inserts of key ``seq + key_offset`` for each sequence; ``bad``/``tombstone``: that one is."""
    items = []
    for seq in seqs:
        delivery = Delivery(seq, f"conformance.{table}", b"{}", None, 0.0, partition)
        if seq == bad:
            items.append(Item(delivery, None, "conformance: a message that did not decode"))
        elif seq == tombstone:
            items.append(Item(delivery, None))
        else:
            k = seq + key_offset
            event = ChangeEvent(table, Op.INSERT, {"id": k, "name": f"n{k}"})
            items.append(Item(delivery, event))
    return Batch(batch_id, items)


class FixedStart:
    """A coordinator for driving a source alone (tests, tools): every partition starts after
    the position given for its stream (None: where the source's configuration says), and
    hand-offs are recorded, not waited for."""

    def __init__(self, after: dict[str, int | None] | None = None) -> None:
        self.after = after or {}
        self.assigned_partitions: list[Partition] = []
        self.revoked_partitions: list[Partition] = []

    async def assigned(self, partitions: Mapping[Partition, str]) -> dict[Partition, int | None]:
        self.assigned_partitions += list(partitions)
        return {p: self.after.get(p.stream) for p in partitions}

    async def revoked(self, partitions: Mapping[Partition, int | None]) -> None:
        self.revoked_partitions += list(partitions)


def _expect(result: WriteResult, what: str, **counts: int) -> None:
    got = {k: getattr(result, k) for k in counts}
    assert got == counts, f"{what}: expected {counts}, the destination reported {got}"


async def _claim(sink: Any, partitions: dict[Partition, str], what: str) -> dict[Partition, Any]:
    got = await sink.claim(partitions)
    assert got is not None, f"{what}: claim() of a free partition must not return None"
    assert set(got) == set(partitions), f"{what}: claim() must answer for each partition"
    return dict(got)


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
        await sink.connect()
        got = await _claim(sink, {P0: EPOCH}, "a new destination")
        assert got == {P0: None}, f"a new destination has no checkpoint, got {got!r}"

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
        assert dict(sink.checkpoints()).get(P0) == 15, "checkpoints() after the writes"

        # While this instance holds the fence, another one cannot claim the partition.
        rival = make()
        try:
            await rival.connect()
            assert await rival.claim({P0: EPOCH}) is None, (
                "claim() must return None while another instance holds the partition's fence"
            )
        finally:
            await rival.close()
    finally:
        await sink.close()
        sink.abort()

    # The checkpoint survives the instance: a new one resumes after the last batch.
    sink = make()
    try:
        await sink.connect()
        got = await _claim(sink, {P0: EPOCH}, "after the previous instance closed")
        assert got == {P0: 15}, (
            f"claim() must return the last committed position (15) from durable storage, "
            f"got {got!r}"
        )
        # A batch straddling the checkpoint applies only what lies beyond it.
        result = await sink.write(_batch(4, range(13, 21), table))
        _expect(result, "seqs 13-20 after checkpoint 15", written=5, skipped=3)

        # Partitions are independent: positions of another stream's partitions start from
        # nothing, and one batch may carry several partitions (Kafka).
        got = await _claim(sink, {PA: "", PB: ""}, "two more partitions")
        assert got == {PA: None, PB: None}, f"new partitions have no checkpoint, got {got!r}"
        mixed = _batch(5, range(0, 5), table, partition=PA, key_offset=100)
        mixed.items += _batch(5, range(0, 3), table, partition=PB, key_offset=200).items
        result = await sink.write(mixed)
        _expect(result, "5 items of partition A and 3 of B", written=8, skipped=0)
        again = _batch(6, range(3, 7), table, partition=PA, key_offset=100)
        again.items += _batch(6, range(2, 4), table, partition=PB, key_offset=200).items
        result = await sink.write(again)
        _expect(result, "A 3-6 after A's 4, B 2-3 after B's 2", written=3, skipped=3)
        cps = dict(sink.checkpoints())
        assert (cps.get(P0), cps.get(PA), cps.get(PB)) == (20, 6, 3), cps

        # A released partition can be claimed elsewhere; the others stay fenced.
        await sink.release([PB])
        rival = make()
        try:
            await rival.connect()
            assert await rival.claim({PA: ""}) is None, "PA is still held"
            got = await _claim(rival, {PB: ""}, "a partition the other instance released")
            assert got == {PB: 3}, f"the released partition resumes at its checkpoint: {got!r}"
        finally:
            await rival.close()
    finally:
        await sink.close()
        sink.abort()
