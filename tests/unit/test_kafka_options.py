"""The Kafka source's configuration: what loads, what is refused (at the line, with the fix),
and the SASL password kept out of every output."""

from __future__ import annotations

import re

import pytest

from cdcsync.config import loads
from cdcsync.errors import ConfigError
from cdcsync.sources.kafka import KafkaOptions, KafkaSource
from cdcsync.sources.kafka_options import topic_regex

BASE = """\
flows:
  - name: customers
    source:
      type: kafka
      brokers: ["kafka-1:9092", "kafka-2:9092"]
{source}
    destinations:
      - name: primary
        type: postgres
        url: postgresql://cdc@db/cdc
"""


def source(text: str) -> str:
    return BASE.format(source="\n".join(f"      {line}" for line in text.strip().splitlines()))


def options(text: str) -> KafkaOptions:
    config = loads(source(text), "c.yaml")
    opts = config.flows[0].source.options
    assert isinstance(opts, KafkaOptions)
    return opts


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        loads(source(text), "c.yaml")
    assert len(info.value.errors) == 1, info.value.errors
    return info.value.errors[0]


def test_the_documented_shape_loads_with_defaults() -> None:
    """Topics, group and format as docs/kafka.md shows them; the rest defaults."""
    o = options(
        "topics: [dbserver1.inventory.customers]\ngroup: cdcsync-customers\nformat: debezium"
    )
    assert o.brokers == ("kafka-1:9092", "kafka-2:9092")
    assert o.topics == ("dbserver1.inventory.customers",) and o.topic_pattern is None
    assert (o.group, o.start, o.format, o.buffer) == (
        "cdcsync-customers",
        "earliest",
        "debezium",
        20000,
    )
    assert (o.session_timeout_ms, o.heartbeat_interval_ms) == (10000, 3000)
    assert o.sasl is None and not o.tls
    assert KafkaSource("customers", o).from_start


def test_topic_pattern_matches_whole_names() -> None:
    """A pattern matches whole topic names (as Kafka's clients do), not just a prefix."""
    o = options('topic_pattern: "dbserver1\\\\.inventory\\\\..*"\ngroup: g\nstart: latest')
    assert o.topics == () and o.start == "latest"
    rx = re.compile(topic_regex("orders|customers"))
    assert [t for t in ("orders", "customers", "orders_archive") if rx.match(t)] == [
        "orders",
        "customers",
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("group: g", "either 'topics'"),
        ("topics: [a]\ntopic_pattern: b\ngroup: g", "either 'topics'"),
        ("topics: [a, a]\ngroup: g", "names a topic twice"),
        ("topics: ['bad topic']\ngroup: g", "letters, digits"),
        ("topics: [a]\ntopic_pattern: '('\ngroup: g", "no regular expression"),
        ("topics: [a]\ngroup: 'two words'", "no spaces"),
        ("topics: [a]\ngroup: g\nstart: beginning", "earliest, latest"),
        (
            "topics: [a]\ngroup: g\nsession_timeout_ms: 3000\nheartbeat_interval_ms: 3000",
            "below session_timeout_ms",
        ),
        ("topics: [a]\ngroup: g\nsasl: {mechanism: GSSAPI, username: u, password: p}", "PLAIN"),
    ],
)
def test_mistakes_are_refused_with_the_fix(text: str, words: str) -> None:
    """Each mistake is one error on the source block, saying what would be right."""
    assert words in error(text)


@pytest.mark.parametrize("broker", ["kafka://k:9092", "k", "k:port", "k:0", ":9092"])
def test_brokers_are_host_and_port(broker: str) -> None:
    """A broker is host:port: a scheme, a missing or wrong port is refused."""
    text = BASE.replace('"kafka-1:9092", "kafka-2:9092"', f'"{broker}"')
    with pytest.raises(ConfigError) as info:
        loads(text.format(source="      topics: [a]\n      group: g"), "c.yaml")
    assert "host:port" in str(info.value) or "port" in str(info.value)


def test_sasl_password_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The password comes from the environment, is redacted in the API's view and is in the
    secrets scrubbed from every error text."""
    monkeypatch.setenv("KAFKA_PASSWORD", "pa55-w0rd-xyz")
    config = loads(
        source(
            "topics: [a]\ngroup: g\nsasl: {mechanism: SCRAM-SHA-512, username: cdc, "
            "password: '${KAFKA_PASSWORD}'}\ntls: {ca: /etc/ca.pem}"
        ),
        "c.yaml",
    )
    o = config.flows[0].source.options
    assert o.sasl is not None and o.sasl.password == "pa55-w0rd-xyz" and o.tls
    shown = o.redacted()
    assert shown["sasl"] == {"mechanism": "SCRAM-SHA-512", "username": "cdc", "password": "***"}
    assert "pa55-w0rd-xyz" not in repr(shown)
    assert "pa55-w0rd-xyz" in config.secrets()


def test_two_flows_in_one_group_are_refused() -> None:
    """Two flows in one consumer group would split the partitions: refused at the second."""
    flow = BASE.split("flows:\n", 1)[1].format(source="      topics: [a]\n      group: g")
    text = "flows:\n" + flow + flow.replace("name: customers", "name: orders")
    with pytest.raises(ConfigError) as info:
        loads(text, "c.yaml")
    [message] = info.value.errors
    assert "consumer group 'g', as flow 'customers' does" in message
    assert message.startswith(f"c.yaml:{text.splitlines().index('    source:', 12) + 1}:")
