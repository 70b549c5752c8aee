"""Scale-out by consumer group: two instances with one config share the partitions and both
write; when one is killed (kill -9) the other takes its partitions over and finishes.

Own broker (tansu), the suite's PostgreSQL (a schema of the test's own). The takeover time is
measured from the kill to the survivor's log line saying it holds every partition.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from faultkit import (
    CdcProcess,
    Fleet,
    drop_schema,
    make_workload,
    outcome_problems,
    wait_for,
)
from kafkafault import PARTITIONS, kafka_config, keyed, prepare, produce, total_applied
from kafkakit import GROUP_SETTINGS
from servers import TansuBroker

EVENTS = 60_000
FIRST = 10_000  # produced before the instances start; the rest while both run
SESSION_S = GROUP_SETTINGS["session_timeout_ms"] / 1000


def owned(proc: CdcProcess) -> tuple[set[int], float | None]:
    """The partitions an instance holds according to its log, and when it last got some."""
    held: set[int] = set()
    since = None
    for e in proc.logs():
        names = e.get("partitions") or ()
        indexes = {int(str(n).rsplit("[", 1)[1].rstrip("]")) for n in names}
        if e.get("event") == "partitions assigned":
            held |= indexes
            since = dt.datetime.fromisoformat(e["timestamp"]).timestamp()
        elif e.get("event") == "partitions handed off":
            held -= indexes
    return held, since


async def start_two(fleet: Fleet, config: Path) -> tuple[CdcProcess, CdcProcess]:
    """Two instances of one configuration, once both hold partitions."""
    a, b = fleet.spawn(config, "a"), fleet.spawn(config, "b")

    async def shared() -> bool:
        (ha, _), (hb, _) = owned(a), owned(b)
        return bool(ha) and bool(hb) and not ha & hb and ha | hb == set(range(PARTITIONS))

    await wait_for(shared, 30, "both instances holding partitions", alive=a)
    return a, b


async def _flow(api: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=2) as client:
        resp = await client.get(f"{api}/api/stats")
        resp.raise_for_status()
        flow: dict[str, Any] = resp.json()["flows"][0]
        return flow


async def written(api: str) -> int:
    return int((await _flow(api))["written"])


async def status(api: str) -> str:
    return str((await _flow(api))["status"])


@pytest.mark.slow
def test_two_instances_share_partitions_and_survive_kill9(
    kafka_broker: TansuBroker, pg_url: str, unique: str, tmp_path: Path
) -> None:
    """Both instances hold partitions (disjoint, together all four) and both write; after
    kill -9 of one, the other holds all four within the session timeout + 5 s; the tables
    equal the model and no event was applied twice."""
    work = make_workload(EVENTS, seed=23)
    records = keyed(work.events)
    schema, topic, group = unique, f"{unique}.cdc", f"{unique}-g"
    bootstrap = kafka_broker.bootstrap
    config = kafka_config(
        tmp_path, bootstrap=bootstrap, topic=topic, group=group, pg_url=pg_url, schema=schema
    )
    report: dict[str, Any] = {}
    everything = set(range(PARTITIONS))

    async def scenario() -> None:
        await prepare(pg_url, schema, bootstrap, topic, records[:FIRST])
        with Fleet(tmp_path) as fleet:
            a, b = await start_two(fleet, config)
            apis = [await a.api(), await b.api()]
            report["split"] = [sorted(owned(a)[0]), sorted(owned(b)[0])]
            producing = asyncio.create_task(
                produce(bootstrap, topic, records[FIRST:], chunk=1_000, pause=0.1)
            )
            base = [await written(api) for api in apis]

            async def both_write() -> bool:
                now = [await written(api) for api in apis]
                return all(n > w + 500 for n, w in zip(now, base, strict=True))

            await wait_for(both_write, 30, "both instances writing", alive=b)
            killed_at = time.time()
            a.kill9()

            async def took_over() -> bool:
                return owned(b)[0] == everything

            await wait_for(took_over, SESSION_S + 30, "the survivor holding every partition")
            report["takeover_s"] = round((owned(b)[1] or 0) - killed_at, 2)
            assert report["takeover_s"] <= SESSION_S + 5, report
            await producing

            async def all_applied() -> bool:
                return await total_applied(pg_url, schema) == EVENTS

            await wait_for(all_applied, 120, "the checkpoints to cover every event", alive=b)
            problems = await outcome_problems(pg_url, schema, work)
            assert not problems, "\n".join(problems)

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(drop_schema(pg_url, schema))
    print("scale-out:", report)


@pytest.mark.slow
def test_frozen_instance_is_fenced_not_duplicated(
    kafka_broker: TansuBroker, pg_url: str, unique: str, tmp_path: Path
) -> None:
    """An instance frozen (SIGSTOP) past the session timeout loses its partitions in the
    group, but still holds their writer fences: the other instance waits as a standby for
    them instead of writing what the frozen one may still write. Thawed, the frozen instance
    delivers its stale prefetched records (which it may: it holds the fences), hands the
    partitions off, and the work ends with every event applied once."""
    work = make_workload(EVENTS // 2, seed=29)
    records = keyed(work.events)
    schema, topic, group = unique, f"{unique}.cdc", f"{unique}-g"
    bootstrap = kafka_broker.bootstrap
    config = kafka_config(
        tmp_path, bootstrap=bootstrap, topic=topic, group=group, pg_url=pg_url, schema=schema
    )

    async def scenario() -> None:
        await prepare(pg_url, schema, bootstrap, topic, records[:FIRST])
        with Fleet(tmp_path) as fleet:
            a, b = await start_two(fleet, config)
            producing = asyncio.create_task(
                produce(bootstrap, topic, records[FIRST:], chunk=1_000, pause=0.1)
            )
            await asyncio.sleep(1)
            os.kill(a.pid, signal.SIGSTOP)
            try:

                async def standby() -> bool:
                    return bool(b.logged("another instance is writing; waiting as standby"))

                await wait_for(standby, SESSION_S + 20, "the other instance waiting as standby")
            finally:
                os.kill(a.pid, signal.SIGCONT)
            await producing

            async def all_applied() -> bool:
                return await total_applied(pg_url, schema) == len(records)

            await wait_for(all_applied, 120, "the checkpoints to cover every event", alive=b)
            problems = await outcome_problems(pg_url, schema, work)
            assert not problems, "\n".join(problems)
            for proc in (a, b):  # neither is left showing standby once it writes again
                api = await proc.api()

                async def running(api: str = api) -> bool:
                    return await status(api) == "running"

                await wait_for(running, 15, f"{api} running again", alive=proc)

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(drop_schema(pg_url, schema))
