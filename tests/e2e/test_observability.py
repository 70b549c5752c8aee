"""The observability API of a running service: metrics, SSE, system, pause, dead letters."""

from __future__ import annotations

import httpx
import trio
from harness import Env, envelope, read_sse, wait_until
from prometheus_client.parser import text_string_to_metric_families

from cdcsync.conformance import FixedStart
from cdcsync.flow.batch import Delivery
from cdcsync.sources.nats import JetStreamOptions, NatsOptions, NatsSource

TABLE = "CREATE TABLE items (id int PRIMARY KEY, name text);"


async def test_metrics_parse_and_count_what_happened(env: Env, nursery: trio.Nursery) -> None:
    """/metrics is valid Prometheus text whose counters match the events published."""
    await env.create_schema(TABLE)
    async with env.running(env.config(), nursery) as running:
        await env.publish(
            env.subject() + ".x",
            [envelope("items", "insert", {"id": i, "name": "n"}) for i in range(30)]
            + [b"not json"],
        )
        await env.applied(31)
        async with httpx.AsyncClient(base_url=running.api) as client:
            resp = await client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }
    dest = (("destination", "primary"), ("flow", "f"))
    assert samples[("cdcsync_events_written_total", dest)] == 30
    assert samples[("cdcsync_events_dead_lettered_total", dest)] == 1
    assert samples[("cdcsync_events_received_total", (("flow", "f"),))] == 31
    assert samples[("cdcsync_flow_status", (("flow", "f"), ("status", "running")))] == 1
    assert samples[("cdcsync_batch_duration_seconds_count", dest)] >= 1
    assert samples[("cdcsync_checkpoint_sequence", dest)] == 31


async def test_sse_stream_sends_a_snapshot_every_second(env: Env, nursery: trio.Nursery) -> None:
    """/api/stream delivers stats snapshots as Server-Sent Events, about one per second."""
    await env.create_schema(TABLE)
    async with env.running(env.config(), nursery) as running:
        with trio.fail_after(10):
            sse = await read_sse(running.api, 3)
    head, snapshots, elapsed = sse.head, sse.events, sse.elapsed
    assert "content-type: text/event-stream" in head.lower()
    assert [f["name"] for f in snapshots[0]["flows"]] == ["f"]
    assert 1.5 <= elapsed <= 4.0


async def test_system_reports_process_figures(env: Env, nursery: trio.Nursery) -> None:
    """/api/system gives RSS, CPU, connections, uptime and the version."""
    await env.create_schema(TABLE)
    async with (
        env.running(env.config(), nursery) as running,
        httpx.AsyncClient(base_url=running.api) as client,
    ):
        body = (await client.get("/api/system")).json()
        spec = (await client.get("/api/openapi.json")).json()
    assert body["rss_bytes"] > 10_000_000
    assert body["open_connections"] >= 2  # at least NATS and PostgreSQL
    assert body["version"] and body["uptime_s"] >= 0
    assert "/api/flows/{name}/pause" in spec["paths"]


async def test_pause_stops_writing_and_resume_catches_up(env: Env, nursery: trio.Nursery) -> None:
    """A paused flow writes and acks nothing new; after resume every event lands, none lost."""
    await env.create_schema(TABLE)
    subject = env.subject() + ".x"
    async with (
        env.running(env.config(), nursery) as running,
        httpx.AsyncClient(base_url=running.api) as client,
    ):
        await env.publish(subject, [envelope("items", "insert", {"id": i}) for i in range(10)])
        await env.applied(10)
        resp = await client.post("/api/flows/f/pause")
        assert resp.status_code == 200

        async def paused() -> bool:
            return (await client.get("/api/flows/f")).json()["state"]["status"] == "paused"

        await wait_until(paused, what="the flow to report paused")
        await env.publish(subject, [envelope("items", "insert", {"id": i}) for i in range(10, 60)])
        await trio.sleep(1.0)
        assert await env.count("items") == 10
        flow = running.service.flows[0]
        assert flow.stats.acked == 10
        assert (await client.get("/health")).status_code == 200  # paused on purpose is healthy

        assert (await client.post("/api/flows/f/resume")).status_code == 200
        await env.applied(60)
        assert (await client.post("/api/flows/nope/pause")).status_code == 404
    assert [r["id"] for r in await env.rows("items")] == list(range(60))


