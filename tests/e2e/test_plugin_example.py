"""The example destination in docs/plugins.md works as printed: it passes the destination
conformance suite and a real flow fills it, so the page cannot drift from the API."""

from __future__ import annotations

import importlib.util
import json
import re
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import trio
from harness import Env, envelope, wait_until

from cdcsync import registry
from cdcsync.conformance import check_destination

PAGE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def example_source() -> str:
    """The first Python block after the example's heading, exactly as the page prints it."""
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("### A complete example", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "docs/plugins.md lost its example destination"
    return match.group(1)


@pytest.fixture
def example(tmp_path: Path) -> Iterator[ModuleType]:
    """The page's example as an importable module, registered as destination `sqlite`."""
    path = tmp_path / "cdcsync_sqlite.py"
    path.write_text(example_source())
    spec = importlib.util.spec_from_file_location("cdcsync_sqlite", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["cdcsync_sqlite"] = module
    spec.loader.exec_module(module)
    registry._cache.pop("destination", None)
    registry.destinations()["sqlite"] = module.SPEC
    try:
        yield module
    finally:
        registry._cache.pop("destination", None)
        sys.modules.pop("cdcsync_sqlite", None)


def test_the_example_imports_only_the_plugin_api() -> None:
    """Like the built-ins, the example needs nothing from cdcsync but `cdcsync.plugin`."""
    imports = re.findall(r"^(?:from|import) (cdcsync[\w.]*)", example_source(), flags=re.M)
    assert imports and all(i == "cdcsync.plugin" for i in imports), imports


async def test_the_example_passes_the_conformance_suite(
    example: ModuleType, tmp_path: Path
) -> None:
    """The destination protocol's checks, against the page's code and a real SQLite file."""
    options = example.SqliteOptions(str(tmp_path / "conformance.db"), "id")
    await check_destination(
        lambda: example.SqliteDestination("conformance", "local", options), table="items"
    )
    docs = sqlite3.connect(tmp_path / "conformance.db").execute("SELECT count(*) FROM documents")
    assert docs.fetchone()[0] == 29  # what the suite wrote, once each


async def test_a_flow_fills_the_example(
    example: ModuleType, env: Env, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Events through real NATS land in the example's SQLite file, a bad one as a dead letter
    that `dead_letters()` lists, exactly once across a restart."""
    db = tmp_path / "flow.db"
    flow = env.flow_yaml().replace("type: postgres", f"type: sqlite\n        path: {db}", 1)
    flow = "\n".join(
        line
        for line in flow.splitlines()
        if not line.strip().startswith(("url:", "schema:", "state_schema:", "conflict_resolution:"))
    )
    config = env.config(flow + "\n")
    subject = env.subject() + ".x"
    async with env.running(config, nursery) as running:
        await env.publish(subject, [envelope("t", "insert", {"id": i, "v": i}) for i in range(5)])
        await env.publish(subject, [b"not json"])
        sink = running.service.flows[0].sinks[0]

        async def arrived() -> bool:
            return list(sink.checkpoints().values()) == [6]

        await wait_until(arrived, what="6 messages through the example destination")
        letters = await sink.dead_letters(limit=10)
        assert [(d.stream_seq, d.error[:14]) for d in letters] == [(6, "not valid JSON")]
    async with env.running(config, nursery) as running:  # resumes after the checkpoint
        await env.publish(subject, [envelope("t", "update", {"id": 1, "v": 100})])
        sink = running.service.flows[0].sinks[0]

        async def updated() -> bool:
            return list(sink.checkpoints().values()) == [7]

        await wait_until(updated, what="the update after the restart")
        assert running.service.flows[0].stats.destination("primary").written == 1
    rows = sqlite3.connect(db).execute("SELECT key, doc FROM documents ORDER BY key").fetchall()
    assert [(json.loads(k), json.loads(d)["v"]) for k, d in rows] == [
        (0, 0),
        (1, 100),
        (2, 2),
        (3, 3),
        (4, 4),
    ]
