"""The MySQL destination under faults: ``kill -9`` of cdcsync, MariaDB stopped or crashed
mid-run, a standby taking over from a killed or a frozen writer, a server that accepts only
small statements. Each run is held to the one-event-at-a-time model: the ledger trigger
counts every re-application, the state table is compared row by row (faultkit.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import mysqlread
import pytest
from faultkit import (
    Fleet,
    Scenario,
    consumer_info,
    drop_schema,
    flow_done,
    ledger_count,
    make_workload,
    outcome_problems,
    publish,
    sql,
    wait_for,
)
from harness import envelope
from servers import MariaDBServer, NatsServer

KILL9_EVENTS = 100_000


async def _flow(api: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=2) as client:
        resp = await client.get(f"{api}/api/stats")
        resp.raise_for_status()
        flow: dict[str, Any] = resp.json()["flows"][0]
        return flow


@pytest.mark.slow
def test_kill9_mid_run_into_mysql_applies_every_event_exactly_once(
    nats_server: NatsServer, mariadb_server: MariaDBServer, tmp_path: Path
) -> None:
    """100,000 events into MariaDB; cdcsync is killed three times while writing and restarted:
    every event is applied once (the ledger trigger saw no rewrite), the state matches."""
    work = make_workload(KILL9_EVENTS)
    url = mariadb_server.url
    world = Scenario(nats_server.url, url, "kill9")
    config = world.write_config(tmp_path)
    timings: dict[str, float] = {}

    async def scenario() -> None:
        nc = await world.prepare()
        try:
            t = time.monotonic()
            last_seq = await publish(nc, world.prefix, work.events)
            timings["publish"] = time.monotonic() - t
            assert last_seq == KILL9_EVENTS
            with Fleet(tmp_path) as fleet:
                kills = []
                t = time.monotonic()
                for run, threshold in enumerate((8_000, 20_000, 35_000), start=1):
                    proc = fleet.spawn(config, f"run{run}")

                    async def past(threshold: int = threshold) -> bool:
                        return await ledger_count(url, world.schema) > threshold

                    timings[f"run{run} until kill"] = await wait_for(
                        past, 90, f"more than {threshold} ledger rows", alive=proc
                    )
                    proc.kill9()
                    at_kill = await ledger_count(url, world.schema)
                    kills.append(at_kill)
                    assert at_kill < work.ledger_ids, "the kill came too late to test anything"
                final = fleet.spawn(config, "final")
                timings["final run until done"] = await wait_for(
                    lambda: flow_done(url, world.schema, last_seq),
                    180,
                    "the checkpoint to reach the last sequence",
                    alive=final,
                )
                timings["all runs"] = time.monotonic() - t

                async def all_acked() -> bool:
                    info = await consumer_info(nc, world.stream, world.durable)
                    return info is not None and info.num_pending == 0 and info.num_ack_pending == 0

                await wait_for(all_acked, 10, "the consumer to have everything acked", alive=final)
                problems = await outcome_problems(url, world.schema, work)
                assert not problems, "\n".join(problems)
                print(f"ledger rows at the kills: {kills}")
        finally:
            await nc.close()

    asyncio.run(scenario())
    print("timings:", {k: round(v, 2) for k, v in timings.items()})


@pytest.mark.slow
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_mariadb_restart_mid_run_loses_nothing(
    how: str, mariadb_server: MariaDBServer, nats_url: str, unique: str, tmp_path: Path
) -> None:
    """MariaDB stopped (or crashed) mid-run while events keep arriving: the flow reports
    retries, and once the server is back every event lands once."""
    work = make_workload(40_000, seed=13)
    url = mariadb_server.url
    world = Scenario(nats_url, url, unique)
    config = world.write_config(tmp_path)
    seen: dict[str, Any] = {}
    timings: dict[str, float] = {}

    async def scenario() -> None:
        nc = await world.prepare()
        try:
            await publish(nc, world.prefix, work.events[:30_000])
            with Fleet(tmp_path) as fleet:
                proc = fleet.spawn(config, "cdcsync")
                api = await proc.api()

                async def flowing() -> bool:
                    return await ledger_count(url, unique) > 2_000

                await wait_for(flowing, 30, "the first rows", alive=proc)
                if how == "stop":
                    mariadb_server.stop()
                else:
                    mariadb_server.kill()
                t = time.monotonic()
                last_seq = await publish(nc, world.prefix, work.events[30_000:])

                async def retrying() -> bool:
                    flow = await _flow(api)
                    seen.update(flow)
                    return flow["retries"] > 0 or flow["restarts"] > 0

                await wait_for(retrying, 15, "/api/stats to report retries", 0.2, alive=proc)
                assert seen["status"] == "degraded", seen
                mariadb_server.start()
                timings["mariadb down"] = time.monotonic() - t
                timings["until done"] = await wait_for(
                    lambda: flow_done(url, unique, last_seq), 60, "the last checkpoint", alive=proc
                )
                problems = await outcome_problems(url, unique, work)
                assert not problems, "\n".join(problems)

                async def healthy() -> bool:
                    return (await _flow(api))["status"] == "running"

                await wait_for(healthy, 10, "the flow to report running again", alive=proc)
        finally:
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(world.stream)
            await nc.close()

    asyncio.run(scenario())
    print("while down:", {k: seen.get(k) for k in ("status", "retries", "restarts", "last_error")})
    print("timings:", {k: round(v, 2) for k, v in timings.items()})


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill9", "freeze"])
def test_standby_takes_over_from_a_dead_or_frozen_mysql_writer(
    how: str, nats_url: str, mysql_url: str, unique: str, tmp_path: Path
) -> None:
    """A second instance waits as standby while the first writes. ``kill9``: the writer's
    session ends with its process and the standby takes over at once. ``freeze`` (SIGSTOP, as
    a host that vanished: its connection stays open): the server ends the silent session
    after ``session_timeout_s`` (3 s here), which frees the GET_LOCK fence, and the standby
    takes over. Either way every event is applied once."""
    work = make_workload(40_000, seed=19)
    world = Scenario(nats_url, mysql_url, unique)
    config = world.write_config(tmp_path, extra="        session_timeout_s: 3\n")
    report: dict[str, object] = {}

    async def scenario() -> None:
        nc = await world.prepare()
        try:
            await publish(nc, world.prefix, work.events[:15_000])
            with Fleet(tmp_path) as fleet:
                active = fleet.spawn(config, "active")
                active_api = await active.api()

                async def flowing() -> bool:
                    return await ledger_count(mysql_url, unique) > 0

                await wait_for(flowing, 30, "the first rows", alive=active)
                standby = fleet.spawn(config, "standby")
                standby_api = await standby.api()

                async def waiting() -> bool:
                    return bool(standby.logged("another instance is writing; waiting as standby"))

                await wait_for(waiting, 15, "the standby log line", alive=standby)
                assert (await _flow(standby_api))["status"] == "standby"
                before = await ledger_count(mysql_url, unique)
                publishing = asyncio.create_task(
                    publish(nc, world.prefix, work.events[15_000:], chunk=1_000, pause=0.05)
                )

                async def more() -> bool:
                    return await ledger_count(mysql_url, unique) > before + 2_000

                await wait_for(more, 30, "rows from the second part", 0.05, alive=active)
                stand = await _flow(standby_api)
                assert (stand["status"], stand["received"], stand["written"]) == ("standby", 0, 0)
                assert (await _flow(active_api))["written"] > 0
                if how == "kill9":
                    active.kill9()
                else:
                    os.kill(active.pid, signal.SIGSTOP)
                t = time.monotonic()

                async def took_over() -> bool:
                    return (await _flow(standby_api))["status"] == "running"

                report["takeover_s"] = round(
                    await wait_for(took_over, 20, "the standby to take over", alive=standby), 2
                )
                last_seq = await publishing
                await wait_for(
                    lambda: flow_done(mysql_url, unique, last_seq),
                    60,
                    "the last event",
                    alive=standby,
                )
                report["done_after_fault_s"] = round(time.monotonic() - t, 2)
                assert (await _flow(standby_api))["written"] > 0
                problems = await outcome_problems(mysql_url, unique, work)
                assert not problems, "\n".join(problems)
                if how == "freeze":
                    active.kill9()  # SIGKILL ends a stopped process too
        finally:
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(world.stream)
            await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(drop_schema(mysql_url, unique))
    print(how, report)


@pytest.mark.slow
def test_statements_stay_under_a_small_max_allowed_packet(
    nats_url: str, unique: str, tmp_path: Path
) -> None:
    """A server that takes statements of at most 256 KiB: a batch of 1,000 rows of 1 KiB is
    split into statements that fit, and an event larger than any statement can be is a dead
    letter saying so, its payload cut to fit (the server would drop the connection, forever)."""
    with MariaDBServer(options=("--max-allowed-packet=256K",)) as server:
        server.create_database("test")
        url = server.url
        world = Scenario(nats_url, url, unique)
        config = world.write_config(tmp_path, batch="{max_size: 1000, max_delay_ms: 500}")
        big = envelope("state", "insert", {"id": 99_999, "v": 1, "note": "b" * 300_000})
        events = [
            envelope("state", "insert", {"id": i, "v": i, "note": f"{i:05d}" + "x" * 1_000})
            for i in range(1_000)
        ]
        events.insert(500, big)

        async def scenario() -> None:
            nc = await world.prepare()
            try:
                js = nc.jetstream()
                for body in events:  # published before the start: one batch
                    await js.publish(f"{world.prefix}.state", body)
                with Fleet(tmp_path) as fleet:
                    proc = fleet.spawn(config, "cdcsync")
                    done = len(events)
                    await wait_for(
                        lambda: flow_done(url, unique, done), 60, "the last event", alive=proc
                    )
                    assert (await _flow(await proc.api()))["restarts"] == 0
                rows = await sql(url, f"SELECT id, LENGTH(note) FROM {unique}.state ORDER BY id")
                assert [tuple(r) for r in rows] == [(i, 1_005) for i in range(1_000)]
                [letter] = await sql(
                    url,
                    f"SELECT stream_seq, error, LENGTH(payload) FROM {unique}_state.dead_letters",
                )
                assert letter[0] == 501
                assert "exceeds what the server accepts" in letter[1], letter[1]
                assert "cut to" in letter[1] and 0 < letter[2] < len(big), letter
            finally:
                await nc.close()

        asyncio.run(scenario())
        with contextlib.suppress(Exception):
            asyncio.run(
                mysqlread.execute(
                    url, f"DROP DATABASE IF EXISTS {unique}; DROP DATABASE {unique}_state"
                )
            )


@pytest.mark.slow
def test_a_server_that_folds_table_names_finds_them_in_any_case(
    nats_url: str, unique: str, tmp_path: Path
) -> None:
    """With lower_case_table_names=1 (Windows' and macOS's default) MySQL stores `Orders` as
    `orders` and any spelling reaches it: events for `Orders` and `ORDERS` land there, as a
    mapping onto `Orders` does; an unknown name is still a dead letter."""
    with MariaDBServer(options=("--lower-case-table-names=1",)) as server:
        server.create_database("test")
        url = server.url
        world = Scenario(nats_url, url, unique)
        ddl = "CREATE TABLE Orders (id int PRIMARY KEY, v int);"
        config = world.write_config(tmp_path, extra="        tables: {mapped: Orders}\n")
        events = [
            envelope("Orders", "insert", {"id": 1, "v": 1}),
            envelope("ORDERS", "insert", {"id": 2, "v": 2}),
            envelope("mapped", "insert", {"id": 3, "v": 3}),
            envelope("Ordersx", "insert", {"id": 4, "v": 4}),
        ]

        async def scenario() -> None:
            nc = await world.prepare(ddl)
            try:
                last = await publish(nc, world.prefix, [("orders", e) for e in events])
                with Fleet(tmp_path) as fleet:
                    proc = fleet.spawn(config, "cdcsync")
                    await wait_for(
                        lambda: flow_done(url, unique, last), 30, "the last event", alive=proc
                    )
                rows = await sql(url, f"SELECT id FROM {unique}.orders ORDER BY id")
                assert [r[0] for r in rows] == [1, 2, 3]
                letters = await sql(
                    url, f"SELECT stream_seq, error FROM {unique}_state.dead_letters"
                )
                assert [(r[0], "unknown table" in r[1]) for r in letters] == [(4, True)]
            finally:
                await nc.close()

        asyncio.run(scenario())
