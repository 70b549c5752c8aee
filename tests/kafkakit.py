"""Helpers of the Kafka spike tests (issue 12): topics, producing, consumers, group members.

aiokafka is an asyncio library and runs here exactly as cdcsync runs nats-py: on the asyncio
side of ``cdcsync.bridge``, called from Trio through ``aio`` once per batch. Functions named
``aio_*`` are asyncio coroutine functions meant to be called as ``await aio(aio_x, ...)``.

Run as a script (``python tests/kafkakit.py member ...``), this module is a group member in a
child process of its own, so a test can SIGKILL or SIGSTOP it like a crashed or frozen
instance; it reports what it sees as JSON lines on stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cdcsync.bridge import aio

__all__ = [
    "BENCH_FETCH",
    "GROUP_SETTINGS",
    "Member",
    "RecordingListener",
    "aio_create_topic",
    "aio_group_offsets",
    "aio_produce",
    "aio_topics",
    "new_consumer",
    "partitions",
    "read_all",
    "running",
    "wait_until",
]

# Group timings of the spike (aiokafka defaults: 10000 / 3000 / 300000). tansu has no lower
# bound on the session timeout (Kafka's group.min.session.timeout.ms is 6000); it holds every
# JoinGroup for session_timeout/2 rounded up to whole seconds, so 2000 ms makes a join ~1 s.
GROUP_SETTINGS: dict[str, Any] = {
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 200,
    "max_poll_interval_ms": 30000,
}

Client = TypeVar("Client", AIOKafkaConsumer, AIOKafkaProducer, AIOKafkaAdminClient)


@asynccontextmanager
async def running(client: Client) -> AsyncIterator[Client]:
    """Start an aiokafka client across the bridge and always stop it, even when cancelled."""
    try:
        await aio(client.start)
        yield client
    finally:
        with trio.CancelScope(shield=True):
            stop = client.close if isinstance(client, AIOKafkaAdminClient) else client.stop
            await aio(stop)


async def aio_create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create a topic with the admin client; raise if the broker refuses."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    errors = [(name, code, msg) for name, code, msg in response.topic_errors if code]
    if errors:
        raise RuntimeError(f"create_topics({topic!r}) failed: {errors}")


async def aio_topics(bootstrap: str) -> set[str]:
    """Every topic of the broker, asked without naming any (so none is created)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return set(await consumer.topics())
    finally:
        await consumer.stop()


async def aio_group_offsets(
    bootstrap: str, group: str, topic: str, partitions: int
) -> dict[tuple[str, int], int]:
    """The offsets the consumer group has committed for the topic's partitions (a consumer
    that assigns them to itself, without joining the group; aiokafka's admin client cannot
    read tansu's OffsetFetch answer)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        found = {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): n for tp, n in found.items() if n is not None}


async def aio_produce(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes | None, bytes]],
    *,
    partition: int | None = None,
    one_per_request: bool = False,
) -> list[tuple[int, int]]:
    """Produce (key, value) records in order; return (partition, offset) of each.

    ``one_per_request`` waits for each record before sending the next, so every record is a
    record batch of its own (tansu's ListOffsets counts batches, see the spike's tests).
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        if one_per_request:
            sent = [
                await producer.send_and_wait(topic, value, key=key, partition=partition)
                for key, value in records
            ]
        else:
            futures = [
                await producer.send(topic, value, key=key, partition=partition)
                for key, value in records
            ]
            await producer.flush()
            sent = [await f for f in futures]
    finally:
        await producer.stop()
    return [(md.partition, md.offset) for md in sent]


def new_consumer(bootstrap: str, group: str | None, **options: Any) -> AIOKafkaConsumer:
    """A consumer as the Kafka source would use it: manual commits, group timings above."""
    settings = {"enable_auto_commit": False, "auto_offset_reset": "earliest", **GROUP_SETTINGS}
    settings.update(options)
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, **settings)


def partitions(tps: Any) -> list[int]:
    return sorted(tp.partition for tp in tps)


@dataclass
class RecordingListener(ConsumerRebalanceListener):
    """Records every callback with its time; optional hooks run inside the callbacks.

    The hooks are asyncio coroutine functions: aiokafka awaits the callbacks on its own
    coordinator task, on the asyncio side of the bridge.
    """

    name: str
    on_revoke: Callable[[frozenset[TopicPartition]], Awaitable[None]] | None = None
    on_assign: Callable[[frozenset[TopicPartition]], Awaitable[None]] | None = None
    events: list[tuple[float, str, list[int]]] = field(default_factory=list)

    async def on_partitions_revoked(self, revoked: frozenset[TopicPartition]) -> None:
        self.events.append((time.monotonic(), "revoke-start", partitions(revoked)))
        if self.on_revoke is not None:
            await self.on_revoke(revoked)
        self.events.append((time.monotonic(), "revoke-end", partitions(revoked)))

    async def on_partitions_assigned(self, assigned: frozenset[TopicPartition]) -> None:
        self.events.append((time.monotonic(), "assigned", partitions(assigned)))
        if self.on_assign is not None:
            await self.on_assign(assigned)

    def last(self, kind: str) -> tuple[float, str, list[int]]:
        return [e for e in self.events if e[1] == kind][-1]


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
    """Poll ``predicate`` from Trio; return the seconds it took to become true."""
    start = time.monotonic()
    with trio.move_on_after(timeout):
        while not predicate():  # noqa: ASYNC110 (state changed by aiokafka's own tasks)
            await trio.sleep(0.02)
        return time.monotonic() - start
    raise AssertionError(f"not within {timeout} s: {what}")


