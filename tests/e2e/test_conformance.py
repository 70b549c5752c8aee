"""The destination conformance suite (cdcsync.conformance) passes for the built-in PostgreSQL
and MySQL destinations, against real databases, and for a third-party entry-point
destination."""

from __future__ import annotations

from harness import Env

from cdcsync import registry
from cdcsync.conformance import check_destination


async def test_sql_destinations_conform(env: Env, target: str) -> None:
    """Checkpoint durability, redelivery skipping, dead letters: the real PostgreSQL and
    MySQL sinks."""
    await env.create_schema("CREATE TABLE items (id int PRIMARY KEY, name text);")
    await check_destination(lambda: env.destination("conformance"), table="items")
    # What the suite reported matches the database: 10 + 3 + 5 rows of the stream, 8 + 3 of
    # the two partitions; 1 dead letter; a checkpoint row per partition.
    assert await env.count("items") == 29
    assert len(await env.dead_letters()) == 1
    rows = await env.sql(
        f'SELECT stream, "partition", last_seq FROM {env.state}.checkpoints ORDER BY 1, 2'
    )
    assert [tuple(r) for r in rows] == [
        ("CONFORMANCE", 0, 20),
        ("conformance.topic", 0, 6),
        ("conformance.topic", 1, 3),
    ]


async def test_entry_point_destination_conforms(memory_plugin: None, unique: str) -> None:
    """A third-party destination found through entry points passes the same suite."""
    spec = registry.destinations()["memory"]
    options = spec.parse({"bucket": unique})
    await check_destination(lambda: spec.factory("conformance", "mem", options), table="items")
