"""Operator tools over ``cdcsync_dead_letters``: list, group by reason, replay, purge.

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
from cdcsync.sinks.sql import quote_ident

__all__ = [
    "WINDOW",
    "DeadLetter",
    "ReasonGroup",
    "Reasons",
    "ReplayResult",
    "list_letters",
    "purge",
    "reasons",
    "replay",
]


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
    reason: str = ""  # ``error`` with what varies per event masked (see _REASON)


@dataclass(frozen=True)
class ReasonGroup:
    reason: str
    count: int
    example: str  # the newest letter's ``error``, unmasked
    table_name: str | None  # the newest letter's table
    last_failed_at: dt.datetime


@dataclass(frozen=True)
class Reasons:
    total: int  # dead letters of the (flow, destination)
    grouped: int  # the newest of them that were grouped (at most WINDOW)
    distinct: int  # distinct reasons among those, of which ``groups`` holds the commonest
    groups: list[ReasonGroup]


@dataclass(frozen=True)
class ReplayResult:
    applied: int
    still_failing: int


def _table(sink: PostgresSink) -> str:
    return f"{quote_ident(sink.options.schema)}.cdcsync_dead_letters"


# What varies from one event to the next in an ``error`` text, masked with "…" (in this
# order) so that the same failure groups as one reason: values and numbers go, the names
# (tables, columns, constraints, types) that say what to fix stay.
_MASKS = (
    (r"=\([^)]*\)", "=(…)"),  # a key's values: Key (email)=(…) already exists
    (r"Failing row contains \(.*?\)\.", "Failing row contains (…)."),
    (r'(: |value )"[^"]*"', r'\1"…"'),  # a quoted value: for type integer: "…"
    (r"(\W)(-?\d+(\.\d+)?|0x[0-9a-fA-F]+)\M", r"\1…"),  # numbers, bytes, JSON positions
)


def _masked(column: str) -> str:
    """SQL for ``column`` with _MASKS applied (E'' literals: whatever the server's
    standard_conforming_strings, a backslash means the same)."""
    expr = column
    for pattern, replacement in _MASKS:
        pat, rep = (x.replace("\\", "\\\\").replace("'", "''") for x in (pattern, replacement))
        expr = f"regexp_replace({expr}, E'{pat}', E'{rep}', 'g')"
    return expr


_REASON = _masked("error")
WINDOW = 10_000  # reasons are grouped among this many newest letters of a destination
_MINE = "flow = $1 AND destination = $2"


def _newest(sink: PostgresSink) -> str:
    """The ids of the letters that :func:`reasons` groups."""
    return f"SELECT id FROM {_table(sink)} WHERE {_MINE} ORDER BY id DESC LIMIT {WINDOW}"


async def _exists(conn: asyncpg.Connection, schema: str) -> bool:
    found = await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f"{quote_ident(schema)}.cdcsync_dead_letters"
    )
    return bool(found)


async def list_letters(
    sink: PostgresSink,
    limit: int = 50,
    ids: list[int] | None = None,
    *,
    offset: int = 0,
    reason: str | None = None,
) -> list[DeadLetter]:
    """The sink's (flow, destination) dead letters, the last to fail first: ``limit`` after
    skipping ``offset``, only those whose masked reason is ``reason`` when given."""

    async def go() -> list[DeadLetter]:
        conn = await sink.raw_connection()
        if not await _exists(conn, sink.options.schema):
            return []
        where = _MINE
        args: list[Any] = [sink.flow, sink.name, limit, offset]
        if ids is not None:
            args.append(ids)
            where += f" AND id = ANY(${len(args)}::bigint[])"
        if reason is not None:  # among the letters that reasons() grouped
            args.append(reason)
            where += f" AND {_REASON} = ${len(args)} AND id IN ({_newest(sink)})"
        # Newest first, and within one batch (one failed_at) in stream order, newest first.
        # The reason is worked out for the rows returned only (outside the LIMIT).
        order = "failed_at DESC, stream_seq DESC NULLS LAST, id DESC"
        query = (
            f"SELECT *, {_REASON} AS reason FROM (SELECT id, flow, destination, subject, "
            f"stream_seq, error, table_name, failed_at, payload FROM {_table(sink)} "
            f"WHERE {where} ORDER BY {order} LIMIT $3 OFFSET $4) AS page ORDER BY {order}"
        )
        rows = await conn.fetch(query, *args)
        return [DeadLetter(**dict(r)) for r in rows]

    return await aio(go)


async def reasons(sink: PostgresSink, limit: int = 1000) -> Reasons:
    """The sink's (flow, destination) newest ``WINDOW`` dead letters grouped by masked
    reason, commonest first (a bounded query however many letters piled up)."""

    async def go() -> Reasons:
        conn = await sink.raw_connection()
        if not await _exists(conn, sink.options.schema):
            return Reasons(0, 0, 0, [])
        rows = await conn.fetch(
            f"WITH g AS (SELECT {_REASON} AS reason, count(*) AS count, max(id) AS last_id, "
            f"max(failed_at) AS last_failed_at FROM {_table(sink)} "
            f"WHERE {_MINE} AND id IN ({_newest(sink)}) GROUP BY 1) "
            f"SELECT g.reason, g.count, d.error AS example, d.table_name, g.last_failed_at, "
            f"sum(g.count) OVER () AS grouped, count(*) OVER () AS distinct_reasons "
            f"FROM g JOIN {_table(sink)} d ON d.id = g.last_id "
            f"ORDER BY g.count DESC, g.reason LIMIT $3",
            sink.flow,
            sink.name,
            limit,
        )
        total = await conn.fetchval(
            f"SELECT count(*) FROM {_table(sink)} WHERE {_MINE}", sink.flow, sink.name
        )
        groups = [
            ReasonGroup(r["reason"], r["count"], r["example"], r["table_name"], r["last_failed_at"])
            for r in rows
        ]
        grouped = int(rows[0]["grouped"]) if rows else 0
        return Reasons(total, grouped, rows[0]["distinct_reasons"] if rows else 0, groups)

    return await aio(go)


async def replay(
    sink: PostgresSink, fmt: str, max_bytes: int, ids: list[int] | None = None
) -> ReplayResult:
    """Re-apply dead letters (all of the sink's, or ``ids``) in the order they failed."""

    async def go() -> ReplayResult:
        conn = await sink.raw_connection()
        if not await _exists(conn, sink.options.schema):
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
        if not await _exists(conn, sink.options.schema):
            return 0
        status = await conn.execute(
            f"DELETE FROM {_table(sink)} WHERE flow = $1 AND destination = $2 AND failed_at < $3",
            sink.flow,
            sink.name,
            before,
        )
        return int(status.split()[-1])

    return await aio(go)
