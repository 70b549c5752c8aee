"""The destination conformance suite (cdcsync.conformance) passes for the built-in PostgreSQL
destination, against a real database, and for a third-party entry-point destination."""

from __future__ import annotations

from harness import Env

from cdcsync import registry
from cdcsync.conformance import check_destination
from cdcsync.sinks.postgres import PostgresOptions, PostgresSink


async def test_postgres_destination_conforms(env: Env) -> None:
    """Checkpoint durability, redelivery skipping, dead letters: the real PostgreSQL sink."""
    await env.create_schema("CREATE TABLE items (id int PRIMARY KEY, name text);")
    options = PostgresOptions(url=env.pg_url, schema=env.schema, state_schema=env.state)
    await check_destination(lambda: PostgresSink("conformance", "primary", options), table="items")
    # What the suite reported matches the database: 10 + 3 + 5 rows, 1 dead letter, checkpoint 20.
    assert await env.count("items") == 18
    assert len(await env.dead_letters()) == 1
    rows = await env.sql(f"SELECT last_seq FROM {env.state}.checkpoints")
    assert [r[0] for r in rows] == [20]


async def test_entry_point_destination_conforms(memory_plugin: None, unique: str) -> None:
    """A third-party destination found through entry points passes the same suite."""
    spec = registry.destinations()["memory"]
    options = spec.parse({"bucket": unique})
    await check_destination(lambda: spec.factory("conformance", "mem", options), table="items")
