"""What the dashboard needs from the API: its files at `/`, and live figures in the stream."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import trio
from harness import Env, envelope, read_sse
from structlog.testing import capture_logs

from cdcsync.api.dashboard import ENV_VAR

TABLE = "CREATE TABLE items (id int PRIMARY KEY, name text);"


def fake_build(root: Path) -> Path:
    """A minimal built dashboard: index.html and one content-hashed asset."""
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>cdcsync</title><div id=root>")
    (root / "assets" / "index-abc123.js").write_text("console.log('dashboard')")
    return root


async def test_built_files_are_served_without_shadowing_the_api(
    env: Env, nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`/`, client routes and assets come from the build; /api, /metrics, /health stay the API's."""
    monkeypatch.setenv(ENV_VAR, str(fake_build(tmp_path / "dist")))
    await env.create_schema(TABLE)
    async with (
        env.running(env.config(), nursery) as running,
        httpx.AsyncClient(base_url=running.api) as client,
    ):
        index = await client.get("/")
        route = await client.get("/flows/f")
        dotted = await client.get("/flows/orders.v2")
        asset = await client.get("/assets/index-abc123.js")
        missing_asset = await client.get("/assets/index-gone.js")
        unknown_api = await client.get("/api/nope")
        stats = await client.get("/api/stats")
        health = await client.get("/health")
        metrics = await client.get("/metrics")
        escape = await client.get("/%2e%2e/%2e%2e/pyproject.toml")
    assert index.status_code == 200 and "<div id=root>" in index.text
    assert index.headers["cache-control"] == "no-cache"
    assert route.status_code == 200 and route.text == index.text
    assert dotted.status_code == 200 and dotted.text == index.text
    assert asset.status_code == 200 and asset.text == "console.log('dashboard')"
    assert "javascript" in asset.headers["content-type"]
    assert "immutable" in asset.headers["cache-control"]
    assert missing_asset.status_code == 404
    assert unknown_api.status_code == 404 and unknown_api.json()["error"].startswith("no such")
    assert stats.json()["flows"][0]["name"] == "f"
    assert health.json()["status"] == "ok"
    assert metrics.text.startswith("# HELP")
    assert "build-system" not in escape.text


async def test_missing_build_says_how_to_build_it(
    env: Env, nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a build, `/` names the build command and start-up logs the same hint once."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nothing-here"))
    await env.create_schema(TABLE)
    with capture_logs() as logs:
        async with (
            env.running(env.config(), nursery) as running,
            httpx.AsyncClient(base_url=running.api) as client,
        ):
            page = await client.get("/")
            route = await client.get("/flows/f")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "npm --prefix dashboard ci &amp;&amp; npm --prefix dashboard run build" in page.text
    assert "just dashboard" in page.text
    assert route.text == page.text
    hints = [e for e in logs if e["event"] == "dashboard not built"]
    assert len(hints) == 1
    assert "npm --prefix dashboard ci && npm --prefix dashboard run build" in hints[0]["hint"]


async def read_events(api: str, count: int) -> list[dict]:
    """``count`` data events from /api/stream, which tells browsers to reconnect after 1 s."""
    sse = await read_sse(api, count)
    assert b"\nretry: 1000\n" in sse.raw  # browsers reconnect after 1 s
    return sse.events


async def test_stream_carries_system_figures_and_pause_state(
    env: Env, nursery: trio.Nursery
) -> None:
    """Each SSE snapshot has the process figures and each flow's paused flag (no polling)."""
    await env.create_schema(TABLE)
    async with (
        env.running(env.config(), nursery) as running,
        httpx.AsyncClient(base_url=running.api) as client,
    ):
        await env.publish(env.subject() + ".x", [envelope("items", "insert", {"id": 1})])
        await env.applied(1)
        with trio.fail_after(10):
            before = await read_events(running.api, 2)
        assert (await client.post("/api/flows/f/pause")).status_code == 200
        with trio.fail_after(10):
            after = await read_events(running.api, 1)
        stats = (await client.get("/api/stats")).json()
    system = before[-1]["system"]
    assert system["rss_bytes"] > 10_000_000
    assert system["cpu_percent"] >= 0 and system["threads"] >= 1
    assert system["pid"] == os.getpid()  # the service runs in this test's process
    assert before[-1]["flows"][0]["paused"] is False
    assert before[-1]["flows"][0]["written"] == 1
    assert after[0]["flows"][0]["paused"] is True
    assert stats["flows"][0]["paused"] is True
