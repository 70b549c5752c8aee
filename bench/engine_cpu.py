"""CPU per event of the engine's pure stages, without servers: decode, resolve, plan, encode.

    .venv/bin/python bench/engine_cpu.py [--events N] [--batch N] [--repeat N]

Runs the benchmark workload (workload.py: 8 columns, upserts, 50,000 keys) through what the
service does between receiving a message and handing a statement to the driver, batch by
batch, and prints microseconds of CPU per event for each stage, best of ``--repeat``. It is a
microbenchmark: use it to see which stage a change moves, and `just bench` for the service.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from workload import generate

from cdcsync.flow.batch import Delivery, Partition
from cdcsync.flow.stages import decode_batch
from cdcsync.plugin.sql import Column, Mode, Resolver, TableInfo
from cdcsync.sinks.compaction import statements
from cdcsync.sinks.postgres.values import canonical_key, rows_json

TYPES = {
    "id": "integer",
    "name": "text",
    "email": "text",
    "score": "integer",
    "balance": "numeric(14,2)",
    "active": "boolean",
    "updated_at": "timestamp with time zone",
    "payload": "jsonb",
}
TABLE = TableInfo(
    "public",
    "users",
    {c: Column(c, t, c == "id", False, False, t == "jsonb") for c, t in TYPES.items()},
    ("id",),
)


def _best(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    work = generate(args.events, 50_000, "bench.users")
    part = Partition("BENCH", 0, sole=True)
    deliveries = [
        Delivery(i + 1, "bench.users", m, None, 0.0, part) for i, m in enumerate(work.payloads)
    ]
    batches = [deliveries[i : i + args.batch] for i in range(0, len(deliveries), args.batch)]
    resolver = Resolver(
        schema="public", mapping={}, truncate=False, unmapped="apply", canonical_key=canonical_key
    )
    tables = {"users": TABLE}
    items = [decode_batch(b, "cdc", 8 << 20) for b in batches]
    resolved = [resolver.resolve(i, tables).resolved for i in items]
    planned = [
        statements(((r.table, r.key, r.event, r.cols) for r in rs), Mode.UPSERT) for rs in resolved
    ]

    stages: dict[str, Callable[[], Any]] = {
        "decode": lambda: [decode_batch(b, "cdc", 8 << 20) for b in batches],
        "resolve": lambda: [resolver.resolve(i, tables) for i in items],
        "plan": lambda: [
            statements(((r.table, r.key, r.event, r.cols) for r in rs), Mode.UPSERT)
            for rs in resolved
        ],
        "encode": lambda: [[rows_json(st.rows or st.keys) for st in sts] for sts in planned],
    }
    total = 0.0
    for name, fn in stages.items():
        us = _best(fn, args.repeat) / args.events * 1e6
        total += us
        print(f"{name:8s} {us:6.2f} us/event")
    print(f"{'total':8s} {total:6.2f} us/event  ({args.events:,} events, batches of {args.batch})")


if __name__ == "__main__":
    main()
