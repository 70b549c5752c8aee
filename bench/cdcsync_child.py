"""Run the real cdcsync service as one benchmark phase describes it; print one JSON result line.

Started by ``e2e.py`` in its own interpreter, the way cdcsync runs in production:
importing trio-asyncio patches asyncio process-wide, so the plain-asyncio
baselines must not share a process with it.

``--spec`` is a JSON object: the flows (stream, subject, durable, the stream
sequence that ends the phase, destinations; or a Kafka topic and the last offset of
each partition), the batch settings and the server
pids for CPU accounting. Timing starts just before ``Service.run`` and ends when
every destination's checkpoint covers its flow's ``last_seq`` (every event
committed); then the service is shut down gracefully.

With ``"wait_stdin": true`` (the latency phase) the child prints one
``{"ready": ...}`` line once every flow is running, then reads one JSON line from
stdin: ``{flow name: last_seq}``, known only after the parent has published.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from functools import partial
from typing import Any

import trio
from cpu import CpuMeter

from cdcsync import config as cfg
from cdcsync import logs
from cdcsync.app import Service
from cdcsync.flow.pipeline import Flow

_POLL_S = 0.002


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


def config_yaml(spec: dict[str, Any]) -> str:
    """The service configuration for ``spec`` (JSON is valid flow-style YAML for the values)."""
    lines = ["api: {enabled: false}", "flows:"]
    for f in spec["flows"]:
        lines += [f"  - name: {f['name']}", "    source:"]
        if "kafka" in f:  # {bootstrap, topic, group}
            k = f["kafka"]
            lines += [
                "      type: kafka",
                f"      brokers: [{json.dumps(k['bootstrap'])}]",
                f"      topics: [{json.dumps(k['topic'])}]",
                f"      group: {k['group']}",
                f"      buffer: {spec['max_ack_pending']}",
            ]
        else:
            lines += [
                "      type: nats",
                f"      servers: [{json.dumps(spec['nats_url'])}]",
                f"      subject: {json.dumps(f['subject'])}",
                "      jetstream:",
                f"        stream: {f['stream']}",
                f"        durable: {f['durable']}",
                f"        max_ack_pending: {spec['max_ack_pending']}",
                "        create_stream: false",
            ]
        lines += [
            "      format: cdc",
            f"    batch: {{max_size: {spec['batch_size']}, max_delay_ms: {spec['max_delay_ms']}}}",
            "    destinations:",
        ]
        for d in f["destinations"]:
            kind = d.get("type", "postgres")
            lines += [
                f"      - name: {d['name']}",
                f"        type: {kind}",
                f"        url: {json.dumps(d['url'])}",
                *([] if kind == "mysql" else [f"        schema: {d['schema']}"]),
                f"        state_schema: {d['schema']}_state",
                "        conflict_resolution: upsert",
            ]
            if d.get("tables"):
                lines.append(f"        tables: {json.dumps(d['tables'])}")
    return "\n".join(lines) + "\n"


def _committed(flow: Flow, last: int | dict[str, int] | None) -> bool:
    """Every destination's checkpoint covers ``last``: a stream sequence, or the last offset
    of each partition (Kafka: {partition index: offset})."""
    if last is None:
        return False
    if isinstance(last, dict):
        return all(
            {str(p.index): n for p, n in sink.checkpoints().items()}.get(k, -1) >= n
            for sink in flow.sinks
            for k, n in last.items()
        )
    return all(
        d.checkpoint is not None and d.checkpoint >= last for d in flow.stats.destinations.values()
    )


async def measure(spec: dict[str, Any], out: dict[str, Any]) -> None:
    service = Service(cfg.loads(config_yaml(spec), path="bench.yaml"))
    flows = service.flows
    targets: dict[str, Any] = {f["name"]: f.get("last_seq") for f in spec["flows"]}
    shutdown = trio.Event()
    gc_meter = GcMeter()
    done: dict[str, float] = {}
    first = running = None

    def failed() -> bool:
        return any(f.stats.status == "failed" for f in flows)

    def poll(now: float) -> None:
        nonlocal first, running
        if running is None and all(f.stats.status == "running" for f in flows):
            running = now
            if spec.get("gc_threshold"):
                # After the service's own tuning (cdcsync/app.py _tune_gc), so that this wins.
                gc.set_threshold(spec["gc_threshold"], *gc.get_threshold()[1:])
        if first is None and any(d.batches for f in flows for d in f.stats.destinations.values()):
            first = now
        for f in flows:
            if f.name not in done and _committed(f, targets[f.name]):
                done[f.name] = now

    async with trio.open_nursery() as nursery:
        gc.callbacks.append(gc_meter)
        with CpuMeter(spec.get("pg_pid"), spec.get("nats_pid")) as cpu:
            wall_started = time.time()
            started = time.perf_counter()
            nursery.start_soon(partial(service.run, shutdown=shutdown, drain_timeout_s=10))
            with trio.move_on_after(spec["timeout"]) as waiting:
                if spec.get("wait_stdin"):
                    while running is None and not failed():
                        poll(time.perf_counter() - started)
                        await trio.sleep(_POLL_S)
                    ready = {"ready": True, "running_s": running, "failed": failed()}
                    sys.stdout.write(json.dumps(ready) + "\n")
                    sys.stdout.flush()
                    line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
                    targets.update(json.loads(line or "{}"))
                while len(done) < len(flows) and not failed():
                    poll(time.perf_counter() - started)
                    await trio.sleep(_POLL_S)
            seconds = time.perf_counter() - started
            wall_done = time.time()
        gc.callbacks.remove(gc_meter)
        if first is None and done:
            first = seconds  # everything committed between two polls
        out.update(
            cpu=cpu.as_dict(),
            gc=gc_meter.as_dict(),
            seconds=seconds,
            wall_started=wall_started,
            wall_done=wall_done,
            first_commit_s=first,
            subscribed_s=running,
            flow_seconds=done,
            timed_out=waiting.cancelled_caught,
            status={f.name: f.stats.status for f in flows},
            last_error={f.name: f.stats.last_error for f in flows},
            stats={f.name: f.stats.snapshot() for f in flows},
        )
        shutdown.set()
    out["acked"] = {f.name: f.stats.acked for f in flows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--spec", required=True, help="the phase, as a JSON object")
    a = p.parse_args()
    spec = json.loads(a.spec)
    logs.configure(fmt="console", level="warning")
    out: dict[str, Any] = {}
    trio.run(measure, spec, out)
    out["gc_threshold"] = gc.get_threshold()
    sys.stdout.write(json.dumps(out, default=str) + "\n")


if __name__ == "__main__":
    main()
