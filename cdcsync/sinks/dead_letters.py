"""Operator tools over the state schema's ``dead_letters``: list, replay, purge.

Replay decodes each stored payload again with its flow's format and applies it
through the destination's own write path (catalog resolution, conflict mode,
split on bad rows) in one transaction; a letter leaves the table only if it was
applied, otherwise its ``error`` is updated to the new reason. Replay does not
move checkpoints and does not take the writer lock: it is an operator's
correction that runs beside a live service, and like any late re-application it
can overwrite a newer value of the same row (docs/operations.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

from cdcsync.bridge import aio
from cdcsync.flow.batch import Delivery
from cdcsync.flow.stages import decode_batch
from cdcsync.sinks.postgres import PostgresSink
from cdcsync.sinks.sql import dead_letter_table

__all__ = ["DeadLetter", "ReplayResult", "list_letters", "purge", "replay"]


@dataclass(frozen=True)
class DeadLetter:
    id: int
    flow: str
    destination: str
    subject: str | None
    stream_seq: int | None
    error: str
    table_name: str | None
    failed_at: dt.datetime
    payload: bytes


@dataclass(frozen=True)
class ReplayResult:
    applied: int
    still_failing: int


def _table(sink: PostgresSink) -> str:
    return dead_letter_table(sink.options.state_schema)


async def _exists(conn: asyncpg.Connection, sink: PostgresSink) -> bool:
    found = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", _table(sink))
    return bool(found)


async def list_letters(
    sink: PostgresSink, limit: int = 50, ids: list[int] | None = None
) -> list[DeadLetter]:
    """The newest dead letters of the sink's (flow, destination), newest first."""

    async def go() -> list[DeadLetter]:
        conn = await sink.raw_connection()
        if not await _exists(conn, sink):
            return []
        where = "flow = $1 AND destination = $2"
        args: list[Any] = [sink.flow, sink.name]
        if ids is not None:
            where += " AND id = ANY($4::bigint[])"
        query = (
            f"SELECT id, flow, destination, subject, stream_seq, error, table_name, failed_at, "
            f"payload FROM {_table(sink)} WHERE {where} ORDER BY id DESC LIMIT $3"
        )
        args.append(limit)
        if ids is not None:
            args.append(ids)
        rows = await conn.fetch(query, *args)
        return [DeadLetter(**dict(r)) for r in rows]

    return await aio(go)


async def replay(
    sink: PostgresSink, fmt: str, max_bytes: int, ids: list[int] | None = None
) -> ReplayResult:
    """Re-apply dead letters (all of the sink's, or ``ids``) in the order they failed."""

    async def go() -> ReplayResult:
        conn = await sink.raw_connection()
        if not await _exists(conn, sink):
            return ReplayResult(0, 0)
        where = "flow = $1 AND destination = $2"
        args: list[Any] = [sink.flow, sink.name]
        if ids is not None:
            where += " AND id = ANY($3::bigint[])"
            args.append(ids)
        rows = await conn.fetch(
            f"SELECT id, subject, stream_seq, payload FROM {_table(sink)} "
            f"WHERE {where} ORDER BY id",
            *args,
        )
        if not rows:
            return ReplayResult(0, 0)
        deliveries = [
            Delivery(r["stream_seq"] or 0, r["subject"] or "", bytes(r["payload"] or b""), r["id"])
            for r in rows
        ]
        items = decode_batch(deliveries, fmt, max_bytes)
        async with conn.transaction():  # the rows and the letters' removal commit together
            failed = await sink.apply_without_checkpoint(items)
            failed_ids = {item.delivery.handle: reason for item, reason in failed}
            applied = [d.handle for d in deliveries if d.handle not in failed_ids]
            if applied:
                await conn.execute(f"DELETE FROM {_table(sink)} WHERE id = ANY($1)", applied)
            if failed_ids:
                await conn.execute(
                    f"UPDATE {_table(sink)} AS d SET error = f.error, failed_at = now() "
                    f"FROM unnest($1::bigint[], $2::text[]) AS f(id, error) WHERE d.id = f.id",
                    list(failed_ids),
                    list(failed_ids.values()),
                )
        return ReplayResult(len(applied), len(failed_ids))

    return await aio(go)


async def purge(sink: PostgresSink, before: dt.datetime) -> int:
    """Delete the sink's dead letters that failed before ``before``; returns how many."""

    async def go() -> int:
        conn = await sink.raw_connection()
        if not await _exists(conn, sink):
            return 0
        status = await conn.execute(
            f"DELETE FROM {_table(sink)} WHERE flow = $1 AND destination = $2 AND failed_at < $3",
            sink.flow,
            sink.name,
            before,
        )
        return int(status.split()[-1])

    return await aio(go)
