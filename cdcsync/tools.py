"""``cdcsync publish`` and ``cdcsync tail``: try cdcsync without the Go ``nats`` CLI.

``publish`` sends through JetStream (acknowledged by the stream) when a stream covers the
subject, and as a core NATS message otherwise; ``tail`` prints what arrives on a subject.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import nats
import nats.js.errors
import orjson
import trio

from cdcsync.bridge import aio, open_bridge
from cdcsync.config import redact_url, userinfo_problem
from cdcsync.errors import CdcSyncError
from cdcsync.progress import Progress
from cdcsync.sources.nats import connect_fast

__all__ = ["connect", "keyed_subject", "publish", "tail"]

_KEY = "{key}"
_UNSAFE = re.compile(r"[^\w=-]")  # not one plain subject token: '.', '*', '>', spaces, ...


def keyed_subject(template: str, field: str, payload: bytes, number: int) -> str:
    """``template`` with ``{key}`` replaced by the message's ``field`` (in ``data``, Debezium's
    ``after``/``before``, or at the top), so that a partitioned stream keeps each key in one
    partition. Characters that cannot be in one subject token become ``_``."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise CdcSyncError(f"--key: message {number} is not JSON") from None
    places = [body]
    if isinstance(body, dict):
        inner = body.get("payload")
        places = [
            body.get("data"),
            body.get("after"),
            body.get("before"),
            *((inner.get("after"), inner.get("before")) if isinstance(inner, dict) else ()),
            body,
        ]
    for place in places:
        if isinstance(place, dict) and place.get(field) is not None:
            value = place[field]
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            return template.replace(_KEY, _UNSAFE.sub("_", text)[:200] or "_")
    raise CdcSyncError(f"--key: message {number} has no field {field!r} (in data, after or before)")


def _payloads(text: str | None, stdin: TextIO, count: int) -> Iterator[bytes]:
    """The messages to send: the argument (``{n}`` = 1..count), or one per line of stdin."""
    if text is None or text == "-":
        for line in stdin:
            if line.strip():
                yield line.rstrip("\n").encode()
        return
    for n in range(1, count + 1):
        yield text.replace("{n}", str(n)).encode()


async def connect(server: str) -> Any:
    """A nats-py client connected to ``server``; fails fast with the server's reason."""
    holder: list[Any] = []

    async def on_error(exc: Exception) -> None:
        if holder and holder[0] is not None and not holder[0].done():
            holder[0].set_result(exc)

    def expose(future: Any) -> None:
        holder[:] = [future]

    ambiguous = userinfo_problem(server)
    if ambiguous is not None:
        raise CdcSyncError(f"--server: {ambiguous}")
    kwargs = {"servers": [server], "connect_timeout": 5, "error_cb": on_error}
    try:
        return await aio(connect_fast, kwargs, expose)
    except Exception as exc:
        raise CdcSyncError(f"cannot connect to {redact_url(server)}: {exc}") from exc


async def publish(
    server: str,
    subject: str,
    text: str | None,
    *,
    count: int = 1,
    rate: float = 0.0,
    core: bool = False,
    key: str | None = None,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stderr,
) -> int:
    """Publish messages; returns how many were sent (and acknowledged, with JetStream).

    With ``key``, ``{key}`` in ``subject`` becomes each message's value of that field.
    """
    if (key is None) == (_KEY in subject):
        raise CdcSyncError(
            "--key FIELD and '{key}' in the subject go together (e.g. cdc.users.{key} --key id)"
        )
    async with open_bridge():
        nc = await connect(server)
        js = nc.jetstream()
        use_js = False
        probe = subject.replace(_KEY, "k")  # which stream stores the subjects it makes
        if not core:
            try:
                await aio(js.find_stream_name_by_subject, probe)
                use_js = True
            except nats.js.errors.NotFoundError:
                print(f"no JetStream stream stores {subject}: publishing core NATS", file=out)
            except Exception as exc:  # JetStream disabled on this server
                print(f"JetStream unavailable ({exc!r}): publishing core NATS", file=out)
        sent = 0
        interval = 1.0 / rate if rate > 0 else 0.0
        next_at = trio.current_time()
        from_stdin = text is None or text == "-"
        # A bar on a terminal, a line every 2 s in a log; nothing for a single message.
        progress = Progress(None if from_stdin else count, "publishing", stream=out)
        try:
            for payload in _payloads(text, stdin, count):
                target = subject
                if key is not None:
                    target = keyed_subject(subject, key, payload, sent + 1)
                if use_js:
                    await aio(js.publish, target, payload)
                else:
                    await aio(nc.publish, target, payload)
                sent += 1
                if count > 1 or from_stdin:
                    progress.advance()
                if interval:
                    next_at += interval
                    await trio.sleep_until(next_at)
            await aio(nc.flush)
        finally:
            if count > 1 or from_stdin:
                progress.close()
            await aio(nc.close)
        kind = "JetStream (acknowledged)" if use_js else "core NATS"
        print(f"published {sent} message(s) to {subject} via {kind}", file=out)
        return sent


async def tail(server: str, subject: str, *, count: int = 0, out: TextIO = sys.stdout) -> int:
    """Print each message on ``subject`` as subject TAB body; stop after ``count`` (0: never)."""
    received = 0
    async with open_bridge():
        nc = await connect(server)
        send, recv = trio.open_memory_channel[tuple[str, bytes]](10_000)

        async def on_msg(msg: Any) -> None:
            try:
                send.send_nowait((msg.subject, msg.data))
            except trio.WouldBlock:
                pass  # a terminal cannot keep up with a firehose: drop rather than grow

        sub = await aio(nc.subscribe, subject, cb=on_msg)
        print(f"listening on {subject} (Ctrl-C to stop)", file=sys.stderr)
        try:
            async for msg_subject, data in recv:
                print(
                    f"{msg_subject}\t{data.decode('utf-8', errors='replace')}", file=out, flush=True
                )
                received += 1
                if count and received >= count:
                    break
        finally:
            await aio(sub.unsubscribe)
            await aio(nc.close)
    return received
