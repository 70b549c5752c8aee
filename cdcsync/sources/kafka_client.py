"""The Kafka source's connections: client settings (TLS, SASL), the group consumer, and the
probe that ``connect()`` and ``check --connect`` share, with every failure in plain words and
its fix."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import trio
from aiokafka import AIOKafkaConsumer

from cdcsync.plugin import SourceError, aio
from cdcsync.sources.kafka_options import KafkaOptions

__all__ = ["detail", "failure_text", "group_consumer", "missing_text", "probe"]

_CONNECT_TIMEOUT_S = 15.0
_TCP_TIMEOUT_S = 5.0
_STOP_TIMEOUT_S = 10.0


def detail(exc: BaseException) -> str:
    name, text = type(exc).__name__, str(exc)
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


def _os_error(exc: OSError) -> str:
    """Why a connection failed: trio's "all attempts to connect failed" hides the reasons
    (connection refused, no route) in the exceptions it was raised from."""
    cause = exc.__cause__
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    if isinstance(cause, OSError):
        exc = cause
    return exc.strerror or str(exc)


def _brokers(o: KafkaOptions) -> str:
    return ", ".join(o.brokers)


def missing_text(o: KafkaOptions, missing: list[str]) -> str:
    names = ", ".join(repr(t) for t in missing)
    one = len(missing) == 1
    return (
        f"Kafka topic{'' if one else 's'} {names} {'does' if one else 'do'} not exist on "
        f"{_brokers(o)} (fix: create {'it' if one else 'them'}, e.g. kafka-topics.sh --create "
        f"--topic {missing[0]} --partitions N, or correct 'topics'; cdcsync never creates topics)"
    )


def failure_text(o: KafkaOptions, exc: BaseException) -> str:
    """A failed start in plain words. A refused SASL login surfaces from aiokafka in many
    shapes (SaslAuthenticationFailedError, a closed connection, even a KeyError from its SCRAM
    code when the server answers with an RFC 5802 error), so with SASL configured any failure
    of brokers that accept connections is reported as a refused login."""
    text = detail(exc)
    if isinstance(exc, ssl.SSLError) or "SSL" in type(exc).__name__:
        return (
            f"TLS with the Kafka brokers {_brokers(o)} failed: {text} (fix: check tls.ca, and "
            f"that the listener speaks TLS)"
        )
    if o.sasl is not None:
        return (
            f"the Kafka brokers {_brokers(o)} refused the SASL login ({o.sasl.mechanism}, user "
            f"{o.sasl.username!r}): {text} (fix: correct sasl.username and sasl.password, and "
            f"use a mechanism the broker enables)"
        )
    return (
        f"the Kafka client failed with brokers {_brokers(o)}: {text} (fix: if they are up "
        f"and their listener requires TLS or SASL, add a 'tls' or 'sasl' block)"
    )


def client_options(o: KafkaOptions, flow: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"bootstrap_servers": list(o.brokers), "client_id": f"cdcsync-{flow}"}
    if o.tls:
        try:
            context = ssl.create_default_context(cafile=o.tls_ca)
            if o.tls_cert:
                context.load_cert_chain(o.tls_cert, o.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise SourceError(
                f"TLS files: {detail(exc)} (fix: correct tls.ca, tls.cert and tls.key)"
            ) from exc
        kwargs["ssl_context"] = context
    if o.sasl is not None:
        kwargs["sasl_mechanism"] = o.sasl.mechanism
        kwargs["sasl_plain_username"] = o.sasl.username
        kwargs["sasl_plain_password"] = o.sasl.password
    protocol = "SSL" if o.tls else "PLAINTEXT"
    kwargs["security_protocol"] = f"SASL_{protocol}" if o.sasl is not None else protocol
    return kwargs


def group_consumer(o: KafkaOptions, flow: str) -> Any:
    """The flow's group member (create it on the Trio side, inside the bridge)."""
    return AIOKafkaConsumer(
        group_id=o.group,
        enable_auto_commit=False,
        # Every assigned partition is sought explicitly; a missed seek is an error, never a
        # silent jump to wherever the group's offsets point.
        auto_offset_reset="none",
        session_timeout_ms=o.session_timeout_ms,
        heartbeat_interval_ms=o.heartbeat_interval_ms,
        max_poll_interval_ms=o.max_poll_interval_ms,
        # How long the group waits for a hand-off (aiokafka's default is the session).
        rebalance_timeout_ms=o.max_poll_interval_ms,
        metadata_max_age_ms=60_000,  # new topics of a topic_pattern within a minute
        # Producers writing in transactions (Kafka Connect's exactly-once source support,
        # which Debezium uses) may abort: such records must never be applied.
        isolation_level="read_committed",
        **client_options(o, flow),
    )


async def probe(o: KafkaOptions, flow: str) -> set[str]:
    """Every topic the brokers list, from a group-less client that names none (a Metadata
    request naming a missing topic may create it); SourceError saying what failed."""
    await _reachable(o)
    consumer = AIOKafkaConsumer(**client_options(o, flow), request_timeout_ms=10_000)
    try:
        with trio.fail_after(_CONNECT_TIMEOUT_S):
            await aio(consumer.start)
            topics: set[str] = set(await aio(consumer.topics))
    except trio.TooSlowError:
        raise SourceError(
            f"Kafka brokers {_brokers(o)} accept connections but did not answer within "
            f"{_CONNECT_TIMEOUT_S:g} s (fix: check that they are Kafka brokers, and the 'tls' "
            f"and 'sasl' settings)"
        ) from None
    except Exception as exc:
        raise SourceError(failure_text(o, exc)) from exc
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(_STOP_TIMEOUT_S):
            try:
                await aio(consumer.stop)
            except (Exception, asyncio.CancelledError):  # see KafkaSource._stop_consumer
                pass
    return topics


async def _reachable(o: KafkaOptions) -> None:
    """At least one broker accepts a TCP connection; else say which and why not."""
    failures = []
    for broker in o.brokers:
        host, _, port = broker.rpartition(":")
        try:
            with trio.fail_after(_TCP_TIMEOUT_S):
                stream = await trio.open_tcp_stream(host.strip("[]"), int(port))
            await stream.aclose()
            return
        except trio.TooSlowError:
            failures.append(f"{broker}: no answer within {_TCP_TIMEOUT_S:g} s")
        except OSError as exc:
            failures.append(f"{broker}: {_os_error(exc)}")
    raise SourceError(
        f"cannot reach any Kafka broker ({'; '.join(failures)}) (fix: start the brokers, or "
        f"correct 'brokers')"
    )
