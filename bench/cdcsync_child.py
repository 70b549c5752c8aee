"""Run the real cdcsync service over a pre-filled stream and print one JSON result line.

Started by ``e2e.py`` in its own interpreter, the way cdcsync runs in production:
importing trio-asyncio patches asyncio process-wide, so the plain-asyncio
baselines must not share a process with it. Timing starts just before
``Service.run`` and ends when the destination's checkpoint covers ``--last-seq``
(every event committed); then the service is shut down gracefully.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import textwrap
import time
from functools import partial
from typing import Any

import trio
from cpu import CpuMeter

from cdcsync import config as cfg
from cdcsync import logs
from cdcsync.app import Service


class GcMeter:
    """Time the garbage collector spends, per generation (via ``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "gc_seconds": round(sum(self.seconds), 4),
            "gc_seconds_by_generation": [round(s, 4) for s in self.seconds],
            "gc_collections": self.collections,
        }


def config(a: argparse.Namespace) -> cfg.Config:
    text = f"""\
        api: {{enabled: false}}
        flows:
          - name: bench
            source:
              type: nats
              servers: ["{a.nats_url}"]
              subject: "{a.subject}"
              jetstream:
                stream: {a.stream}
                durable: {a.durable}
                max_ack_pending: {a.max_ack_pending}
                create_stream: false
              format: cdc
            batch: {{max_size: {a.batch_size}, max_delay_ms: {a.max_delay_ms}}}
            destinations:
              - name: pg
                type: postgres
                url: "{a.pg_url}"
                schema: {a.schema}
                conflict_resolution: upsert
        """
    return cfg.loads(textwrap.dedent(text), path="bench.yaml")


async def measure(a: argparse.Namespace, out: dict[str, Any]) -> None:
    service = Service(config(a))
    flow = service.flows[0]
    dest = flow.stats.destination("pg")
    shutdown = trio.Event()
    gc_meter = GcMeter()
    async with trio.open_nursery() as nursery:
        gc.callbacks.append(gc_meter)
        with CpuMeter(a.pg_pid, a.nats_pid) as cpu:
            started = time.perf_counter()
            nursery.start_soon(partial(service.run, shutdown=shutdown, drain_timeout_s=10))
            first = running = None
            with trio.move_on_after(a.timeout) as waiting:
                while dest.checkpoint is None or dest.checkpoint < a.last_seq:
                    if running is None and flow.stats.status == "running":
                        running = time.perf_counter() - started
                    if first is None and dest.batches:
                        first = time.perf_counter() - started
                    if flow.stats.status == "failed":
                        break
                    await trio.sleep(0.002)
            seconds = time.perf_counter() - started
        gc.callbacks.remove(gc_meter)
        if first is None and dest.batches:
            first = seconds  # everything committed between two polls
        out.update(
            cpu=cpu.as_dict(),
            gc=gc_meter.as_dict(),
            seconds=seconds,
            first_commit_s=first,
            subscribed_s=running,
            timed_out=waiting.cancelled_caught,
            status=flow.stats.status,
            last_error=flow.stats.last_error,
            stats=flow.stats.snapshot(),
        )
        shutdown.set()
    out["acked"] = flow.stats.acked


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    for name in ("nats-url", "pg-url", "stream", "subject", "durable", "schema"):
        p.add_argument(f"--{name}", required=True)
    for name in ("batch-size", "max-delay-ms", "max-ack-pending", "last-seq"):
        p.add_argument(f"--{name}", type=int, required=True)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument(
        "--gc-threshold",
        type=int,
        help="experiment: gc.set_threshold(N) before starting (not what cdcsync does by itself)",
    )
    p.add_argument("--pg-pid", type=int)
    p.add_argument("--nats-pid", type=int)
    a = p.parse_args()
    logs.configure(fmt="console", level="warning")
    if a.gc_threshold:
        gc.set_threshold(a.gc_threshold, *gc.get_threshold()[1:])
    out: dict[str, Any] = {"gc_threshold": gc.get_threshold()}
    trio.run(measure, a, out)
    sys.stdout.write(json.dumps(out, default=str) + "\n")


if __name__ == "__main__":
    main()
