"""The Quart-Trio application: health, statistics and flow state.

It runs in the root nursery beside the flows and only reads their state; the
one mutation (counter reset) is guarded by the bearer token when configured.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import orjson
import psutil
import structlog
import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from cdcsync import __version__
from cdcsync.api import dashboard, history, letters, metrics
from cdcsync.api.openapi import SPEC as OPENAPI
from cdcsync.flow.pipeline import Flow
from cdcsync.logs import ERROR_FIELDS
from cdcsync.redact import scrub_fields

__all__ = ["BODY_TIMEOUT_S", "MAX_BODY", "create_app"]

MAX_BODY = 64 * 1024
BODY_TIMEOUT_S = 10
log = structlog.get_logger("cdcsync")


def create_app(
    flows: Sequence[Flow],
    token: str | None = None,
    cors_origins: Sequence[str] = (),
    secrets: Sequence[str] = (),
) -> QuartTrio:
    """The API over ``flows``; ``secrets`` are scrubbed from every error text it shows."""
    app = QuartTrio("cdcsync")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    allowed = set(cors_origins)
    hidden = tuple(sorted(set(secrets), key=len, reverse=True))

    def shown(body: dict[str, Any]) -> dict[str, Any]:
        # Errors come from drivers and servers: whatever they quote is scrubbed here too.
        scrubbed: dict[str, Any] = scrub_fields(body, hidden, ERROR_FIELDS | {"unavailable"})
        return scrubbed

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Any:
        # One JSON log line and a JSON answer, never Quart's plain-text traceback.
        if isinstance(exc, HTTPException):
            return exc
        log.error(
            "api request failed",
            method=request.method,
            path=request.path[:200],
            error=f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )
        return _error(500, "internal error (the server's log has the details)")

    @app.before_request
    async def limit_body() -> Response | None:
        # Quart checks MAX_CONTENT_LENGTH only when a handler reads the body, and ours
        # do not: read (and so bound) every request body here.
        length = request.content_length
        too_large = _error(413, f"request body over {MAX_BODY} bytes")
        if length is not None and length > MAX_BODY:
            return too_large
        if request.method in ("POST", "PUT", "PATCH"):
            # A body trickling in would hold its connection (and a slot) for ever.
            with trio.move_on_after(BODY_TIMEOUT_S):
                try:
                    await request.get_data(cache=False)
                except RequestEntityTooLarge:
                    return too_large
                return None
            return _error(408, f"request body not received within {BODY_TIMEOUT_S} s")
        return None

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
        return shown(
            {
                "version": __version__,
                "uptime_s": round(time.time() - started, 1),
                "flows": [{**f.stats.snapshot(), "paused": f.paused} for f in flows],
            }
        )

    def authorized() -> bool:
        if not token:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())

    def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not authorized():
                resp = _error(401, "missing or wrong bearer token")
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
        resp = jsonify(shown(body))
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
        sampler.reset()
        return jsonify(stats())

    process = psutil.Process(os.getpid())
    process.cpu_percent(None)  # the first call only starts the measurement

    def not_found(name: str) -> Response:
        return _error(404, f"no flow named {name!r}")

    def view(flow: Flow) -> dict[str, Any]:
        return shown(
            {
                **flow.describe(),
                "state": flow.stats.snapshot(),
                "paused": flow.paused,
                "partitions": flow.partitions(),
            }
        )

    def toggle(name: str, pause: bool) -> Response:
        flow = by_name.get(name)
        if flow is None:
            return not_found(name)
        if pause:
            flow.pause()
        else:
            flow.resume()
        sampler.sample()  # streams show the paused flag now, not at the next tick
        return jsonify(view(flow))

    @app.get("/metrics")
    async def get_metrics() -> Response:
        body = metrics.render(flows, time.time() - started)
        return Response(body, content_type=metrics.CONTENT_TYPE)

    @app.get("/api/stream")
    async def stream() -> Response:
        async def events() -> AsyncIterator[bytes]:
            yield b"retry: 1000\n\n"  # browsers reconnect after 1 s, not their default 3 s
            # The sampler's snapshots, the newest at once: the same ones (same `ts`) that
            # /api/history returns, so the dashboard can merge the two without duplicates.
            body: dict[str, Any] | None = None
            while True:
                body = await sampler.next_after(body)
                yield b"data: " + orjson.dumps(body) + b"\n\n"

        resp = Response(events(), content_type="text/event-stream")
        resp.headers["Cache-Control"] = "no-cache"
        resp.headers["X-Accel-Buffering"] = "no"
        resp.timeout = None
        return resp

    @app.get("/api/history")
    async def get_history() -> Response:
        return jsonify({"interval_s": history.INTERVAL_S, "snapshots": sampler.history()})

    def system_figures(proc: psutil.Process) -> dict[str, Any]:
        with proc.oneshot():
            try:
                connections: int | None = len(proc.net_connections(kind="inet"))
            except psutil.Error:
                connections = None
            return {
                "version": __version__,
                "pid": proc.pid,
                "uptime_s": round(time.time() - started, 1),
                "cpu_percent": proc.cpu_percent(None),
                "rss_bytes": proc.memory_info().rss,
                "threads": proc.num_threads(),
                "open_connections": connections,
            }

    # One Process for the sampler: its cpu_percent is the last second, whatever
    # /api/system (which uses `process`) is asked meanwhile.
    sampled = psutil.Process(process.pid)
    sampled.cpu_percent(None)
    sampler = history.Sampler(
        lambda: {**stats(), "ts": round(time.time(), 3), "system": system_figures(sampled)}
    )

    sampling = trio.CancelScope()

    async def run_sampler(*, task_status: trio.TaskStatus[None]) -> None:
        with sampling:
            await sampler.run(task_status=task_status)

    @app.before_serving
    async def start_sampler() -> None:
        # One task for every client, in the API's nursery: it only reads flow state.
        await app.nursery.start(run_sampler)

    @app.after_serving
    async def stop_sampler() -> None:
        sampling.cancel()  # else it would run until the background-task grace period ends

    @app.get("/api/system")
    async def system() -> Response:
        return jsonify(system_figures(process))

    @app.get("/api/openapi.json")
    async def openapi() -> Response:
        return jsonify(OPENAPI)

    @app.post("/api/flows/<name>/pause")
    @guarded
    async def pause(name: str) -> Response:
        return toggle(name, pause=True)

    @app.post("/api/flows/<name>/resume")
    @guarded
    async def resume(name: str) -> Response:
        return toggle(name, pause=False)

    @app.get("/api/flows")
    async def list_flows() -> Response:
        return jsonify({"flows": [view(f) for f in flows]})

    @app.get("/api/flows/<name>")
    async def get_flow(name: str) -> Response:
        flow = by_name.get(name)
        if flow is None:
            return not_found(name)
        return jsonify(view(flow))

    letters.register(app, flows, _error, shown)
    dashboard.register(app)  # last: its catch-all route never shadows the API's
    return app


def _error(status: int, message: str) -> Response:
    resp = jsonify({"error": message})
    resp.status_code = status
    return resp
