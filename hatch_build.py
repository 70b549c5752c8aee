"""Hatchling build hook: the built dashboard goes into every wheel and sdist.

``cdcsync serve`` serves the dashboard's static files (``dashboard/dist``, built by Vite) at
``/``. Installed from a wheel there is no repository to find them in, so the wheel carries
them as package data in ``cdcsync/_dashboard/`` and the sdist carries ``dashboard/dist/``,
which makes installing from an sdist need no Node.js. The build runs here, in the build
backend, when node >= 20.19 and npm are on PATH and the build is missing or older than its
sources; without them an existing build is shipped as it is, and with no build at all the
package is made without a dashboard and says so (the API works without it).

Editable installs (``scripts/dev``, ``pip install -e``) skip all of this: they serve the
checkout's ``dashboard/dist``, which ``scripts/dev`` keeps built.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

NODE_MIN = (20, 19)  # what Vite 8 needs (dashboard/package.json "engines")
# What the build is made from: a dist/index.html older than any of these is rebuilt.
SOURCES = (
    "src",
    "index.html",
    "package.json",
    "package-lock.json",
    "vite.config.ts",
    "tsconfig.json",
)
PACKAGED = "cdcsync/_dashboard"  # in the wheel; cdcsync/api/dashboard.py looks here first


class DashboardBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return
        dashboard = Path(self.root) / "dashboard"
        dist = dashboard / "dist"
        # An unpacked sdist (PKG-INFO at its root) ships its build: never rebuild it there.
        from_sdist = (Path(self.root) / "PKG-INFO").is_file()
        if not from_sdist and _stale(dashboard):
            problem = _unusable_node()
            if problem is None:
                self._npm_build(dashboard)
            elif (dist / "index.html").is_file():
                self.app.display_warning(
                    f"cdcsync: {problem}: shipping dashboard/dist although it is older than "
                    "its sources"
                )
        if not (dist / "index.html").is_file():
            self.app.display_warning(
                f"cdcsync: no built dashboard ({_unusable_node() or 'dashboard/dist is empty'}):"
                f" this {self.target_name} has none, and `/` will say so. Build with Node.js "
                f">= {NODE_MIN[0]}.{NODE_MIN[1]} and npm on PATH to include it."
            )
            return
        target = PACKAGED if self.target_name == "wheel" else "dashboard/dist"
        build_data["force_include"][str(dist)] = target

    def _npm_build(self, dashboard: Path) -> None:
        modules = dashboard / "node_modules" / ".package-lock.json"
        lock = dashboard / "package-lock.json"
        steps = [["run", "build"]]
        if not modules.is_file() or lock.stat().st_mtime > modules.stat().st_mtime:
            steps.insert(0, ["ci", "--no-audit", "--no-fund"])
        for step in steps:
            self.app.display_info(f"cdcsync: npm {' '.join(step)} (dashboard)")
            done = subprocess.run(
                ["npm", "--prefix", str(dashboard), *step],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"cdcsync: `npm {' '.join(step)}` failed for the dashboard:\n"
                    f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
                )


def _stale(dashboard: Path) -> bool:
    """True when dist/index.html is missing or older than any of the dashboard's sources."""
    built = dashboard / "dist" / "index.html"
    if not built.is_file():
        return True
    mtime = built.stat().st_mtime
    for name in SOURCES:
        path = dashboard / name
        files = path.rglob("*") if path.is_dir() else [path]
        if any(f.is_file() and f.stat().st_mtime > mtime for f in files):
            return True
    return False


def _unusable_node() -> str | None:
    """Why this machine cannot build the dashboard, or None when it can."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node and npm are not both on PATH"
    done = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    found = re.match(r"v(\d+)\.(\d+)", done.stdout.strip())
    if found is None or (int(found[1]), int(found[2])) < NODE_MIN:
        return f"node {done.stdout.strip() or '?'} is older than {NODE_MIN[0]}.{NODE_MIN[1]}"
    return None
