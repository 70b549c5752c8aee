"""The yardsticks cdcsync is compared with, on the same messages, in plain asyncio.

- :func:`run_naive`: what a team writes first (pull, one upsert, one ack per message);
- :func:`run_pg_limit`: the least work any writer can give PostgreSQL for the workload;
- :func:`run_nats_limit`: the messages consumed with nats-py alone.

Each returns the seconds its timed part took.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import nats
import orjson
import workload as wl
from nats.js import api as js_api

__all__ = ["run_naive", "run_nats_limit", "run_pg_limit"]


async def run_naive(
    nats_url: str, pg_url: str, stream: str, subject: str, durable: str, table: str, count: int
) -> float:
    """Pull, decode, one upsert (or delete) and one ack per message, until ``count`` are done."""
    nc = await nats.connect(nats_url)
    conn = await asyncpg.connect(pg_url)
    statements: dict[tuple[str, ...], str] = {}
    try:
        js = nc.jetstream()
        started = time.perf_counter()
        psub = await js.pull_subscribe(subject, durable=durable, stream=stream)
        done = 0
        while done < count:
            for msg in await psub.fetch(min(100, count - done), timeout=10):
                event = json.loads(msg.data)
                data = event["data"]
                if event["operation"] == "delete":
                    await conn.execute(f"DELETE FROM {table} WHERE id = $1", data["id"])
                else:
                    cols = tuple(data)
                    sql = statements.get(cols)
                    if sql is None:
                        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c != "id")
                        params = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
                        sql = statements[cols] = (
                            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({params}) "
                            f"ON CONFLICT (id) DO UPDATE SET {sets}"
                        )
                    await conn.execute(sql, *[_naive_value(c, data[c]) for c in cols])
                await msg.ack()
                done += 1
        await nc.flush()
        return time.perf_counter() - started
    finally:
        await conn.close()
        await nc.close()


def _naive_value(col: str, value: Any) -> Any:
    if value is None:
        return None
    if col == "balance":
        return Decimal(str(value))
    if col == "updated_at":
        return datetime.fromisoformat(value)
    if col == "payload":
        return json.dumps(value)
    return value


async def run_pg_limit(
    pg_url: str, table: str, plans: list[tuple[list[int], list[tuple[Any, ...]]]]
) -> float:
    """Per chunk: one ``DELETE = ANY`` and one typed-``unnest`` upsert, one transaction; no NATS."""
    cols = wl.COLUMNS
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c != "id")
    upsert = (
        f"INSERT INTO {table} ({', '.join(cols)}) SELECT * FROM unnest($1::int[], $2::text[], "
        f"$3::text[], $4::int[], $5::numeric[], $6::bool[], $7::timestamptz[], $8::jsonb[]) "
        f"ON CONFLICT (id) DO UPDATE SET {sets}"
    )
    delete = f"DELETE FROM {table} WHERE id = ANY($1::int[])"
    columns = [[list(c) for c in zip(*rows, strict=True)] if rows else [] for _, rows in plans]
    conn = await asyncpg.connect(pg_url)
    try:
        started = time.perf_counter()
        for (deletes, rows), arrays in zip(plans, columns, strict=True):
            async with conn.transaction():
                if deletes:
                    await conn.execute(delete, deletes)
                if rows:
                    await conn.execute(upsert, *arrays)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def run_nats_limit(
    nats_url: str, stream: str, subject: str, durable: str, count: int, max_ack_pending: int
) -> float:
    """Push consumer with flow control: ``orjson.loads`` and ack each message."""
    nc = await nats.connect(nats_url, pending_size=64 * 1024 * 1024)
    try:
        js = nc.jetstream()
        finished = asyncio.Event()
        received = 0

        async def on_msg(msg: Any) -> None:
            nonlocal received
            orjson.loads(msg.data)
            await msg.ack()
            received += 1
            if received >= count:
                finished.set()

        config = js_api.ConsumerConfig(
            ack_policy=js_api.AckPolicy.EXPLICIT,
            max_ack_pending=max_ack_pending,
            deliver_policy=js_api.DeliverPolicy.ALL,
        )
        started = time.perf_counter()
        sub = await js.subscribe(
            subject,
            durable=durable,
            stream=stream,
            cb=on_msg,
            manual_ack=True,
            config=config,
            flow_control=True,
            idle_heartbeat=5.0,
            pending_msgs_limit=2 * max_ack_pending + 16,
            pending_bytes_limit=0,
        )
        await asyncio.wait_for(finished.wait(), timeout=600)
        await nc.flush()
        seconds = time.perf_counter() - started
        await sub.unsubscribe()
        return seconds
    finally:
        await nc.close()
