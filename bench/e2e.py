"""End-to-end benchmark: cdcsync's throughput, latency, memory and start-up in one run.

One run pre-fills fresh JetStream streams with realistic change events (see
``workload.py``) and measures, on the same messages and in the same run:

- ``cdcsync``: the real service draining the backlog with one flow (upsert, 8
  columns, 50,000 keys, ack after commit, checkpoints), timed from start until the
  destination's checkpoint covers the last message; its resident memory is sampled
  every 100 ms and its first committed batch timed;
- ``kafka``: the same, read from a Kafka topic (keyed by row, 4 partitions) by the
  Kafka source: events/s next to the NATS source's, same workload, same run;
- ``flows3``: the same events split by key over three streams, three flows and
  three tables, all in one service: aggregate events/s;
- ``fanout``: one flow writing every batch to two databases on the same server;
- ``latency``: cdcsync running and caught up while events are published at a
  steady 10,000/s; publish-to-write latency percentiles read back from the rows;
- ``latency-half``: the same at half of this run's ``cdcsync`` events/s (after it);
- ``naive``, ``pg-limit``, ``nats-limit``: a naive loop and the two servers' own
  limits (``baselines.py``);
- ``mysql``, ``mysql-limit``, ``mysql-naive``: cdcsync into MySQL/MariaDB next to the
  driver's own best loop and a naive loop (``mysql_phases.py``);
- ``sweep``: the single flow again at batch max_size 100 to 5000 (not in ``--quick``).

Every writer's destination is checked against the expected state (row count and a
checksum). Everything the run created (streams, schemas, a database) is removed
at the end. The exit status is 1 only when a check fails or a phase breaks: speed
targets are reported (MET / NOT MET), never asserted: in the main table, and issue 15's
in a second table of ratios to the yardsticks of the same run.

    .venv/bin/python bench/e2e.py [--quick] [--events N] [--only PHASES] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import workload as wl  # bench/ is on sys.path: this file is run as a script
from cpu import local_server_pid, wait_quiet
from kafka_phase import Broker, prefill_kafka
from mysql_phases import mysql_facts
from phases import FLOWS, MYSQL_PHASES, PHASES, Phases, Run, cleanup, pg_execute, prefill
from report import (
    ISSUE15_COLUMNS,
    TARGETS,
    code_fingerprint,
    format_table,
    issue15_notes,
    machine_facts,
    summarize,
)
from scaling import format_scaling, run_scaling

from cdcsync.progress import Progress

# The baselines are plain asyncio. trio-asyncio patches asyncio process-wide when
# imported, which is why cdcsync runs in a child process (cdcsync_child.py).
assert "trio_asyncio" not in sys.modules, "the baselines must run on plain asyncio"

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PHASES = PHASES[:-1]  # and the sweep, when --sweep names batch sizes
REPEATED = (
    "cdcsync",
    "kafka",
    "flows3",
    "fanout",
    "latency",
    "latency-half",
    "naive",
    "pg-limit",
    "nats-limit",
    "mysql",
    "mysql-limit",
    "mysql-naive",
)

# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--events", type=int, help="events in the backlog (default 500,000; quick 20,000)"
    )
    p.add_argument(
        "--quick", action="store_true", help="the smoke run: small, once, under a minute"
    )
    p.add_argument("--keys", type=int, help="distinct keys (default min(50000, events/4))")
    p.add_argument("--json", help="results file (default bench/results/e2e-<timestamp>.json)")
    p.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--mysql-url", default="mysql://root@127.0.0.1:3306/test")
    p.add_argument(
        "--kafka-bootstrap",
        help="a Kafka broker host:port for the kafka phase (default: a throwaway tansu)",
    )
    p.add_argument("--kafka-partitions", type=int, default=4, help="the kafka phase's topic")
    p.add_argument("--batch-size", type=int, default=2000, help="cdcsync max_size and pg chunk")
    p.add_argument("--max-delay-ms", type=int, default=50)
    p.add_argument("--max-ack-pending", type=int, default=20_000)
    p.add_argument(
        "--naive-events", type=int, help="events the naive loop applies (default 20000; quick 5000)"
    )
    p.add_argument("--latency-rate", type=float, default=10_000, help="events/s (default 10000)")
    p.add_argument(
        "--latency-seconds",
        type=float,
        help="how long to publish at that rate (default 20; quick 3)",
    )
    p.add_argument(
        "--latency-settle", type=float, default=1.0, help="idle seconds before publishing"
    )
    p.add_argument(
        "--sweep",
        help="batch max_size values for the sweep phase (default 100,500,1000,2000,5000; "
        "quick: none; an empty value skips the phase)",
    )
    p.add_argument(
        "--sweep-events", type=int, help="events per sweep run (default min(events, 100000))"
    )
    p.add_argument(
        "--scaling-events",
        type=int,
        help="events per scaling run (default min(events, 200000); quick: events)",
    )
    p.add_argument("--only", help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--child-gc-threshold",
        type=int,
        help="experiment: gc.set_threshold(N) in cdcsync once it runs (overrides its own tuning)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        help="run each throughput phase N times, report the best (default 1)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        help="before each phase wait up to this many seconds for the machine to be idle "
        "(default 20; quick 2)",
    )
    p.add_argument(
        "--wait-budget",
        type=float,
        help="all those waits together at most this many seconds (default 90; quick 4)",
    )
    p.add_argument(
        "--quiet-threshold", type=float, default=0.1, help="idle = other work below this share"
    )
    args = p.parse_args(argv)
    quick = args.quick
    if args.events is None:
        args.events = 20_000 if quick else 500_000
    if args.naive_events is None:
        args.naive_events = 5_000 if quick else 20_000
    if args.latency_seconds is None:
        args.latency_seconds = 3.0 if quick else 20.0
    if args.wait_quiet is None:
        args.wait_quiet = 2.0 if quick else 20.0
    if args.wait_budget is None:
        args.wait_budget = 4.0 if quick else 90.0
    if args.repeat is None:
        args.repeat = 1
    if args.keys is None:
        args.keys = max(1000, min(50_000, args.events // 4))
    if args.scaling_events is None:
        args.scaling_events = min(args.events, 200_000)
    if args.sweep_events is None:
        args.sweep_events = min(args.events, 100_000)
    if args.sweep is None:
        args.sweep = "" if quick else "100,500,1000,2000,5000"
    args.sweep_sizes = [int(s) for s in args.sweep.split(",") if s.strip()]
    if args.only:
        args.phases = [s.strip() for s in args.only.split(",")]
    else:
        args.phases = list(DEFAULT_PHASES) + (["sweep"] if args.sweep_sizes else [])
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phase(s) {sorted(unknown)}; choose from {', '.join(PHASES)}")
    half_after_one_flow(args.phases)
    if "sweep" in args.phases and not args.sweep_sizes:
        p.error("the sweep phase needs --sweep SIZES")
    return args


def half_after_one_flow(phases: list[str]) -> None:
    """latency-half paces at half of the cdcsync phase's figure: run it after cdcsync (which
    it brings along when ``--only`` left it out)."""
    if "latency-half" not in phases:
        return
    if "cdcsync" not in phases:
        print("latency-half paces at half of this run's cdcsync events/s: running cdcsync too")
        phases.insert(0, "cdcsync")
    if phases.index("latency-half") < phases.index("cdcsync"):
        phases.remove("latency-half")
        phases.insert(phases.index("cdcsync") + 1, "latency-half")


def schedule(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(phase, attempt or batch size) in the order they run.

    Repeats are interleaved, so that a disturbance hits one run of several phases
    rather than every run of one; the sweep comes last.
    """
    order: list[tuple[str, int]] = []
    for attempt in range(args.repeat):
        order += [(p, attempt) for p in args.phases if p in REPEATED]
    order += [("sweep", size) for size in args.sweep_sizes if "sweep" in args.phases]
    return order


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wall = time.perf_counter()
    run = Run(args)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path = Path(args.json or ROOT / "bench" / "results" / f"e2e-{stamp}.json")

    t = time.perf_counter()
    work = wl.generate(args.events, args.keys, run.subject, seed=args.seed)
    print(
        f"workload: {args.events:,} events over {args.keys:,} keys "
        f"({dict(work.counts)}), {work.bytes_total / len(work.payloads):.0f} B/event avg; "
        f"generated in {time.perf_counter() - t:.1f}s",
        flush=True,
    )
    facts = machine_facts(args.pg_url)
    run.pids = (local_server_pid(args.pg_url, 5432), local_server_pid(args.nats_url, 4222))
    facts["server_pids_found"] = {"postgres": bool(run.pids[0]), "nats": bool(run.pids[1])}
    if set(args.phases) & set(MYSQL_PHASES):
        try:
            facts["mysql"] = asyncio.run(mysql_facts(args.mysql_url))
        except Exception as exc:
            if args.only:
                raise
            # The default run goes on without them; naming them with --only insists.
            print(f"MySQL at {args.mysql_url} not usable ({exc!r}): skipping the MySQL phases")
            args.phases = [p for p in args.phases if p not in MYSQL_PHASES]
        run.mysql_pid = local_server_pid(args.mysql_url, 3306)
        facts["server_pids_found"]["mysql"] = bool(run.mysql_pid)
    print(
        f"machine: {facts['nproc']} CPUs ({facts['cpu_model']}), load average "
        f"{' '.join(str(x) for x in facts['load_average'])}, Python {facts['python']}, "
        f"PostgreSQL {facts['postgres']['version']}; cdcsync at {facts['git_commit']}"
        f"{' (modified)' if facts['git_dirty'] else ''}; run id {run.uid}",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {}
    report: dict[str, Any] = {}
    failed = False
    waited = 0.0
    phases: Phases | None = None
    broker = Broker(args.kafka_bootstrap)
    try:
        streams = []
        readers = {"cdcsync", "fanout", "naive", "nats-limit", "sweep", "mysql", "mysql-naive"}
        if set(args.phases) & readers:
            streams.append((run.stream, run.subject, work.payloads))
        if "flows3" in args.phases:
            parts = wl.split_by_key(work, FLOWS)
            streams += [(s, subj, p) for (s, subj), p in zip(run.flow_streams, parts, strict=True)]
        fill = asyncio.run(prefill(run.nats_url, streams))
        print(f"prefill: {fill['events']:,} events in {fill['seconds']:.1f}s", flush=True)
        if "kafka" in args.phases:
            bootstrap = broker.start()
            k = asyncio.run(prefill_kafka(bootstrap, run.kafka_topic, work, args.kafka_partitions))
            fill["kafka"] = k | {"bootstrap": bootstrap, "broker_pid": broker.pid}
            print(
                f"prefill kafka: {k['events']:,} events in {k['seconds']:.1f}s to "
                f"{args.kafka_partitions} partitions of {run.kafka_topic} on {bootstrap}",
                flush=True,
            )
        report["prefill"] = fill
        if "fanout" in args.phases:
            asyncio.run(pg_execute(run.pg_url, f"CREATE DATABASE {run.fanout_db}"))
        t = time.perf_counter()
        phases = Phases(run, work, fill)
        print(f"expected states prepared in {time.perf_counter() - t:.1f}s", flush=True)
        # The workload is large and lives for the whole run: keep it out of the collector's way.
        gc.collect()
        gc.freeze()
        methods: dict[str, Callable[[int], dict[str, Any]]] = {
            "cdcsync": phases.cdcsync,
            "kafka": phases.kafka,
            "flows3": phases.flows3,
            "fanout": phases.fanout,
            "latency": phases.latency,
            "latency-half": phases.latency_half,
            "naive": phases.naive,
            "pg-limit": phases.pg_limit,
            "nats-limit": phases.nats_limit,
            "mysql": phases.mysql,
            "mysql-limit": phases.mysql_limit,
            "mysql-naive": phases.mysql_naive,
            "sweep": phases.sweep,
        }
        plan = schedule(args)
        if "scaling" in args.phases:
            plan.append(("scaling", 0))
        with Progress(len(plan), "bench phases") as bar:
            for name, arg in plan:
                if name == "sweep":
                    label = f" (batch max_size {arg})"
                elif name in REPEATED and args.repeat > 1:
                    label = f" (run {arg + 1} of {args.repeat})"
                else:
                    label = ""
                bar.write(f"running {name}{label} ...")
                allowance = max(0.0, min(args.wait_quiet, args.wait_budget - waited))
                t = time.perf_counter()
                background = wait_quiet(args.quiet_threshold, allowance)
                waited += max(0.0, time.perf_counter() - t - 1.0)
                try:
                    if name == "scaling":
                        report["scaling"] = scaling_phase(args, run)
                        failed = failed or not report["scaling"]["ok"]
                        bar.advance()
                        continue
                    r = methods[name](arg)
                except Exception as exc:
                    failed = True
                    bar.write(f"FAIL {name}{label}: {exc!r}")
                    bar.advance()
                    continue
                r["background_util_before"] = round(background, 3)
                bar.write(f"  {describe(r)}")
                runs.setdefault(r["name"], []).append(r)
                bar.advance()
    finally:
        asyncio.run(cleanup(run))
        broker.close()

    lines, issue15, summary = summarize(runs)
    print()
    print(format_table(lines))
    print()
    print("issue 15 targets: ratios to the yardsticks of this run (MET / NOT MET, never asserted)")
    print(format_table(issue15, ISSUE15_COLUMNS))
    for note in issue15_notes(args.events):
        print(note)
    print()
    if report.get("scaling"):
        print(
            f"scaling: one flow, {report['scaling']['events']:,} events, partitions and "
            f"instances (own nats-server {report['scaling']['nats_version']})"
        )
        print(format_scaling(report["scaling"]))
        print()
    for note in notes(runs, args):
        print(note)
    if args.quick:
        print(
            "quick: a smoke run, too short for its figures to mean much; targets are never asserted"
        )
    failed = report_checks(runs) or failed
    total = time.perf_counter() - wall
    changed = code_fingerprint() != facts["code_fingerprint"]
    if changed:
        print("WARNING: cdcsync/ changed during the run: the figures mix two versions of it")
    print(
        f"wall time {total:.0f}s (waited {waited:.0f}s for a quiet machine); "
        f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    report.update(
        started=stamp,
        wall_seconds=round(total, 1),
        quiet_wait_seconds=round(waited, 1),
        code_changed_during_run=changed,
        args={k: v for k, v in vars(args).items() if k != "only"},
        machine=facts,
        workload={
            "events": args.events,
            "keys": args.keys,
            "counts": dict(work.counts),
            "avg_event_bytes": round(work.bytes_total / len(work.payloads), 1),
            "final_rows": len(phases.expected) if phases else None,
            "naive_prefix": min(args.events, args.naive_events),
        },
        summary=summary,
        table=[dict(line) for line in lines],
        issue15_table=[dict(line) for line in issue15],
        targets=TARGETS,
        runs=runs,
        ok=not failed,
    )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"results: {json_path}")
    return 1 if failed else 0


def scaling_phase(args: argparse.Namespace, run: Run) -> dict[str, Any]:
    """The scaling phase on its own keyed workload (bench/scaling.py)."""
    work = wl.generate(args.scaling_events, args.keys, f"{run.uid}.sc", seed=args.seed)
    return run_scaling(args, run.uid, work)


def notes(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> list[str]:
    """How each row was chosen, with the spread behind it."""

    def spread(name: str, key: Callable[[dict[str, Any]], float], fmt: str) -> str:
        return ", ".join(fmt.format(key(r)) for r in runs.get(name, []))

    out = []
    if args.repeat > 1:
        out.append(
            f"throughput: the best of {args.repeat} runs (1 flow: "
            f"{spread('cdcsync', lambda r: r['events_per_s'], '{:,.0f}')} events/s)"
        )
    for name in ("latency", "latency-half"):
        if len(runs.get(name, [])) > 1:
            out.append(
                f"{name}: the run with the lowest p99 (p99 of each run: "
                f"{spread(name, lambda r: r['latency']['p99_ms'], '{:.1f}')} ms; other work "
                f"on the machine: {spread(name, lambda r: r['cpu_rest_s'], '{:.1f}')} CPU s)"
            )
    if runs.get("cdcsync"):
        out.append("memory and start-up: the worst of the 1-flow runs")
    return out


def describe(r: dict[str, Any]) -> str:
    """One progress line for a finished phase."""
    text = f"{r['events_per_s']:,.0f} events/s in {r['seconds']:.2f}s"
    if "latency" in r:
        lat = r["latency"]
        text = (
            f"{r['publisher']['achieved_per_s']:,.0f} events/s published; latency p50 "
            f"{lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms"
        )
    if r.get("memory", {}).get("max_rss_mb"):
        text += f"; max RSS {r['memory']['max_rss_mb']:.0f} MB"
    if r.get("join_s") is not None:
        text += f"; after joining the group in {r['join_s']:.2f}s"
    if r.get("first_commit_s") is not None and "latency" not in r:
        text += f"; first batch after {r['first_commit_s'] * 1000:.0f} ms"
    return text


def report_checks(runs: dict[str, list[dict[str, Any]]]) -> bool:
    """Print every verification; True when one failed or a run broke."""
    failed = False
    for name, rs in runs.items():
        for n, r in enumerate(rs, 1):
            what = f"{name} run {n}" if len(rs) > 1 else name
            for c in r.get("verify_all") or ([r["verify"]] if r.get("verify") else []):
                label = f"{what} ({c['where']})" if "where" in c else what
                if c["ok"]:
                    print(f"verify {label}: OK ({c['rows']:,} rows, checksum {c['checksum']})")
                else:
                    failed = True
                    print(
                        f"verify {label}: FAIL: {c['rows']:,} rows (expected "
                        f"{c['expected_rows']:,}), checksum {c['checksum']} (expected "
                        f"{c['expected_checksum']}), {c['differing_count']} keys differ, "
                        f"e.g. {c['differing_keys']}"
                    )
            if r.get("failed"):
                failed = True
                print(f"FAIL {what}: status {r['status']}, last error {r['last_error']}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
