"""Who runs which partition of a partitioned JetStream flow: membership in a KV bucket.

The instances of a flow each put a key ``<stream>.<durable>.<instance>`` into the bucket
``cdcsync_members`` every second; the bucket's TTL (3 s) makes the server delete the key of an
instance that stopped doing so. Every instance reads the keys twice a second and takes the
partitions that :func:`fair_share` gives it among the sorted live members. That is a wish,
not a lock: the destinations' writer fences decide who writes (docs/semantics.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import nats.js.errors
import structlog
import trio
from nats.js import api as js_api

from cdcsync.plugin import (
    FatalSourceError,
    Partition,
    PartitionState,
    SourceError,
    aio,
    instance_id,
)
from cdcsync.sources.nats import NatsSource, _text

__all__ = ["BUCKET", "TTL_S", "Membership", "fair_share", "group_key"]

log = structlog.get_logger("cdcsync.sources.nats")

BUCKET = "cdcsync_members"
TTL_S = 3.0  # the bucket's max age: a member that stopped putting its key is gone after this
HEARTBEAT_S = 1.0
POLL_S = 0.5
SETTLE_S = 1.0  # after joining, before taking anything: instances started together meet first
EXPEL_S = 10.0  # unable to put our key this long: the others think we are gone, give up
_REQUEST_S = 2.0
_REPORTS_EVERY = 4  # polls between two reads of the others' reports (for the API)
_STATUS = frozenset({"running", "degraded", "paused", "failed"})


def fair_share(count: int, members: Sequence[str]) -> dict[int, str]:
    """Which member owns each of ``count`` partitions: a function of the member set only.

    Balanced (shares differ by at most one: the first ``count % m`` members in sorted order
    may have one more), and stable: each partition goes to the member with the highest hash
    of (member, partition) that is below its quota, so a member coming or going moves few
    partitions.
    """
    ordered = sorted(set(members))
    if not ordered:
        return {}
    base, extra = divmod(count, len(ordered))
    quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(ordered)}
    load = dict.fromkeys(ordered, 0)
    owner: dict[int, str] = {}
    for k in range(count):
        ranked = sorted(ordered, key=lambda m: hashlib.sha1(f"{m}/{k}".encode()).digest())
        for m in reversed(ranked):
            if load[m] < quota[m]:
                owner[k] = m
                load[m] += 1
                break
    return owner


def group_key(stream: str, durable: str) -> str:
    """The key prefix of one flow's members: ``<stream>.<durable>``, made KV-safe."""

    def token(text: str) -> str:
        safe = re.sub(r"[^A-Za-z0-9_=-]", "_", text)
        if safe != text:  # two names that differ only in unsafe characters stay apart
            safe += "_" + hashlib.sha1(text.encode()).hexdigest()[:8]
        return safe

    return f"{token(stream)}.{token(durable)}"


