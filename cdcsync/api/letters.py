"""The dead-letter routes: the newest letters a page at a time, and the letters grouped by
reason, read through each destination's dead-letter methods (the destination protocol).

Each request opens its own short connection per destination (the flows' writer
connections are never borrowed) and gives up on a destination after 5 s: that one is
reported as unavailable, the others are still answered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio

from cdcsync import registry
from cdcsync.flow.pipeline import Flow
from cdcsync.plugin import DeadLetter, Destination, ReasonGroup

__all__ = ["MAX_REASON", "MAX_WINDOW", "register"]

MAX_WINDOW = 1000  # offset + limit: `cdcsync dlq list` is the tool for more
MAX_REASON = 2000  # characters of a `reason` filter
_READ_S = 5.0


def _int_arg(name: str, default: int) -> int:
    try:
        return int(request.args.get(name, str(default)))
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None


def register(
    app: QuartTrio,
    flows: Sequence[Flow],
    error: Callable[[int, str], Response],
    shown: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    """Add ``GET /api/dead-letters`` and ``GET /api/dead-letters/reasons`` to ``app``;
    ``shown`` scrubs the configuration's secrets from every error text in an answer."""
    names = {f.name for f in flows}

    def selected() -> list[Flow] | Response:
        wanted = request.args.get("flow")
        if wanted and wanted not in names:
            return error(404, f"no flow named {wanted!r}")
        return [f for f in flows if not wanted or f.name == wanted]

    @asynccontextmanager
    async def destinations(chosen: list[Flow]) -> AsyncIterator[list[Destination]]:
        sinks = [
            registry.destinations()[d.type].factory(f.name, d.name, d.options)
            for f in chosen
            for d in f.config.destinations
        ]
        try:
            yield sinks
        finally:
            for sink in sinks:
                await sink.close()

    @app.get("/api/dead-letters")
    async def get_dead_letters() -> Response:
        try:
            limit = max(1, min(_int_arg("limit", 50), MAX_WINDOW))
            offset = _int_arg("offset", 0)
        except ValueError as exc:
            return error(400, str(exc))
        if offset < 0 or offset + limit > MAX_WINDOW:
            return error(400, f"offset must be 0 or more, and offset + limit at most {MAX_WINDOW}")
        reason = request.args.get("reason")
        if reason is not None and len(reason) > MAX_REASON:
            return error(400, f"reason longer than {MAX_REASON} characters")
        chosen = selected()
        if isinstance(chosen, Response):
            return chosen
        letters: list[dict[str, Any]] = []
        async with destinations(chosen) as sinks:
            for sink in sinks:
                try:
                    with trio.fail_after(_READ_S):
                        # Every destination's newest offset + limit: the page is cut from
                        # their merge, so it is exact with several destinations too.
                        found = await sink.dead_letters(limit=offset + limit, reason=reason)
                    letters.extend(_letter(d) for d in found)
                except Exception as exc:
                    letters.append(_unavailable(sink, exc))
        letters.sort(key=lambda d: d.get("failed_at") or "", reverse=True)
        return jsonify(shown({"dead_letters": letters[offset : offset + limit]}))

    @app.get("/api/dead-letters/reasons")
    async def get_reasons() -> Response:
        try:
            limit = max(1, min(_int_arg("limit", 20), 100))
        except ValueError as exc:
            return error(400, str(exc))
        chosen = selected()
        if isinstance(chosen, Response):
            return chosen
        total = grouped = 0
        merged: dict[str, dict[str, Any]] = {}
        unavailable: list[dict[str, Any]] = []
        async with destinations(chosen) as sinks:
            for sink in sinks:
                try:
                    with trio.fail_after(_READ_S):
                        found = await sink.dead_letter_reasons()
                except Exception as exc:
                    unavailable.append(_unavailable(sink, exc))
                    continue
                total += found.total
                grouped += found.grouped
                for g in found.groups:
                    _merge(merged, sink, g)
        groups = sorted(merged.values(), key=lambda g: (-g["count"], g["reason"]))
        body = {
            "total": total,
            "grouped": grouped,
            "distinct": len(groups),
            "reasons": groups[:limit],
            "unavailable": unavailable,
        }
        return jsonify(shown(body))


def _merge(merged: dict[str, dict[str, Any]], sink: Destination, g: ReasonGroup) -> None:
    """Add one destination's group to the groups of the same reason from the others."""
    last = g.last_failed_at.isoformat()
    into = merged.get(g.reason)
    if into is None:
        into = merged[g.reason] = {
            "reason": g.reason,
            "count": 0,
            "example": g.example,
            "table": g.table_name,
            "last_failed_at": last,
            "destinations": [],
        }
    elif g.last_failed_at > dt.datetime.fromisoformat(into["last_failed_at"]):
        into.update(example=g.example, table=g.table_name, last_failed_at=last)
    into["count"] += g.count
    into["destinations"].append({"flow": sink.flow, "destination": sink.name, "count": g.count})


def _unavailable(sink: Destination, exc: BaseException) -> dict[str, Any]:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, trio.TooSlowError):
        text = f"no answer within {_READ_S:g} s"
    return {"flow": sink.flow, "destination": sink.name, "unavailable": text}


def _letter(d: DeadLetter) -> dict[str, Any]:
    return {
        "id": d.id,
        "flow": d.flow,
        "destination": d.destination,
        "subject": d.subject,
        "stream_seq": d.stream_seq,
        "partition": d.partition,
        "table": d.table_name,
        "error": d.error,
        "reason": d.reason,
        "failed_at": d.failed_at.isoformat(),
        "payload": d.payload[:2048].decode("utf-8", errors="replace"),
        "payload_bytes": len(d.payload),
    }
