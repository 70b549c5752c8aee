"""A broker or database that goes away mid-run costs time, never events.

Each test takes down its own throwaway server, or cdcsync's session on it (the shared
servers are never touched), while ``cdcsync serve`` is applying a workload, publishes
more while or after it is down, and then holds PostgreSQL to the one-event-at-a-time
model: nothing lost, nothing applied twice (the ledger trigger counts re-applications),
no dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from faultkit import (
    Fleet,
    Scenario,
    checkpoint,
    create_schema,
    drop_schema,
    flow_done,
    ledger_count,
    make_workload,
    open_js,
    outcome_problems,
    publish,
    sql,
    wait_for,
)
from servers import NatsServer, PostgresServer

EVENTS = 40_000
FIRST = 30_000  # published before the fault; the rest after it (or while it lasts)
OUTAGE_S = 2.0
TERMINATIONS = 40


def _connections(pid: int, port: int) -> int:
    """Established TCP connections from process ``pid`` to ``port`` on the loopback."""
    return sum(
        1
        for c in psutil.Process(pid).net_connections("tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


async def _stats(api: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=2) as client:
        resp = await client.get(f"{api}/api/stats")
        resp.raise_for_status()
        flow: dict[str, Any] = resp.json()["flows"][0]
        return flow


@pytest.mark.slow
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_nats_restart_mid_run_loses_nothing(
    how: str, nats_server: NatsServer, pg_url: str, unique: str, tmp_path: Path
) -> None:
    """After NATS goes down mid-run (stopped or killed) and comes back, every event lands once."""
    work = make_workload(EVENTS, seed=11)
    world = Scenario(nats_server.url, pg_url, unique)
    config = world.write_config(tmp_path)
    timings: dict[str, float] = {}

    async def scenario() -> None:
        nc = await world.prepare()
        try:
            await publish(nc, f"{unique}.f", work.events[:FIRST])
        finally:
            await nc.close()
        with Fleet(tmp_path) as fleet:
            proc = fleet.spawn(config, "cdcsync")

            async def flowing() -> bool:
                return await ledger_count(pg_url, unique) > 2_000

            await wait_for(flowing, 30, "the first rows", alive=proc)
            t = time.monotonic()
            if how == "stop":
                nats_server.stop()
            else:
                nats_server.kill()
            at_restart = await ledger_count(pg_url, unique)
            await asyncio.sleep(OUTAGE_S)  # longer than the client's reconnect wait
            nats_server.start()
            timings["nats down"] = time.monotonic() - t
            nc = await open_js(nats_server.url)
            try:
                last_seq = await publish(nc, f"{unique}.f", work.events[FIRST:])
            finally:
                await nc.close()
            assert last_seq == EVENTS, "the stream lost published events across the restart"
            timings["until done"] = await wait_for(
                lambda: flow_done(pg_url, unique, last_seq), 60, "the last checkpoint", alive=proc
            )
            problems = await outcome_problems(pg_url, unique, work)
            assert not problems, "\n".join(problems)
            assert proc.returncode is None
            print(f"ledger rows when NATS went down: {at_restart} of {work.ledger_ids}")
            print([(e["event"], e.get("error")) for e in proc.logs() if e["level"] != "info"])
            # However it recovered (reconnect, or a restart of the flow), one flow needs one
            # connection: a leaked one keeps reconnecting and holding server resources.
            assert _connections(proc.pid, nats_server.port) == 1, "connections to NATS"

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(drop_schema(pg_url, unique))
    print("timings:", {k: round(v, 2) for k, v in timings.items()})


@pytest.mark.slow
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_postgres_restart_mid_run_loses_nothing(
    how: str, pg_server: PostgresServer, nats_url: str, unique: str, tmp_path: Path
) -> None:
    """While PostgreSQL is down the flow reports retries; once it is back every event lands once."""
    work = make_workload(EVENTS, seed=13)
    world = Scenario(nats_url, pg_server.url, unique)
    config = world.write_config(tmp_path)
    timings: dict[str, float] = {}
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        nc = await world.prepare()
        try:
            await publish(nc, f"{unique}.f", work.events[:FIRST])
            with Fleet(tmp_path) as fleet:
                proc = fleet.spawn(config, "cdcsync")
                api = await proc.api()

                async def flowing() -> bool:
                    return await ledger_count(pg_server.url, unique) > 2_000

                await wait_for(flowing, 30, "the first rows", alive=proc)
                if how == "stop":
                    pg_server.stop()
                else:
                    pg_server.kill()
                t = time.monotonic()
                # Events keep arriving while the database is down: writes must fail and retry.
                last_seq = await publish(nc, f"{unique}.f", work.events[FIRST:])

                async def retrying() -> bool:
                    flow = await _stats(api)
                    seen.update(flow)
                    return flow["retries"] > 0 or flow["restarts"] > 0

                await wait_for(retrying, 15, "/api/stats to report retries", 0.2, alive=proc)
                assert seen["status"] == "degraded", seen
                assert seen["last_error"], seen
                pg_server.start()
                timings["pg down"] = time.monotonic() - t
                timings["until done"] = await wait_for(
                    lambda: flow_done(pg_server.url, unique, last_seq),
                    60,
                    "the last checkpoint",
                    alive=proc,
                )
                problems = await outcome_problems(pg_server.url, unique, work)
                assert not problems, "\n".join(problems)

                async def healthy() -> bool:
                    return (await _stats(api))["status"] == "running"

                await wait_for(healthy, 10, "the flow to report running again", alive=proc)
        finally:
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(unique.upper())
            await nc.close()

    asyncio.run(scenario())
    print("stats while down:", {k: seen.get(k) for k in ("status", "retries", "restarts")})
    print("timings:", {k: round(v, 2) for k, v in timings.items()})


@pytest.mark.slow
def test_terminated_writer_connections_are_retried(
    pg_server: PostgresServer, nats_url: str, unique: str, tmp_path: Path
) -> None:
    """An admin killing cdcsync's PostgreSQL session over and over costs retries, never events."""
    work = make_workload(EVENTS, seed=23)
    world = Scenario(nats_url, pg_server.url, unique)
    config = world.write_config(tmp_path)
    report: dict[str, Any] = {}

    async def terminate_writer() -> int:
        rows = await sql(
            pg_server.url,
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'cdcsync:f:primary'",
        )
        return int(rows[0][0])

    async def scenario() -> None:
        nc = await world.prepare()
        try:
            with Fleet(tmp_path) as fleet:
                proc = fleet.spawn(config, "cdcsync")
                api = await proc.api()
                # A steady trickle of events; each time the flow has made progress again,
                # its session is terminated at a random moment, so that sessions die both
                # mid-statement and between statements (the rarer race).
                publishing = asyncio.create_task(
                    publish(nc, f"{unique}.f", work.events, chunk=250, pause=0.05)
                )
                rng = random.Random(5)
                terminated = 0
                while not publishing.done() and terminated < TERMINATIONS:
                    mark = await checkpoint(pg_server.url, unique) or 0

                    async def progressed(mark: int = mark) -> bool:
                        return (
                            publishing.done()
                            or (await checkpoint(pg_server.url, unique) or 0) > mark
                        )

                    await wait_for(
                        progressed,
                        30,
                        f"progress after {terminated} terminated sessions",
                        0.01,
                        alive=proc,
                    )
                    await asyncio.sleep(rng.uniform(0, 0.03))
                    terminated += await terminate_writer()
                report["terminated"] = terminated
                last_seq = await publishing
                await wait_for(
                    lambda: flow_done(pg_server.url, unique, last_seq),
                    60,
                    "the last checkpoint",
                    alive=proc,
                )
                problems = await outcome_problems(pg_server.url, unique, work)
                assert not problems, "\n".join(problems)
                flow = await _stats(api)
                report["retries"] = flow["retries"]
                report["restarts"] = flow["restarts"]
                assert flow["retries"] + flow["restarts"] > 0
        finally:
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(unique.upper())
            await nc.close()

    asyncio.run(scenario())
    print(report)