class Membership:
    """The :class:`~cdcsync.plugin.Partitioning` of a NATS flow with ``partitions > 1``."""

    def __init__(self, source: NatsSource) -> None:
        js = source.options.jetstream
        assert js is not None
        self._source = source  # the flow's own source: its connection and its stream
        self.instance = instance_id()
        self.partitions: Sequence[Partition] = tuple(
            Partition(js.stream, k) for k in range(js.partitions)
        )
        self._group = group_key(js.stream, js.durable)
        self._key = f"{self._group}.{self.instance}"
        self._kv: Any = None
        self._members: tuple[str, ...] = ()
        self._reports: dict[Partition, PartitionState] = {}
        self._leaving = False
        self._expelled = False
        self._put_lock = trio.Lock()

    def source(self, partition: Partition) -> NatsSource:
        return NatsSource(self._source.flow, self._source.options, partition.index)

    def view(self) -> Mapping[Partition, PartitionState]:
        return self._reports

    @property
    def members(self) -> tuple[str, ...]:
        """The live members as last read (this instance included)."""
        return self._members

    async def run(
        self,
        wanted: Callable[[frozenset[Partition]], None],
        report: Callable[[], Mapping[Partition, PartitionState]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        await self._join()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeat, report)
            await self._watch(wanted)

    async def leave(self) -> None:
        self._leaving = True
        if self._kv is None:
            return
        async with self._put_lock:  # no heartbeat in flight puts the key back
            try:
                with trio.move_on_after(_REQUEST_S):
                    await aio(self._aio_purge)
            except Exception as exc:  # it expires by itself within the TTL
                log.debug("cannot leave the membership", error=_text(exc))

    # --- Trio side ---------------------------------------------------------------------------

    async def _join(self) -> None:
        """Connect, check the stream (or create it), open the bucket; retry until it works."""
        delay = 0.5
        while True:
            try:
                await self._source.connect()
                await self._source.identity()
                with trio.fail_after(10):
                    await aio(self._aio_bucket)
                break
            except FatalSourceError:
                raise
            except (SourceError, trio.TooSlowError, Exception) as exc:
                log.warning(
                    "cannot join the partition membership",
                    flow=self._source.flow,
                    error=str(exc) or _text(exc),
                    retry_in_s=delay,
                )
                await trio.sleep(delay)
                delay = min(delay * 2, 10.0)
        log.info(
            "joined the partition membership",
            flow=self._source.flow,
            instance=self.instance,
            partitions=len(self.partitions),
        )

    async def _heartbeat(self, report: Callable[[], Mapping[Partition, PartitionState]]) -> None:
        last_ok = trio.current_time()
        while not self._leaving:
            body = self._encode(report())
            try:
                async with self._put_lock:
                    if self._leaving:
                        return
                    with trio.fail_after(_REQUEST_S):
                        await aio(self._kv.put, self._key, body)
                last_ok = trio.current_time()
                if self._expelled:
                    log.info("partition membership reachable again", flow=self._source.flow)
                    self._expelled = False
            except (trio.TooSlowError, Exception) as exc:
                if not self._expelled and trio.current_time() - last_ok > EXPEL_S:
                    log.warning(
                        "cannot reach the partition membership: giving the partitions up",
                        flow=self._source.flow,
                        error=_text(exc),
                        seconds=round(trio.current_time() - last_ok, 1),
                    )
                    self._expelled = True
            await trio.sleep(HEARTBEAT_S)

    async def _watch(self, wanted: Callable[[frozenset[Partition]], None]) -> None:
        joined = trio.current_time()
        mine: frozenset[Partition] | None = None
        polls = 0
        while not self._leaving:
            try:
                with trio.fail_after(_REQUEST_S):
                    others = await aio(self._aio_members)
                self._members = tuple(sorted({*others, self.instance}))
                if polls % _REPORTS_EVERY == 0:
                    with trio.fail_after(_REQUEST_S * 2):
                        self._reports = await aio(self._aio_reports, others)
            except (trio.TooSlowError, Exception) as exc:
                log.debug("cannot read the partition membership", error=_text(exc))
            polls += 1
            if trio.current_time() - joined >= SETTLE_S and not self._leaving:
                now = frozenset() if self._expelled else self._share()
                if now != mine:
                    mine = now
                    log.info(
                        "partitions assigned",
                        flow=self._source.flow,
                        members=len(self._members),
                        partitions=sorted(p.index for p in now),
                    )
                    wanted(now)
            await trio.sleep(POLL_S)

    def _share(self) -> frozenset[Partition]:
        owner = fair_share(len(self.partitions), self._members)
        return frozenset(p for p in self.partitions if owner.get(p.index) == self.instance)

    def _encode(self, states: Mapping[Partition, PartitionState]) -> bytes:
        parts = {
            str(p.index): {"status": s.status, "position": s.position, "lag": s.lag}
            for p, s in states.items()
        }
        return json.dumps({"instance": self.instance, "partitions": parts}).encode()

    def _decode(self, member: str, raw: bytes) -> dict[Partition, PartitionState]:
        """A member's report; anything malformed in it is left out (it is outside input)."""
        try:
            data = json.loads(raw)
            parts = data.get("partitions") if isinstance(data, dict) else None
        except ValueError:
            return {}
        out: dict[Partition, PartitionState] = {}
        if not isinstance(parts, dict):
            return out
        for index, state in parts.items():
            if not (isinstance(index, str) and index.isdigit() and isinstance(state, dict)):
                continue
            k = int(index)
            status = state.get("status")
            if k >= len(self.partitions) or status not in _STATUS:
                continue
            position, lag = state.get("position"), state.get("lag")
            out[self.partitions[k]] = PartitionState(
                member,
                status,
                position if type(position) is int else None,
                lag if type(lag) is int else None,
            )
        return out

    # --- asyncio side ------------------------------------------------------------------------

    async def _aio_bucket(self) -> None:
        js = self._source._js
        try:
            self._kv = await js.key_value(BUCKET)
            return
        except nats.js.errors.BucketNotFoundError:
            pass
        stream = self._source.options.jetstream
        assert stream is not None
        info = await js.stream_info(stream.stream)
        config = js_api.KeyValueConfig(
            bucket=BUCKET,
            description="cdcsync: the instances running each partitioned flow",
            history=1,
            ttl=TTL_S,
            replicas=info.config.num_replicas or 1,
        )
        try:
            self._kv = await js.create_key_value(config)
        except nats.js.errors.BadRequestError:  # another instance created it meanwhile
            self._kv = await js.key_value(BUCKET)

    async def _aio_members(self) -> list[str]:
        prefix = f"$KV.{BUCKET}.{self._group}."
        js = self._source._js
        info = await js.stream_info(f"KV_{BUCKET}", subjects_filter=prefix + "*")
        subjects = info.state.subjects or {}
        return [s[len(prefix) :] for s in subjects if s.startswith(prefix)]

    async def _aio_reports(self, members: list[str]) -> dict[Partition, PartitionState]:
        found: dict[Partition, PartitionState] = {}
        for member in sorted(members):
            if member == self.instance:
                continue
            try:
                entry = await self._kv.get(f"{self._group}.{member}")
            except nats.js.errors.KeyNotFoundError:
                continue
            for p, state in self._decode(member, entry.value or b"").items():
                if p not in found or found[p].status != "running":
                    found[p] = state
        return found

    async def _aio_purge(self) -> None:
        await self._source._js.purge_stream(f"KV_{BUCKET}", subject=f"$KV.{BUCKET}.{self._key}")
