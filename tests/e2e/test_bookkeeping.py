"""cdcsync's own tables (checkpoints, dead letters) are out of every event's reach, an
upgrade from cdcsync 0.1's tables keeps every position, and only the tables the operator
allowed are written."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from harness import Env, envelope, wait_until

from cdcsync import config as cfg
from cdcsync.bridge import aio
from cdcsync.errors import ConfigError

USERS = "CREATE TABLE users (id int PRIMARY KEY, name text);"


def debezium(op: str, table: str, row: dict[str, Any]) -> bytes:
    image = "before" if op == "d" else "after"
    return json.dumps({"op": op, image: row, "source": {"table": table}}).encode()


def hostile(state: str) -> list[bytes]:
    """Every route an event could take to cdcsync's bookkeeping, per the issue's reproduction."""
    move_b = {"flow": "b", "destination": "primary", "stream": "S", "last_seq": 10**6}
    forged = {"id": 999, "flow": "b", "destination": "primary", "error": "forged"}
    out = []
    for table in (
        "cdcsync_checkpoints",
        "cdcsync_dead_letters",
        "CDCSYNC_CHECKPOINTS",
        "cdcsync_members",  # tables of later versions: the whole prefix is reserved
        "checkpoints",
        "dead_letters",
        f"{state}.checkpoints",
        f"{state}.dead_letters",
    ):
        out += [
            envelope(table, "update", move_b),
            envelope(table, "upsert", move_b),
            envelope(table, "delete", {"flow": "b", "destination": "primary"}),
            envelope(table, "delete", {"id": 1}),
            envelope(table, "insert", forged),
            debezium("u", table, move_b),
            debezium("d", table, {"id": 1}),
            debezium("c", table, forged),
        ]
    return out


async def test_no_event_can_touch_checkpoints_or_dead_letters(
    env: Env, nursery: trio.Nursery, target: str
) -> None:
    """Flow A's events aimed at cdcsync's tables are dead letters; flow B's checkpoint and dead
    letters are untouched, and after a restart B's next event is written (not skipped)."""
    await env.create_schema(USERS)
    config = env.config(env.flow_yaml("a"), env.flow_yaml("b"))
    attacks = hostile(env.state)
    async with env.running(config, nursery) as running:
        await env.publish(env.subject("b") + ".users", [envelope("users", "insert", {"id": 1})])
        await env.publish(env.subject("b") + ".users", [b"not json"])
        await env.applied(2, flow="b")
        before = await env.sql(f"SELECT * FROM {env.state}.checkpoints WHERE flow = 'b'")
        await env.publish(env.subject("a") + ".x", attacks)
        await env.applied(len(attacks) + 2, flow="a")
        assert [f.stats.status for f in running.service.flows] == ["running", "running"]
    after = await env.sql(f"SELECT * FROM {env.state}.checkpoints WHERE flow = 'b'")
    assert [dict(r) for r in after] == [dict(r) for r in before]
    letters = await env.dead_letters()
    assert [(d["flow"], d["error"]) for d in letters if d["flow"] == "b"] == [
        ("b", letters[0]["error"])
    ]
    assert "not valid JSON" in letters[0]["error"]
    mine = [d for d in letters if d["flow"] == "a"]
    assert len(mine) == len(attacks)  # none deleted, none forged, each attack one letter
    for d in mine:
        assert "reserved" in d["error"] or "unknown table" in d["error"], d["error"]
    reserved = [d for d in mine if d["table_name"].lower().startswith("cdcsync_")]
    assert reserved and all("cdcsync's own bookkeeping" in d["error"] for d in reserved)
    # No table appeared in the users' schema, and B goes on after a restart.
    assert await env.tables() == ["users"]
    async with env.running(config, nursery):
        await env.publish(env.subject("b") + ".users", [envelope("users", "insert", {"id": 2})])
        await env.applied(3, flow="b")
    assert [r["id"] for r in await env.rows("users")] == [1, 2]


