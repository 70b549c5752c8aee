"""The HTTP API of a running service: health, statistics, counter reset and its token."""

from __future__ import annotations

import gc
import textwrap
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
import trio
from harness import Env, envelope, wait_until

from cdcsync import config as cfg

TABLE = "CREATE TABLE users (id int PRIMARY KEY, name text, age int CHECK (age >= 0));"
CLOSED_PORT_URL = "postgresql://postgres@127.0.0.1:1/test"


@pytest.fixture
def collect_garbage() -> Iterator[None]:
    """Collect garbage after the test's own teardown (request it before `env`).

    Objects a test leaks (unclosed connections) then warn inside that test, rather than
    in whichever later test happens to run the garbage collector.
    """
    yield
    gc.collect()


def flow_text(env: Env, name: str, destinations: list[tuple[str, str]]) -> str:
    """A flow reading ``{unique}.{name}.>`` into destinations given as (name, schema)."""
    dests = "".join(
        f"""
      - name: {dname}
        type: postgres
        url: "{env.pg_url}"
        schema: {schema}
        state_schema: {env.state}"""
        for dname, schema in destinations
    )
    return f"""
  - name: {name}
    source:
      type: nats
      servers: ["{env.nats_url}"]
      subject: "{env.subject(name)}.>"
      jetstream:
        stream: {env.stream}
        durable: {env.unique}-{name}
    batch: {{max_size: 1000, max_delay_ms: 20}}
    destinations:{dests}
"""


def load(text: str) -> cfg.Config:
    return cfg.loads(textwrap.dedent(text), path="api-test.yaml")


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


async def stats(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    resp = await client.get("/api/stats")
    assert resp.status_code == 200
    return by_name(resp.json()["flows"])


async def wait_acked(client: httpx.AsyncClient, expected: dict[str, int]) -> None:
    """Wait until each flow reports ``expected[flow]`` acknowledged messages."""

    async def check() -> bool:
        flows = await stats(client)
        return all(flows[name]["acked"] >= n for name, n in expected.items())

    await wait_until(check, what=f"acked counts {expected}")


def good(i: int) -> bytes:
    return envelope("users", "insert", {"id": i, "name": f"u{i}", "age": i})


BAD = [
    b"not json",
    envelope("users", "insert", {"id": 1000, "nope": 1}),
    envelope("users", "insert", {"id": 1001, "age": -1}),
]


async def test_health_and_stats_match_what_was_published(env: Env, nursery: trio.Nursery) -> None:
    """/health is 200 with every flow running; /api/stats counts per flow and per destination."""
    mirror = f"{env.schema}_m"
    await env.create_schema(TABLE)
    await env.execute(
        f"DROP SCHEMA IF EXISTS {mirror} CASCADE; CREATE SCHEMA {mirror};"
        f"CREATE TABLE {mirror}.users (id int PRIMARY KEY, name text, age int CHECK (age >= 0));"
    )
    try:
        await env.ensure_stream([f"{env.unique}.>"])
        config = load(
            "api:\n  bind: 127.0.0.1:0\nflows:\n"
            + flow_text(env, "a", [("primary", env.schema), ("mirror", mirror)])
            + flow_text(env, "b", [("primary", env.schema)])
        )
        async with env.running(config, nursery) as running:
            async with httpx.AsyncClient(base_url=running.binds[0]) as client:
                resp = await client.get("/health")
                assert resp.status_code == 200
                assert resp.json()["status"] == "ok"
                assert resp.json()["flows"] == {"a": "running", "b": "running"}

                a_msgs = [good(i) for i in range(20)]
                for k, bad in enumerate(BAD):
                    a_msgs.insert(5 * k + 3, bad)
                b_msgs = [good(i) for i in range(100, 107)]
                await env.publish(env.subject("a") + ".users", a_msgs)
                await env.publish(env.subject("b") + ".users", b_msgs)
                await wait_acked(client, {"a": len(a_msgs), "b": len(b_msgs)})

                flows = await stats(client)
                a, b = flows["a"], flows["b"]
                assert (a["received"], a["acked"]) == (23, 23)
                assert (b["received"], b["acked"]) == (7, 7)
                for dest in by_name(a["destinations"]).values():
                    assert (dest["written"], dest["dead_lettered"]) == (20, 3), dest
                [b_dest] = b["destinations"]
                assert (b_dest["written"], b_dest["dead_lettered"]) == (7, 0)
                assert (b["written"], b["dead_lettered"]) == (7, 0)
                assert (await client.get("/health")).status_code == 200
        assert await env.count("users") == 27
        mirror_rows = await env.sql(f"SELECT count(*) FROM {mirror}.users")
        assert mirror_rows[0][0] == 20
    finally:
        await env.execute(f"DROP SCHEMA IF EXISTS {mirror} CASCADE")


def zeroed(flow: dict[str, Any]) -> bool:
    counters = ("received", "acked", "written", "dead_lettered", "failed_batches", "retries")
    dest_counters = ("written", "dead_lettered", "skipped", "batches", "failed_batches")
    return all(flow[c] == 0 for c in counters) and all(
        d[c] == 0 for d in flow["destinations"] for c in dest_counters
    )


async def test_reset_zeroes_counters(env: Env, nursery: trio.Nursery) -> None:
    """POST /api/stats/reset zeroes every counter, returns the new stats, and counting resumes."""
    await env.create_schema(TABLE)
    subject = env.subject() + ".users"
    async with env.running(env.config(), nursery) as running:
        async with httpx.AsyncClient(base_url=running.binds[0]) as client:
            await env.publish(subject, [good(1), good(2), BAD[0]])
            await wait_acked(client, {"f": 3})
            assert not zeroed((await stats(client))["f"])

            resp = await client.post("/api/stats/reset")
            assert resp.status_code == 200
            [returned] = resp.json()["flows"]
            assert zeroed(returned), returned
            assert returned["status"] == "running"
            assert zeroed((await stats(client))["f"])

            await env.publish(subject, [good(3), good(4)])
            await wait_acked(client, {"f": 2})
            flow = (await stats(client))["f"]
            assert (flow["received"], flow["acked"], flow["written"]) == (2, 2, 2)
            assert flow["dead_lettered"] == 0


async def test_reset_requires_the_bearer_token(env: Env, nursery: trio.Nursery) -> None:
    """With api.token set, reset answers 401 without or with a wrong token and 200 with it."""
    await env.create_schema(TABLE)
    config = load(
        'api: {bind: "127.0.0.1:0", token: s3cret}\nflows:\n'
        + flow_text(env, "f", [("primary", env.schema)])
    )
    async with env.running(config, nursery) as running:
        async with httpx.AsyncClient(base_url=running.binds[0]) as client:
            await env.publish(env.subject() + ".users", [good(1), good(2)])
            await wait_acked(client, {"f": 2})
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": "Bearer s3cret2"},
                {"Authorization": "Basic s3cret"},
                {"Authorization": "s3cret"},
            ):
                resp = await client.post("/api/stats/reset", headers=headers)
                assert resp.status_code == 401, headers
                assert resp.headers["WWW-Authenticate"] == "Bearer"
                # nothing was reset
                assert (await stats(client))["f"]["received"] == 2
            assert (await client.get("/health")).status_code == 200
            resp = await client.post("/api/stats/reset", headers={"Authorization": "Bearer s3cret"})
            assert resp.status_code == 200
            assert zeroed(resp.json()["flows"][0])


