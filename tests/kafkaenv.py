"""The end-to-end tests' world (harness.Env) with a Kafka topic in place of the JetStream
stream: the same tests, expectations and helpers, the source a consumer group on tansu.

Messages are produced keyed by the row's key, as Debezium keys them, to a topic of
``partitions`` partitions (4 unless a test says otherwise), so one key's events stay in
order in one partition and different keys spread over the partitions. An empty payload is
produced as a null value (Debezium's tombstone), keyed like the message before it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from harness import Env, Running, wait_until
from kafkakit import GROUP_SETTINGS, aio_create_topic, aio_produce

from cdcsync import config as cfg
from cdcsync.bridge import aio

__all__ = ["KafkaEnv", "message_key"]


def message_key(payload: bytes) -> bytes | None:
    """The row key of a Debezium event or cdc envelope (its ``id``), None when it has none
    (a truncate, a tombstone, something that is not JSON)."""
    try:
        obj: Any = json.loads(payload)
    except ValueError:
        return None
    if isinstance(obj, dict) and "payload" in obj and "op" not in obj:
        obj = obj["payload"]
    if not isinstance(obj, dict):
        return None
    row = obj.get("after") or obj.get("before") or obj.get("data")
    if isinstance(row, dict) and "id" in row:
        return str(row["id"]).encode()
    return None


class KafkaEnv(Env):
    """An :class:`Env` whose flows read a Kafka topic of the test's own broker."""

    def __init__(self, nats_url: str, pg_url: str, unique: str, bootstrap: str, **kw: Any) -> None:
        super().__init__(nats_url, pg_url, unique, **kw)
        self.bootstrap = bootstrap
        self.partitions = 4
        self.nats_flows: set[str] = set()  # flows of flow_yaml() that read NATS instead
        self._topics: set[str] = set()

    def topic(self, flow: str = "f") -> str:
        return f"{self.unique}.{flow}"

    async def create_topic(self, flow: str = "f") -> str:
        topic = self.topic(flow)
        if topic not in self._topics:
            await aio(aio_create_topic, self.bootstrap, topic, self.partitions)
            self._topics.add(topic)
        return topic

    def source_yaml(
        self, name: str, jetstream: bool, fmt: str, subject: str | None, source_extra: str
    ) -> str:
        if name in self.nats_flows:
            return super().source_yaml(name, jetstream, fmt, subject, source_extra)
        settings = "".join(f"\n      {k}: {v}" for k, v in GROUP_SETTINGS.items())
        return f"""
      type: kafka
      brokers: ["{self.bootstrap}"]
      topics: ["{self.topic(name)}"]
      group: {self.unique}-{name}
      format: {fmt}{settings}{source_extra}"""

    async def publish(
        self, subject: str, payloads: list[bytes], jetstream: bool = True, flow: str = "f"
    ) -> None:
        """Produce to the topic of ``flow`` in order, keyed by row key (``subject`` names
        the table in the NATS tests; here the events carry it)."""
        topic = await self.create_topic(flow)
        records: list[tuple[bytes | None, bytes | None]] = []
        key: bytes | None = None
        for payload in payloads:
            if payload.strip():
                key = message_key(payload)
                records.append((key, payload))
            else:
                records.append((key, None))  # a tombstone follows its delete
        await aio(aio_produce, self.bootstrap, topic, records)

    async def ensure_stream(self, subjects: list[str], name: str | None = None) -> None:
        await self.create_topic()

    async def applied(
        self, seq: int, flow: str = "f", dest: str = "primary", timeout: float = 15.0
    ) -> None:
        """Wait until the destination's checkpoints cover ``seq`` messages of the topic
        (offsets start at 0 in every partition)."""

        async def check() -> bool:
            rows = await self.sql(
                f"SELECT coalesce(sum(last_seq + 1), 0) AS n FROM {self.state}.checkpoints "
                "WHERE flow = $1 AND destination = $2",
                flow,
                dest,
            )
            return int(rows[0]["n"]) >= seq

        await wait_until(check, timeout, what=f"checkpoints of {flow}/{dest} covering {seq}")

    @asynccontextmanager
    async def running(
        self, config: cfg.Config, nursery: trio.Nursery, wait_running: bool = True
    ) -> AsyncIterator[Running]:
        for flow in config.flows:
            if flow.name not in self.nats_flows:
                await self.create_topic(flow.name)
        async with super().running(config, nursery, wait_running) as handle:
            yield handle
