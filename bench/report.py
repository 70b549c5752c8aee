"""The benchmark's tables (the main one and issue 15's targets), and the facts about the machine."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil

__all__ = [
    "BASELINE_DATE",
    "ISSUE15_COLUMNS",
    "LABELS",
    "TARGETS",
    "Line",
    "code_fingerprint",
    "format_table",
    "issue15_notes",
    "machine_facts",
    "summarize",
    "verdict",
]

ROOT = Path(__file__).resolve().parent.parent

# What the issue asks of cdcsync on a 2-core machine that also runs PostgreSQL and NATS.
TARGETS = {
    "events_per_s": 100_000,  # one flow, sustained, upsert
    "latency_p99_ms": 50.0,  # publish to row written, at a steady 10,000 events/s
    "max_rss_mb": 200.0,  # while draining the whole backlog
    "rss_growth": 0.10,  # "flat": RSS at 75 % of the drain at most 10 % above RSS at 25 %
    "first_commit_s": 2.0,  # process start to the first committed batch
    "mysql_vs_limit": 0.5,  # into MySQL: at least half of the driver's own best loop
}


def verdict(met: bool | None) -> str:
    return "-" if met is None else ("MET" if met else "NOT MET")


class Line(dict[str, Any]):
    """One row of the table; every key is optional except ``measurement``."""


_COLUMNS = [
    # (key, heading, align)
    ("measurement", "measurement", "<"),
    ("events", "events", ">"),
    ("seconds", "seconds", ">"),
    ("figure", "figure", ">"),
    ("vs_naive", "vs naive", ">"),
    ("vs_limit", "vs limit", ">"),
    ("vs_one_flow", "vs 1 flow", ">"),
    ("cpu", "cpu s own/db/nats/rest", ">"),
    ("target", "target", "<"),
    ("result", "result", "<"),
]


def _cell(key: str, value: Any) -> str:
    if value is None or value == "":
        return "-" if key not in ("target", "result") else ""
    if key == "events":
        return f"{value:,}"
    if key == "seconds":
        return f"{value:.2f}"
    if key == "vs_naive":
        return f"{value:.1f}x"
    if key in ("vs_limit", "vs_one_flow"):
        return f"{value:.2f}"
    if key == "cpu":
        return "/".join(f"{value[k]:.1f}" for k in ("own", "pg", "nats", "rest"))
    return str(value)


def format_table(lines: list[Line], columns: list[tuple[str, str, str]] | None = None) -> str:
    """``lines`` under ``columns`` (key, heading, alignment; the main table's by default)."""
    columns = columns or _COLUMNS
    cells = [[h for _, h, _ in columns]]
    cells += [[_cell(k, line.get(k)) for k, _, _ in columns] for line in lines]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    out = []
    for n, row in enumerate(cells):
        parts = [
            f"{text:{align}{width}}"
            for text, width, (_, _, align) in zip(row, widths, columns, strict=True)
        ]
        out.append("  ".join(parts).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def code_fingerprint() -> str:
    """sha256 of cdcsync's sources: the code under measurement, committed or not."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "cdcsync").rglob("*.py")):
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def machine_facts(pg_url: str) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("nats-py", "asyncpg", "asyncmy", "trio", "trio-asyncio", "orjson", "structlog"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None

    async def pg_facts() -> dict[str, Any]:
        conn = await asyncpg.connect(pg_url)
        try:
            out = {"version": await conn.fetchval("SHOW server_version")}
            for name in ("synchronous_commit", "fsync", "shared_buffers", "max_wal_size"):
                out[name] = await conn.fetchval(f"SHOW {name}")
            return out
        finally:
            await conn.close()

    def git(*argv: str) -> str:
        try:
            return subprocess.run(
                ["git", *argv], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "postgres": asyncio.run(pg_facts()),
        "packages": versions,
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--", "cdcsync")),
        "code_fingerprint": code_fingerprint(),
    }


# --- from phase results to the table -------------------------------------------------------

LABELS = {
    "cdcsync": "cdcsync, 1 flow",
    "kafka": "cdcsync, 1 flow from Kafka",
    "flows3": "cdcsync, 3 flows at once (aggregate)",
    "fanout": "cdcsync, 1 flow -> 2 databases",
    "naive": "naive loop (prefix of the stream)",
    "pg-limit": "pg-limit (PostgreSQL alone)",
    "nats-limit": "nats-limit (nats-py alone)",
    "mysql": "cdcsync, 1 flow -> MySQL",
    "mysql-naive": "mysql-naive loop (prefix of the stream)",
    "mysql-limit": "mysql-limit (asyncmy's best loop alone)",
}


ONE_FLOW_ROWS = ("cdcsync", "kafka", "flows3", "fanout")


def _best(rs: list[dict[str, Any]]) -> dict[str, Any] | None:
    good = [r for r in rs if not r.get("failed") and r.get("events_per_s")]
    return max(good, key=lambda r: r["events_per_s"]) if good else None


def _cpu(r: dict[str, Any]) -> dict[str, float]:
    return {
        "own": r["cpu_own_s"],
        "pg": r["cpu_postgres_s"],
        "nats": r["cpu_nats_s"],
        "rest": r["cpu_rest_s"],
    }


def _ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    return round(a / b, digits) if a and b else None


def summarize(
    runs: dict[str, list[dict[str, Any]]],
) -> tuple[list[Line], list[Line], dict[str, Any]]:
    """The main table's lines, issue 15's table's lines and the JSON summary: best runs for
    speed, worst for limits."""
    best = {name: b for name, rs in runs.items() if (b := _best(rs)) is not None}
    eps = {name: r["events_per_s"] for name, r in best.items()}
    naive = eps.get("naive")
    limits = [eps[n] for n in ("pg-limit", "nats-limit") if n in eps]
    limit = min(limits) if limits else None
    one = eps.get("cdcsync")
    lines: list[Line] = []
    targets: list[dict[str, Any]] = []

    def target(name: str, figure: Any, unit: str, goal: str, met: bool | None, **extra: Any) -> str:
        targets.append(
            {"name": name, "figure": figure, "unit": unit, "target": goal, "met": met} | extra
        )
        return verdict(met)

    throughput: dict[str, Any] = {}
    for name in ("cdcsync", "kafka", "flows3", "fanout", "naive", "pg-limit", "nats-limit"):
        r = best.get(name)
        if r is None:
            continue
        e = r["events_per_s"]
        line = Line(
            measurement=LABELS[name],
            events=r["events"],
            seconds=r["seconds"],
            figure=f"{e:,.0f} ev/s",
            vs_naive=_ratio(e, naive, 2),
            vs_limit=_ratio(e, limit),
            vs_one_flow=_ratio(e, one) if name in ONE_FLOW_ROWS else None,
            cpu=_cpu(r),
        )
        if name == "cdcsync":
            goal = TARGETS["events_per_s"]
            line["target"] = f">= {goal:,} ev/s"
            line["result"] = target(
                "throughput, 1 flow, sustained", e, "events/s", line["target"], e >= goal
            )
        lines.append(line)
        throughput[name] = {
            "events_per_s": e,
            "ratio_vs_naive": _ratio(e, naive, 2),
            "ratio_vs_limit": _ratio(e, limit),
            "ratio_vs_one_flow": _ratio(e, one),
            "runs": [x["events_per_s"] for x in runs[name]],
        }
    # MySQL: compared with its own naive loop and its own limit (the driver's best loop).
    my_naive, my_limit = eps.get("mysql-naive"), eps.get("mysql-limit")
    for name in ("mysql", "mysql-naive", "mysql-limit"):
        r = best.get(name)
        if r is None:
            continue
        e = r["events_per_s"]
        line = Line(
            measurement=LABELS[name] + (f": {r['loop']}" if r.get("loop") else ""),
            events=r["events"],
            seconds=r["seconds"],
            figure=f"{e:,.0f} ev/s",
            vs_naive=_ratio(e, my_naive, 2),
            vs_limit=_ratio(e, my_limit),
            vs_one_flow=_ratio(e, one) if name == "mysql" else None,
            cpu=_cpu(r),
        )
        ratio = _ratio(e, my_limit)
        if name == "mysql" and ratio is not None:
            goal = TARGETS["mysql_vs_limit"]
            line["target"] = f">= {goal:.1f} x mysql-limit"
            line["result"] = target(
                "MySQL throughput vs the driver's best loop", ratio, "ratio", line["target"],
                ratio >= goal,
            )  # fmt: skip
        lines.append(line)
        throughput[name] = {
            "events_per_s": e,
            "ratio_vs_naive": _ratio(e, my_naive, 2),
            "ratio_vs_limit": ratio,
            "runs": [x["events_per_s"] for x in runs[name]],
        }
    sweep = [r for name, rs in runs.items() if name.startswith("batch ") for r in rs]
    for r in sorted(sweep, key=lambda r: r["batch_size"]):
        e = r["events_per_s"]
        lines.append(
            Line(
                measurement=f"cdcsync, 1 flow, batch max_size {r['batch_size']}",
                events=r["events"],
                seconds=r["seconds"],
                figure=f"{e:,.0f} ev/s",
                vs_naive=_ratio(e, naive, 2),
                vs_limit=_ratio(e, limit),
                vs_one_flow=_ratio(e, one),
                cpu=_cpu(r),
            )
        )
    summary: dict[str, Any] = {"throughput": throughput}
    summary["batch_size_sweep"] = [
        {"batch_size": r["batch_size"], "events": r["events"], "events_per_s": r["events_per_s"]}
        for r in sorted(sweep, key=lambda r: r["batch_size"])
    ]

    for name in ("latency", "latency-half"):
        found = _latency_lines(runs.get(name, []), name, target)
        if found is not None:
            lines += found[0]
            summary[name.replace("-", "_")] = found[1]

    one_runs = [r for r in runs.get("cdcsync", []) if not r.get("failed")]
    if one_runs:
        mem = max((r["memory"] for r in one_runs), key=lambda m: m.get("max_rss_mb") or 0)
        if mem.get("max_rss_mb") is not None:
            goal = TARGETS["max_rss_mb"]
            lines.append(
                Line(
                    measurement=f"memory: max RSS draining {one_runs[0]['events']:,} events",
                    figure=f"{mem['max_rss_mb']:.0f} MB",
                    target=f"<= {goal:.0f} MB",
                    result=target(
                        "max RSS while draining the backlog",
                        mem["max_rss_mb"],
                        "MB",
                        f"<= {goal:.0f} MB",
                        mem["max_rss_mb"] <= goal,
                    ),
                )
            )
            growth = mem["growth_25_75"]
            limit_g = TARGETS["rss_growth"]
            lines.append(
                Line(
                    measurement="  RSS at 25% -> 75% of the drain",
                    figure=f"{mem['rss_25_mb']:.0f} -> {mem['rss_75_mb']:.0f} MB ({growth:+.1%})",
                    target=f"flat: <= +{limit_g:.0%}",
                    result=target(
                        "RSS flat (growth from 25% to 75% of the drain)",
                        growth,
                        "ratio",
                        f"<= +{limit_g:.0%}",
                        growth <= limit_g,
                    ),
                )
            )
            summary["memory"] = {k: v for k, v in mem.items() if k != "series_mb"}
            summary["memory"]["runs_max_rss_mb"] = [r["memory"]["max_rss_mb"] for r in one_runs]
            summary["memory"]["max_rss_mb_by_phase"] = {
                name: max(r["memory"].get("max_rss_mb") or 0 for r in rs)
                for name, rs in runs.items()
                if rs and "memory" in rs[0]
            }
        starts = [
            (r["launched_to_start_s"] + r["first_commit_s"], r["first_commit_s"])
            for r in one_runs
            if r["first_commit_s"] is not None
        ]
        if starts:
            from_launch, from_run = max(starts)
            goal = TARGETS["first_commit_s"]
            lines.append(
                Line(
                    measurement="start: process launch -> first committed batch",
                    figure=f"{from_launch:.2f} s",
                    target=f"<= {goal:.0f} s",
                    result=target(
                        "start to first committed batch",
                        round(from_launch, 3),
                        "s",
                        f"<= {goal:.0f} s",
                        from_launch <= goal,
                    ),
                )
            )
            lines.append(
                Line(
                    measurement="  of which Service.run -> first batch", figure=f"{from_run:.2f} s"
                )
            )
            summary["start"] = {
                "launch_to_first_commit_s": round(from_launch, 3),
                "run_to_first_commit_s": round(from_run, 3),
                "runs": [round(a, 3) for a, _ in starts],
            }
    issue15 = issue15_lines(best, summary, target)
    summary["targets"] = targets
    return lines, issue15, summary


TargetFn = Callable[..., str]


def _latency_lines(
    rs: list[dict[str, Any]], name: str, target: TargetFn
) -> tuple[list[Line], dict[str, Any]] | None:
    """Rows and summary of a latency phase: its run with the lowest p99.

    Like throughput: other work on the machine only ever adds latency, so the best run is
    the one least disturbed. Every run's figures stay in the JSON.
    """
    ok = [r for r in rs if not r.get("failed")]
    if not ok:
        return None
    r = min(ok, key=lambda r: r["latency"]["p99_ms"])
    lat, pub = r["latency"], r["publisher"]
    head = f"latency at {pub['rate']:,.0f} ev/s" + (
        " (half of 1 flow)" if name != "latency" else ""
    )
    lines = []
    for n, key in enumerate(("p50_ms", "p95_ms", "p99_ms", "max_ms")):
        line = Line(
            measurement=f"{head}, {key[:-3]}" if n == 0 else f"  {key[:-3]}",
            figure=f"{lat[key]:.1f} ms",
        )
        if n == 0:
            line.update(events=r["events"], seconds=pub["seconds"], cpu=_cpu(r))
        if key == "p99_ms":
            goal = TARGETS["latency_p99_ms"]
            line["target"] = f"<= {goal:.0f} ms"
            line["result"] = target(
                f"latency p99, publish to row written, at {pub['rate']:,.0f} ev/s",
                lat[key],
                "ms",
                line["target"],
                lat[key] <= goal,
            )
        lines.append(line)
    summary = lat | {
        "publisher": pub,
        "runs": [
            {k: x["latency"][k] for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")}
            | {"rate": x["publisher"]["rate"], "cpu_rest_s": x["cpu_rest_s"]}
            for x in ok
        ],
    }
    return lines, summary


# --- issue 15: the targets as ratios to the yardsticks of the same run -----------------------

BASELINE_DATE = "2026-12-01"

ISSUE15_COLUMNS = [
    # (key, heading, align)
    ("measurement", "measure", "<"),
    ("baseline", f"baseline ({BASELINE_DATE})", ">"),
    ("figure", "this run", ">"),
    ("detail", "from", "<"),
    ("target", "target", "<"),
    ("result", "result", "<"),
]


def _per_event_us(r: dict[str, Any] | None, key: str) -> float | None:
    """CPU microseconds of ``key`` per event of the workload the run applied."""
    if r is None or not r.get(key) or not r.get("events"):
        return None
    return float(r[key]) / r["events"] * 1e6


def _round_trips(r: dict[str, Any] | None) -> tuple[int, int] | None:
    """(round trips, batches) of the run's single destination, when it counted them."""
    if r is None:
        return None
    dests = [d for flow in r.get("stats", {}).values() for d in flow["destinations"]]
    if len(dests) != 1 or dests[0].get("round_trips") is None or not dests[0]["batches"]:
        return None
    return dests[0]["round_trips"], dests[0]["batches"]


@dataclass(frozen=True)
class _Figure:
    """One measure of this run: its value (None: the run lacks it), as shown, and from what."""

    value: float | None
    shown: str = ""
    detail: str = ""


_NONE = _Figure(None)


def _eps_ratio(best: dict[str, dict[str, Any]], a: str, b: str, fmt: str) -> _Figure:
    x, y = best.get(a, {}).get("events_per_s"), best.get(b, {}).get("events_per_s")
    ratio = _ratio(x, y)
    if ratio is None:
        return _NONE
    return _Figure(ratio, f"{ratio:{fmt}}x", f"{x:,.0f} / {y:,.0f} ev/s")


def _cpu_ratio(best: dict[str, dict[str, Any]], key: str) -> _Figure:
    """cdcsync's CPU per event over pg-limit's, of the process ``key`` names."""
    x = _per_event_us(best.get("cdcsync"), key)
    y = _per_event_us(best.get("pg-limit"), key)
    ratio = _ratio(x, y)
    if ratio is None or x is None or y is None:
        return _NONE
    return _Figure(ratio, f"{ratio:.2f}x", f"{x:.1f} / {y:.1f} us per event")


def _trips_per_batch(best: dict[str, dict[str, Any]]) -> _Figure:
    trips = _round_trips(best.get("cdcsync"))
    if trips is None:
        return _NONE
    per = round(trips[0] / trips[1], 2)
    return _Figure(per, f"{per:.2f}", f"{trips[0]:,} / {trips[1]:,} batches")


def _p99(lat: dict[str, Any] | None) -> _Figure:
    if not lat:
        return _NONE
    return _Figure(lat["p99_ms"], f"{lat['p99_ms']:.1f} ms", f"{lat['rows']:,} events")


def _rate(lat: dict[str, Any] | None, missing: str) -> str:
    return f"{lat['publisher']['rate']:,.0f} ev/s" if lat else missing


def _plain(value: float | None, fmt: str, unit: str, detail: str) -> _Figure:
    return _NONE if value is None else _Figure(value, f"{value:{fmt}} {unit}", detail)


def issue15_lines(
    best: dict[str, dict[str, Any]], summary: dict[str, Any], target: TargetFn
) -> list[Line]:
    """One row per target of issue 15, '-' where this run lacks a figure; each also goes
    to ``summary["targets"]`` through ``target`` (with ``issue: 15``)."""
    lat, half = summary.get("latency"), summary.get("latency_half")
    events = best.get("cdcsync", {}).get("events")
    drained = f"{events:,} events" if events else "the backlog"
    half_at = f" ({_rate(half, '')})" if half else ""
    rss_goal, start_goal = TARGETS["max_rss_mb"], TARGETS["first_commit_s"]
    rss = summary.get("memory", {}).get("max_rss_mb")
    first = summary.get("start", {}).get("launch_to_first_commit_s")
    # (measure, baseline, target, unit, met, this run's figure)
    rows: list[tuple[str, str, str, str, Callable[[float], bool], _Figure]] = [
        ("one flow, drain, vs pg-limit", "0.40x", ">= 0.8x", "ratio",
         lambda v: v >= 0.8, _eps_ratio(best, "cdcsync", "pg-limit", ".2f")),
        ("one flow vs the naive loop", "16.6x", ">= 20x", "ratio",
         lambda v: v >= 20, _eps_ratio(best, "cdcsync", "naive", ".1f")),
        ("service CPU per event vs pg-limit's client", "4.3x", "<= 2.0x", "ratio",
         lambda v: v <= 2.0, _cpu_ratio(best, "cpu_own_s")),
        ("PostgreSQL CPU per event vs under pg-limit", "1.6x", "<= 1.2x", "ratio",
         lambda v: v <= 1.2, _cpu_ratio(best, "cpu_postgres_s")),
        ("round trips per batch (rows + checkpoint + commit), 1 destination", "4+", "1",
         "round trips", lambda v: v <= 1.0, _trips_per_batch(best)),
        (f"p99 publish -> row committed at {_rate(lat, '10,000 ev/s')}", "54.7 ms", "<= 50 ms",
         "ms", lambda v: v <= 50, _p99(lat)),
        (f"p99 at half of this run's 1-flow maximum{half_at}", "-", "<= 50 ms", "ms",
         lambda v: v <= 50, _p99(half)),
        ("fan-out to 2 databases vs one flow", "0.79x", ">= 0.8x", "ratio",
         lambda v: v >= 0.8, _eps_ratio(best, "fanout", "cdcsync", ".2f")),
        (f"max RSS draining {drained} (reference: 1,000,000 events)", "87 MB",
         f"<= {rss_goal:.0f} MB", "MB", lambda v: v <= rss_goal,
         _plain(rss, ".0f", "MB", "worst 1-flow run")),
        ("first commit after launch", "1.3 s", f"<= {start_goal:.0f} s", "s",
         lambda v: v <= start_goal, _plain(first, ".2f", "s", "process launch -> first batch")),
    ]  # fmt: skip
    lines = []
    for label, baseline, goal, unit, met, fig in rows:
        ok = None if fig.value is None else met(fig.value)
        result = target(f"issue 15: {label}", fig.value, unit, goal, ok, issue=15)
        lines.append(
            Line(
                measurement=label,
                baseline=baseline,
                figure=None if fig.value is None else fig.shown,
                detail=fig.detail or None,
                target=goal,
                result=result,
            )
        )
    return lines


def issue15_notes(events: int) -> list[str]:
    """What the issue 15 table's rows divide, in a few lines under it."""
    notes = [
        "ratios: the best run of each phase; CPU per event: CPU seconds (own: the service, "
        "pg-limit's client) over the same workload events both phases apply",
        "round trips: the service's own count of requests on its PostgreSQL connection "
        "(stats round_trips) over the batches it wrote",
    ]
    if events != 1_000_000:
        notes.append(
            f"memory and start: this run drained {events:,} events; the 87 MB / 1.3 s "
            "reference drained 1,000,000 (--events 1000000 --only cdcsync,pg-limit)"
        )
    notes.append("a target NOT MET: bench/README.md 'Profiling' shows what bounds it")
    return notes
