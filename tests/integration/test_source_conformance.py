"""The source conformance suite (cdcsync.conformance.check_source) passes for the built-in
positioned sources: JetStream through a real NATS server, Kafka through a real broker
(tansu, a 4-partition topic, messages spread over the partitions by key)."""

from __future__ import annotations

import nats
from kafkakit import GROUP_SETTINGS, aio_create_topic, aio_produce
from servers import TansuBroker

from cdcsync.bridge import aio, open_bridge
from cdcsync.conformance import check_source
from cdcsync.sources.kafka import KafkaOptions, KafkaSource
from cdcsync.sources.nats import JetStreamOptions, NatsOptions, NatsSource


async def test_jetstream_source_conforms(nats_url: str, unique: str) -> None:
    """Positions resume after restarts, failed runs and pauses; close() releases everything;
    a full channel loses nothing: the JetStream source."""
    stream, subject = unique.upper(), f"{unique}.conformance"
    options = NatsOptions(
        servers=(nats_url,),
        subject=subject,
        jetstream=JetStreamOptions(stream, f"{unique}-c", max_ack_pending=20, ack_wait_s=30),
    )
    async with open_bridge():
        nc = await aio(nats.connect, nats_url)
        js = nc.jetstream()
        await aio(js.add_stream, name=stream, subjects=[subject])

        async def publish(payloads: list[bytes]) -> None:
            for p in payloads:
                await aio(js.publish, subject, p)

        try:
            await check_source(lambda: NatsSource("conformance", options), publish)
        finally:
            await aio(js.delete_stream, stream)
            await aio(nc.close)


async def test_kafka_source_conforms(kafka_broker: TansuBroker, unique: str) -> None:
    """The same suite for the Kafka source, a consumer-group member of a 4-partition topic
    (hand-offs through the coordinator, commits, pause and keep polling when full)."""
    topic = f"{unique}.conformance"
    options = KafkaOptions(
        brokers=(kafka_broker.bootstrap,),
        group=f"{unique}-c",
        topics=(topic,),
        buffer=20,
        **GROUP_SETTINGS,
    )
    async with open_bridge():
        await aio(aio_create_topic, kafka_broker.bootstrap, topic, 4)
        sent = 0

        async def publish(payloads: list[bytes]) -> None:
            nonlocal sent
            records = [(b"k%d" % ((sent + i) % 7), p) for i, p in enumerate(payloads)]
            sent += len(payloads)
            await aio(aio_produce, kafka_broker.bootstrap, topic, records)

        await check_source(lambda: KafkaSource("conformance", options), publish)
