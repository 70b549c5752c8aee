"""The dashboard in a real Chromium against a real `cdcsync serve`, NATS and PostgreSQL.

Each test starts its own cdcsync process on its own stream, durables and schema, opens
http://<api>/ (the same process serves the UI) and reads what an operator would see.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashkit import World, number, screenshot
from harness import envelope
from playwright.sync_api import Page, expect
from servers import PostgresServer, free_port

TOKEN = "s3cret-dashboard-token"
DASH = "\N{EN DASH}"


@pytest.fixture
def world(nats_url: str, pg_url: str, unique: str) -> Iterator[World]:
    w = World(nats_url, pg_url, unique)
    w.create_schema()
    yield w
    w.drop_schema()
    w.delete_streams()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme="light")
    yield ctx
    ctx.close()


def open_page(ctx: Any, url: str) -> Page:
    """A page on ``url`` with the live stream connected (first snapshot shown)."""
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    expect(page.get_by_test_id("link-state")).to_have_attribute("data-state", "live")
    page.errors = errors  # type: ignore[attr-defined]
    return page


def api_stats(api: str) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(f"{api}/api/stats", timeout=5) as resp:
        return {f["name"]: f for f in json.load(resp)["flows"]}


def post(api: str, path: str) -> dict[str, Any]:
    req = urllib.request.Request(f"{api}{path}", method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return dict(json.load(resp))


def wait_counter(page: Page, test_id: str, expected: int, timeout_s: float) -> float:
    """Seconds until the counter shows ``expected``; fails after ``timeout_s``."""
    started = time.monotonic()
    expect(page.get_by_test_id(test_id)).to_have_text(f"{expected:,}", timeout=timeout_s * 1000)
    return time.monotonic() - started


def dark_background(page: Page) -> bool:
    rgb = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    r, g, b = (int(x) for x in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255 < 0.25


def no_horizontal_scroll(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_live_counters_charts_and_screenshots(
    world: World, serve: Any, browser: Any, context: Any, shots: Path
) -> None:
    """Published events show in the counters within 3 s without a reload; the charts draw
    them, and a page opened later starts with the last minutes; the views work at laptop and
    phone width, light and dark."""
    api = serve(world.config()).wait_started()
    page = open_page(context, f"{api}/")
    expect(page.get_by_test_id("flow-status-users")).to_have_text("running")
    expect(page.get_by_test_id("flow-status-orders")).to_have_text("running")
    assert number(page, "flow-written-users") == 0

    world.publish("users", world.events("users", range(120)))
    world.publish("orders", [*world.events("orders", range(40)), b"not json", b"{bad"])
    users_s = wait_counter(page, "flow-written-users", 120, 3.0)
    orders_s = wait_counter(page, "flow-written-orders", 40, 3.0)
    wait_counter(page, "flow-dead-lettered-orders", 2, 3.0)
    print(f"counters caught up {users_s:.2f} s (users) and {orders_s:.2f} s (orders) after publish")
    assert number(page, "total-written") == 160
    assert world.ids("users") == list(range(120))

    # A page opened later starts with the server's history: nothing is published now, so
    # a written peak in its throughput chart can only come from GET /api/history.
    page.wait_for_timeout(3000)
    later = open_page(context, f"{api}/flows/users")
    chart = later.get_by_test_id("chart-throughput")
    expect(chart).to_have_attribute("data-peak-written", re.compile(r"^(0\.\d*[1-9]|[1-9])"))
    assert int(chart.get_attribute("data-points") or 0) >= 3
    expect(later.get_by_test_id("stat-written")).to_have_text("120")
    expect(later.get_by_test_id("stat-dropped")).to_have_count(0)  # JetStream never drops
    assert not later.errors  # type: ignore[attr-defined]
    later.close()

    with world.trickle({"users": 40, "orders": 15}):
        page.wait_for_timeout(9000)  # nine snapshots of live traffic for the charts
        spark = page.get_by_test_id("flow-sparkline-users")
        assert int(spark.get_attribute("data-points") or 0) >= 5
        assert float(spark.get_attribute("data-last-written-rate") or 0) > 0
        expect(page.get_by_test_id("system-memory")).to_contain_text("MiB")
        screenshot(page, shots, "dashboard-overview")

        page.get_by_test_id("flow-link-orders").click()
        expect(page).to_have_url(f"{api}/flows/orders")
        expect(page.get_by_test_id("flow-page")).to_be_visible()
        letters = page.get_by_test_id("dead-letter")
        expect(letters).to_have_count(2)
        expect(letters.first.get_by_test_id("dead-letter-error")).to_contain_text("JSON")
        expect(page.get_by_test_id("dest-status-primary")).to_have_text("running")
        page.wait_for_timeout(4000)
        chart = page.get_by_test_id("chart-throughput")
        assert float(chart.get_attribute("data-peak-written") or 0) > 0
        assert float(chart.get_attribute("data-peak-received") or 0) > 0
        assert int(page.get_by_test_id("chart-latency").get_attribute("data-destinations")) == 1
        assert int(page.get_by_test_id("chart-lag").get_attribute("data-points") or 0) >= 3
        errors_chart = page.get_by_test_id("chart-errors")
        # The page keeps one history across client-side navigation: the two dead letters
        # written while the overview was shown are in this chart too.
        assert float(errors_chart.get_attribute("data-peak-dead-lettered") or 0) > 0
        assert number(page, "stat-written") >= 40
        screenshot(page, shots, "dashboard-flow")

        phone = browser.new_context(
            viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
        )
        try:
            small = open_page(phone, f"{api}/")
            expect(small.get_by_test_id("flow-card-users")).to_be_visible()
            small.wait_for_timeout(6000)
            assert no_horizontal_scroll(small)
            screenshot(small, shots, "dashboard-phone")
            small.goto(f"{api}/flows/orders")  # a client route loaded directly
            expect(small.get_by_test_id("dest-row-primary")).to_be_visible()
            small.wait_for_timeout(4000)  # a freshly loaded page: a few snapshots for the charts
            assert int(small.get_by_test_id("chart-throughput").get_attribute("data-points")) >= 2
            assert no_horizontal_scroll(small)
            screenshot(small, shots, "dashboard-phone-flow", keep=False)
        finally:
            phone.close()

        dark = browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme="dark")
        try:
            night = open_page(dark, f"{api}/flows/users")
            expect(night.get_by_test_id("stat-written")).not_to_have_text("0")
            night.wait_for_timeout(8000)  # a fresh page: let its charts fill a little
            assert dark_background(night)
            screenshot(night, shots, "dashboard-dark")
        finally:
            dark.close()
    assert not page.errors  # type: ignore[attr-defined]
    assert dark_background(page) is False


def test_pause_resume_and_reset_from_the_page(
    world: World, serve: Any, context: Any, shots: Path
) -> None:
    """Pause (after the token dialog) stops writing, events wait in the stream; resume
    writes every one of them; reset zeroes the counters."""
    api = serve(world.config(token=TOKEN)).wait_started()
    page = open_page(context, f"{api}/")
    world.publish("users", world.events("users", range(30)))
    wait_counter(page, "flow-written-users", 30, 3.0)

    page.get_by_test_id("flow-toggle-users").click()
    dialog = page.get_by_test_id("token-dialog")
    expect(dialog).to_be_visible()  # the server answered 401
    page.get_by_test_id("token-input").fill("wrong-token")
    page.get_by_test_id("token-submit").click()
    expect(page.get_by_test_id("token-rejected")).to_be_visible()
    page.get_by_test_id("token-input").fill(TOKEN)
    page.get_by_test_id("token-submit").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_test_id("flow-status-users")).to_have_text("paused", timeout=5000)
    assert page.evaluate("sessionStorage.getItem('cdcsync.token')") == TOKEN

    world.publish("users", world.events("users", range(30, 80)))
    wait_counter(page, "flow-pending-users", 50, 8.0)  # held in the stream, counted as lag
    page.wait_for_timeout(1500)  # more snapshots: the paused flow writes nothing
    assert number(page, "flow-written-users") == 30
    assert world.ids("users") == list(range(30))
    expect(page.get_by_test_id("flow-toggle-users")).to_have_text("▶ Resume")
    screenshot(page, shots, "dashboard-paused", keep=False)

    page.get_by_test_id("flow-toggle-users").click()
    expect(dialog).to_be_hidden()  # the stored token is used, no second prompt
    expect(page.get_by_test_id("flow-status-users")).to_have_text("running", timeout=5000)
    wait_counter(page, "flow-written-users", 80, 10.0)
    assert world.ids("users") == list(range(80))  # nothing lost, nothing extra

    world.publish("orders", world.events("orders", range(5)))
    wait_counter(page, "flow-written-orders", 5, 3.0)
    page.get_by_test_id("reset-counters").click()
    expect(page.get_by_test_id("action-notice")).to_have_text("Counters reset")
    wait_counter(page, "flow-written-users", 0, 3.0)
    wait_counter(page, "flow-written-orders", 0, 3.0)
    wait_counter(page, "total-written", 0, 3.0)
    stats = api_stats(api)
    assert stats["users"]["received"] == stats["users"]["written"] == 0
    assert world.ids("users") == list(range(80))  # reset touches counters, not data

    world.publish("users", world.events("users", range(80, 85)))
    wait_counter(page, "flow-written-users", 5, 3.0)  # counting again from zero


def test_stopped_postgres_turns_the_flow_degraded_with_the_reason(
    world: World, serve: Any, context: Any, shots: Path
) -> None:
    """With its PostgreSQL stopped, the flow's badge turns "degraded" and the page shows the
    destination's error; once PostgreSQL is back it recovers and every event lands."""
    with PostgresServer() as pg:
        world.create_schema(pg.url)
        api = serve(world.config(("users",), pg_url=pg.url)).wait_started()
        page = open_page(context, f"{api}/flows/users")
        world.publish("users", world.events("users", range(5)))
        wait_counter(page, "stat-written", 5, 3.0)
        expect(page.get_by_test_id("flow-status")).to_have_text("running")

        pg.stop()
        world.publish("users", world.events("users", range(5, 8)))
        expect(page.get_by_test_id("flow-status")).to_have_text("degraded", timeout=20_000)
        expect(page.get_by_test_id("dest-status-primary")).to_have_text("degraded")
        error = page.get_by_test_id("dest-error-primary").inner_text()
        assert error.strip() not in ("", "\N{EN DASH}")
        api_error = api_stats(api)["users"]["destinations"][0]["last_error"]
        assert api_error, "the API reports no error while the page shows one"
        # Once a reconnect has failed, the error names the cause, not just "not connected".
        expect(page.get_by_test_id("dest-error-primary")).to_contain_text(
            re.compile("refused|connect call failed", re.IGNORECASE), timeout=20_000
        )
        problems = page.get_by_test_id("flow-problems")
        expect(problems).to_contain_text("destination primary is failing")
        page.wait_for_timeout(1500)
        screenshot(page, shots, "dashboard-degraded")

        page.get_by_test_id("back-to-overview").click()
        expect(page.get_by_test_id("flow-status-users")).to_have_text("degraded")
        expect(page.get_by_test_id("flow-problem-users")).to_contain_text("primary:")
        assert number(page, "total-unhealthy") == 1

        pg.start()
        expect(page.get_by_test_id("flow-status-users")).to_have_text("running", timeout=45_000)
        wait_counter(page, "flow-written-users", 8, 10.0)
        assert world.ids("users", pg.url) == list(range(8))


