"""The operations dashboard's static files, served at ``/`` by the API's own app.

The dashboard (``dashboard/``, React + ECharts) is built by Vite into static files;
serving them from the same process means an operator opens the API's address and
needs no second server. Client routes (``/flows/users``) get ``index.html``; the API's
own prefixes (``/api``, ``/metrics``, ``/health``) are never shadowed: an unknown
``/api/...`` path is a JSON 404, not the page.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog
import trio
from quart import Response, jsonify, send_file
from quart_trio import QuartTrio
from werkzeug.security import safe_join

__all__ = ["BUILD_HINT", "ENV_VAR", "dashboard_dir", "register"]

log = structlog.get_logger("cdcsync")

ENV_VAR = "CDCSYNC_DASHBOARD_DIR"
BUILD_HINT = (
    "build it with `npm --prefix dashboard ci && npm --prefix dashboard run build` "
    "(or `just dashboard`) in the cdcsync repository, then reload the page"
)
PACKAGE_HINT = (
    "this cdcsync package was built without its dashboard (no Node.js >= 20.19 and npm where "
    f"it was built): install one built with them, or set {ENV_VAR} to a dashboard build"
)
# Paths the API owns; the dashboard never answers for them.
RESERVED = ("api", "metrics", "health")
# Vite puts content-hashed file names under assets/: safe to cache for a year.
IMMUTABLE = "public, max-age=31536000, immutable"


# Where a wheel carries the build (hatch_build.py puts it there); absent in a checkout.
PACKAGED = Path(__file__).resolve().parents[1] / "_dashboard"
# The dashboard's sources when running from a checkout (editable install, scripts/dev).
CHECKOUT = Path(__file__).resolve().parents[2] / "dashboard"


def dashboard_dir() -> Path:
    """Where the built dashboard is: ``$CDCSYNC_DASHBOARD_DIR``, else the copy inside the
    installed package, else (running from a checkout) the repository's dashboard/dist."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured)
    if (PACKAGED / "index.html").is_file() or not (CHECKOUT / "package.json").is_file():
        return PACKAGED
    return CHECKOUT / "dist"


def _missing_page(where: Path) -> Response:
    how = (
        f"{PACKAGE_HINT[0].upper()}{PACKAGE_HINT[1:]}."
        if where == PACKAGED
        else f"""From the cdcsync repository, run:</p>
<pre>npm --prefix dashboard ci &amp;&amp; npm --prefix dashboard run build</pre>
<p>or <code>just dashboard</code>, then reload this page (no restart needed).
Set <code>{ENV_VAR}</code> to serve a build from elsewhere."""
    )
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cdcsync: dashboard not built</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 44rem; margin: 2rem auto;
padding: 0 1rem; line-height: 1.5">
<h1>The cdcsync dashboard is not built</h1>
<p>No built dashboard at <code>{where}</code>. {how}</p>
<p>The API works without it: <a href="/api/stats">/api/stats</a>, <a href="/health">/health</a>,
<a href="/metrics">/metrics</a>, <a href="/api/openapi.json">/api/openapi.json</a>.</p>
</body></html>
"""
    resp = Response(body, status=200, content_type="text/html; charset=utf-8")
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def _is_file(path: str) -> bool:
    try:
        return await trio.Path(path).is_file()
    except OSError:  # e.g. a path over PATH_MAX: not one of the built files
        return False


def register(app: QuartTrio) -> None:
    """Add ``/`` and the catch-all route for the built files to ``app``.

    Logs once, when the build is missing, how to build it.
    """
    root = dashboard_dir()
    if not (root / "index.html").is_file():
        hint = PACKAGE_HINT if root == PACKAGED else BUILD_HINT
        log.warning("dashboard not built", path=str(root), hint=hint)

    async def index() -> Response:
        page = root / "index.html"
        # Looked up per request: a build made after start-up is picked up.
        if not await trio.Path(page).is_file():
            return _missing_page(root)
        resp = await send_file(page, mimetype="text/html")
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    @app.get("/")
    async def dashboard_index() -> Response:
        return await index()

    @app.get("/<path:path>")
    async def dashboard_file(path: str) -> Response:
        if path.split("/", 1)[0] in RESERVED:
            resp = jsonify({"error": f"no such endpoint: /{path}"})
            resp.status_code = 404
            return resp
        if any(len(part.encode()) > 255 for part in path.split("/")):
            # No file or client route has such a name (and stat() would fail on it).
            return Response("not found\n", status=404, content_type="text/plain")
        found = safe_join(str(root), path)
        if found is not None and await _is_file(found):
            resp = await send_file(Path(found))
            if path.startswith("assets/"):
                resp.headers["Cache-Control"] = IMMUTABLE
            return resp
        if "." in path.rsplit("/", 1)[-1] and not path.startswith("flows/"):
            # A missing file (a stale asset name), not a client route: no HTML for it.
            return Response("not found\n", status=404, content_type="text/plain")
        return await index()
