"""``kill -9`` of ``cdcsync serve`` mid-run loses nothing and applies nothing twice.

Own NATS and own PostgreSQL, 100,000 events published up front; the service is killed
three times while it is writing and restarted each time. The ledger trigger counts every
re-application of an event, and the state table is compared with a Python model.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from faultkit import (
    Fleet,
    Scenario,
    consumer_info,
    flow_done,
    kill_mid_run,
    make_workload,
    outcome_problems,
    publish,
    wait_for,
)
from servers import NatsServer, PostgresServer

EVENTS = 100_000


@pytest.mark.slow
def test_kill9_mid_run_applies_every_event_exactly_once(
    nats_server: NatsServer, pg_server: PostgresServer, tmp_path: Path
) -> None:
    """After three SIGKILLs mid-run, each followed by a restart, every event is applied once."""
    work = make_workload(EVENTS)
    world = Scenario(nats_server.url, pg_server.url, "kill9")
    schema, stream, durable, prefix = world.schema, world.stream, world.durable, world.prefix
    config = world.write_config(tmp_path)
    timings: dict[str, float] = {}

    async def scenario() -> None:
        nc = await world.prepare()
        try:
            t = time.monotonic()
            last_seq = await publish(nc, prefix, work.events)
            timings["publish"] = time.monotonic() - t
            assert last_seq == EVENTS

            with Fleet(tmp_path) as fleet:
                kills = await kill_mid_run(fleet, config, pg_server.url, schema, work, timings)
                final = fleet.spawn(config, "final")
                timings["final run until done"] = await wait_for(
                    lambda: flow_done(pg_server.url, schema, last_seq),
                    120,
                    "the checkpoint to reach the last sequence",
                    alive=final,
                )

                async def all_acked() -> bool:
                    info = await consumer_info(nc, stream, durable)
                    return info is not None and info.num_pending == 0 and info.num_ack_pending == 0

                await wait_for(all_acked, 10, "the consumer to have everything acked", alive=final)
                problems = await outcome_problems(pg_server.url, schema, work)
                assert not problems, "\n".join(problems)
                print(f"ledger rows at the kills: {kills}")
        finally:
            await nc.close()

    asyncio.run(scenario())
    print("timings:", {k: round(v, 2) for k, v in timings.items()})
