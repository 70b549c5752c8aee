"""The Kafka source in a running service: dead letters, lag and group offsets, a missing
topic, a lost broker. tansu is the broker (kafka_broker: a throwaway one per test)."""

from __future__ import annotations

import httpx
import pytest
import trio
from harness import Env, envelope, wait_until
from kafkaenv import KafkaEnv
from kafkakit import aio_create_topic, aio_group_offsets, aio_produce, aio_topics
from prometheus_client.parser import text_string_to_metric_families
from servers import TansuBroker, free_port

from cdcsync.bridge import aio
from cdcsync.flow.pipeline import Flow

ITEMS = "CREATE TABLE items (id int PRIMARY KEY, name text);"


@pytest.fixture
def kafka_bootstrap(kafka_broker: TansuBroker) -> str:
    return kafka_broker.bootstrap


def item(i: int) -> bytes:
    return envelope("items", "insert", {"id": i, "name": f"n{i}"})


def flow(running_flows: list[Flow], name: str) -> Flow:
    return next(f for f in running_flows if f.name == name)


async def status_is(f: Flow, status: str, *words: str, timeout: float = 30) -> None:
    async def check() -> bool:
        error = f.stats.last_error or ""
        return f.stats.status == status and all(w in error for w in words)

    await wait_until(check, timeout, what=f"flow {f.name} {status} with {words}")


async def test_dead_letters_lag_and_group_offsets(env: KafkaEnv, nursery: trio.Nursery) -> None:
    """A bad message becomes a dead letter carrying its topic, partition and offset; once
    drained, /metrics shows lag 0 for each of the 4 partitions and the group's committed
    offsets are exactly the checkpoints + 1 (acks in the broker)."""
    await env.create_schema(ITEMS)
    topic = await env.create_topic()
    async with env.running(env.config(env.flow_yaml(fmt="cdc")), nursery) as running:
        await env.publish("", [item(i) for i in range(1, 21)])
        bad = await aio(aio_produce, env.bootstrap, topic, [(b"x", b"not json")], partition=2)
        await env.applied(21)
        assert [r["id"] for r in await env.rows("items")] == list(range(1, 21))
        [letter] = await env.dead_letters()
        assert (letter["subject"], letter["partition"], letter["stream_seq"]) == (
            topic,
            2,
            bad[0][1],
        )
        checkpoints = {
            (r["stream"], r["partition"]): r["last_seq"]
            for r in await env.sql(f"SELECT * FROM {env.state}.checkpoints")
        }
        assert sorted(checkpoints) == [(topic, p) for p in range(4)]

        async def committed() -> bool:
            offsets = await aio(aio_group_offsets, env.bootstrap, f"{env.unique}-f", topic, 4)
            return offsets == {k: v + 1 for k, v in checkpoints.items()}

        await wait_until(committed, 10, what="group offsets = checkpoints + 1")
        async with httpx.AsyncClient(base_url=running.api) as client:
            metrics = (await client.get("/metrics")).text
            state = (await client.get("/api/flows/f")).json()["state"]
    lags = {
        (s.labels["stream"], s.labels["partition"]): s.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "cdcsync_partition_lag"
        for s in family.samples
    }
    assert lags == {(topic, str(p)): 0 for p in range(4)}
    assert state["consumer_pending"] == 0 and state["acked"] == 21


async def test_broken_kafka_flows_degrade_alone(env: KafkaEnv, nursery: trio.Nursery) -> None:
    """Kafka flows whose topic does not exist, whose broker is down, or whose SASL login is
    refused each report degraded with the fix (no topic created), while a NATS flow of the
    same process keeps applying; once the topic exists, its flow catches up."""
    await env.create_schema(ITEMS)
    env.nats_flows.add("n")
    down = f"127.0.0.1:{free_port()}"
    sasl = "\n      sasl: {mechanism: SCRAM-SHA-256, username: cdc, password: n0t-the-0ne}"
    with TansuBroker(authentication=True) as secured:
        config = env.config(
            env.flow_yaml("n", fmt="cdc"),
            env.flow_yaml("k", fmt="cdc"),
            env.flow_yaml("d", fmt="cdc").replace(env.bootstrap, down),
            env.flow_yaml("s", fmt="cdc", source_extra=sasl).replace(
                env.bootstrap, secured.bootstrap
            ),
        )
        async with Env.running(env, config, nursery, wait_running=False) as running:
            flows = running.service.flows
            k = flow(flows, "k")
            await status_is(k, "degraded", f"'{env.topic('k')}' does not exist", "fix: create")
            await status_is(flow(flows, "d"), "degraded", "cannot reach any Kafka broker", down)
            await status_is(flow(flows, "s"), "degraded", "refused the SASL login", "fix:")
            await status_is(flow(flows, "n"), "running")
            await Env.publish(env, env.subject("n") + ".items", [item(1), item(2)])
            await Env.applied(env, 2, flow="n")
            assert env.topic("k") not in await aio(aio_topics, env.bootstrap)
            async with httpx.AsyncClient(base_url=running.api) as client:
                body = (await client.get("/api/flows/k")).json()
                health = await client.get("/health")
            assert body["state"]["status"] == "degraded"
            assert "n0t-the-0ne" not in health.text + str(body)
            await env.publish("", [item(3), item(4)], flow="k")  # creates the topic
            await env.applied(2, flow="k", timeout=40)
            await status_is(k, "running")
    assert [r["id"] for r in await env.rows("items")] == [1, 2, 3, 4]


@pytest.mark.slow
async def test_lost_broker_degrades_and_recovers(
    env: KafkaEnv, nursery: trio.Nursery, kafka_broker: TansuBroker
) -> None:
    """The broker killed: the Kafka flow reports degraded while the NATS flow goes on. It
    comes back empty (tansu keeps nothing): the topic missing, then re-created, the flow
    refuses to skip to the checkpoint and says so; the fix it names (delete the topic's
    checkpoint rows) makes it read the new topic from the start."""
    await env.create_schema(ITEMS)
    env.nats_flows.add("n")
    config = env.config(env.flow_yaml("n", fmt="cdc"), env.flow_yaml("k", fmt="cdc"))
    async with env.running(config, nursery) as running:
        k = flow(running.service.flows, "k")
        await env.publish("", [item(i) for i in range(1, 11)], flow="k")
        await env.applied(10, flow="k")
        kafka_broker.kill()
        await status_is(k, "degraded", "Kafka broker")
        await Env.publish(env, env.subject("n") + ".items", [item(11)])
        await Env.applied(env, 1, flow="n")
        kafka_broker.start()  # empty
        await status_is(k, "degraded", "does not exist")
        await aio(aio_create_topic, env.bootstrap, env.topic("k"), 4)
        await status_is(k, "degraded", "deleted and re-created")
        await env.execute(f"DELETE FROM {env.state}.checkpoints WHERE flow = 'k'")
        await env.publish("", [item(12)], flow="k")
        await env.applied(1, flow="k", timeout=60)
        await status_is(k, "running")
    assert [r["id"] for r in await env.rows("items")] == list(range(1, 13))