def test_connection_lost_banner_and_reconnect(world: World, serve: Any, context: Any) -> None:
    """Stopping the server shows the lost-connection banner; a new server on the same address
    is picked up by itself (no reload) and the banner goes."""
    bind = f"127.0.0.1:{free_port()}"
    first = serve(world.config(("users",), bind=bind), name="first")
    api = first.wait_started()
    page = open_page(context, f"{api}/")
    banner = page.get_by_test_id("connection-banner")
    expect(banner).to_be_hidden()
    world.publish("users", world.events("users", range(3)))
    wait_counter(page, "flow-written-users", 3, 3.0)

    first.stop()
    expect(banner).to_be_visible(timeout=10_000)
    expect(page.get_by_test_id("link-state")).to_have_attribute("data-state", "lost")
    assert number(page, "flow-written-users") == 3  # the last figures stay on screen

    second = serve(world.config(("users",), bind=bind), name="second")
    assert second.wait_started() == api
    expect(banner).to_be_hidden(timeout=20_000)
    expect(page.get_by_test_id("link-state")).to_have_attribute("data-state", "live")
    world.publish("users", world.events("users", range(3, 7)))
    wait_counter(page, "flow-written-users", 4, 3.0)  # the new process counts from zero
    assert world.ids("users") == list(range(7))