async def test_dead_letters_endpoint_lists_newest_with_reasons(
    env: Env, nursery: trio.Nursery
) -> None:
    """/api/dead-letters returns the flow's dead letters, newest first, with their reasons."""
    await env.create_schema(TABLE)
    async with env.running(env.config(), nursery) as running:
        await env.publish(
            env.subject() + ".x",
            [b"first bad", envelope("items", "insert", {"id": 1}), b'{"second": "bad"}'],
        )
        await env.applied(3)
        async with httpx.AsyncClient(base_url=running.api) as client:
            body = (await client.get("/api/dead-letters", params={"flow": "f"})).json()
            missing = await client.get("/api/dead-letters", params={"flow": "nope"})
            limited = (await client.get("/api/dead-letters", params={"limit": "1"})).json()
    letters = body["dead_letters"]
    assert [d["payload"] for d in letters] == ['{"second": "bad"}', "first bad"]
    assert "not valid JSON" in letters[1]["error"]
    assert letters[0]["flow"] == "f" and letters[0]["destination"] == "primary"
    assert missing.status_code == 404
    assert len(limited["dead_letters"]) == 1


async def test_core_nats_drops_are_counted_not_hidden(env: Env, nursery: trio.Nursery) -> None:
    """A core NATS flow that cannot keep up sheds messages (at-most-once) and says how many:
    every published message is either a row or counted in `dropped` and in /metrics."""
    await env.create_schema(TABLE)
    published = 20_000
    flow = env.flow_yaml(jetstream=False, source_extra="\n      buffer: 50")
    async with env.running(env.config(flow), nursery) as running:
        payloads = [envelope("items", "insert", {"id": i, "name": "n"}) for i in range(published)]
        await env.publish(env.subject() + ".x", payloads, jetstream=False)
        async with httpx.AsyncClient(base_url=running.api) as client:
            snap: dict = {}

            async def settled() -> bool:
                nonlocal snap
                snap = (await client.get("/api/stats")).json()["flows"][0]
                return snap["written"] + snap["dropped"] == published

            await wait_until(settled, timeout=30, what="written + dropped == published")
            metrics = (await client.get("/metrics")).text
    assert snap["dropped"] > 0, snap  # 20,000 at once cannot fit through a buffer of 50
    assert await env.count("items") == snap["written"]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    assert samples[("cdcsync_messages_dropped_total", (("flow", "f"),))] == snap["dropped"]
    assert snap["restarts"] == 0, snap  # shedding load is not a failure


async def test_local_pending_figure_is_the_servers(env: Env, nursery: trio.Nursery) -> None:
    """The pending figure the source works out without asking the server (what the flow
    shows right after each ack) is the one JetStream reports: with a backlog beyond
    max_ack_pending, in a stream shared with another subject, and 0 once all are acked."""
    await env.ensure_stream([f"{env.unique}.>"])
    for rnd in range(3):  # the other subject leaves gaps in the flow's stream sequences
        await env.publish(env.subject() + ".x", [b"%d" % i for i in range(10 * rnd, 10 * rnd + 10)])
        await env.publish(env.subject("other") + ".x", [b"other"] * 5)
    js = JetStreamOptions(stream=env.stream, durable=f"{env.unique}-f", max_ack_pending=10)
    source = NatsSource("f", NatsOptions((env.nats_url,), env.subject() + ".>", js))
    await source.connect()
    await source.identity()
    send, recv = trio.open_memory_channel[Delivery](source.channel_size())
    stop = trio.Event()
    assert source.local_pending() is None  # nothing delivered yet: only the server knows
    try:
        await nursery.start(source.run, FixedStart(), send, stop)
        with trio.fail_after(10):
            held = [await recv.receive() for _ in range(10)]  # max_ack_pending: no more
            assert source.local_pending() == await source.pending() == 30
            await source.ack(held[:4])
            held = held[4:] + [await recv.receive() for _ in range(4)]
            assert source.local_pending() == await source.pending() == 26
            delivered = 14
            while delivered < 30:
                await source.ack(held)
                held = [await recv.receive() for _ in range(min(10, 30 - delivered))]
                delivered += len(held)
            await source.ack(held)
            assert source.local_pending() == 0
            # The ack is a publish: the server may answer consumer_info before applying it.
            for _ in range(200):
                if await source.pending() == 0:
                    break
                await trio.sleep(0.01)
            assert await source.pending() == 0
    finally:
        stop.set()
        await source.close()
