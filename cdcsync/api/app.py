"""The Quart-Trio application: health, statistics and flow state.

It runs in the root nursery beside the flows and only reads their state; the
one mutation (counter reset) is guarded by the bearer token when configured.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Sequence
from typing import Any

from quart import Response, jsonify, request
from quart_trio import QuartTrio

from cdcsync import __version__
from cdcsync.flow.pipeline import Flow

__all__ = ["create_app"]


def create_app(
    flows: Sequence[Flow], token: str | None = None, cors_origins: Sequence[str] = ()
) -> QuartTrio:
    app = QuartTrio("cdcsync")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    allowed = set(cors_origins)

    @app.after_request
    async def cors(response: Response) -> Response:
        # No CORS headers at all unless the operator listed the dashboard's origins.
        origin = request.headers.get("Origin")
        if origin and (origin in allowed or "*" in allowed):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        return response

    started = time.time()
    by_name = {f.name: f for f in flows}

    def stats() -> dict[str, Any]:
        return {
            "version": __version__,
            "uptime_s": round(time.time() - started, 1),
            "flows": [f.stats.snapshot() for f in flows],
        }

    def authorized() -> bool:
        if not token:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())

    def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not authorized():
                resp = jsonify({"error": "missing or wrong bearer token"})
                resp.status_code = 401
                resp.headers["WWW-Authenticate"] = "Bearer"
                return resp
            return await fn(*args, **kwargs)

        wrapper.__name__ = fn.__name__
        return wrapper

    @app.get("/health")
    async def health() -> Response:
        bad = {f.name: f.stats.status for f in flows if f.stats.status not in ("running", "paused")}
        body: dict[str, Any] = {
            "status": "ok" if not bad else "unavailable",
            "flows": {f.name: f.stats.status for f in flows},
        }
        if bad:
            body["reasons"] = {
                name: by_name[name].stats.last_error or f"flow is {status}"
                for name, status in bad.items()
            }
        resp = jsonify(body)
        resp.status_code = 200 if not bad else 503
        return resp

    @app.get("/api/stats")
    async def get_stats() -> Response:
        return jsonify(stats())

    @app.post("/api/stats/reset")
    @guarded
    async def reset_stats() -> Response:
        for f in flows:
            f.stats.reset()
        return jsonify(stats())

    @app.get("/api/flows")
    async def list_flows() -> Response:
        return jsonify({"flows": [{**f.describe(), "state": f.stats.snapshot()} for f in flows]})

    @app.get("/api/flows/<name>")
    async def get_flow(name: str) -> Response:
        flow = by_name.get(name)
        if flow is None:
            resp = jsonify({"error": f"no flow named {name!r}"})
            resp.status_code = 404
            return resp
        return jsonify({**flow.describe(), "state": flow.stats.snapshot()})

    return app
