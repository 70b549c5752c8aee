"""Messages that broke decoding, and how a flow reports trouble it has recovered from.

Issue 17: a Debezium Decimal with ``parameters`` ``{"scale": "100000000"}`` (or a string)
raised inside decoding, and the flow restarted every 0.5-30 s on the same message with
/health at 503; ``1e-400`` landed in a numeric column as 0; and ``last_error`` stayed set
after the flow was healthy again. Through real JetStream and PostgreSQL.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import trio
from harness import Env, wait_until
from test_hostile_input import accounted, assert_healthy, good, letters_by_seq, wait_checkpoint

TABLES = """
CREATE TABLE users (id int PRIMARY KEY, name text, email text);
CREATE TABLE dbz (id int PRIMARY KEY, amount numeric, born date, at time, t text);
CREATE TABLE nums (id int PRIMARY KEY, n numeric, f float8, j jsonb);
"""
DECIMAL = "org.apache.kafka.connect.data.Decimal"


def debezium(i: int, column: dict[str, Any], value: Any, schema: Any = None) -> bytes:
    """A Debezium create for ``dbz`` whose column ``column["field"]`` holds ``value``."""
    if schema is None:
        after = [{"field": "id", "type": "int32"}, column]
        schema = {"type": "struct", "fields": [{"field": "after", "fields": after}]}
    after_row = {"id": i, column.get("field", "amount"): value}
    payload = {"op": "c", "source": {"table": "dbz"}, "after": after_row, "before": None}
    return json.dumps({"schema": schema, "payload": payload}).encode()


def amount(params: Any) -> dict[str, Any]:
    return {"field": "amount", "type": "bytes", "name": DECIMAL, "parameters": params}


# (message, words its dead letter's reason holds; None: it lands)
BAD_DEBEZIUM: list[tuple[bytes, tuple[str, ...] | None]] = [
    # the two messages of the issue: the exact value, which PostgreSQL's numeric cannot hold
    (debezium(1, amount({"scale": "100000000"}), "AQ=="), ("22003",)),
    (debezium(2, amount("scale=2"), "AQ=="), ("column 'amount'", "parameters", "an object")),
    (debezium(3, amount({"scale": "2147483648"}), "AQ=="), ("'scale'", "a Java int")),
    (debezium(4, amount({}), "AQ=="), ("'scale'", "missing")),
    (debezium(5, amount({"scale": [2]}), "AQ=="), ("'scale'", "an array")),
    (debezium(6, amount({"scale": "2"}), "MD!k="), ("amount", "not base64")),
    (debezium(7, amount({"scale": "2"}), True), ("amount", "a boolean")),
    (debezium(8, {"field": "born", "name": "io.debezium.time.Date"}, True), ("born", "integer")),
    (debezium(9, {"field": "born", "name": "io.debezium.time.Date"}, 10**12), ("born", "9999")),
    (
        debezium(10, {"field": "at", "name": "io.debezium.time.MicroTime"}, 90_000_000_000),
        ("'at'", "time of day"),
    ),
    (debezium(11, amount({"scale": "2"}), "AQ==", schema={"fields": "after"}), ("'fields'",)),
    (debezium(12, amount({"scale": "2"}), "AQ==", schema="struct"), ("'schema'", "object")),
    (
        debezium(13, {"field": "amount", "name": ["x"]}, "AQ==", schema=None),
        ("a 'name' in 'after'",),
    ),
    # and next to them, the good ones land exactly
    (debezium(14, amount({"scale": "2"}), "MDk="), None),
    (debezium(15, amount({"scale": "-3"}), "AQ=="), None),
    (debezium(16, {"field": "at", "name": "io.debezium.time.MicroTime"}, 86_400_000_000), None),
]


async def watch_health(api: str, seen: set[int], stop: trio.Event) -> None:
    """Record every /health status code until ``stop``."""
    async with httpx.AsyncClient(base_url=api) as client:
        while not stop.is_set():
            seen.add((await client.get("/health")).status_code)
            await trio.sleep(0.05)


async def test_malformed_debezium_events_are_dead_letters_and_the_flow_goes_on(
    env: Env, nursery: trio.Nursery
) -> None:
    """Each malformed logical type is its own dead letter with its reason, the good events
    around them land, /health stays 200 and the flow never restarts."""
    await env.create_schema(TABLES)
    messages: list[bytes] = []
    expect: dict[int, tuple[str, ...] | None] = {}
    for k, (payload, outcome) in enumerate(BAD_DEBEZIUM, 1):
        messages.append(good(k))
        messages.append(payload)
        expect[len(messages)] = outcome
    messages.append(good(len(BAD_DEBEZIUM) + 1))
    health: set[int] = set()
    stop = trio.Event()
    async with env.running(env.config(), nursery) as running:
        nursery.start_soon(watch_health, running.api, health, stop)
        await env.publish(env.subject() + ".dbz", messages)
        await wait_checkpoint(env, running, len(messages))
        await trio.sleep(0.5)  # a restart would show now
        stop.set()
        assert_healthy(running)
        await accounted(running, len(messages))
    assert health == {200}, f"/health answered {health}"

    letters = await letters_by_seq(env)
    problems = []
    for seq, words in expect.items():
        letter = letters.get(seq)
        if words is None:
            if letter is not None:
                problems.append(f"seq {seq}: dead-lettered: {letter['error']!r}")
        elif letter is None:
            problems.append(f"seq {seq}: not dead-lettered")
        elif not all(w in letter["error"] for w in words):
            problems.append(f"seq {seq}: reason {letter['error']!r} lacks {words}")
    assert not problems, "\n".join(problems)
    assert set(letters) == {seq for seq, words in expect.items() if words}
    rows = await env.sql(f"SELECT id, amount FROM {env.schema}.dbz ORDER BY id")
    assert [tuple(r) for r in rows] == [(14, Decimal("123.45")), (15, Decimal(1000)), (16, None)]
    at = await env.sql(f"SELECT at::text FROM {env.schema}.dbz WHERE id = 16")
    assert at[0][0] == "24:00:00"
    assert [r["id"] for r in await env.rows("users")] == list(range(1, len(BAD_DEBEZIUM) + 2))


NUMBERS: list[tuple[bytes, Any]] = [
    # (the row's JSON, the dead letter's reason or None)
    (b'"n":1e-400', None),
    (b'"n":-1.5E-400', None),
    (b'"n":123456789e-330', None),
    (b'"n":1e400', None),
    (b'"n":1.23456789012345678e5', None),
    (b'"n":-0.0e-999', None),
    (b'"f":1e-400', "22003"),  # a float8 cannot hold it: dead-lettered, not stored as 0
    (b'"j":{"tiny":1e-400,"half":0.5}', None),
]


async def test_numbers_too_small_or_large_for_a_float_land_exactly(
    env: Env, nursery: trio.Nursery
) -> None:
    """``1e-400`` and its kind land in a numeric (and jsonb) column exactly; a float8 column
    that cannot hold one dead-letters it; none is ever stored as a different number."""
    await env.create_schema(TABLES)
    messages = [
        b'{"table":"nums","operation":"insert","data":{"id":%d,%s}}' % (k, row)
        for k, (row, _) in enumerate(NUMBERS, 1)
    ]
    async with env.running(env.config(), nursery) as running:
        await env.publish(env.subject() + ".nums", messages)
        await wait_checkpoint(env, running, len(messages))
        assert_healthy(running)
    letters = await letters_by_seq(env)
    assert {seq: d["error"][:5] for seq, d in letters.items()} == {
        k: reason for k, (_, reason) in enumerate(NUMBERS, 1) if reason
    }
    for k, (row, reason) in enumerate(NUMBERS, 1):
        if reason or not row.startswith(b'"n":'):
            continue
        text = row.removeprefix(b'"n":').decode()
        got = await env.sql(f"SELECT n = $1::numeric FROM {env.schema}.nums WHERE id = $2", text, k)
        assert [r[0] for r in got] == [True], (text, got)
    jsonb = await env.sql(
        f"SELECT j->'tiny' = '1e-400'::jsonb, jsonb_typeof(j->'half'), j->>'half' "
        f"FROM {env.schema}.nums WHERE id = $1",
        len(NUMBERS),
    )
    assert tuple(jsonb[0]) == (True, "number", "0.5")


# --------------------------------------------------------------------------- last_error


# The flow is named after the test, so that terminating its sessions (application_name
# cdcsync:<flow>:<destination>) touches no other test's.


async def flow_state(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    state: dict[str, Any] = (await client.get(f"/api/flows/{name}")).json()["state"]
    return state


async def settle(client: httpx.AsyncClient, name: str) -> None:
    """Wait until the flow reports running (a retry or restart may still be finishing)."""

    async def ok() -> bool:
        return (await flow_state(client, name))["status"] == "running"

    await wait_until(ok, what="the flow to report running")


async def test_last_error_clears_when_the_destination_recovers(
    env: Env, nursery: trio.Nursery
) -> None:
    """A write that failed (the session was terminated) sets last_error; once the retry
    succeeds the flow and the destination show ``running`` with last_error null again, and
    last_error_at still says when it happened."""
    await env.create_schema(TABLES)
    name = env.unique
    async with (
        env.running(env.config(env.flow_yaml(name)), nursery) as running,
        httpx.AsyncClient(base_url=running.api) as client,
    ):
        await env.publish(env.subject(name) + ".x", [good(1)])
        await env.applied(1, flow=name)
        assert (await flow_state(client, name))["last_error_at"] is None
        killed = await env.sql(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1",
            f"cdcsync:{name}:primary",
        )
        assert killed[0][0] >= 1
        await env.publish(env.subject(name) + ".x", [good(2)])
        await env.applied(2, flow=name)
        await settle(client, name)
        state = await flow_state(client, name)
        [dest] = state["destinations"]
        assert state["retries"] + state["restarts"] >= 1, state
        assert (state["last_error"], dest["last_error"]) == (None, None), state
        assert state["last_error_at"] is not None, state
        assert (await client.get("/health")).status_code == 200
    assert [r["id"] for r in await env.rows("users")] == [1, 2]


async def test_last_error_clears_when_a_restarted_flow_runs(
    env: Env, nursery: trio.Nursery
) -> None:
    """A flow restarting because its stream is missing shows why; once the stream exists and
    the flow runs, last_error is null (restarts and last_error_at keep the history)."""
    await env.create_schema(TABLES)
    name = env.unique
    flow = env.flow_yaml(name).replace(
        "ack_wait_s: 30", "ack_wait_s: 30\n        create_stream: false"
    )
    async with (
        env.running(env.config(flow), nursery, wait_running=False) as running,
        httpx.AsyncClient(base_url=running.api) as client,
    ):

        async def restarting() -> bool:
            state = await flow_state(client, name)
            return state["restarts"] >= 1 and "does not exist" in (state["last_error"] or "")

        await wait_until(restarting, what="the flow to restart for the missing stream")
        health = await client.get("/health")
        assert health.status_code == 503
        assert "does not exist" in health.json()["reasons"][name]
        await env.ensure_stream([f"{env.subject(name)}.>"])
        await settle(client, name)
        await env.publish(env.subject(name) + ".x", [good(1)])
        await env.applied(1, flow=name)
        state = await flow_state(client, name)
        assert state["last_error"] is None, state
        assert state["restarts"] >= 1 and state["last_error_at"] is not None, state
        assert (await client.get("/health")).status_code == 200
