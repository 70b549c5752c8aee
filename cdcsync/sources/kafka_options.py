"""The Kafka source's configuration: schema (with the docs of every key), parsing and the
frozen options the source runs with."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import strictyaml as sy

from cdcsync.plugin import CheckedStr, EnvEnum, EnvInt, EnvStr, described

__all__ = ["MECHANISMS", "SCHEMA", "KafkaOptions", "SaslOptions", "parse_options", "topic_regex"]

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _unprintable(text: str) -> bool:
    return any(ch.isspace() or not ch.isprintable() for ch in text)


def broker_problem(text: str) -> str | None:
    """``host:port`` as Kafka clients take it (no scheme); None when it is one."""
    if "://" in text:
        return f"{text!r}: a broker is host:port, without a scheme (e.g. kafka-1:9092)"
    host, colon, port = text.rpartition(":")
    if not colon or not host or _unprintable(text):
        return f"{text!r}: a broker is host:port (e.g. kafka-1:9092)"
    if not port.isascii() or not port.isdigit() or not 0 < int(port) <= 65535:
        return f"{text!r}: the port must be a number from 1 to 65535"
    return None


def topic_problem(name: str) -> str | None:
    """Kafka's rule for topic names: letters, digits, '.', '_', '-', at most 249."""
    if name in (".", "..") or not _TOPIC.fullmatch(name):
        return (
            f"{name!r}: a topic name has 1 to 249 letters, digits, '.', '_' or '-' "
            f"(and is not '.' or '..')"
        )
    return None


def topic_regex(pattern: str) -> str:
    """The pattern as the client gets it: matching whole topic names, as Kafka's Java
    clients do (aiokafka alone would accept any topic that merely starts with a match)."""
    return f"(?:{pattern})\\Z"


def _pattern_problem(pattern: str) -> str | None:
    if not pattern:
        return "an empty pattern (write a regular expression, e.g. dbserver1\\.inventory\\..*)"
    try:
        re.compile(topic_regex(pattern))
    except re.error as exc:
        return f"{pattern!r} is no regular expression: {exc}"
    return None


def _group_problem(group: str) -> str | None:
    if not group or _unprintable(group) or len(group) > 255:
        return f"{group!r}: 1 to 255 printable characters, no spaces"
    return None


@dataclass(frozen=True)
class SaslOptions:
    mechanism: str
    username: str
    password: str


@dataclass(frozen=True)
class KafkaOptions:
    brokers: tuple[str, ...]
    group: str
    topics: tuple[str, ...] = ()
    topic_pattern: str | None = None
    start: str = "earliest"
    format: str = "auto"
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    sasl: SaslOptions | None = None
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    buffer: int = 20_000
    max_message_bytes: int = 8 * 1024 * 1024

    def redacted(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "brokers": list(self.brokers),
            "topics": list(self.topics) if self.topics else None,
            "topic_pattern": self.topic_pattern,
            "group": self.group,
            "start": self.start,
            "format": self.format,
            "tls": self.tls,
        }
        if self.sasl is not None:
            out["sasl"] = {
                "mechanism": self.sasl.mechanism,
                "username": self.sasl.username,
                "password": "***",
            }
        return out

    def secrets(self) -> list[str]:
        return [self.sasl.password] if self.sasl is not None and self.sasl.password else []

    def subscription(self) -> str:
        """What the flow reads, in words (logs and errors)."""
        if self.topic_pattern is not None:
            return f"topics matching {self.topic_pattern!r}"
        return "topic " + ", ".join(repr(t) for t in self.topics)


def parse_options(data: dict[str, Any]) -> KafkaOptions:
    brokers = tuple(data["brokers"])
    if not brokers:
        raise ValueError("brokers must list at least one host:port")
    topics = tuple(data.get("topics") or ())
    pattern = data.get("topic_pattern")
    if bool(topics) == (pattern is not None):
        raise ValueError("give either 'topics' (a list of names) or 'topic_pattern', not both")
    if len(set(topics)) != len(topics):
        raise ValueError("'topics' names a topic twice")
    if data["heartbeat_interval_ms"] >= data["session_timeout_ms"]:
        raise ValueError(
            "heartbeat_interval_ms must be below session_timeout_ms (a third of it is usual)"
        )
    tls = data.get("tls")
    sasl = data.get("sasl")
    return KafkaOptions(
        brokers=brokers,
        group=data["group"],
        topics=topics,
        topic_pattern=pattern,
        start=data["start"],
        format=data["format"],
        tls=tls is not None,
        tls_ca=(tls or {}).get("ca"),
        tls_cert=(tls or {}).get("cert"),
        tls_key=(tls or {}).get("key"),
        sasl=SaslOptions(sasl["mechanism"], sasl["username"], sasl["password"]) if sasl else None,
        session_timeout_ms=data["session_timeout_ms"],
        heartbeat_interval_ms=data["heartbeat_interval_ms"],
        max_poll_interval_ms=data["max_poll_interval_ms"],
        buffer=data["buffer"],
        max_message_bytes=data["max_message_bytes"],
    )


