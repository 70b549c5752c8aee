"""The Kafka source: a consumer-group member that reads its partitions into a Trio channel.

Positions are per Kafka partition (``Partition(topic, n)``, the offset as ``seq``), and the
destinations' checkpoints are the truth: whenever the group assigns partitions to this
instance, the rebalance listener asks the engine's coordinator (which takes every
destination's writer fence and reads the checkpoints) and seeks each partition just after
the lowest checkpoint. Before the group takes partitions away, the listener hands them off:
aiokafka awaits it before rejoining, and the coordinator returns once everything sent of
them is committed and acknowledged, so the next owner starts exactly after it. ``stop()``
calls no listener, so a stopping flow hands its partitions off itself first.

Offsets are committed to the group after every destination committed (for the usual lag
tooling), coalesced in a task of their own so that a slow or refused commit never holds up
the flow; they are only a hint. Reading is ``getmany`` across the bridge, one crossing per
batch. When the channel is full the partitions are paused and polling goes on, so that the
instance stays in the group (docs/dev/kafka-notes.md has the facts behind each choice).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
import trio
from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError, OffsetOutOfRangeError

from cdcsync.plugin import (
    CdcSyncError,
    ComponentSpec,
    Coordinator,
    Delivery,
    Partition,
    SourceError,
    aio,
    call_trio,
)
from cdcsync.sources.kafka_client import (
    detail,
    failure_text,
    group_consumer,
    missing_text,
    probe,
)
from cdcsync.sources.kafka_options import SCHEMA, KafkaOptions, parse_options, topic_regex

__all__ = ["SPEC", "KafkaOptions", "KafkaSource"]

log = structlog.get_logger("cdcsync.sources.kafka")

_POLL_MS = 200  # how long one getmany waits for records (also how soon a stop is seen)
_PAUSED_POLL_MS = 50  # while the channel is full: poll, to stay in the group
_FULL_WAIT_S = 1.0  # a channel full this long pauses the partitions
_ROOM_POLL_S = 0.005
_MAX_PER_POLL = 2_000
_HEALTH_EVERY_S = 5.0  # with nothing read for this long, ask the brokers for metadata
_HEALTH_TIMEOUT_S = 10.0
_COMMIT_TIMEOUT_S = 5.0
_COMMIT_EVERY_S = 0.2
_COMMIT_RETRY_S = 1.0
_STOP_TIMEOUT_S = 5.0  # leaving the group is best effort (the checkpoints are the truth)


class _Listener(ConsumerRebalanceListener):
    """aiokafka's rebalance callbacks (asyncio, awaited by its coordinator task), carried
    over to the source's Trio side."""

    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await call_trio(self._source._on_revoked, frozenset(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await call_trio(self._source._on_assigned, frozenset(assigned))


class KafkaSource:
    """One flow's member of a Kafka consumer group."""

    def __init__(self, flow: str, options: KafkaOptions) -> None:
        self.flow = flow
        self.options = options
        self._consumer: Any = None
        self._coordinator: Coordinator | None = None
        self._parts: dict[TopicPartition, Partition] = {}  # one object per partition
        self._ready: dict[TopicPartition, Partition] = {}  # claimed and positioned
        self._floor: dict[TopicPartition, int] = {}  # next offset not yet acknowledged
        self._sent: dict[TopicPartition, int] = {}  # last offset put into the channel
        self._acked: dict[TopicPartition, int] = {}  # next offset to commit to the group
        self._committed: dict[TopicPartition, int] = {}
        self._backlog: deque[Delivery] = deque()  # read, not yet in the channel
        self._failure: BaseException | None = None
        self._closing = False
        self._scopes: set[trio.CancelScope] = set()
        self._first_assignment = trio.Event()
        self._commit_wake = trio.Event()
        self._handoff: trio.Lock | None = None

    @property
    def positioned(self) -> bool:
        return True

    @property
    def from_start(self) -> bool:
        return self.options.start == "earliest"

    @property
    def keepalive_s(self) -> float | None:
        return None  # nothing is redelivered while a batch is being written

    def channel_size(self) -> int:
        return self.options.buffer

    # --- lifecycle (Trio) ----------------------------------------------------------------

    async def connect(self) -> None:
        """Reach the brokers and make sure the configured topics exist (never creating one:
        a Metadata request that names a missing topic may create it on the broker)."""
        topics = await probe(self.options, self.flow)
        missing = [t for t in self.options.topics if t not in topics]
        if missing:
            raise SourceError(missing_text(self.options, missing))

    async def run(
        self,
        coordinator: Coordinator,
        send: trio.MemorySendChannel[Delivery],
        stop: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Join the group and deliver until ``stop``; then hand every partition off (its
        deliveries committed and acknowledged, its fences released) and leave the group."""
        self._coordinator = coordinator
        self._failure = None
        self._closing = False
        self._first_assignment = trio.Event()
        self._handoff = trio.Lock()
        self._backlog.clear()
        for state in (self._floor, self._sent, self._acked, self._committed):
            state.clear()  # of an earlier run: this one starts from the checkpoints
        o = self.options
        consumer = group_consumer(o, self.flow)
        if o.topic_pattern is not None:
            consumer.subscribe(pattern=topic_regex(o.topic_pattern), listener=_Listener(self))
        else:
            consumer.subscribe(list(o.topics), listener=_Listener(self))
        self._consumer = consumer
        try:
            async with send, trio.open_nursery() as tasks:
                if not await self._join(consumer, stop):
                    tasks.cancel_scope.cancel()
                    return
                tasks.start_soon(self._commit_loop, name=f"flow={self.flow} kafka-commits")
                task_status.started()
                await self._read(consumer, send, stop)
                await self._hand_off(list(self._ready))
                await self._commit(None)
                tasks.cancel_scope.cancel()
        finally:
            self._closing = True
            for scope in self._scopes:
                scope.cancel()
            with trio.CancelScope(shield=True):
                await self._stop_consumer()

    async def _join(self, consumer: Any, stop: trio.Event) -> bool:
        """Start the consumer and wait for the first assignment to be claimed and positioned
        (a standby waits here); False when ``stop`` came first."""
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as waiting:

                async def cancel_on_stop() -> None:
                    await stop.wait()
                    scope.cancel()

                waiting.start_soon(cancel_on_stop)
                try:
                    await aio(consumer.start)
                except Exception as exc:
                    raise SourceError(failure_text(self.options, exc)) from exc
                await self._first_assignment.wait()
                waiting.cancel_scope.cancel()
        self._raise_failure()
        return not scope.cancelled_caught

    async def close(self) -> None:
        await self._stop_consumer()

    async def _stop_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._ready.clear()
        if consumer is not None:
            try:
                with trio.move_on_after(_STOP_TIMEOUT_S):
                    await aio(consumer.stop)
            # A broken connection: leaving the group is best effort. aiokafka's stop() can
            # re-raise the CancelledError of a fetch task it cancelled: not ours to obey.
            except (Exception, asyncio.CancelledError) as exc:
                log.debug("kafka consumer stop failed", flow=self.flow, error=detail(exc))

    # --- reading ---------------------------------------------------------------------------

    async def _read(
        self, consumer: Any, send: trio.MemorySendChannel[Delivery], stop: trio.Event
    ) -> None:
        """getmany until ``stop``, one bridge crossing per call.

        Never cancelled in flight (aiokafka 0.14 then never counts the member idle again,
        docs/dev/kafka-notes.md): each call waits at most _POLL_MS. When the channel is
        full, reading waits for room. Only when it stays full for _FULL_WAIT_S are the
        partitions paused and polled on, so that the member stays in the group: a paused
        partition drops what was prefetched (and fetches it again on resume), which is
        worth it for a destination that stalls, not for one that merely keeps up.
        """
        o = self.options
        size = o.buffer
        backlog = self._backlog
        paused = False
        quiet_since = trio.current_time()
        while not stop.is_set():
            self._raise_failure()
            self._flush_backlog(send)
            room = not backlog and await self._room(send, stop)
            if not room:
                if not paused:
                    log.debug("channel full: pausing the partitions", flow=self.flow)
                paused = True
                consumer.pause(*consumer.assignment())  # again after every rebalance
            elif paused:
                paused = False
                consumer.resume(*consumer.assignment())
            free = size - send.statistics().current_buffer_used
            try:
                batch = await aio(
                    consumer.getmany,
                    timeout_ms=_PAUSED_POLL_MS if paused else _POLL_MS,
                    max_records=max(1, min(free, _MAX_PER_POLL)),
                )
            except OffsetOutOfRangeError as exc:
                raise SourceError(self._out_of_range_text(exc)) from exc
            except KafkaError as exc:
                raise SourceError(f"reading {o.subscription()}: {detail(exc)}") from exc
            now = time.monotonic()
            if batch:
                quiet_since = trio.current_time()
            elif trio.current_time() - quiet_since > _HEALTH_EVERY_S:
                await self._check_brokers(consumer)
                quiet_since = trio.current_time()
            for tp, records in batch.items():
                p = self._ready.get(tp)
                if p is None:
                    continue  # not claimed (yet or any more): its position decides later
                for r in records:
                    d = Delivery(r.offset, r.topic, r.value or b"", None, now, p)
                    if backlog:
                        backlog.append(d)
                        continue
                    try:
                        send.send_nowait(d)
                    except trio.WouldBlock:
                        backlog.append(d)
                        continue
                    self._sent[tp] = r.offset
            self._check_positions(consumer)
        self._raise_failure()

    def _out_of_range_text(self, exc: OffsetOutOfRangeError) -> str:
        where = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        found = ", ".join(f"{self._partition(tp)} offset {n}" for tp, n in where.items())
        return (
            f"the next offset to apply is not in the partition any more ({found or detail(exc)}):"
            f" the topic's retention deleted messages before they were applied, or the topic "
            f"was deleted and re-created. Reading on would skip them (fix: recover the missing "
            f"events from the source database, e.g. a Debezium snapshot; then delete the "
            f"flow's checkpoint rows of the topic in the destinations' state schema to read it "
            f"from 'start')"
        )

    async def _check_brokers(self, consumer: Any) -> None:
        """After a quiet spell: are the brokers, and the topics, still there? aiokafka's
        getmany only logs a lost broker and keeps returning nothing, which would look like
        a topic without traffic; a failure here restarts the flow, degraded until it can
        connect again (docs/dev/kafka-notes.md)."""
        try:
            with trio.fail_after(_HEALTH_TIMEOUT_S):
                topics = set(await aio(consumer.topics))
        except trio.TooSlowError:
            raise SourceError(
                f"the Kafka brokers {', '.join(self.options.brokers)} stopped answering "
                f"(no metadata within {_HEALTH_TIMEOUT_S:g} s)"
            ) from None
        except Exception as exc:
            raise SourceError(
                f"lost the Kafka brokers {', '.join(self.options.brokers)}: {detail(exc)}"
            ) from exc
        missing = [t for t in self.options.topics if t not in topics]
        if missing:
            raise SourceError(missing_text(self.options, missing))

    async def _room(self, send: trio.MemorySendChannel[Delivery], stop: trio.Event) -> bool:
        """Wait (up to _FULL_WAIT_S) until the channel can take a good part of a read."""
        size = self.options.buffer
        want = max(1, min(size // 2, _MAX_PER_POLL))
        with trio.move_on_after(_FULL_WAIT_S):
            while size - send.statistics().current_buffer_used < want:
                if stop.is_set():
                    return True
                await trio.sleep(_ROOM_POLL_S)
            return True
        return False

    def _flush_backlog(self, send: trio.MemorySendChannel[Delivery]) -> None:
        backlog = self._backlog
        while backlog:
            d = backlog[0]
            try:
                send.send_nowait(d)
            except trio.WouldBlock:
                return
            backlog.popleft()
            self._sent[TopicPartition(d.partition.stream, d.partition.index)] = d.seq

    def _check_positions(self, consumer: Any) -> None:
        """A checkpoint beyond a partition's end means the topic is not the one the
        checkpoint was written for (deleted and re-created): reading on would silently skip
        everything up to there. Kafka refuses such a fetch; some brokers just return nothing."""
        for tp, p in self._ready.items():
            try:
                end = consumer.highwater(tp)
            except AssertionError:
                continue  # no longer assigned: the rebalance listener is on it
            floor = self._floor.get(tp)
            if end is not None and floor is not None and floor > end:
                raise SourceError(
                    f"partition {p}: the destinations' checkpoint says offset {floor - 1} was "
                    f"applied, but the partition ends at offset {end}: the topic was deleted "
                    f"and re-created, or truncated (fix: if so, delete the flow's checkpoint "
                    f"rows of topic {p.stream!r} in the destinations' state schema, to read it "
                    f"from 'start' again)"
                )

    # --- rebalances (called from aiokafka's listener, on the Trio side) ------------------

    @contextmanager
    def _guarded(self) -> Iterator[bool]:
        """Run a listener's work inside this run's lifetime: cancelled when the run ends,
        its failure handed to the read loop (aiokafka would only log it and read on)."""
        scope = trio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                yield not self._closing
        except Exception as exc:
            if self._failure is None:
                self._failure = exc
        finally:
            self._scopes.discard(scope)

    async def _on_assigned(self, tps: frozenset[TopicPartition]) -> None:
        with self._guarded() as live:
            try:
                if live and tps:
                    await self._claim(sorted(tps))
            finally:
                self._first_assignment.set()

    async def _claim(self, tps: list[TopicPartition]) -> None:
        consumer, coordinator = self._consumer, self._coordinator
        assert consumer is not None and coordinator is not None
        parts = {tp: self._partition(tp) for tp in tps}
        start = await coordinator.assigned({p: "" for p in parts.values()})
        fresh = []
        for tp, p in parts.items():
            after = start.get(p)
            if after is None:
                fresh.append(tp)
            else:
                consumer.seek(tp, after + 1)
                # Every destination has committed up to the checkpoint: the group may say so
                # (its offset may be older, e.g. when the last commit before a crash failed).
                self._floor[tp] = self._acked[tp] = after + 1
        if fresh:
            seek = consumer.seek_to_beginning if self.from_start else consumer.seek_to_end
            await aio(seek, *fresh)
            for tp in fresh:
                self._floor[tp] = await aio(consumer.position, tp)
        self._ready.update(parts)
        self._commit_wake.set()
        log.info(
            "partitions assigned",
            flow=self.flow,
            partitions={str(p): self._floor[tp] for tp, p in parts.items()},
        )

    async def _on_revoked(self, tps: frozenset[TopicPartition]) -> None:
        with self._guarded() as live:
            if live:
                await self._hand_off(list(tps))

    async def _hand_off(self, tps: list[TopicPartition]) -> None:
        """Give partitions up: wait until everything sent of them is committed by every
        destination and acknowledged, commit that to the group, release the fences."""
        assert self._handoff is not None and self._coordinator is not None
        async with self._handoff:
            parts = {tp: self._ready.pop(tp) for tp in tps if tp in self._ready}
            if not parts:
                return
            gone = set(parts.values())
            keep = [d for d in self._backlog if d.partition not in gone]  # never sent: drop
            self._backlog.clear()
            self._backlog.extend(keep)
            await self._coordinator.revoked({p: self._sent.get(tp) for tp, p in parts.items()})
            await self._commit(set(parts))
            for tp in parts:
                for state in (self._floor, self._sent, self._acked, self._committed):
                    state.pop(tp, None)
            log.info("partitions handed off", flow=self.flow, partitions=[str(p) for p in gone])

    def _partition(self, tp: TopicPartition) -> Partition:
        p = self._parts.get(tp)
        if p is None:
            p = self._parts[tp] = Partition(tp.topic, tp.partition)
        return p

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    # --- acknowledgements ------------------------------------------------------------------

    async def ack(self, deliveries: list[Delivery]) -> None:
        """Every destination committed these: the group may commit past them (soon, in the
        commit task; a refused or slow commit costs only a stale lag figure)."""
        last: dict[Partition, int] = {}
        for d in deliveries:
            last[d.partition] = d.seq  # in order within each partition
        for p, seq in last.items():
            tp = TopicPartition(p.stream, p.index)
            self._acked[tp] = self._floor[tp] = seq + 1
        self._commit_wake.set()

    async def in_progress(self, deliveries: list[Delivery]) -> None:
        return None

    async def _commit_loop(self) -> None:
        """Commit what was acknowledged, at most every _COMMIT_EVERY_S; a failed commit
        (a rebalance, the coordinator away) is tried again until it goes through, so that
        the group's offsets catch up even when nothing more arrives."""
        while True:
            await self._commit_wake.wait()
            self._commit_wake = trio.Event()
            if not await self._commit(None):
                self._commit_wake.set()
                await trio.sleep(_COMMIT_RETRY_S)
            await trio.sleep(_COMMIT_EVERY_S)

    async def _commit(self, only: set[TopicPartition] | None) -> bool:
        """Commit the acknowledged offsets (of ``only``) of the assigned partitions; False
        when the commit failed."""
        consumer = self._consumer
        if consumer is None:
            return True
        assigned = consumer.assignment()
        offsets = {
            tp: n
            for tp, n in self._acked.items()
            if (only is None or tp in only) and tp in assigned and self._committed.get(tp) != n
        }
        if not offsets:
            return True
        try:
            with trio.move_on_after(_COMMIT_TIMEOUT_S) as scope:
                await aio(consumer.commit, offsets)
        except CommitFailedError as exc:
            log.warning(
                "offset commit refused after a rebalance; the checkpoints stay the truth",
                flow=self.flow,
                error=detail(exc),
            )
            return False
        except (KafkaError, AssertionError) as exc:
            log.warning("offset commit failed", flow=self.flow, error=detail(exc))
            return False
        if scope.cancelled_caught:
            log.warning("offset commit timed out", flow=self.flow, seconds=_COMMIT_TIMEOUT_S)
            return False
        self._committed.update(offsets)
        return True

    # --- figures ---------------------------------------------------------------------------

    def lag(self) -> dict[Partition, int]:
        """Per partition this instance reads: messages not yet acknowledged (the partition's
        end as last fetched, minus the next offset to acknowledge)."""
        consumer = self._consumer
        out: dict[Partition, int] = {}
        if consumer is None:
            return out
        for tp, p in list(self._ready.items()):
            try:
                end = consumer.highwater(tp)
            except AssertionError:
                continue
            floor = self._floor.get(tp)
            if end is not None and floor is not None:
                out[p] = max(0, end - floor)
        return out

    def local_pending(self) -> int | None:
        lags = self.lag()
        return sum(lags.values()) if lags else None

    async def pending(self) -> int | None:
        return self.local_pending()

    async def problems(self) -> list[str]:
        """Brokers reachable, credentials accepted, topics there (none created)."""
        try:
            topics = await probe(self.options, self.flow)
        except CdcSyncError as exc:
            return [str(exc)]
        o = self.options
        if o.topic_pattern is not None:
            rx = re.compile(topic_regex(o.topic_pattern))
            if not any(rx.match(t) for t in topics):
                return [
                    f"no topic matches topic_pattern {o.topic_pattern!r} (fix: correct the "
                    f"pattern; the flow reads matching topics as soon as they are created)"
                ]
            return []
        missing = [t for t in o.topics if t not in topics]
        return [missing_text(o, missing)] if missing else []


SPEC = ComponentSpec(
    name="kafka",
    kind="source",
    summary="Read change events (Debezium or the cdc envelope) from Kafka topics as a "
    "consumer group, exactly once per partition.",
    schema=SCHEMA,
    parse=parse_options,
    factory=KafkaSource,
    example="""\
    source:
      type: kafka
      brokers: ["${KAFKA_BROKERS:-127.0.0.1:9092}"]
      topics: ["dbserver1.inventory.customers"]  # or topic_pattern: ...
      group: cdcsync-customers    # instances with the same group share the partitions
      # start: earliest           # earliest | latest: only where no checkpoint exists
      format: debezium            # cdc | debezium | auto
      # sasl: {mechanism: SCRAM-SHA-512, username: cdcsync, password: "${KAFKA_PASSWORD}"}
      # tls: {ca: /etc/cdcsync/kafka-ca.pem}
""",
    secrets=("password",),
)