def test_pending_shows_zero_within_a_second_of_the_drain(
    world: World, serve: Any, context: Any
) -> None:
    """Once every message of the stream is acknowledged (the consumer's pending is 0 on the
    server), the overview shows Pending 0 within about a second, not the figure it had
    before: here a paused flow's backlog of 29 drains right after resume."""
    api = serve(world.config(("users",))).wait_started()
    page = open_page(context, f"{api}/")
    post(api, "/api/flows/users/pause")
    expect(page.get_by_test_id("flow-status-users")).to_have_text("paused", timeout=5000)
    world.publish("users", world.events("users", range(29)))
    wait_counter(page, "flow-pending-users", 29, 8.0)

    with world.watch_drain("users", delivered=29) as drain:
        page.get_by_test_id("flow-toggle-users").click()
        drained_at = drain.wait(15.0)
    # Polled every animation frame, so the time is the page's, not Playwright's retry step.
    page.wait_for_function(
        "document.querySelector('[data-testid=flow-pending-users]').textContent === '0'",
        polling="raf",
        timeout=10_000,
    )
    shown_after = time.monotonic() - drained_at
    print(f"Pending 0 shown {shown_after:.2f} s after the consumer drained")
    assert world.ids("users") == list(range(29))
    assert shown_after < 1.3, f"Pending 0 shown only {shown_after:.2f} s after the drain"


