"""Wire formats end to end: Debezium, the cdc envelope, and both mixed in one stream (auto).

Every test runs from a JetStream stream and from a 4-partition Kafka topic the events are
produced to keyed by row key, as Debezium does (tombstones as null values), and those that
take the `target` fixture into both PostgreSQL and MySQL. The expectations are the same.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import trio
from harness import Env, envelope
from kafkaenv import KafkaEnv

# The change events of the Debezium PostgreSQL connector documentation (see its README).
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CUSTOMERS = (
    "CREATE TABLE customers (id int PRIMARY KEY, first_name text, last_name text, email text);"
)
UNAVAILABLE = "__debezium_unavailable_value"


@pytest.fixture(params=["nats", "kafka"])
def kafka_bootstrap(request: pytest.FixtureRequest) -> str | None:
    if request.param == "kafka":
        return str(request.getfixturevalue("kafka_broker").bootstrap)
    return None


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"debezium-postgres-{name}.json").read_text())


def dbz(op: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> bytes:
    """A bare Debezium payload for `customers`, shaped like the update/delete fixtures."""
    event = copy.deepcopy(fixture("update"))
    event.update(op=op, before=before, after=after)
    return json.dumps(event).encode()


def created(row: dict[str, Any]) -> bytes:
    """The create fixture (schema/payload wrapper) with its `after` image replaced."""
    event = fixture("create")
    event["payload"]["after"] = row
    return json.dumps(event).encode()


def person(i: int, **cols: Any) -> dict[str, Any]:
    row = {"id": i, "first_name": f"f{i}", "last_name": f"l{i}", "email": f"{i}@x"}
    row.update(cols)
    return row


async def test_debezium_fixtures_create_update_delete(
    env: Env, nursery: trio.Nursery, target: str
) -> None:
    """The documented Debezium create, update and delete insert, change, then remove a row."""
    await env.create_schema(CUSTOMERS)
    subject = env.subject() + ".customers"
    raw = {n: (FIXTURES / f"debezium-postgres-{n}.json").read_bytes() for n in ("create", "update")}
    async with env.running(env.config(env.flow_yaml(fmt="debezium")), nursery):
        await env.publish(subject, [raw["create"]])
        await env.applied(1)
        assert await env.rows("customers") == [
            {"id": 1, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"}
        ]
        await env.publish(subject, [raw["update"]])
        await env.applied(2)
        assert await env.rows("customers") == [
            {
                "id": 1,
                "first_name": "Anne Marie",
                "last_name": "Kretchmar",
                "email": "annek@noanswer.org",
            }
        ]
        await env.publish(subject, [(FIXTURES / "debezium-postgres-delete.json").read_bytes()])
        await env.applied(3)
        assert await env.rows("customers") == []
    assert await env.dead_letters() == []


async def test_auto_format_mixes_envelopes_and_debezium(
    env: Env, nursery: trio.Nursery, target: str
) -> None:
    """With format auto, cdc envelopes and Debezium events interleaved in one stream all apply."""
    await env.create_schema(CUSTOMERS)
    subject = env.subject() + ".customers"
    events = [
        envelope("customers", "insert", person(1)),
        created(person(2)),
        dbz("u", {"id": 1}, person(1, first_name="F1")),
        envelope("customers", "update", {"id": 2, "email": "two@x"}),
        dbz("r", None, person(3)),  # snapshot read
        envelope("customers", "snapshot", person(4)),
        envelope("customers", "insert", person(5)),
        dbz("d", {"id": 5}, None),
        created(person(6)),
        envelope("customers", "delete", {"id": 6}),
        # the unmodified fixture (schema/payload wrapper): Anne, id 1
        (FIXTURES / "debezium-postgres-create.json").read_bytes(),
    ]
    async with env.running(env.config(env.flow_yaml(fmt="auto")), nursery):
        await env.publish(subject, events)
        await env.applied(len(events))
    assert await env.rows("customers") == [
        {"id": 1, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"},
        person(2, email="two@x"),
        person(3),
        person(4),
    ]
    assert await env.dead_letters() == []


@pytest.mark.parametrize("mode", ["upsert", "replace"])
async def test_unavailable_value_never_overwrites(
    env: Env, nursery: trio.Nursery, mode: str, target: str
) -> None:
    """A column sent as __debezium_unavailable_value keeps its stored value, in any batch shape."""
    await env.create_schema(CUSTOMERS)
    subject = env.subject() + ".customers"
    await env.execute(
        f"INSERT INTO {env.schema}.customers VALUES (1, 'f1', 'l1', '1@x'), (2, 'f2', 'l2', '2@x')"
    )
    # Published before cdcsync starts, so that they arrive as one batch: rows 1 and 2 are
    # stored, row 3 is created and updated inside the batch.
    await env.ensure_stream([f"{env.subject()}.>"])
    await env.publish(
        subject,
        [
            dbz("u", {"id": 1}, person(1, first_name="new1", email=UNAVAILABLE)),
            dbz("u", {"id": 2}, person(2, email=UNAVAILABLE, last_name=UNAVAILABLE)),
            created(person(3)),
            dbz("u", {"id": 3}, person(3, first_name="new3", email=UNAVAILABLE)),
            dbz("u", {"id": 3}, person(3, last_name="L3", email=UNAVAILABLE)),
        ],
    )
    flow = env.flow_yaml(fmt="debezium", mode=mode, batch="{max_size: 1000, max_delay_ms: 200}")
    async with env.running(env.config(flow), nursery):
        await env.applied(5)
        # and once more against the rows as this run stored them
        await env.publish(
            subject,
            [
                dbz("u", {"id": 1}, person(1, first_name="newer1", email=UNAVAILABLE)),
                dbz("u", {"id": 3}, person(3, email=UNAVAILABLE, last_name=UNAVAILABLE)),
            ],
        )
        await env.applied(7)
    assert await env.rows("customers") == [
        person(1, first_name="newer1"),
        person(2),
        person(3, last_name="L3"),
    ]
    assert await env.dead_letters() == []


@pytest.mark.parametrize("mode", ["upsert", "replace", "ignore"])
async def test_primary_key_change_leaves_only_new_row(
    env: Env, nursery: trio.Nursery, mode: str, target: str
) -> None:
    """A key change (delete old key, tombstone, create new key) ends with only the new row."""
    await env.create_schema(CUSTOMERS)
    subject = env.subject() + ".customers"
    async with env.running(env.config(env.flow_yaml(fmt="debezium", mode=mode)), nursery):
        await env.publish(subject, [created(person(1)), created(person(2))])
        await env.applied(2)
        await env.publish(
            subject,
            [
                dbz("d", {"id": 1}, None),
                b"",
                created(person(10, first_name="moved")),
                # and once more inside a single batch, from a key created in it
                created(person(20)),
                dbz("d", {"id": 20}, None),
                b"",
                created(person(21)),
            ],
        )
        await env.applied(9)
    assert await env.rows("customers") == [
        person(2),
        person(10, first_name="moved"),
        person(21),
    ]
    assert await env.dead_letters() == []


TRUNCATE = {
    "before": None,
    "after": None,
    "source": fixture("update")["source"],
    "op": "t",
    "ts_ms": 1559033904999,
}


@pytest.mark.parametrize("enabled", [False, True])
async def test_truncate_applied_only_when_enabled(
    env: Env, nursery: trio.Nursery, enabled: bool, target: str
) -> None:
    """Debezium op t empties the table only with `truncate: true`; otherwise it is ignored."""
    if isinstance(env, KafkaEnv):
        # A truncate has no key, so on Kafka it is ordered only against the events of its own
        # partition (Debezium's documentation says so): the expectations hold on one.
        env.partitions = 1
    await env.create_schema(CUSTOMERS)
    subject = env.subject() + ".customers"
    extra = "\n        truncate: true" if enabled else ""
    flow = env.flow_yaml(fmt="debezium", extra_dest=extra)
    async with env.running(env.config(flow), nursery):
        await env.publish(subject, [created(person(1)), created(person(2))])
        await env.applied(2)
        await env.publish(subject, [json.dumps(TRUNCATE).encode(), created(person(3))])
        await env.applied(4)
        # a truncate and rows on both sides of it inside one batch
        await env.publish(
            subject, [created(person(4)), json.dumps(TRUNCATE).encode(), created(person(5))]
        )
        await env.applied(7)
    ids = [r["id"] for r in await env.rows("customers")]
    assert ids == ([5] if enabled else [1, 2, 3, 4, 5])
    assert await env.dead_letters() == []


@pytest.mark.parametrize("fmt", ["debezium", "auto"])
async def test_tombstone_is_skipped_without_dead_letter(
    env: Env, nursery: trio.Nursery, fmt: str, target: str
) -> None:
    """A Debezium tombstone (empty body) changes nothing and is not dead-lettered."""
    await env.create_schema(CUSTOMERS)
    subject = env.subject() + ".customers"
    async with env.running(env.config(env.flow_yaml(fmt=fmt)), nursery):
        await env.publish(
            subject, [created(person(1)), b"", dbz("u", {"id": 1}, person(1, email="e")), b""]
        )
        await env.applied(4)
    assert await env.rows("customers") == [person(1, email="e")]
    assert await env.dead_letters() == []