@pytest.mark.slow
def test_postgres_down_at_start_is_waited_for_with_one_nats_connection(
    pg_server: PostgresServer, nats_url: str, unique: str, tmp_path: Path
) -> None:
    """Started before its database, cdcsync waits for it, then syncs over one NATS connection."""
    work = make_workload(4_000, seed=29)
    world = Scenario(nats_url, pg_server.url, unique)
    config = world.write_config(tmp_path)
    nats_port = int(nats_url.rsplit(":", 1)[1])

    async def scenario() -> None:
        await create_schema(pg_server.url, unique)
        pg_server.stop()
        nc = await open_js(nats_url)
        try:
            await nc.jetstream().add_stream(name=unique.upper(), subjects=[f"{unique}.f.>"])
            last_seq = await publish(nc, f"{unique}.f", work.events)
            with Fleet(tmp_path) as fleet:
                proc = fleet.spawn(config, "cdcsync")
                api = await proc.api()

                async def retried_start() -> bool:
                    return (await _stats(api))["restarts"] >= 3

                await wait_for(retried_start, 15, "three retries of the flow start", alive=proc)
                pg_server.start()
                await wait_for(
                    lambda: flow_done(pg_server.url, unique, last_seq),
                    30,
                    "the last checkpoint",
                    alive=proc,
                )
                problems = await outcome_problems(pg_server.url, unique, work)
                assert not problems, "\n".join(problems)
                assert _connections(proc.pid, nats_port) == 1, "connections to NATS for one flow"
        finally:
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(unique.upper())
            await nc.close()

    asyncio.run(scenario())