def test_config_refuses_bookkeeping_as_a_target() -> None:
    """A mapping onto a reserved name, or the state schema as the users' schema, is refused."""
    base = """
flows:
  - name: f
    source: {type: nats, servers: ["nats://127.0.0.1:4222"], subject: "a.>"}
    destinations:
      - name: primary
        type: postgres
        url: postgresql://postgres@127.0.0.1/test
"""
    cases = {
        "        tables: {users: cdcsync_checkpoints}\n": "reserved for cdcsync's own tables",
        "        tables: {users: CDCSYNC_dead_letters}\n": "reserved for cdcsync's own tables",
        "        schema: cdcsync\n": "cdcsync's own tables must not share a schema",
        "        schema: app\n        state_schema: app\n": "must not share a schema",
    }
    for extra, words in cases.items():
        try:
            cfg.loads(base + extra, path="c.yaml")
        except ConfigError as exc:
            assert words in str(exc), str(exc)
            assert "c.yaml:" in str(exc)
        else:
            raise AssertionError(f"accepted: {extra!r}")


def test_mysql_config_refuses_bookkeeping_as_a_target() -> None:
    """MySQL: a mapping onto a reserved name, or the state database as the URL's database, is
    refused (case-insensitively: MySQL may fold database names)."""
    base = """
flows:
  - name: f
    source: {type: nats, servers: ["nats://127.0.0.1:4222"], subject: "a.>"}
    destinations:
      - name: primary
        type: mysql
"""
    cases = {
        "        url: mysql://root@h/app\n        tables: {users: cdcsync_checkpoints}\n": (
            "reserved for cdcsync's own tables"
        ),
        "        url: mysql://root@h/cdcsync\n": "must not share a database",
        "        url: mysql://root@h/App\n        state_schema: app\n": "must not share",
        "        url: mysql://root@h\n": "the database of the target tables is missing",
    }
    for extra, words in cases.items():
        try:
            cfg.loads(base + extra, path="c.yaml")
        except ConfigError as exc:
            assert words in str(exc), str(exc)
            assert "c.yaml:" in str(exc)
        else:
            raise AssertionError(f"accepted: {extra!r}")


# cdcsync 0.1's bookkeeping, exactly as it created it in the users' schema.
LEGACY_DDL = """
CREATE TABLE cdcsync_checkpoints (
    flow text NOT NULL,
    destination text NOT NULL,
    stream text NOT NULL,
    stream_created text NOT NULL DEFAULT '',
    last_seq bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow, destination));
CREATE TABLE cdcsync_dead_letters (
    id bigserial PRIMARY KEY,
    flow text NOT NULL,
    destination text NOT NULL,
    subject text,
    stream_seq bigint,
    payload bytea,
    error text NOT NULL,
    table_name text,
    failed_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS cdcsync_dead_letters_flow_idx ON cdcsync_dead_letters (flow, failed_at);
"""


async def test_upgrade_from_legacy_tables_keeps_the_position(
    env: Env, nursery: trio.Nursery
) -> None:
    """A database written by cdcsync 0.1 (bookkeeping in the users' schema, checkpoint at 5):
    the new version resumes after 5 (nothing re-applied, nothing skipped), its dead letters
    move with it, and the emptied old tables can no longer be written by events."""
    await env.create_schema(USERS + LEGACY_DDL)
    await env.ensure_stream([f"{env.subject()}.>"])
    nc = await env.nc()
    info = await aio(nc.jetstream().stream_info, env.stream)
    created = info.created.isoformat()
    subject = env.subject() + ".users"
    await env.publish(
        subject, [envelope("users", "insert", {"id": i, "name": "replayed"}) for i in range(1, 9)]
    )
    # What 0.1 left: rows 1-5 applied (with their values then), checkpoint 5, one dead letter.
    await env.execute(
        f"SET search_path = {env.schema};"
        "INSERT INTO users SELECT i, 'applied before' FROM generate_series(1, 5) i;"
        f"INSERT INTO cdcsync_checkpoints (flow, destination, stream, stream_created, last_seq)"
        f" VALUES ('f', 'primary', '{env.stream}', '{created}', 5), ('other', 'd', 'S', '', 7);"
        "INSERT INTO cdcsync_dead_letters (flow, destination, subject, stream_seq, payload, error)"
        " VALUES ('f', 'primary', 's', 3, 'x', 'old reason'), ('other', 'd', 's', 1, 'y', 'r');"
    )
    async with env.running(env.config(), nursery) as running:
        await env.applied(8)
        dl = await running_dead_letters(running.api)
        assert [(d["stream_seq"], d["error"]) for d in dl] == [(3, "old reason")]
        await env.publish(subject, [envelope("cdcsync_checkpoints", "delete", {"flow": "other"})])
        await env.applied(9)
    rows = {r["id"]: r["name"] for r in await env.rows("users")}
    assert rows == {i: "applied before" if i <= 5 else "replayed" for i in range(1, 9)}
    cp = await env.sql(f"SELECT stream, partition, last_seq FROM {env.state}.checkpoints")
    assert [tuple(r) for r in cp] == [(env.stream, 0, 9)]
    # Only this (flow, destination)'s rows moved; another deployment's stay where they were.
    old = await env.sql(f"SELECT flow, last_seq FROM {env.schema}.cdcsync_checkpoints")
    assert [tuple(r) for r in old] == [("other", 7)]
    old_letters = await env.sql(f"SELECT flow FROM {env.schema}.cdcsync_dead_letters")
    assert [r[0] for r in old_letters] == ["other"]
    letters = await env.dead_letters()
    assert letters[0]["error"] == "old reason"
    assert "reserved" in letters[-1]["error"]