_TLS = described(
    sy.Map(
        {
            sy.Optional("ca"): described(
                EnvStr(),
                "CA bundle (PEM file) that signed the brokers' certificates; default: the "
                "system's roots.",
                example="/etc/cdcsync/kafka-ca.pem",
            ),
            sy.Optional("cert"): described(
                EnvStr(), "Client certificate (PEM file), for mutual TLS.", example="client.pem"
            ),
            sy.Optional("key"): described(
                EnvStr(), "The client certificate's private key (PEM file).", example="client.key"
            ),
        }
    ),
    "TLS to the brokers (security protocol SSL, or SASL_SSL with `sasl`). Absent: plain TCP.",
    example="{ca: /etc/cdcsync/kafka-ca.pem}",
)

_SASL = described(
    sy.Map(
        {
            "mechanism": described(
                EnvEnum(*MECHANISMS),
                "`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`. PLAIN sends the password as "
                "is: use it only with `tls`.",
                example="SCRAM-SHA-512",
            ),
            "username": described(EnvStr(), "SASL user name.", example="cdcsync"),
            "password": described(
                EnvStr(), "SASL password; redacted in every output.", example="${KAFKA_PASSWORD}"
            ),
        }
    ),
    "SASL authentication (security protocol SASL_PLAINTEXT, or SASL_SSL with `tls`).",
    example="{mechanism: SCRAM-SHA-512, username: cdcsync, password: ${KAFKA_PASSWORD}}",
)

SCHEMA = {
    "brokers": described(
        sy.Seq(CheckedStr("a Kafka broker host:port", broker_problem)),
        "Bootstrap brokers, `host:port`; list several, any one that answers will do.",
        example='["kafka-1:9092", "kafka-2:9092"]',
    ),
    sy.Optional("topics"): described(
        sy.Seq(CheckedStr("a Kafka topic name", topic_problem)),
        "Topics to read (they must exist: cdcsync never creates one). Give this or "
        "`topic_pattern`.",
        example='["dbserver1.inventory.customers"]',
    ),
    sy.Optional("topic_pattern"): described(
        CheckedStr("a regular expression", _pattern_problem),
        "Read every topic whose whole name matches this regular expression (Python syntax), "
        "including topics created later. Give this or `topics`.",
        example='"dbserver1\\\\.inventory\\\\..*"',
    ),
    "group": described(
        CheckedStr("a consumer group id", _group_problem),
        "Consumer group id. Instances running the same flow with the same group share the "
        "partitions; give each flow its own group.",
        example="cdcsync-customers",
    ),
    sy.Optional("start", default="earliest"): described(
        EnvEnum("earliest", "latest"),
        "Where a partition without any checkpoint starts: `earliest` (its first message) or "
        "`latest` (only messages produced from now on). A checkpoint always wins.",
        example="latest",
    ),
    sy.Optional("format", default="auto"): described(
        EnvEnum("cdc", "debezium", "auto"),
        "Message format: `cdc` (the original envelope), `debezium`, or `auto` (detected per "
        "message). A null value (Debezium's tombstone) is skipped with `debezium` and `auto`.",
        example="debezium",
    ),
    sy.Optional("tls"): _TLS,
    sy.Optional("sasl"): _SASL,
    sy.Optional("session_timeout_ms", default=10_000): described(
        EnvInt(1_000, 3_600_000),
        "How long the group waits for a silent instance before giving its partitions to "
        "the others (a killed instance's partitions move after about this long). The "
        "broker bounds it (Kafka: group.min/max.session.timeout.ms, 6000-1800000 by default).",
        example="30000",
    ),
    sy.Optional("heartbeat_interval_ms", default=3_000): described(
        EnvInt(100, 3_600_000),
        "How often the instance tells the group it is alive; below a third of "
        "`session_timeout_ms`.",
        example="1000",
    ),
    sy.Optional("max_poll_interval_ms", default=300_000): described(
        EnvInt(1_000, 86_400_000),
        "Also how long a hand-off may take: a rebalance waits this long for an instance to "
        "commit what it read of the partitions it gives up.",
        example="600000",
    ),
    sy.Optional("buffer", default=20_000): described(
        EnvInt(1, 10_000_000),
        "Messages read ahead and held in memory. When it is full the flow pauses its "
        "partitions (and stays in the group) until the destinations catch up.",
        example="50000",
    ),
    sy.Optional("max_message_bytes", default=8 * 1024 * 1024): described(
        EnvInt(1, 1 << 30),
        "Larger messages are dead-lettered without being decoded (default 8 MiB).",
        example="1048576",
    ),
}
