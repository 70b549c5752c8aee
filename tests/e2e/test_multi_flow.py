"""Several flows in one service, fan-out to two databases, and the single-flow shorthand."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import trio
from harness import Env, envelope, wait_until

from cdcsync import config as cfg

TABLES = """
CREATE TABLE orders (id int PRIMARY KEY, total int);
CREATE TABLE users (id int PRIMARY KEY, name text);
CREATE TABLE events (id int PRIMARY KEY, kind text);
"""


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database of the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@asynccontextmanager
async def second_database(env: Env) -> AsyncIterator[str]:
    """A fresh database `{unique}_b` on the test server; yields its URL, drops it after."""
    name = f"{env.unique}_b"
    await env.execute(f"CREATE DATABASE {name}")
    try:
        yield with_database(env.pg_url, name)
    finally:
        await env.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def applied(env: Env, flow: str, dest: str, seq: int, url: str | None = None) -> None:
    """Wait until ``flow``/``dest``'s checkpoint covers stream sequence ``seq``."""

    async def check() -> bool:
        rows = await env.sql(
            f"SELECT last_seq FROM {env.state}.checkpoints WHERE flow = $1 AND destination = $2",
            flow,
            dest,
            url=url,
        )
        return bool(rows) and rows[0]["last_seq"] >= seq

    await wait_until(check, what=f"checkpoint of {flow}/{dest} reaching {seq}")


async def test_three_flows_with_fan_out(env: Env, nursery: trio.Nursery) -> None:
    """Three flows run at once and every event lands in every destination of its flow."""
    async with second_database(env) as url_b:
        await env.create_schema(TABLES)
        await env.create_schema(TABLES, url=url_b)
        # the flows share one stream, each reading its own subjects
        await env.ensure_stream([f"{env.unique}.>"])
        config = env.config(
            env.flow_yaml("orders"),
            env.flow_yaml("users", mode="replace"),
            env.flow_yaml("events", destinations=[("a", env.pg_url), ("b", url_b)]),
        )
        n = 300
        orders = [envelope("orders", "insert", {"id": i, "total": i * 10}) for i in range(n)]
        users = [envelope("users", "insert", {"id": i, "name": f"u{i}"}) for i in range(n)]
        events = [envelope("events", "insert", {"id": i, "kind": "k"}) for i in range(n)]
        events += [envelope("events", "delete", {"id": i}) for i in range(0, n, 3)]
        streams = {"orders": orders, "users": users, "events": events}
        last_seq: dict[str, int] = {}
        seq = 0
        async with env.running(config, nursery):
            # interleaved chunks, so that the three flows are busy at the same time
            for start in range(0, len(events), 50):
                for flow, messages in streams.items():
                    chunk = messages[start : start + 50]
                    if chunk:
                        await env.publish(env.subject(flow) + f".{flow}", chunk)
                        seq += len(chunk)
                        last_seq[flow] = seq
            await applied(env, "orders", "primary", last_seq["orders"])
            await applied(env, "users", "primary", last_seq["users"])
            await applied(env, "events", "a", last_seq["events"])
            await applied(env, "events", "b", last_seq["events"], url=url_b)
        assert [(r["id"], r["total"]) for r in await env.rows("orders")] == [
            (i, i * 10) for i in range(n)
        ]
        assert [r["id"] for r in await env.rows("users")] == list(range(n))
        kept = [{"id": i, "kind": "k"} for i in range(n) if i % 3]
        assert await env.rows("events") == kept
        assert await env.rows("events", url=url_b) == kept
        # each database only got its own flows' tables written
        assert await env.count("orders", url=url_b) == 0
        assert await env.count("users", url=url_b) == 0
        assert await env.dead_letters() == []
        assert await env.dead_letters(url=url_b) == []


async def test_single_flow_shorthand_with_core_nats(env: Env, nursery: trio.Nursery) -> None:
    """The `nats`/`postgres`/`pipeline` shorthand runs one flow that applies core NATS events."""
    await env.create_schema("CREATE TABLE users (id int PRIMARY KEY, name text, email text);")
    subject = f"{env.unique}.core"
    text = f"""
        api:
          bind: 127.0.0.1:0
        nats:
          servers: ["{env.nats_url}"]
          subject: "{subject}.>"
          format: cdc
        postgres:
          url: "{env.pg_url}"
          schema: {env.schema}
          state_schema: {env.state}
          conflict_resolution: upsert
        pipeline:
          batch_size: 100
          batch_timeout_ms: 20
    """
    config = cfg.loads(textwrap.dedent(text), path="shorthand.yaml")
    assert [f.name for f in config.flows] == ["default"]
    events = [envelope("users", "insert", {"id": i, "name": f"u{i}"}) for i in range(1, 101)]
    events += [envelope("users", "update", {"id": i, "email": f"{i}@x"}) for i in range(1, 11)]
    events += [envelope("users", "delete", {"id": i}) for i in range(91, 101)]
    events.append(b"not json")
    async with env.running(config, nursery) as running:
        await env.publish(f"{subject}.users", events, jetstream=False)

        async def done() -> bool:
            letters = await env.sql(f"SELECT count(*) FROM {env.state}.dead_letters")
            return await env.count("users") == 90 and letters[0][0] == 1

        await wait_until(done, what="90 rows and one dead letter")
        assert [f.stats.status for f in running.service.flows] == ["running"]
    rows = await env.rows("users")
    assert [r["id"] for r in rows] == list(range(1, 91))
    assert rows[0] == {"id": 1, "name": "u1", "email": "1@x"}
    assert rows[10] == {"id": 11, "name": "u11", "email": None}
    [letter] = await env.dead_letters()
    assert letter["flow"] == "default"
    assert letter["subject"] == f"{subject}.users"
    assert letter["payload"] == b"not json"
    assert letter["stream_seq"] is None  # core NATS has no stream sequence
    assert "not valid JSON" in letter["error"]
