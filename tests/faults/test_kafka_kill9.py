"""``kill -9`` of ``cdcsync serve`` reading Kafka mid-run loses nothing and applies nothing
twice; the consumer group's committed offsets never run ahead of the checkpoints.

Own broker (tansu), the suite's PostgreSQL (a schema of the test's own); 100,000 events
produced up front, keyed by row to a 4-partition topic; the service is killed three times
while it is writing and restarted each time. The ledger trigger counts every re-application
of an event, and the state table is compared with a Python model.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from faultkit import (
    Fleet,
    drop_schema,
    kill_mid_run,
    make_workload,
    outcome_problems,
    wait_for,
)
from kafkafault import (
    checkpoints,
    group_offsets,
    kafka_config,
    keyed,
    prepare,
    total_applied,
)
from servers import TansuBroker

EVENTS = 100_000


@pytest.mark.slow
def test_kill9_mid_run_applies_every_kafka_event_exactly_once(
    kafka_broker: TansuBroker, pg_url: str, unique: str, tmp_path: Path
) -> None:
    """After three SIGKILLs mid-run, each followed by a restart, every event is applied once;
    at every kill the group's committed offset of each partition is at most its checkpoint
    + 1 (offsets are a hint committed after the destination, never ahead of it)."""
    work = make_workload(EVENTS)
    schema, topic, group = unique, f"{unique}.cdc", f"{unique}-g"
    bootstrap = kafka_broker.bootstrap
    config = kafka_config(
        tmp_path, bootstrap=bootstrap, topic=topic, group=group, pg_url=pg_url, schema=schema
    )
    timings: dict[str, float] = {}

    async def offsets_within_checkpoints(when: str) -> None:
        done, committed = (
            await checkpoints(pg_url, schema),
            await group_offsets(bootstrap, group, topic),
        )
        ahead = {p: (n, done.get(p)) for p, n in committed.items() if n > done.get(p, -1) + 1}
        assert not ahead, f"{when}: committed offsets ahead of the checkpoints: {ahead}"

    async def scenario() -> None:
        t = time.monotonic()
        await prepare(pg_url, schema, bootstrap, topic, keyed(work.events))
        timings["produce"] = time.monotonic() - t
        with Fleet(tmp_path) as fleet:

            async def after_kill(run: int) -> None:
                await offsets_within_checkpoints(f"after kill {run}")

            kills = await kill_mid_run(fleet, config, pg_url, schema, work, timings, after_kill)
            final = fleet.spawn(config, "final")

            async def all_applied() -> bool:
                return await total_applied(pg_url, schema) == EVENTS

            timings["final run until done"] = await wait_for(
                all_applied, 120, "the checkpoints to cover every event", alive=final
            )
            problems = await outcome_problems(pg_url, schema, work)
            assert not problems, "\n".join(problems)

            async def committed_all() -> bool:
                done = await checkpoints(pg_url, schema)
                return await group_offsets(bootstrap, group, topic) == {
                    p: n + 1 for p, n in done.items()
                }

            await wait_for(committed_all, 15, "the group to commit every checkpoint", alive=final)
            print(f"ledger rows at the kills: {kills}")

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(drop_schema(pg_url, schema))
    print("timings:", {k: round(v, 2) for k, v in timings.items()})
