"""Fixtures for the dashboard's browser tests: Debian's Chromium driven by Playwright, the
built dashboard, and `cdcsync serve` as a real subprocess.

Playwright never downloads a browser here: it launches /usr/bin/chromium. Without it
(or without npm to build the dashboard) the tests skip with the reason, except under
CI, where a missing tool is a failure: CI must prove the dashboard works.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashkit import CHROMIUM, CHROMIUM_ARGS, DASHBOARD, Serve


def unavailable(reason: str) -> None:
    """Skip, or fail under CI (env CI set): there the browser tests must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the dashboard tests must run)")
    pytest.skip(reason)


def _stale(built: Path) -> bool:
    if not built.is_file():
        return True
    mtime = built.stat().st_mtime
    sources = [DASHBOARD / n for n in ("index.html", "package.json", "vite.config.ts")]
    sources += [p for p in (DASHBOARD / "src").rglob("*") if p.is_file()]
    return any(p.stat().st_mtime > mtime for p in sources if p.exists())


def _npm(*args: str) -> None:
    result = subprocess.run(
        ["npm", "--prefix", str(DASHBOARD), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"npm {' '.join(args)} failed:\n{result.stdout}{result.stderr}"


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """dashboard/node_modules, installed with `npm ci` when missing."""
    if shutil.which("npm") is None:
        unavailable("npm is not installed: cannot build or unit-test the dashboard")
    if not (DASHBOARD / "node_modules" / ".package-lock.json").is_file():
        _npm("ci", "--no-audit", "--no-fund")
    return DASHBOARD / "node_modules"


@pytest.fixture(scope="session")
def dashboard_dist(node_modules: Path) -> Path:
    """The built dashboard, (re)built when missing or older than its sources.

    `scripts/dev test` builds it before pytest starts; this covers a bare `pytest`.
    """
    dist = DASHBOARD / "dist"
    if _stale(dist / "index.html"):
        _npm("run", "build")
    return dist


@pytest.fixture(scope="session")
def chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium: str, dashboard_dist: Path) -> Iterator[Any]:
    """One headless Chromium per test module (contexts keep the tests apart)."""
    from playwright.sync_api import sync_playwright

    # trio-asyncio (imported by cdcsync) installs an event loop policy whose loops cannot
    # run Playwright's sync driver: give Playwright a plain asyncio loop.
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        pw = sync_playwright().start()
    finally:
        asyncio.set_event_loop_policy(policy)
    try:
        b = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """This test's screenshot directory (copies worth keeping also go to docs/img/)."""
    path = tmp_path / "screenshots"
    path.mkdir()
    return path


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Start `cdcsync serve` on a config text; every process is stopped at the end."""
    started: list[Serve] = []

    def start(config_text: str, name: str = "cdcsync") -> Serve:
        config = tmp_path / f"{name}.yaml"
        config.write_text(config_text)
        proc = Serve(config, tmp_path / f"{name}-{len(started)}.log").start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
        print(proc.tail(200))  # pytest shows it only when the test failed
