"""Two instances with one config: one writes, the other waits, and takes over on a crash.

Runs against the session's shared servers, isolated by a unique stream, durable and schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from faultkit import (
    Fleet,
    Scenario,
    drop_schema,
    flow_done,
    ledger_count,
    make_workload,
    outcome_problems,
    publish,
    wait_for,
)

EVENTS = 60_000
FIRST = 20_000  # published before the instances start; the rest while both run


async def _flow(api: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=2) as client:
        resp = await client.get(f"{api}/api/stats")
        resp.raise_for_status()
        flow: dict[str, Any] = resp.json()["flows"][0]
        return flow


@pytest.mark.slow
def test_standby_waits_then_takes_over_after_kill9(
    nats_url: str, pg_url: str, unique: str, tmp_path: Path
) -> None:
    """A second instance stays standby while the first writes and finishes the job after kill -9."""
    work = make_workload(EVENTS, seed=19)
    world = Scenario(nats_url, pg_url, unique)
    stream, prefix = world.stream, world.prefix
    config = world.write_config(tmp_path)
    report: dict[str, object] = {}

    async def scenario() -> None:
        nc = await world.prepare()
        try:
            await publish(nc, prefix, work.events[:FIRST])
            with Fleet(tmp_path) as fleet:
                active = fleet.spawn(config, "active")
                active_api = await active.api()

                async def flowing() -> bool:
                    return await ledger_count(pg_url, unique) > 0

                await wait_for(flowing, 30, "the first rows", alive=active)
                standby = fleet.spawn(config, "standby")
                standby_api = await standby.api()

                async def waiting() -> bool:
                    return bool(standby.logged("another instance is writing; waiting as standby"))

                await wait_for(waiting, 15, "the standby log line", alive=standby)
                assert (await _flow(standby_api))["status"] == "standby"

                # The rest arrives while both run: only the active instance applies it, and it
                # is killed in the middle of that.
                before = await ledger_count(pg_url, unique)
                publishing = asyncio.create_task(
                    publish(nc, prefix, work.events[FIRST:], chunk=1_000, pause=0.05)
                )

                async def more() -> bool:
                    return await ledger_count(pg_url, unique) > before + 2_000

                await wait_for(more, 30, "rows from the second part", 0.05, alive=active)
                stand = await _flow(standby_api)
                assert (stand["status"], stand["received"], stand["written"]) == ("standby", 0, 0)
                assert (await _flow(active_api))["written"] > 0
                active.kill9()
                t = time.monotonic()

                async def took_over() -> bool:
                    return (await _flow(standby_api))["status"] == "running"

                report["takeover_s"] = round(
                    await wait_for(took_over, 10, "the standby to take over", alive=standby), 2
                )
                report["ledger_rows_at_takeover"] = await ledger_count(pg_url, unique)
                report["ledger_rows_total"] = work.ledger_ids
                last_seq = await publishing
                await wait_for(
                    lambda: flow_done(pg_url, unique, last_seq), 30, "the last event", alive=standby
                )
                report["done_after_kill_s"] = round(time.monotonic() - t, 2)
                assert (await _flow(standby_api))["written"] > 0
                problems = await outcome_problems(pg_url, unique, work)
                assert not problems, "\n".join(problems)
        finally:
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
            await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(drop_schema(pg_url, unique))
    print(report)


@pytest.mark.slow
def test_standby_stops_promptly_on_sigterm(
    nats_url: str, pg_url: str, unique: str, tmp_path: Path
) -> None:
    """SIGTERM to a waiting standby exits 0 within 10 s and leaves the active instance writing."""
    work = make_workload(20_000, seed=31)
    world = Scenario(nats_url, pg_url, unique)
    stream, prefix = world.stream, world.prefix
    config = world.write_config(tmp_path)

    async def scenario() -> None:
        nc = await world.prepare()
        try:
            await publish(nc, prefix, work.events[:10_000])
            with Fleet(tmp_path) as fleet:
                active = fleet.spawn(config, "active")
                await active.api()
                standby = fleet.spawn(config, "standby")
                standby_api = await standby.api()

                async def waiting() -> bool:
                    return (await _flow(standby_api))["status"] == "standby"

                await wait_for(waiting, 15, "the second instance to wait as standby", alive=active)
                standby.sigterm()
                t = time.monotonic()
                assert standby.wait(10) == 0, standby.tail()
                print(f"standby exited in {time.monotonic() - t:.2f} s")
                last_seq = await publish(nc, prefix, work.events[10_000:])
                await wait_for(
                    lambda: flow_done(pg_url, unique, last_seq), 30, "the last event", alive=active
                )
                problems = await outcome_problems(pg_url, unique, work)
                assert not problems, "\n".join(problems)
        finally:
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
            await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(drop_schema(pg_url, unique))
