"""Helpers of the Kafka fault tests: the fault workload produced keyed to a topic, a Kafka
flow's configuration, and what the checkpoints and the group's offsets say.

Plain asyncio, like faultkit (the tests call ``asyncio.run``); aiokafka runs natively here.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from faultkit import create_schema, sql
from kafkakit import GROUP_SETTINGS, aio_create_topic, aio_group_offsets

__all__ = [
    "PARTITIONS",
    "checkpoints",
    "create_topic",
    "group_offsets",
    "kafka_config",
    "keyed",
    "prepare",
    "produce",
    "total_applied",
]

PARTITIONS = 4


def keyed(events: list[tuple[str, bytes]]) -> list[tuple[bytes, bytes]]:
    """(key, value) for each fault-workload event: keyed by table and row id, as Debezium
    keys by primary key, so each row's events stay in order in one partition."""
    return [(f"{table}:{json.loads(body)['data']['id']}".encode(), body) for table, body in events]


async def create_topic(bootstrap: str, topic: str) -> None:
    await aio_create_topic(bootstrap, topic, PARTITIONS)


async def produce(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes, bytes]],
    chunk: int = 5_000,
    pause: float = 0.0,
) -> None:
    """Produce in order (one producer, acks from the broker for every chunk); ``pause``
    seconds between chunks make a steady trickle instead of one burst."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    try:
        for start in range(0, len(records), chunk):
            futures = [
                await producer.send(topic, value, key=key)
                for key, value in records[start : start + chunk]
            ]
            await asyncio.gather(*futures)
            if pause:
                await asyncio.sleep(pause)
    finally:
        await producer.stop()


async def prepare(
    pg_url: str, schema: str, bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]
) -> None:
    """The fault tables in ``schema``, the topic, and ``records`` produced to it."""
    await create_schema(pg_url, schema)
    await create_topic(bootstrap, topic)
    await produce(bootstrap, topic, records)


async def checkpoints(url: str, schema: str, flow: str = "f") -> dict[int, int]:
    """The destination's last applied offset per partition."""
    try:
        rows = await sql(
            url,
            f"SELECT partition, last_seq FROM {schema}_state.checkpoints WHERE flow = $1",
            flow,
        )
    except asyncpg.UndefinedTableError:
        return {}
    return {int(r["partition"]): int(r["last_seq"]) for r in rows}


async def total_applied(url: str, schema: str) -> int:
    """Messages the checkpoints cover (offsets start at 0 in each partition)."""
    try:
        return sum(n + 1 for n in (await checkpoints(url, schema)).values())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return 0


async def group_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    found = await aio_group_offsets(bootstrap, group, topic, PARTITIONS)
    return {p: n for (_, p), n in found.items()}


def kafka_config(
    directory: Path,
    *,
    bootstrap: str,
    topic: str,
    group: str,
    pg_url: str,
    schema: str,
    **extra: Any,
) -> Path:
    """One Kafka flow ``f`` (format cdc) into ``schema``, API on a free port."""
    settings = {**GROUP_SETTINGS, **extra}
    lines = "".join(f"\n      {k}: {v}" for k, v in settings.items())
    path = directory / "cdcsync.yaml"
    path.write_text(f"""\
api:
  bind: 127.0.0.1:0
flows:
  - name: f
    source:
      type: kafka
      brokers: ["{bootstrap}"]
      topics: ["{topic}"]
      group: {group}
      format: cdc{lines}
    batch: {{max_size: 1000, max_delay_ms: 20}}
    destinations:
      - name: primary
        type: postgres
        url: "{pg_url}"
        schema: {schema}
        state_schema: {schema}_state
        conflict_resolution: upsert
""")
    return path
