"""`cdcsync publish` and `cdcsync tail` against the real NATS server."""

from __future__ import annotations

import re
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


def test_publish_count_shows_progress_lines_in_a_log(nats_url: str, unique: str) -> None:
    """Off a terminal, `publish --count` prints plain progress lines while it runs and a last
    one at 100 %, with no terminal control characters."""
    result = cli(
        "publish", f"{unique}.p", "{}", "--count", "300", "--rate", "100", "--core",
        "--server", nats_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("publishing ")]
    counts = [int(re.search(r"publishing\s+(\d+)/300 \(\d+%\)", line)[1]) for line in lines]  # type: ignore[index]
    assert any(c < 300 for c in counts), lines  # at least one line while running (3 s, every 2 s)
    assert counts == sorted(counts) and counts[-1] == 300
    assert re.search(r"300/300 \(100%\).* in \d+\.\d s", lines[-1]), lines[-1]


def test_publish_count_draws_a_bar_on_a_terminal(nats_url: str, unique: str) -> None:
    """On a terminal, `publish --count` redraws one line in place with a bar, ending full."""
    import os
    import pty

    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cdcsync", "publish", f"{unique}.p", "{}", "--count", "200",
             "--rate", "200", "--core", "--server", nats_url],
            stdin=secondary, stdout=secondary, stderr=secondary,
        )  # fmt: skip
        os.close(secondary)
        out = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=30) == 0, out
    finally:
        os.close(primary)
    text = out.decode()
    assert "\r\x1b[K" in text
    redraws = text.count("\r\x1b[Kpublishing  [")
    assert redraws >= 3, text  # redrawn in place, not one line per step
    assert f"[{'#' * 24}]  200/200 (100%)" in text
