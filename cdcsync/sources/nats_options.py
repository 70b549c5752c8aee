"""The NATS source's configuration: schema (with the docs of every key), parsing and the
frozen options the source runs with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nkeys
import strictyaml as sy

from cdcsync.plugin import (
    CheckedStr,
    EnvBool,
    EnvEnum,
    EnvInt,
    EnvStr,
    described,
    redact_url,
    url_secrets,
    userinfo_problem,
)

__all__ = ["SCHEMA", "JetStreamOptions", "NatsOptions", "parse_options", "subject_problem"]

_SCHEMES = ("nats", "tls", "ws", "wss")


def _unprintable(text: str) -> bool:
    return any(ch.isspace() or not ch.isprintable() for ch in text)


def subject_problem(subject: str) -> str | None:
    """What NATS would refuse in a subscription subject, and the fix; None if it is valid."""
    if not subject:
        return "an empty subject (write one, e.g. cdc.users.> )"
    if _unprintable(subject):
        return f"{subject!r}: spaces and control characters are not allowed in a subject"
    tokens = subject.split(".")
    if "" in tokens:
        return f"{subject!r}: an empty token (a leading, trailing or doubled '.')"
    if ">" in tokens[:-1]:
        return f"{subject!r}: '>' matches the rest of a subject, so it must be the last token"
    return None


def _name_problem(name: str) -> str | None:
    """Stream and consumer names: the rules of nats-py and nats-server (file names)."""
    if not name:
        return "an empty name"
    if _unprintable(name) or any(ch in name for ch in ".*>/\\"):
        return f"{name!r}: no spaces, control characters, '.', '*', '>', '/' or '\\'"
    if len(name.encode()) > 255:
        return f"a name of {len(name.encode())} bytes (at most 255)"
    return None


def _seed_problem(seed: str) -> str | None:
    """Whether nats-py could sign in with this nkey seed (never shown: it is a secret)."""
    try:
        nkeys.from_seed(seed.strip().encode())
    except (nkeys.ErrInvalidSeed, ValueError, UnicodeError, IndexError):
        return "no valid nkey seed (a user seed starts with SU; `nk -gen user` makes one)"
    return None


def _server_problem(url: str) -> str | None:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        return (
            f"{redact_url(url)!r}: a server is a URL like nats://host:4222 "
            f"(schemes: {', '.join(_SCHEMES)})"
        )
    ambiguous = userinfo_problem(url)
    if ambiguous is not None:
        return ambiguous
    hostport = rest.rsplit("@", 1)[-1].split("/", 1)[0]
    host, colon, port = hostport.rpartition(":")
    if colon and "]" not in port and (not port.isascii() or not port.isdigit()):
        return f"{redact_url(url)!r}: the port must be a number"
    if colon and "]" not in port and not 0 < int(port) <= 65535:
        return f"{redact_url(url)!r}: port {port} (a port is 1 to 65535)"
    if not (host if colon else hostport) or _unprintable(hostport):
        return f"{redact_url(url)!r}: no host"
    return None


@dataclass(frozen=True)
class JetStreamOptions:
    stream: str
    durable: str
    max_ack_pending: int = 20_000
    ack_wait_s: int = 60
    deliver: str = "all"
    create_stream: bool = True
    partitions: int = 1


@dataclass(frozen=True)
class NatsOptions:
    servers: tuple[str, ...]
    subject: str
    jetstream: JetStreamOptions | None = None
    format: str = "auto"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    nkey_seed: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    buffer: int = 20_000
    max_message_bytes: int = 8 * 1024 * 1024

    def redacted(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "servers": [redact_url(s) for s in self.servers],
            "subject": self.subject,
            "format": self.format,
            "jetstream": None,
        }
        if self.jetstream is not None:
            js = self.jetstream
            out["jetstream"] = {
                "stream": js.stream,
                "durable": js.durable,
                "max_ack_pending": js.max_ack_pending,
                "ack_wait_s": js.ack_wait_s,
                "deliver": js.deliver,
                "partitions": js.partitions,
            }
        for secret in ("password", "token", "nkey_seed"):
            if getattr(self, secret):
                out[secret] = "***"
        if self.user:
            out["user"] = self.user
        return out

    def secrets(self) -> list[str]:
        """The password, token and nkey seed, and whatever secret the server URLs hold."""
        found = [s for s in (self.password, self.token, self.nkey_seed) if s]
        return found + [secret for url in self.servers for secret in url_secrets(url)]


def parse_options(data: dict[str, Any]) -> NatsOptions:
    servers = tuple(data["servers"])
    if not servers:
        raise ValueError("servers must list at least one nats:// URL")
    js = None
    if "jetstream" in data and data["jetstream"] is not None:
        j = data["jetstream"]
        js = JetStreamOptions(
            stream=j["stream"],
            durable=j["durable"],
            max_ack_pending=j["max_ack_pending"],
            ack_wait_s=j["ack_wait_s"],
            deliver=j["deliver"],
            create_stream=j["create_stream"],
            partitions=j["partitions"],
        )
        if js.partitions > 1 and "*" not in data["subject"].split("."):
            raise ValueError(
                f"partitions: {js.partitions} needs a '*' wildcard in subject "
                f"{data['subject']!r}: the tokens it matches decide the partition (e.g. "
                f"cdc.*.* for cdc.<table>.<key>; '>' cannot be hashed)"
            )
    tls = data.get("tls") or {}
    return NatsOptions(
        servers=servers,
        subject=data["subject"],
        jetstream=js,
        format=data["format"],
        user=data.get("user"),
        password=data.get("password"),
        token=data.get("token"),
        creds=data.get("creds"),
        nkey_seed=data.get("nkey_seed"),
        tls_ca=tls.get("ca"),
        tls_cert=tls.get("cert"),
        tls_key=tls.get("key"),
        buffer=data["buffer"],
        max_message_bytes=data["max_message_bytes"],
    )


_JETSTREAM = described(
    sy.Map(
        {
            "stream": described(
                CheckedStr("a JetStream stream name", _name_problem),
                "Stream name (no spaces, `.`, `*`, `>`, `/` or `\\`; at most 255 bytes). "
                "Created with `subject` when missing (unless `create_stream: false`); "
                "`subject` is added to an existing stream that does not cover it yet.",
                example="CDC",
            ),
            "durable": described(
                CheckedStr("a JetStream consumer name", _name_problem),
                "Durable consumer name, owned by cdcsync: deleted and recreated at every "
                "start, positioned just after the destinations' checkpoints. Share it with "
                "no other application or flow.",
                example="cdcsync-users",
            ),
            sy.Optional("max_ack_pending", default=20_000): described(
                EnvInt(1, 1_000_000),
                "Most messages delivered and not yet acknowledged. This bounds memory: the "
                "process holds at most twice this many messages for the flow.",
                example="5000",
            ),
            sy.Optional("ack_wait_s", default=60): described(
                EnvInt(5, 86_400),
                "Seconds before JetStream redelivers an unacknowledged message. cdcsync "
                "sends in-progress acks while a batch is being written or retried.",
                example="120",
            ),
            sy.Optional("deliver", default="all"): described(
                EnvEnum("all", "new"),
                "Where a flow with no checkpoint yet starts: `all` (the stream's first "
                "message) or `new` (only messages published from now on).",
                example="new",
            ),
            sy.Optional("create_stream", default=True): described(
                EnvBool(),
                "`false`: a missing stream is an error instead of being created.",
                example="false",
            ),
            sy.Optional("partitions", default=1): described(
                EnvInt(1, 1024),
                "Split the flow into this many partitions, each with its own durable consumer "
                "(`<durable>-p<k>`), checkpoint and writer fence, written in parallel and "
                "shared between the instances that run this configuration. The tokens matched "
                "by the subject's `*` wildcards decide a message's partition (order holds per "
                "subject). Needs nats-server 2.10+; cdcsync creates the stream with the "
                "subject transform, and never changes the count of an existing stream. "
                "`1`: one partition, one writer (the instances stand by).",
                example="8",
            ),
        }
    ),
    "Durable, exactly-once delivery through a JetStream stream. Absent: core NATS, "
    "at-most-once (`cdcsync check` warns).",
    example="{stream: CDC, durable: cdcsync-users}",
)

_TLS = described(
    sy.Map(
        {
            sy.Optional("ca"): described(
                EnvStr(),
                "CA bundle (PEM file) that signed the server's certificate; default: the "
                "system's roots.",
                example="/etc/cdcsync/nats-ca.pem",
            ),
            sy.Optional("cert"): described(
                EnvStr(),
                "Client certificate (PEM file), for mutual TLS.",
                example="/etc/cdcsync/client.pem",
            ),
            sy.Optional("key"): described(
                EnvStr(),
                "The client certificate's private key (PEM file).",
                example="/etc/cdcsync/client.key",
            ),
        }
    ),
    "TLS to the NATS servers; also used for `tls://` URLs (which need no block).",
    example="{ca: /etc/cdcsync/nats-ca.pem}",
)

SCHEMA = {
    "servers": described(
        sy.Seq(CheckedStr("a NATS server URL", _server_problem)),
        "NATS server URLs, `nats://host:port` or `tls://host:port`; list several nodes of "
        "a cluster.",
        example='["nats://nats-1:4222", "nats://nats-2:4222"]',
    ),
    "subject": described(
        CheckedStr("a NATS subject", subject_problem),
        "Subject to read; wildcards `*` and `>` allowed. With JetStream it is the "
        "consumer's filter subject.",
        example='"cdc.users.>"',
    ),
    sy.Optional("jetstream"): _JETSTREAM,
    sy.Optional("format", default="auto"): described(
        EnvEnum("cdc", "debezium", "auto"),
        "Message format: `cdc` (the original envelope), `debezium`, or `auto` (detected "
        "per message). See docs/event-formats.md.",
        example="debezium",
    ),
    sy.Optional("user"): described(EnvStr(), "NATS user name (with `password`).", example="cdc"),
    sy.Optional("password"): described(
        EnvStr(), "NATS password; redacted in every output.", example="${NATS_PASSWORD}"
    ),
    sy.Optional("token"): described(
        EnvStr(), "NATS authentication token; redacted in every output.", example="${NATS_TOKEN}"
    ),
    sy.Optional("creds"): described(
        EnvStr(),
        "Path to a `.creds` file (user JWT and nkey seed), as issued in operator mode.",
        example="/etc/cdcsync/cdcsync.creds",
    ),
    sy.Optional("nkey_seed"): described(
        CheckedStr("an nkey seed", _seed_problem),
        "An nkey seed (`SU...`) to sign in with; redacted.",
        example="${NATS_NKEY_SEED}",
    ),
    sy.Optional("tls"): _TLS,
    sy.Optional("buffer", default=20_000): described(
        EnvInt(1, 10_000_000),
        "Core NATS only: messages held in memory; beyond that new messages are dropped "
        "(at-most-once). With JetStream the bound is `max_ack_pending`.",
        example="50000",
    ),
    sy.Optional("max_message_bytes", default=8 * 1024 * 1024): described(
        EnvInt(1, 1 << 30),
        "Larger messages are dead-lettered without being decoded (default 8 MiB).",
        example="1048576",
    ),
}
