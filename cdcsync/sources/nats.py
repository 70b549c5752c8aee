"""The NATS source: core subjects (at-most-once) and JetStream durable consumers.

JetStream delivery is a push consumer feeding a Trio memory channel from the
nats-py callback with ``send_nowait`` (no bridge crossing per message). Trio
cannot backpressure an asyncio callback, so the bound comes from the protocol:
``max_ack_pending`` caps what the server hands us, and the channel holds twice
that (redelivered copies of messages we still hold). The consumer is recreated
at every start, positioned just after the lowest checkpoint of the flow's
destinations: PostgreSQL holds the truth about what was applied, so a restart
(or ``kill -9``) resumes exactly there. A gap in the consumer's delivery
sequence means a message was lost on the way to us; the source fails and the
flow restarts from the checkpoints rather than skip it.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import ssl
import time
from collections.abc import Callable
from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
import trio
from nats.js import api as js_api

from cdcsync.plugin import (
    UNPOSITIONED,
    CdcSyncError,
    ComponentSpec,
    Coordinator,
    Delivery,
    FatalSourceError,
    Partition,
    Partitioning,
    SourceError,
    aio,
    redact_url,
)
from cdcsync.sources.nats_options import SCHEMA, JetStreamOptions, NatsOptions, parse_options
from cdcsync.sources.nats_streams import (
    MIN_SERVER,
    covers,
    partition_filter,
    partition_problem,
    transform_dest,
)

__all__ = ["SPEC", "JetStreamOptions", "NatsOptions", "NatsSource", "connect_fast"]

log = structlog.get_logger("cdcsync.sources.nats")

_ACK = b"+ACK"
_WPI = b"+WPI"
_stream_seq = operator.attrgetter("seq")


_STREAM_LOCK: trio.lowlevel.RunVar[trio.Lock] = trio.lowlevel.RunVar("cdcsync_stream_lock")


def _stream_lock() -> trio.Lock:
    """Flows of one process create and extend streams one at a time (no lost updates)."""
    try:
        return _STREAM_LOCK.get()
    except LookupError:
        lock = trio.Lock()
        _STREAM_LOCK.set(lock)
        return lock


async def connect_fast(
    kwargs: dict[str, Any],
    expose: Callable[[asyncio.Future[BaseException] | None], None],
    timeout: float = 10.0,
) -> Any:
    """(asyncio side) ``nats.connect`` that fails on the first error instead of retrying.

    nats-py retries a failed first connect forever when reconnects are allowed; we want
    the server's reason at once (the flow backs off and retries by itself). ``expose``
    hands the caller's error callback the future that the first error completes.
    """
    loop = asyncio.get_running_loop()
    first_error: asyncio.Future[BaseException] = loop.create_future()
    expose(first_error)
    attempt = asyncio.ensure_future(nats.connect(**kwargs))
    try:
        waiting: set[asyncio.Future[Any]] = {attempt, first_error}
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        expose(None)
    if attempt not in done:
        attempt.cancel()
        with contextlib.suppress(BaseException):
            await attempt
        if first_error.done():
            raise SourceError(_text(first_error.result()))
        raise SourceError(f"no answer within {timeout:g} s")
    return attempt.result()


def _text(exc: BaseException) -> str:
    """nats-py errors carry their message in ``description``; their repr is often empty."""
    description = getattr(exc, "description", None)
    detail = description or str(exc) or ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


class NatsSource:
    """Delivers a flow's messages in stream order into a Trio channel.

    With ``partitions: N`` (N > 1) the flow's source reads nothing itself: it offers
    :meth:`partitioning`, whose sources (``index`` = k) each read partition k.
    """

    def __init__(self, flow: str, options: NatsOptions, index: int | None = None) -> None:
        self.flow = flow
        self.options = options
        self.index = index  # the partition this source reads; None: the whole stream
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._send: trio.MemorySendChannel[Delivery] | None = None
        self._failure: BaseException | None = None
        self._wake = trio.Event()
        self._first_error: asyncio.Future[BaseException] | None = None
        self._dseq = 0
        self._seq = 0
        self._last_reply: list[str] | None = None  # the newest delivery's reply subject, split
        self._acked = 0  # deliveries acknowledged since the consumer was created
        self.dropped = 0
        self._partition = UNPOSITIONED

    @property
    def positioned(self) -> bool:
        return self.options.jetstream is not None

    @property
    def from_start(self) -> bool:
        js = self.options.jetstream
        return js is None or js.deliver == "all"

    @property
    def keepalive_s(self) -> float | None:
        js = self.options.jetstream
        return float(js.ack_wait_s) if js is not None else None

    def channel_size(self) -> int:
        js = self.options.jetstream
        return 2 * self.max_ack_pending + 16 if js is not None else self.options.buffer

    @property
    def max_ack_pending(self) -> int:
        """The consumer's in-flight bound: a partition's share of the flow's (at least 1000,
        or the flow's if lower), so that an instance running every partition holds about
        what one consumer would, and a partition handed off drains quickly."""
        js = self.options.jetstream
        assert js is not None
        if self.index is None:
            return js.max_ack_pending
        share = -(-js.max_ack_pending // js.partitions)
        return max(share, min(js.max_ack_pending, 1000))

    @property
    def durable(self) -> str:
        """The durable consumer's name: the configured one, ``-p<k>`` for partition k."""
        js = self.options.jetstream
        assert js is not None
        return js.durable if self.index is None else f"{js.durable}-p{self.index}"

    def partitioning(self) -> Partitioning | None:
        """The partitions and their membership, when the flow has ``partitions > 1``."""
        js = self.options.jetstream
        if js is None or js.partitions <= 1 or self.index is not None:
            return None
        from cdcsync.sources.nats_members import Membership

        return Membership(self)

    # --- lifecycle (Trio) ----------------------------------------------------------------

    async def connect(self) -> None:
        try:
            await aio(self._aio_connect)
        except Exception as exc:
            raise SourceError(
                f"cannot connect to NATS {self._servers_text()}: {_text(exc)}"
            ) from exc

    async def identity(self, create: bool = True) -> tuple[str, str] | None:
        """(stream, creation time) for checkpoints; creates the stream when allowed.

        With ``create=False`` a missing stream gives ``("", "")`` instead.
        """
        if self.options.jetstream is None:
            return None
        try:
            async with _stream_lock():
                return await aio(self._aio_identity, create)
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(
                f"JetStream stream {self.options.jetstream.stream!r}: {_text(exc)}"
            ) from exc

    async def run(
        self,
        coordinator: Coordinator,
        send: trio.MemorySendChannel[Delivery],
        stop: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Subscribe and deliver until ``stop`` is set; then close ``send`` so the flow drains.

        A JetStream stream is one partition: its writer fences are taken and the consumer
        starts just after the lowest checkpoint. What was received before ``stop`` still
        flows through and gets acknowledged.
        """
        identity = await self.identity()
        if identity is None:
            self._partition = UNPOSITIONED
            await coordinator.assigned({UNPOSITIONED: ""})
            start_after = None
        else:
            stream, created = identity
            if self.index is None:
                self._partition = Partition(stream, 0, sole=True)
            else:
                self._partition = Partition(stream, self.index)
            start = await coordinator.assigned({self._partition: created})
            start_after = start[self._partition]
        self._wake = trio.Event()
        self._failure = None
        wake = self._wake

        async def relay() -> None:
            await stop.wait()
            wake.set()

        async with send, trio.open_nursery() as relays:
            relays.start_soon(relay)
            self._send = send
            try:
                await aio(self._aio_subscribe, start_after)
            except Exception as exc:
                raise SourceError(f"cannot subscribe: {_text(exc)}") from exc
            task_status.started()
            await wake.wait()
            relays.cancel_scope.cancel()
            self._send = None  # later callbacks drop their message: it stays unacked
            if self._failure is not None:
                raise self._failure
            await self._unsubscribe()

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            try:
                with trio.move_on_after(3):
                    await aio(nc.close)
            except Exception:  # closing a broken connection: nothing left to save
                pass

    async def ack(self, deliveries: list[Delivery]) -> None:
        """Acknowledge a committed batch with one message.

        The consumer acks cumulatively (``AckPolicy.ALL``): acking the batch's highest
        stream sequence covers it and everything before it. That is safe because the acker
        acknowledges batches in stream order, each after every destination committed it,
        and first deliveries arrive in stream order (a gap restarts the flow), so nothing
        below that sequence is still uncommitted. One ack instead of one per message
        took 7-10 % of the service's CPU off the hot path.
        """
        if self.options.jetstream is not None and deliveries:
            last = max(deliveries, key=_stream_seq)
            await aio(self._aio_reply, [last.handle], _ACK)
            self._acked += len(deliveries)

    async def in_progress(self, deliveries: list[Delivery]) -> None:
        """Tell JetStream these are still being worked on (resets their ack_wait)."""
        if self.options.jetstream is not None and deliveries:
            await aio(self._aio_reply, [d.handle for d in deliveries], _WPI)

    async def problems(self) -> list[str]:
        """Reachability, JetStream, and a missing stream that may not be created."""
        try:
            with trio.move_on_after(10) as scope:
                await self.connect()
                stream = await self.identity(create=False)
            if scope.cancelled_caught:
                return ["NATS did not answer within 10 s"]
        except CdcSyncError as exc:
            return [str(exc)]
        finally:
            await self.close()
        js = self.options.jetstream
        if stream == ("", "") and js is not None and not js.create_stream:
            return [
                f"JetStream stream {js.stream!r} does not exist and create_stream is false "
                f"(fix: create it for subject {self.options.subject!r}, or set "
                f"create_stream: true)"
            ]
        return []

    async def pending(self) -> int | None:
        """Messages the consumer has not delivered yet plus those awaiting our ack."""
        js = self.options.jetstream
        if js is None or self._js is None:
            return None
        try:
            info = await aio(self._js.consumer_info, js.stream, self.durable)
        except Exception:
            return None
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    def local_pending(self) -> int | None:
        """What :meth:`pending` would answer, worked out without asking the server.

        The newest delivery's reply subject carries how many messages the consumer had
        left to deliver after it; the ones delivered to us and not yet acknowledged we
        count ourselves (delivery sequences are gap-free, see ``_aio_on_msg``). Exact
        right after an ack, which is when a drained stream must show 0; it misses
        messages published since the newest delivery (the flow's poll catches those) and
        counts a redelivered message twice until it is acked. None before the first
        delivery of this consumer.
        """
        tokens = self._last_reply
        if tokens is None:
            return None
        try:
            undelivered = int(tokens[8] if len(tokens) == 9 else tokens[10])
        except ValueError:  # not a count: the poll's figure stands
            return None
        return undelivered + self._dseq - self._acked

    # --- asyncio side --------------------------------------------------------------------

    def _servers_text(self) -> str:
        return ", ".join(redact_url(s) for s in self.options.servers)

    async def _aio_connect(self) -> None:
        old, self._nc = self._nc, None
        if old is not None:  # a restart: never leave the previous client reconnecting forever
            try:
                await old.close()
            except Exception:
                pass
        o = self.options
        kwargs: dict[str, Any] = {
            "servers": list(o.servers),
            "name": f"cdcsync:{self.flow}",
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 1,
            "connect_timeout": 5,
            "allow_reconnect": True,
            "error_cb": self._aio_on_error,
            "disconnected_cb": self._aio_on_disconnect,
            "reconnected_cb": self._aio_on_reconnect,
            "pending_size": 64 * 1024 * 1024,
        }
        if o.user:
            kwargs["user"] = o.user
            kwargs["password"] = o.password
        if o.token:
            kwargs["token"] = o.token
        if o.creds:
            kwargs["user_credentials"] = o.creds
        if o.nkey_seed:
            kwargs["nkeys_seed_str"] = o.nkey_seed
        if o.tls_ca or o.tls_cert or any(s.startswith("tls://") for s in o.servers):
            ctx = ssl.create_default_context(cafile=o.tls_ca)
            if o.tls_cert:
                ctx.load_cert_chain(o.tls_cert, o.tls_key)
            kwargs["tls"] = ctx
        self._nc = await connect_fast(kwargs, self._set_first_error)
        self._js = self._nc.jetstream()

    def _set_first_error(self, future: asyncio.Future[BaseException] | None) -> None:
        self._first_error = future

    async def _aio_on_error(self, exc: Exception) -> None:
        first = self._first_error
        if first is not None and not first.done():
            first.set_result(exc)
            return
        if isinstance(exc, nats.errors.SlowConsumerError):
            if self.options.jetstream is None:
                # Core NATS is at-most-once: nats-py shed one message; count it, go on.
                self.dropped += 1
                return
            self._fail(SourceError("nats-py dropped messages (slow consumer)"))
            return
        log.warning("nats error", flow=self.flow, error=repr(exc))

    async def _aio_on_disconnect(self) -> None:
        if self._nc is not None:  # not our own close()
            log.warning("nats disconnected", flow=self.flow)

    async def _aio_on_reconnect(self) -> None:
        log.info("nats reconnected", flow=self.flow)

    def _server_problem(self) -> str | None:
        """A server without stream subject transforms, for ``partitions > 1``."""
        js_opts = self.options.jetstream
        assert js_opts is not None
        version = self._nc.connected_server_version
        if js_opts.partitions <= 1 or (version.major, version.minor) >= MIN_SERVER:
            return None
        url = self._nc.connected_url
        where = redact_url(url.geturl()) if url is not None else self._servers_text()
        return (
            f"nats-server {version.major}.{version.minor}.{version.patch} at {where} has no "
            f"stream subject transforms: "
            f"partitions: {js_opts.partitions} needs nats-server 2.10 or later (fix: upgrade "
            f"the NATS servers, or set partitions: 1)"
        )

    async def _aio_identity(self, create: bool) -> tuple[str, str]:
        js_opts = self.options.jetstream
        assert js_opts is not None
        subject, partitions = self.options.subject, js_opts.partitions
        too_old = self._server_problem()
        if too_old is not None:
            raise FatalSourceError(too_old)
        try:
            info = await self._js.stream_info(js_opts.stream)
        except nats.js.errors.NotFoundError:
            if not create:
                return "", ""
            if not js_opts.create_stream:
                raise SourceError(f"stream {js_opts.stream!r} does not exist") from None
            log.info(
                "creating stream", stream=js_opts.stream, subject=subject, partitions=partitions
            )
            config = js_api.StreamConfig(name=js_opts.stream, subjects=[subject])
            if partitions > 1:
                config.subject_transform = js_api.SubjectTransform(
                    src=subject, dest=transform_dest(subject, partitions)
                )
            info = await self._js.add_stream(config)
        tr = info.config.subject_transform
        problem = partition_problem(
            js_opts.stream,
            list(info.config.subjects or []),
            (tr.src or "", tr.dest or "") if tr is not None else None,
            subject,
            partitions,
        )
        if problem is not None:
            raise FatalSourceError(problem)
        subjects = list(info.config.subjects or [])
        if create and not any(covers(p, self.options.subject) for p in subjects):
            # Several flows may share one stream: add this flow's subject to it.
            log.info(
                "adding subject to stream", stream=js_opts.stream, subject=self.options.subject
            )
            info.config.subjects = [*subjects, self.options.subject]
            info = await self._js.update_stream(info.config)
        created = info.created.isoformat() if info.created else ""
        return js_opts.stream, created

    async def _aio_subscribe(self, start_after: int | None) -> None:
        o = self.options
        self._dseq = self._acked = 0
        self._last_reply = None
        if o.jetstream is None:
            self._sub = await self._nc.subscribe(o.subject, pending_bytes_limit=0)
            _Relay.install(self._sub, self._on_msg)
            return
        j = o.jetstream
        durable = self.durable
        subject = o.subject if self.index is None else partition_filter(o.subject, self.index)
        try:
            await self._js.delete_consumer(j.stream, durable)
        except nats.js.errors.NotFoundError:
            pass
        config = js_api.ConsumerConfig(
            durable_name=durable,
            deliver_subject=self._nc.new_inbox(),
            ack_policy=js_api.AckPolicy.ALL,
            ack_wait=float(j.ack_wait_s),
            max_ack_pending=self.max_ack_pending,
            max_deliver=-1,
            filter_subject=subject,
            flow_control=True,
            idle_heartbeat=5.0,
        )
        if start_after is not None:
            config.deliver_policy = js_api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = start_after + 1
        elif j.deliver == "new":
            config.deliver_policy = js_api.DeliverPolicy.NEW
        else:
            config.deliver_policy = js_api.DeliverPolicy.ALL
        await self._js.add_consumer(j.stream, config=config)
        self._sub = await self._js.subscribe_bind(
            j.stream, config, durable, manual_ack=True, pending_bytes_limit=0
        )
        _Relay.install(self._sub, self._on_msg)
        log.info(
            "consumer started",
            flow=self.flow,
            stream=j.stream,
            durable=durable,
            start_seq=(start_after + 1) if start_after is not None else j.deliver,
        )

    def _on_msg(self, msg: Any) -> None:
        """Each message, as nats-py's reader parses it (see :class:`_Relay`)."""
        send = self._send
        if send is None:
            return
        if self.options.jetstream is not None:
            tokens = msg.reply.split(".")
            if len(tokens) == 9:
                sseq, dseq = int(tokens[5]), int(tokens[6])
            elif len(tokens) >= 11:
                sseq, dseq = int(tokens[7]), int(tokens[8])
            else:
                self._fail(SourceError(f"unexpected JetStream reply subject {msg.reply!r}"))
                return
            if dseq != self._dseq + 1:
                self._fail(
                    SourceError(f"delivery gap: expected delivery {self._dseq + 1}, got {dseq}")
                )
                return
            self._dseq = dseq
            self._last_reply = tokens
        else:
            self._seq += 1
            sseq = self._seq
        subject = msg.subject
        if self.index is not None:  # the subject as published: without the partition number
            subject = subject[subject.find(".") + 1 :]
        try:
            send.send_nowait(
                Delivery(sseq, subject, msg.data, msg.reply, time.monotonic(), self._partition)
            )
        except trio.WouldBlock:
            if self.options.jetstream is not None:
                self._fail(SourceError("delivery channel overflow (more than max_ack_pending)"))
            else:
                self.dropped += 1  # core NATS is at-most-once: shed load rather than grow
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._send = None
        self._wake.set()

    async def _aio_reply(self, replies: list[str], payload: bytes) -> None:
        publish = self._nc.publish
        for reply in replies:
            await publish(reply, payload)

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                with trio.move_on_after(2):
                    await aio(sub.unsubscribe)
            except Exception:
                pass


class _Relay:
    """Hands each message of a subscription straight to the source, as nats-py parses it.

    nats-py queues every message of a callback subscription on an asyncio.Queue and runs
    the callback as one coroutine per message from a task of its own; that machinery cost
    about a tenth of the service's CPU per event (docs/performance.md). A subscription made
    without a callback only ``put_nowait``s its messages into ``_pending_queue``, so this
    object takes that queue's place and calls the source's handler synchronously instead
    (asyncio callbacks run on the Trio thread under trio-asyncio; the handler only
    ``send_nowait``s into a bounded Trio channel). ``qsize()`` is 0 because every message
    is delivered at once: nats-py's JetStream flow control counts it delivered then.
    Relies on nats-py's internals (``_pending_queue``, ``_pending_size``): pinned in
    pyproject.toml and exercised by every JetStream and core NATS test.
    """

    def __init__(self, sub: Any, handler: Callable[[Any], None]) -> None:
        self._sub = sub
        self._handler = handler

    @classmethod
    def install(cls, sub: Any, handler: Callable[[Any], None]) -> None:
        """Put a relay in ``sub``'s queue's place (a JetStream push subscription wraps the
        core subscription that nats-py's reader feeds: that one is replaced)."""
        sub = getattr(sub, "_sub", sub)
        if not hasattr(sub, "_pending_queue") or not hasattr(sub, "_pending_size"):
            raise SourceError("this nats-py version is not supported (no _pending_queue)")
        sub._pending_queue = cls(sub, handler)

    def put_nowait(self, msg: Any) -> None:
        self._sub._pending_size -= len(msg.data)
        self._handler(msg)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def task_done(self) -> None:
        pass

    async def join(self) -> None:  # drain(): nothing is ever queued here
        return None


SPEC = ComponentSpec(
    name="nats",
    kind="source",
    summary="Read change events from a NATS subject, or durably from a JetStream stream.",
    schema=SCHEMA,
    parse=parse_options,
    factory=NatsSource,
    example="""\
    source:
      type: nats
      servers: ["${NATS_URL:-nats://127.0.0.1:4222}"]
      subject: "cdc.users.>"
      jetstream:                  # omit for core NATS (at-most-once)
        stream: CDC               # created with the flow's subject if missing
        durable: cdcsync-users
        # max_ack_pending: 20000  # in-flight bound (memory)
        # ack_wait_s: 60
        # deliver: all            # all | new: where a flow with no checkpoint starts
      format: auto                # cdc | debezium | auto
""",
    secrets=("password", "token", "nkey_seed"),
)
