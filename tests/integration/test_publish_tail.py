"""`cdcsync publish` and `cdcsync tail` against the real NATS server."""

from __future__ import annotations

import subprocess
import sys
import time

import nats
import trio

from cdcsync.bridge import aio, open_bridge


def cli(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdcsync", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kw,  # type: ignore[arg-type]
    )


async def _stream_messages(nats_url: str, stream: str, subjects: list[str] | None) -> list[bytes]:
    async with open_bridge():
        nc = await aio(nats.connect, nats_url)
        js = nc.jetstream()
        try:
            if subjects is not None:
                await aio(js.add_stream, name=stream, subjects=subjects)
                return []
            info = await aio(js.stream_info, stream)
            out = []
            for seq in range(1, info.state.last_seq + 1):
                out.append((await aio(js.get_msg, stream, seq)).data)
            await aio(js.delete_stream, stream)
            return out
        finally:
            await aio(nc.close)


def test_publish_to_jetstream_is_stored_in_order(nats_url: str, unique: str) -> None:
    """`publish --count` stores every message in the stream that covers the subject, in order."""
    stream = unique.upper()
    trio.run(_stream_messages, nats_url, stream, [f"{unique}.>"])
    result = cli("publish", f"{unique}.users", '{"n": {n}}', "--count", "25", "--server", nats_url)
    assert result.returncode == 0, result.stderr
    assert "via JetStream (acknowledged)" in result.stderr
    stored = trio.run(_stream_messages, nats_url, stream, None)
    assert stored == [f'{{"n": {n}}}'.encode() for n in range(1, 26)]


def test_stdin_lines_and_tail_over_core_nats(nats_url: str, unique: str) -> None:
    """Lines on stdin become core NATS messages (no stream) and `tail` prints each one."""
    subject = f"{unique}.core"
    tail = subprocess.Popen(
        [sys.executable, "-m", "cdcsync", "tail", subject, "--count", "3", "--server", nats_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        assert tail.stderr is not None
        while "listening" not in tail.stderr.readline():
            assert time.monotonic() < deadline, "tail did not start"
        result = cli(
            "publish", subject, "-", "--server", nats_url, input='{"a":1}\n\n{"a":2}\n{"a":3}\n'
        )
        assert result.returncode == 0, result.stderr
        assert "published 3 message(s)" in result.stderr and "core NATS" in result.stderr
        out, _ = tail.communicate(timeout=20)
    finally:
        tail.kill()
    assert out.splitlines() == [f'{subject}\t{{"a":{i}}}' for i in (1, 2, 3)]


def test_publish_to_an_unreachable_server_fails_clearly() -> None:
    """An unreachable server is a one-line error with exit code 1, not a traceback."""
    result = cli("publish", "x", "{}", "--server", "nats://127.0.0.1:1")
    assert result.returncode == 1
    assert result.stderr.startswith("cdcsync publish: cannot connect to nats://127.0.0.1:1")
