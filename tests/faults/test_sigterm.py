"""SIGTERM stops ``cdcsync serve`` cleanly: committed work is acknowledged, the rest resumes.

Runs against the session's shared servers, isolated by a unique stream, durable and schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from faultkit import (
    Fleet,
    Scenario,
    checkpoint,
    consumer_info,
    drop_schema,
    flow_done,
    ledger_count,
    make_workload,
    outcome_problems,
    publish,
    wait_for,
)

EVENTS = 60_000


@pytest.mark.slow
def test_sigterm_mid_run_exits_zero_acks_committed_and_resumes(
    nats_url: str, pg_url: str, unique: str, tmp_path: Path
) -> None:
    """SIGTERM mid-run exits 0 within 10 s with every committed event acked; a restart finishes."""
    work = make_workload(EVENTS, seed=17)
    world = Scenario(nats_url, pg_url, unique)
    stream, durable = world.stream, world.durable
    config = world.write_config(tmp_path)
    report: dict[str, object] = {}

    async def scenario() -> None:
        nc = await world.prepare()
        try:
            last_seq = await publish(nc, world.prefix, work.events)
            with Fleet(tmp_path) as fleet:
                first = fleet.spawn(config, "first")

                async def flowing() -> bool:
                    return await ledger_count(pg_url, unique) > 3_000

                await wait_for(flowing, 30, "the first rows", alive=first)
                first.sigterm()
                t = time.monotonic()
                code = first.wait(10)
                report["exit_s"] = round(time.monotonic() - t, 2)
                assert code == 0, first.tail()
                committed = await checkpoint(pg_url, unique)
                report["checkpoint_at_exit"] = committed
                assert committed is not None and committed < last_seq, (
                    "SIGTERM came too late to test anything"
                )
                # Every event up to the checkpoint was committed, so it must be acknowledged:
                # the ack floor is exactly the checkpoint (nothing beyond it was committed).
                info = await consumer_info(nc, stream, durable)
                assert info is not None
                report["ack_floor"] = info.ack_floor.stream_seq
                report["ack_pending_after_exit"] = info.num_ack_pending
                assert info.ack_floor.stream_seq == committed

                second = fleet.spawn(config, "second")
                await wait_for(
                    lambda: flow_done(pg_url, unique, last_seq),
                    60,
                    "the last checkpoint",
                    alive=second,
                )
                second.sigterm()
                assert second.wait(10) == 0, second.tail()
            problems = await outcome_problems(pg_url, unique, work)
            assert not problems, "\n".join(problems)
            info = await consumer_info(nc, stream, durable)
            assert info is not None
            assert (info.num_pending, info.num_ack_pending) == (0, 0)
            assert info.ack_floor.stream_seq == last_seq
        finally:
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
            await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(drop_schema(pg_url, unique))
    print(report)