async def running_dead_letters(api: str) -> list[dict[str, Any]]:
    """The dead letters the API lists for flow ``f``."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{api}/api/dead-letters?flow=f")
    assert response.status_code == 200, response.text
    letters: list[dict[str, Any]] = response.json()["dead_letters"]
    return letters


async def test_unmapped_tables_can_be_refused(env: Env, nursery: trio.Nursery, target: str) -> None:
    """With `unmapped_tables: dead_letter` only mapped tables are written; the rest are dead
    letters saying why, even when a table of that name exists."""
    await env.create_schema(USERS + "CREATE TABLE other (id int PRIMARY KEY, name text);")
    flow = env.flow_yaml(
        extra_dest="\n        tables: {people: users}\n        unmapped_tables: dead_letter"
    )
    async with env.running(env.config(flow), nursery):
        await env.publish(
            env.subject() + ".x",
            [
                envelope("people", "insert", {"id": 1, "name": "mapped"}),
                envelope("other", "insert", {"id": 1, "name": "unmapped"}),
                envelope("users", "insert", {"id": 2, "name": "unmapped"}),
            ],
        )
        await env.applied(3)
    assert await env.rows("users") == [{"id": 1, "name": "mapped"}]
    assert await env.count("other") == 0
    letters = await env.dead_letters()
    assert [d["stream_seq"] for d in letters] == [2, 3]
    assert all("not in the destination's 'tables' mapping" in d["error"] for d in letters)


async def test_dropped_mapped_table_waits_and_resumes(
    env: Env, nursery: trio.Nursery, target: str
) -> None:
    """A mapped table dropped while running: the flow turns degraded and says why, nothing is
    dead-lettered or acknowledged; once the table is back the waiting events land."""
    await env.create_schema(USERS)
    flow = env.flow_yaml(extra_dest="\n        tables: {users: users}")
    subject = env.subject() + ".users"
    async with env.running(env.config(flow), nursery) as running:
        await env.publish(subject, [envelope("users", "insert", {"id": 1, "name": "a"})])
        await env.applied(1)
        await env.execute(f"DROP TABLE {env.schema}.users")
        await env.publish(
            subject, [envelope("users", "insert", {"id": i, "name": "b"}) for i in (2, 3)]
        )
        flow_stats = running.service.flows[0].stats

        async def degraded() -> bool:
            return flow_stats.status == "degraded" and "does not exist" in (
                flow_stats.last_error or ""
            )

        await wait_until(degraded, what="the flow to report the missing table")
        await trio.sleep(1.5)
        assert flow_stats.acked == 1
        assert await env.dead_letters() == []
        await env.execute_in_schema(USERS)
        await env.applied(3)

        async def running_again() -> bool:
            return flow_stats.status == "running"

        await wait_until(running_again, timeout=40, what="the flow running again")
    assert [r["id"] for r in await env.rows("users")] == [2, 3]
    assert await env.dead_letters() == []
