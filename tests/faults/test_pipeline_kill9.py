"""``kill -9`` while a destination has two batches in flight loses nothing and applies
nothing twice.

The destination prepares batch N+1 (filter, resolve, plan) while batch N is being written
(docs/semantics.md, "Batches in flight"). Here batch N is held at PostgreSQL by a lock, the
next batches are prepared and waiting behind it, and the service is killed; the restarted
service must apply every event exactly once (the ledger trigger counts re-applications) and
end with the model's state.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest
from faultkit import (
    Fleet,
    Scenario,
    consumer_info,
    flow_done,
    make_workload,
    outcome_problems,
    publish,
    wait_for,
)
from servers import NatsServer, PostgresServer

EVENTS = 3_001  # one to start with, then 3,000: at least three batches of max_size 1,000


@pytest.mark.slow
def test_kill9_with_two_batches_in_flight_applies_every_event_once(
    nats_server: NatsServer, pg_server: PostgresServer, tmp_path: Path
) -> None:
    """Batch N blocked in PostgreSQL, N+1 prepared behind it, N+2 decoded: kill -9, then a
    restart applies all 3,001 events exactly once."""
    work = make_workload(EVENTS)
    world = Scenario(nats_server.url, pg_server.url, "pipeline")
    config = world.write_config(tmp_path, batch="{max_size: 1000, max_delay_ms: 20}")

    async def scenario() -> None:
        nc = await world.prepare()
        blocker = await asyncpg.connect(pg_server.url)
        try:
            with Fleet(tmp_path) as fleet:
                first = fleet.spawn(config, "first")
                # One event first: the flow runs and the destination knows the tables.
                await publish(nc, world.prefix, work.events[:1])
                await wait_for(
                    lambda: flow_done(pg_server.url, world.schema, 1), 30, "the first event"
                )
                api = await first.api()
                # Both tables locked: the next write waits at PostgreSQL, holding its batch.
                await blocker.execute("BEGIN")
                await blocker.execute(
                    f"LOCK TABLE {world.schema}.ledger, {world.schema}.state IN EXCLUSIVE MODE"
                )
                await publish(nc, world.prefix, work.events[1:])

                # The writer holds batch N at the lock; the fan-out takes batches as long as
                # there is room behind it: the preparer's one-slot channel (N+1, prepared), the
                # preparer itself (N+2) and the fan-out's own hand-over. The batcher hands over
                # what it holds as soon as the fan-out waits, so once the count of received
                # events stops moving with nothing acknowledged, that chain is full. (Batch
                # sizes vary: the first hand-overs go while the events are still arriving.)
                seen: list[int] = []

                async def two_in_flight() -> bool:
                    async with httpx.AsyncClient() as client:
                        flow = (await client.get(f"{api}/api/stats")).json()["flows"][0]
                    assert flow["acked"] == 1, "a write went through the lock"
                    seen.append(flow["received"])
                    recent = seen[-10:]  # one second of samples
                    return len(recent) == 10 and len(set(recent)) == 1 and recent[0] > 2

                await wait_for(two_in_flight, 30, "two batches in flight", alive=first)
                first.kill9()
                await blocker.execute("ROLLBACK")
                final = fleet.spawn(config, "final")
                await wait_for(
                    lambda: flow_done(pg_server.url, world.schema, EVENTS),
                    60,
                    "every event after the restart",
                    alive=final,
                )

                async def all_acked() -> bool:
                    info = await consumer_info(nc, world.stream, world.durable)
                    return info is not None and info.num_pending == 0 and info.num_ack_pending == 0

                await wait_for(all_acked, 10, "everything acknowledged", alive=final)
            problems = await outcome_problems(pg_server.url, world.schema, work)
            assert not problems, "\n".join(problems)
        finally:
            await blocker.close()
            await nc.close()

    asyncio.run(scenario())