def eighty_dead_letters(schema: str) -> list[bytes]:
    """80 orders events that fail four ways: 44 bad values, 20 not JSON, 10 with an unknown
    column, 6 for an unknown table (newest last)."""
    out = [envelope("orders", "insert", {"id": i, "total": f"{i},50"}) for i in range(44)]
    out += [b"not json %d" % i for i in range(20)]
    out += [envelope("orders", "insert", {"id": i, "totl": 1}) for i in range(10)]
    out += [envelope("orderz", "insert", {"id": i}) for i in range(6)]
    return out


def test_flow_page_groups_dead_letters_by_reason_and_pages_them(
    world: World, serve: Any, context: Any, shots: Path
) -> None:
    """With 80 dead letters of four kinds the flow page stays under 2,000 px: each reason once
    with its count, the letters ten at a time (all of them, or one reason's), and the
    `cdcsync dlq` command for the rest."""
    api = serve(world.config(("orders",))).wait_started()
    world.publish("orders", eighty_dead_letters(world.unique))
    page = open_page(context, f"{api}/flows/orders")
    wait_counter(page, "stat-dead-lettered", 80, 5.0)

    reasons = page.get_by_test_id("dead-letter-reason")
    expect(reasons).to_have_count(4)
    counts = [int(c) for c in page.get_by_test_id("dead-letter-reason-count").all_inner_texts()]
    assert counts == [44, 20, 10, 6]
    expect(reasons.nth(0)).to_contain_text('invalid input syntax for type numeric: "…"')
    expect(reasons.nth(2)).to_contain_text("unknown column(s) 'totl'")
    letters = page.get_by_test_id("dead-letter")
    expect(letters).to_have_count(10)
    expect(page.get_by_test_id("dead-letters-range")).to_have_text(f"1{DASH}10 of 80")
    page.wait_for_timeout(1000)  # charts drawn
    height = page.evaluate("document.documentElement.scrollHeight")
    print(f"flow page with 80 dead letters: {height} px")
    assert height < 2000, f"the flow page is {height} px tall"
    screenshot(page, shots, "dashboard-dead-letters")

    seen: list[str] = []
    for first in range(1, 80, 10):
        expect(page.get_by_test_id("dead-letters-range")).to_have_text(
            f"{first}{DASH}{first + 9} of 80"
        )
        expect(letters).to_have_count(10)
        seen += letters.get_by_test_id("dead-letter-seq").all_inner_texts()
        if first < 71:
            page.get_by_test_id("dead-letters-older").click()
    expect(page.get_by_test_id("dead-letters-older")).to_be_disabled()
    assert sorted(seen) == sorted(f"#{seq}" for seq in range(1, 81))  # each letter once

    reasons.nth(2).click()  # only the unknown column's ten
    expect(page.get_by_test_id("dead-letters-range")).to_have_text(f"1{DASH}10 of 10")
    expect(letters).to_have_count(10)
    for error in letters.get_by_test_id("dead-letter-error").all_inner_texts():
        assert "unknown column(s) 'totl'" in error
    expect(page.get_by_test_id("dead-letters-older")).to_be_disabled()
    page.get_by_test_id("dead-letters-all").click()
    expect(page.get_by_test_id("dead-letters-range")).to_have_text(f"1{DASH}10 of 80")
    expect(page.get_by_test_id("dlq-command")).to_contain_text("cdcsync dlq list --flow orders")
    assert not page.errors  # type: ignore[attr-defined]