# --------------------------------------------------------------------------- child member

SCRIPT = Path(__file__).resolve()


class Member:
    """A group member in a child process (see ``_member_main``), read line by line."""

    def __init__(self, bootstrap: str, topic: str, group: str, *, freeze: bool = False) -> None:
        self.cmd = [sys.executable, str(SCRIPT), "member", bootstrap, topic, group]
        self.cmd += ["freeze"] if freeze else []
        self.proc: trio.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self._buf = b""

    async def start(self) -> None:
        self.proc = await trio.lowlevel.open_process(
            self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
        )

    async def next_event(self, timeout: float = 30.0) -> dict[str, Any]:
        """The member's next JSON line (its time converted to this process's clock)."""
        assert self.proc is not None and self.proc.stdout is not None
        with trio.fail_after(timeout):
            while b"\n" not in self._buf:
                chunk = await self.proc.stdout.receive_some()
                if not chunk:
                    raise AssertionError(f"member exited: {self.lines}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        event: dict[str, Any] = json.loads(line)
        self.lines.append(event)
        return event

    async def until(self, kind: str, timeout: float = 30.0) -> dict[str, Any]:
        while True:
            event = await self.next_event(timeout)
            if event["ev"] == kind:
                return event

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            with trio.CancelScope(shield=True):
                await self.proc.wait()


async def _member_main(bootstrap: str, topic: str, group: str, freeze: bool) -> None:
    """Consume and commit; with ``freeze``, stop itself (SIGSTOP) once it holds prefetched
    records, and on SIGCONT try to deliver and commit them: what a frozen instance does."""

    def out(ev: str, **kw: Any) -> None:
        print(json.dumps({"ev": ev, "t": time.monotonic(), **kw}), flush=True)

    class Listener(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked: frozenset[TopicPartition]) -> None:
            out("revoked", p=partitions(revoked))

        async def on_partitions_assigned(self, assigned: frozenset[TopicPartition]) -> None:
            out("assigned", p=partitions(assigned))

    consumer = new_consumer(bootstrap, group)
    consumer.subscribe([topic], listener=Listener())
    await consumer.start()
    frozen = False
    while True:
        batch = await consumer.getmany(timeout_ms=200, max_records=10)
        if not batch:
            continue
        got = {tp.partition: [rs[0].offset, rs[-1].offset] for tp, rs in batch.items()}
        out("records", got=got, assignment=partitions(consumer.assignment()))
        try:
            await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batch.items()})
            out("committed")
        except Exception as exc:
            out("commit-failed", error=type(exc).__name__)
        if freeze and not frozen:
            await asyncio.sleep(0.5)  # the fetcher buffers the next records meanwhile
            out("freezing")
            os.kill(os.getpid(), signal.SIGSTOP)
            frozen = True  # resumed: the next getmany runs before any heartbeat does


async def read_all(
    consumer: AIOKafkaConsumer,
    total: int,
    max_records: int,
    call: Callable[..., Awaitable[Any]],
) -> dict[str, float]:
    """Read ``total`` records from the start of the consumer's assignment with ``getmany``,
    each call made through ``call`` (``aio`` from Trio, a plain await in asyncio); figures."""
    for tp in consumer.assignment():
        consumer.seek(tp, 0)
    n = calls = 0
    wall, cpu = time.perf_counter(), time.thread_time()
    while n < total:
        batch = await call(consumer.getmany, timeout_ms=1000, max_records=max_records)
        n += sum(len(rs) for rs in batch.values())
        calls += 1
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    assert n == total, f"read {n} of {total}"
    return {"msgs_per_s": n / wall, "cpu_us_per_msg": cpu / n * 1e6, "per_call": n / calls}


async def _plain(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    return await fn(*args, **kwargs)


async def _bench_main(bootstrap: str, topic: str, parts: int, total: int, batch: int) -> None:
    """The throughput loop in plain asyncio, no Trio: the reference for the bridged one."""
    consumer = new_consumer(bootstrap, None, **BENCH_FETCH)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(parts)])
        print(json.dumps(await read_all(consumer, total, batch, _plain)), flush=True)
    finally:
        await consumer.stop()


# Large enough that a getmany of 5000 200-byte records is not cut short by the fetch sizes.
BENCH_FETCH: dict[str, int] = {"max_partition_fetch_bytes": 4 << 20, "fetch_max_bytes": 16 << 20}


if __name__ == "__main__" and sys.argv[1:2] == ["member"]:
    _bootstrap, _topic, _group = sys.argv[2:5]
    asyncio.run(_member_main(_bootstrap, _topic, _group, freeze=sys.argv[5:6] == ["freeze"]))
elif __name__ == "__main__" and sys.argv[1:2] == ["bench"]:
    _bootstrap, _topic = sys.argv[2:4]
    asyncio.run(_bench_main(_bootstrap, _topic, *map(int, sys.argv[4:7])))