async def test_health_is_503_when_a_destination_is_unreachable(
    collect_garbage: None, env: Env, nursery: trio.Nursery
) -> None:
    """/health is 503 naming the flow and why when its destination cannot be reached."""
    await env.create_schema(TABLE)
    await env.ensure_stream([f"{env.unique}.>"])
    config = env.config(
        env.flow_yaml("ok"),
        env.flow_yaml("down", destinations=[("primary", CLOSED_PORT_URL)]),
    )
    async with env.running(config, nursery, wait_running=False) as running:
        async with httpx.AsyncClient(base_url=running.binds[0]) as client:
            body: dict[str, Any] = {}

            async def reported() -> bool:
                nonlocal body
                resp = await client.get("/health")
                body = resp.json()
                return resp.status_code == 503 and body["flows"] == {
                    "ok": "running",
                    "down": "degraded",
                }

            await wait_until(reported, what="/health 503 with flow 'down' degraded")
            assert body["status"] == "unavailable"
            assert list(body["reasons"]) == ["down"]
            reason = body["reasons"]["down"]
            assert "primary" in reason and "connect" in reason.lower(), reason
            # the healthy flow keeps working meanwhile
            await env.publish(env.subject("ok") + ".users", [good(1)])
            await wait_until(lambda: _has_rows(env, 1), what="the healthy flow's row")


async def _has_rows(env: Env, n: int) -> bool:
    return await env.count("users") == n


def nats_connections(nats_url: str) -> int:
    port = urlsplit(nats_url).port
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


async def test_retrying_flow_keeps_one_nats_connection(
    collect_garbage: None, env: Env, nursery: trio.Nursery
) -> None:
    """A flow retrying an unreachable destination holds one NATS connection, not one per try."""
    await env.create_schema(TABLE)
    await env.ensure_stream([f"{env.unique}.>"])  # also opens the test's own connection
    baseline = nats_connections(env.nats_url)
    config = env.config(env.flow_yaml("down", destinations=[("primary", CLOSED_PORT_URL)]))
    async with env.running(config, nursery, wait_running=False) as running:
        async with httpx.AsyncClient(base_url=running.binds[0]) as client:

            async def restarted() -> bool:
                return (await stats(client))["down"]["restarts"] >= 3

            await wait_until(restarted, what="three restarts of flow 'down'")
            assert nats_connections(env.nats_url) <= baseline + 1
