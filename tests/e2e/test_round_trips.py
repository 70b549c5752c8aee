"""What a batch costs in round trips to PostgreSQL, as the destination's ``round_trips``
counts them (issue 15: rows, checkpoint and commit in one round trip per batch)."""

from __future__ import annotations

import httpx
import trio
from harness import Env, envelope, wait_until

from cdcsync.conformance import EPOCH, P0, _batch
from cdcsync.events import ChangeEvent, Op
from cdcsync.flow.batch import Batch, Delivery, Item

ITEMS = "CREATE TABLE items (id int PRIMARY KEY, name text);"


def same_key_twice(batch_id: int, seq: int) -> Batch:
    """Two inserts of one key: two waves, which one statement cannot hold."""
    items = [
        Item(
            Delivery(s, "conformance.items", b"{}", None, 0.0, P0),
            ChangeEvent("items", Op.INSERT, {"id": 1, "name": f"n{s}"}),
        )
        for s in (seq, seq + 1)
    ]
    return Batch(batch_id, items)


async def test_a_batch_of_one_wave_is_one_round_trip_and_two_waves_cost_more(env: Env) -> None:
    """Distinct keys: the rows and the position in one statement, no BEGIN/COMMIT. A key
    written twice: a transaction of the waves one after the other, one statement each (the
    last with the position), four round trips."""
    await env.create_schema(ITEMS)
    sink = env.destination()
    try:
        await sink.connect()
        assert await sink.claim({P0: EPOCH}) == {P0: None}
        assert sink.round_trips == 0  # claiming (fences, state tables) is not writing
        for n in range(3):
            result = await sink.write(_batch(n + 1, range(10 * n + 1, 10 * n + 11), "items"))
            assert result.written == 10
            assert sink.round_trips == n + 1
        result = await sink.write(same_key_twice(4, 31))
        assert result.written == 2
        # BEGIN, the first wave, the second wave with the position in one statement, COMMIT
        assert sink.round_trips == 3 + 4
    finally:
        await sink.close()
    assert await env.count("items") == 30
    [row] = await env.sql(f"SELECT name FROM {env.schema}.items WHERE id = 1")
    assert row["name"] == "n32"


async def test_stats_count_one_round_trip_per_batch(env: Env, nursery: trio.Nursery) -> None:
    """/api/stats: a flow of full row images with distinct keys spends one round trip a batch."""
    await env.create_schema(ITEMS)
    events = [envelope("items", "insert", {"id": i, "name": f"n{i}"}) for i in range(1, 41)]
    async with (
        env.running(env.config(), nursery) as running,
        httpx.AsyncClient(base_url=running.api) as client,
    ):
        await env.publish(env.subject() + ".x", events)

        async def acked() -> bool:
            flow = (await client.get("/api/stats")).json()["flows"][0]
            return bool(flow["acked"] == len(events))

        await wait_until(acked, what="every event acknowledged")
        [dest] = (await client.get("/api/stats")).json()["flows"][0]["destinations"]
    assert dest["batches"] >= 1
    assert dest["round_trips"] == dest["batches"], dest
