"""Conflict modes (upsert, replace, ignore) and deletes against real PostgreSQL and MySQL
tables (each test runs against both: the `target` fixture)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from harness import Env, envelope

ITEMS = (
    "CREATE TABLE items (id int PRIMARY KEY, name text, qty int DEFAULT 5, "
    "note text DEFAULT 'none');"
    "INSERT INTO items VALUES (1, 'one', 1, 'n1'), (2, 'two', 2, 'n2'), (3, 'three', 3, 'n3');"
)
ONE_BATCH = "{max_size: 1000, max_delay_ms: 200}"


def item(i: int, name: str | None, qty: int | None, note: str | None) -> dict[str, Any]:
    return {"id": i, "name": name, "qty": qty, "note": note}


# Against stored rows 1, 2, 3: an insert of an existing key, an update of present columns,
# a delete, an insert of a new key and an update of a missing key.
EVENTS = [
    envelope("items", "insert", {"id": 1, "name": "uno"}),
    envelope("items", "update", {"id": 2, "qty": 20}),
    envelope("items", "delete", {"id": 3}),
    envelope("items", "insert", {"id": 4, "name": "four"}),
    envelope("items", "update", {"id": 5, "name": "five"}),
]
EXPECTED = {
    # insert, or update only the columns present
    "upsert": [
        item(1, "uno", 1, "n1"),
        item(2, "two", 20, "n2"),
        item(4, "four", 5, "none"),
        item(5, "five", 5, "none"),
    ],
    # the row becomes exactly the event's data; absent columns get their default
    "replace": [
        item(1, "uno", 5, "none"),
        item(2, None, 20, "none"),
        item(4, "four", 5, "none"),
        item(5, "five", 5, "none"),
    ],
    # insert when new; an existing row is untouched; an update of a missing row is skipped
    "ignore": [
        item(1, "one", 1, "n1"),
        item(2, "two", 2, "n2"),
        item(4, "four", 5, "none"),
    ],
}


@pytest.mark.parametrize("mode", ["upsert", "replace", "ignore"])
async def test_conflict_mode_against_stored_rows(
    env: Env, nursery: trio.Nursery, mode: str, target: str
) -> None:
    """Each conflict mode gives its documented result for inserts, updates and deletes."""
    await env.create_schema(ITEMS)
    subject = env.subject() + ".items"
    async with env.running(env.config(env.flow_yaml(mode=mode)), nursery):
        # one event per batch: every event meets the stored row, not a compacted one
        for seq, event in enumerate(EVENTS, 1):
            await env.publish(subject, [event])
            await env.applied(seq)
    assert await env.rows("items") == EXPECTED[mode]
    assert await env.dead_letters() == []


@pytest.mark.parametrize("mode", ["upsert", "replace", "ignore"])
async def test_conflict_mode_in_one_batch(
    env: Env, nursery: trio.Nursery, mode: str, target: str
) -> None:
    """The same events give the same rows when they all arrive in one batch."""
    await env.create_schema(ITEMS)
    await env.ensure_stream([f"{env.subject()}.>"])
    await env.publish(env.subject() + ".items", EVENTS)
    async with env.running(env.config(env.flow_yaml(mode=mode, batch=ONE_BATCH)), nursery):
        await env.applied(len(EVENTS))
    assert await env.rows("items") == EXPECTED[mode]
    assert await env.dead_letters() == []


@pytest.mark.parametrize("mode", ["upsert", "replace", "ignore"])
async def test_delete_works_in_every_mode(
    env: Env, nursery: trio.Nursery, mode: str, target: str
) -> None:
    """A delete removes the row in every mode; deleting a missing row is harmless."""
    await env.create_schema(ITEMS)
    subject = env.subject() + ".items"
    async with env.running(env.config(env.flow_yaml(mode=mode)), nursery):
        await env.publish(
            subject,
            [
                envelope("items", "insert", {"id": 7, "name": "seven"}),
                envelope("items", "delete", {"id": 1}),
                envelope("items", "delete", {"id": 99}),
                # a delete may carry the whole old row
                envelope("items", "delete", {"id": 2, "name": "two", "qty": 2, "note": "n2"}),
            ],
        )
        await env.applied(4)
        await env.publish(subject, [envelope("items", "delete", {"id": 7})])
        await env.applied(5)
    assert await env.rows("items") == [item(3, "three", 3, "n3")]
    assert await env.dead_letters() == []


@pytest.mark.parametrize("mode", ["upsert", "replace", "ignore"])
async def test_per_key_order_inside_one_batch(
    env: Env, nursery: trio.Nursery, mode: str, target: str
) -> None:
    """Insert, update, delete, insert of one key in one batch leave exactly the last insert."""
    await env.create_schema(ITEMS)
    events = []
    for i in (1, 10, 11, 12):  # key 1 is stored with other values; 10..12 are new
        events += [
            envelope("items", "insert", {"id": i, "name": "a", "qty": 1}),
            envelope("items", "update", {"id": i, "note": "changed", "qty": 2}),
            envelope("items", "delete", {"id": i}),
            envelope("items", "insert", {"id": i, "name": "b"}),
        ]
    # key 13: the same story interleaved with other keys, ending deleted
    events += [
        envelope("items", "insert", {"id": 13, "name": "a"}),
        envelope("items", "update", {"id": 2, "name": "two!"}),
        envelope("items", "delete", {"id": 13}),
        envelope("items", "insert", {"id": 13, "name": "c", "note": "x"}),
        envelope("items", "update", {"id": 13, "qty": 9}),
        envelope("items", "delete", {"id": 13}),
    ]
    await env.ensure_stream([f"{env.subject()}.>"])
    await env.publish(env.subject() + ".items", events)  # all of it waits for the first batch
    async with env.running(env.config(env.flow_yaml(mode=mode, batch=ONE_BATCH)), nursery):
        await env.applied(len(events))
    rows = {r["id"]: r for r in await env.rows("items")}
    for i in (1, 10, 11, 12):
        assert rows[i] == item(i, "b", 5, "none")
    assert 13 not in rows
    assert (
        rows[2]
        == {
            "upsert": item(2, "two!", 2, "n2"),
            "replace": item(2, "two!", 5, "none"),
            "ignore": item(2, "two", 2, "n2"),
        }[mode]
    )
    assert sorted(rows) == [1, 2, 3, 10, 11, 12]
    assert await env.dead_letters() == []


@pytest.mark.parametrize("mode", ["upsert", "replace", "ignore"])
async def test_update_of_missing_row(
    env: Env, nursery: trio.Nursery, mode: str, target: str
) -> None:
    """An update of a missing row inserts it in upsert and replace mode and is skipped in ignore."""
    await env.create_schema(ITEMS)
    async with env.running(env.config(env.flow_yaml(mode=mode)), nursery):
        await env.publish(
            env.subject() + ".items", [envelope("items", "update", {"id": 50, "qty": 8})]
        )
        await env.applied(1)
    rows = await env.sql(f"SELECT * FROM {env.schema}.items WHERE id = 50")
    expected = [] if mode == "ignore" else [item(50, None, 8, "none")]
    assert [dict(r) for r in rows] == expected
    assert await env.dead_letters() == []


@pytest.mark.parametrize("mode", ["upsert", "replace", "ignore"])
async def test_all_key_table_takes_duplicate_inserts(
    env: Env, nursery: trio.Nursery, mode: str, target: str
) -> None:
    """A table whose every column is in the primary key accepts duplicate inserts and deletes."""
    await env.create_schema(
        "CREATE TABLE members (a int, b int, PRIMARY KEY (a, b));INSERT INTO members VALUES (1, 1);"
    )
    subject = env.subject() + ".members"
    batch = [
        envelope("members", "insert", {"a": 1, "b": 1}),  # already stored
        envelope("members", "insert", {"a": 1, "b": 2}),
        envelope("members", "insert", {"a": 1, "b": 2}),  # duplicate in the same batch
        envelope("members", "upsert", {"a": 2, "b": 1}),
        envelope("members", "insert", {"a": 3, "b": 3}),
        envelope("members", "delete", {"a": 3, "b": 3}),
    ]
    async with env.running(env.config(env.flow_yaml(mode=mode)), nursery):
        await env.publish(subject, batch)
        await env.applied(len(batch))
        await env.publish(subject, [envelope("members", "insert", {"a": 1, "b": 2})])
        await env.applied(len(batch) + 1)
    rows = await env.rows("members", order="a, b")
    assert rows == [{"a": 1, "b": 1}, {"a": 1, "b": 2}, {"a": 2, "b": 1}]
    assert await env.dead_letters() == []


async def test_per_key_order_when_producers_spell_the_key_differently(
    env: Env, nursery: trio.Nursery, target: str
) -> None:
    """Events naming one row with differently typed key values ("7" and 7) keep their order."""
    await env.create_schema(ITEMS)
    events = [
        envelope("items", "insert", {"id": "7", "name": "a"}),
        envelope("items", "delete", {"id": 7}),
        envelope("items", "delete", {"id": "1"}),
        envelope("items", "insert", {"id": 1, "name": "again"}),
    ]
    await env.ensure_stream([f"{env.subject()}.>"])
    await env.publish(env.subject() + ".items", events)
    async with env.running(env.config(env.flow_yaml(batch=ONE_BATCH)), nursery):
        await env.applied(len(events))
    # applied one by one: 7 is inserted then deleted; 1 is deleted then inserted afresh
    rows = {r["id"]: r for r in await env.rows("items")}
    assert 7 not in rows
    assert rows[1] == item(1, "again", 5, "none")
