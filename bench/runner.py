"""Run cdcsync for one phase: the child process, its memory, and a paced publisher.

:func:`run_child` starts ``cdcsync_child.py`` with a phase spec and samples the
child's resident set size from outside (psutil, every ``RSS_PERIOD_S``) while it
runs, so the measurement costs the service nothing. :func:`publish_paced` sends
the latency phase's events at a steady rate, stamping each with the wall-clock
time at which it is handed to nats-py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import psutil
import workload as wl

__all__ = ["RSS_PERIOD_S", "memory_summary", "publish_paced", "run_child"]

RSS_PERIOD_S = 0.1
CHILD = Path(__file__).with_name("cdcsync_child.py")


class RssSampler:
    """(wall time, RSS bytes) of a process every ``period`` seconds, in a thread."""

    def __init__(self, pid: int, period: float = RSS_PERIOD_S) -> None:
        self.samples: list[tuple[float, int]] = []
        self._proc = psutil.Process(pid)
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), self._proc.memory_info().rss))
            except psutil.Error:
                return
            self._stop.wait(self._period)


def memory_summary(samples: list[tuple[float, int]], start: float, end: float) -> dict[str, Any]:
    """Max RSS over the child's life and over [start, end], and RSS at 25 % and 75 % of it."""
    mb = 2**20
    window = [(t, r) for t, r in samples if start <= t <= end]
    if not window:
        return {"samples": len(samples), "max_rss_mb": None}

    def at(share: float) -> float:
        t = start + share * (end - start)
        return min(window, key=lambda s: abs(s[0] - t))[1] / mb

    rss25, rss75 = at(0.25), at(0.75)
    return {
        "samples": len(samples),
        "period_s": RSS_PERIOD_S,
        "max_rss_mb": round(max(r for _, r in window) / mb, 1),
        "max_rss_process_mb": round(max(r for _, r in samples) / mb, 1),
        "rss_start_mb": round(window[0][1] / mb, 1),
        "rss_25_mb": round(rss25, 1),
        "rss_75_mb": round(rss75, 1),
        "growth_25_75": round(rss75 / rss25 - 1, 4) if rss25 else None,
        "series_mb": [
            (round(t - start, 2), round(r / mb, 1))
            for t, r in window[:: max(1, len(window) // 200)]
        ],
    }


def run_child(
    spec: dict[str, Any], on_ready: Callable[[dict[str, Any]], dict[str, int]] | None = None
) -> dict[str, Any]:
    """Run the service for one phase; its result line, parsed, with ``memory`` added.

    With ``on_ready`` the child waits, once every flow runs, for ``on_ready(ready)``
    to return each flow's last sequence (the latency phase publishes meanwhile).
    """
    spec = dict(spec, wait_stdin=on_ready is not None)
    argv = [sys.executable, str(CHILD), f"--spec={json.dumps(spec)}"]
    launched = time.time()
    bench_cpu = time.process_time()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if on_ready else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        with RssSampler(proc.pid) as rss:
            if on_ready is not None:
                assert proc.stdin is not None
                ready = json.loads(proc.stdout.readline() or "{}")
                if not ready.get("ready") or ready.get("failed"):
                    raise RuntimeError(f"cdcsync did not start: {ready}")
                targets = on_ready(ready)
                proc.stdin.write(json.dumps(targets) + "\n")
                proc.stdin.close()
            stdout = proc.stdout.read()
            code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = stdout.strip().splitlines()
    if code != 0 or not lines:
        raise RuntimeError(f"cdcsync run failed (exit {code}): {stdout[-2000:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    out["launched_to_start_s"] = round(out["wall_started"] - launched, 4)
    # This process's own work meanwhile (the latency phase's publisher, the sampler) is
    # not "other work on the machine": take it out of the child's "rest".
    cpu = out["cpu"]
    cpu["cpu_bench_s"] = round(time.process_time() - bench_cpu, 3)
    cpu["cpu_rest_s"] = round(max(0.0, cpu["cpu_rest_s"] - cpu["cpu_bench_s"]), 3)
    out["memory"] = memory_summary(rss.samples, out["wall_started"], out["wall_done"])
    return out


async def publish_paced(
    nats_url: str, stream: str, subject: str, payloads: list[bytes], rate: float
) -> dict[str, Any]:
    """Publish ``payloads`` at ``rate`` per second, each stamped just before it is sent.

    Message ``i`` is due at ``start + i / rate``; the loop sends whatever is due, then
    sleeps a millisecond, so a late wake-up never changes the average rate. Plain NATS
    publishes (JetStream stores them; the count is checked at the end) keep the
    producer's share of the two cores small. Returns the achieved rate, the worst
    lateness behind the schedule and the stream's last sequence.
    """
    nc = await nats.connect(nats_url, pending_size=64 * 1024 * 1024)
    try:
        sent, total, late = 0, len(payloads), 0.0
        started = time.perf_counter()
        while sent < total:
            now = time.perf_counter()
            due = min(total, int((now - started) * rate) + 1)
            if due > sent:  # message `sent` was due at started + sent / rate
                late = max(late, now - started - sent / rate)
            while sent < due:
                stamp = datetime.now(UTC).isoformat(timespec="microseconds").encode()
                await nc.publish(subject, payloads[sent].replace(wl.PUBLISHED_AT, stamp, 1))
                sent += 1
            await asyncio.sleep(0.001)
        seconds = time.perf_counter() - started
        await nc.flush(timeout=30)
        js = nc.jetstream()
        deadline = time.monotonic() + 30
        while (info := await js.stream_info(stream)).state.messages < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"stream {stream} holds {info.state.messages} of {total}")
            await asyncio.sleep(0.05)
        return {
            "events": total,
            "seconds": round(seconds, 3),
            "rate": rate,
            "achieved_per_s": round(total / seconds, 1),
            "max_behind_schedule_ms": round(late * 1000, 2),
            "last_seq": info.state.last_seq,
        }
    finally:
        await nc.close()
