"""The OpenAPI description served at ``/api/openapi.json`` (kept beside the routes)."""

from __future__ import annotations

from typing import Any

from cdcsync import __version__

__all__ = ["SPEC"]

_JSON = {"application/json": {"schema": {"type": "object"}}}
_FLOW = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_FLOW_FILTER = {"name": "flow", "in": "query", "schema": {"type": "string"}}


def _get(summary: str, content: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": {"description": "OK", "content": content or _JSON}},
            **extra,
        }
    }


def _post(summary: str, **extra: Any) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": _BEARER,
            "responses": {
                "200": {"description": "OK", "content": _JSON},
                "401": {"description": "missing or wrong bearer token (when api.token is set)"},
            },
            **extra,
        }
    }


SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "cdcsync", "version": __version__, "description": "See docs/api.md."},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {
        "/health": {
            "get": {
                "summary": "200 when every flow is running (or paused), 503 with reasons otherwise",
                "responses": {
                    "200": {"description": "healthy", "content": _JSON},
                    "503": {"description": "a flow is not running", "content": _JSON},
                },
            }
        },
        "/metrics": _get(
            "Prometheus text exposition",
            {"text/plain": {"schema": {"type": "string"}}},
        ),
        "/api/stats": _get("Counters and rates per flow and destination"),
        "/api/stats/reset": _post(
            "Zero every counter and clear /api/history; returns the new stats"
        ),
        "/api/stream": _get(
            "Server-Sent Events: one /api/stats snapshot (plus `ts`, `system`) per second",
            {"text/event-stream": {"schema": {"type": "string"}}},
        ),
        "/api/history": _get(
            "The last 300 per-second snapshots (5 min, chart fields only), oldest first:"
            " {interval_s, snapshots}"
        ),
        "/api/system": _get("Process CPU, memory, connections, uptime, version"),
        "/api/flows": _get("Every flow's configuration (secrets redacted) and state"),
        "/api/flows/{name}": _get(
            "One flow: configuration, state, and `partitions` (index, owner, here, status,"
            " position, lag)",
            parameters=[_FLOW],
        ),
        "/api/flows/{name}/pause": _post(
            "Stop reading and drain; nothing is lost or acked early", parameters=[_FLOW]
        ),
        "/api/flows/{name}/resume": _post("Read again from the checkpoints", parameters=[_FLOW]),
        "/api/dead-letters": _get(
            "The dead letters, newest first, `limit` after `offset` (offset + limit at most"
            " 1000), each with its `error` and its masked `reason`",
            parameters=[
                _FLOW_FILTER,
                {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 50}},
                {"name": "offset", "in": "query", "schema": {"type": "integer", "default": 0}},
                {
                    "name": "reason",
                    "in": "query",
                    "description": "only the letters with this masked reason, as"
                    " /api/dead-letters/reasons names it (among its newest 10,000)",
                    "schema": {"type": "string"},
                },
            ],
        ),
        "/api/dead-letters/reasons": _get(
            "The dead letters grouped by reason, commonest first: {total, grouped, distinct,"
            " reasons: [{reason, count, example, table, last_failed_at, destinations}],"
            " unavailable}. A reason is the error text with values and numbers masked"
            " as `…`; grouped among each destination's newest 10,000 letters",
            parameters=[
                _FLOW_FILTER,
                {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 20}},
            ],
        ),
    },
}
