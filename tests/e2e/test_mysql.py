"""What is MySQL's own in the MySQL destination, end to end against the shared MariaDB:
fan-out with PostgreSQL in one flow, replace without REPLACE INTO, non-transactional tables,
the writer's session kept alive past wait_timeout."""

from __future__ import annotations

import asyncmy
import pytest
import trio
from harness import Env, envelope, wait_until

from cdcsync.bridge import aio
from cdcsync.conformance import EPOCH, P0, _batch
from cdcsync.events import ChangeEvent, Op
from cdcsync.flow.batch import Batch, Delivery, Item

pytestmark = pytest.mark.parametrize("target", ["mysql"], indirect=True)

ITEMS = "CREATE TABLE items (id int PRIMARY KEY, name text);"


async def connect(url: str) -> asyncmy.Connection:
    from mysqlread import _connect

    return await _connect(url)


async def run(conn: asyncmy.Connection, statement: str) -> None:
    async with conn.cursor() as cur:
        await cur.execute(statement)
        await cur.fetchall()


async def test_fan_out_to_postgres_and_mysql_acks_after_both_commit(
    env: Env, nursery: trio.Nursery, target: str
) -> None:
    """One flow into PostgreSQL and MySQL: while MySQL cannot commit (its rows are locked),
    PostgreSQL commits what it got and nothing is acknowledged; once MySQL commits, both hold
    every row and everything is acknowledged."""
    pg = Env(env.nats_url, env.pg_url, env.unique)  # the same names in PostgreSQL
    await pg.create_schema(ITEMS)
    await env.create_schema(ITEMS)
    blocker = await aio(connect, env.dest_url)
    try:
        # Next-key locks over every id: MySQL's inserts wait behind this transaction.
        await aio(run, blocker, "START TRANSACTION")
        await aio(run, blocker, "SELECT * FROM items WHERE id >= 0 FOR UPDATE")
        flow = env.flow_yaml(destinations=[("pg", env.pg_url), ("my", env.dest_url)])
        async with env.running(env.config(flow), nursery) as running:
            events = [envelope("items", "insert", {"id": i, "name": f"n{i}"}) for i in range(50)]
            await env.publish(env.subject() + ".items", events)
            # PostgreSQL commits what reaches it (the first batch at least: the fan-out hands
            # the next one over only once MySQL has taken this one), MySQL nothing.
            await pg.applied(1, dest="pg")
            await trio.sleep(1.0)
            stats = running.service.flows[0].stats
            assert stats.acked == 0, "acknowledged before MySQL committed"
            assert await env.count("items") == 0
            await aio(run, blocker, "ROLLBACK")
            await env.applied(50, dest="my")

            async def all_acked() -> bool:
                return stats.acked == 50

            await wait_until(all_acked, what="the acknowledgements")
        assert [r["id"] for r in await env.rows("items")] == list(range(50))
        assert [r["id"] for r in await pg.rows("items")] == list(range(50))
    finally:
        blocker.close()
        await pg.execute(
            f"DROP SCHEMA IF EXISTS {env.unique} CASCADE; "
            f"DROP SCHEMA IF EXISTS {env.unique}_state CASCADE"
        )


async def test_replace_keeps_the_row_its_children_and_fires_update_triggers(
    env: Env, nursery: trio.Nursery, target: str
) -> None:
    """replace updates the row in place (absent columns to their defaults): its foreign-key
    children stay and its UPDATE trigger fires, where REPLACE INTO would delete the row
    (cascading to the children) and insert a new one."""
    await env.create_schema(
        "CREATE TABLE parent (id int PRIMARY KEY, name text, note text DEFAULT 'none',"
        " updates int NOT NULL DEFAULT 0);"
        "CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL,"
        " FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE);"
        "CREATE TRIGGER parent_updates BEFORE UPDATE ON parent FOR EACH ROW"
        " SET NEW.updates = OLD.updates + 1;"
        "CREATE TRIGGER parent_deletes BEFORE DELETE ON parent FOR EACH ROW"
        " SET @cdcsync_test_deleted = 1;"
        "INSERT INTO parent (id, name, note) VALUES (1, 'one', 'kept?');"
        "INSERT INTO child VALUES (10, 1), (11, 1);"
    )
    async with env.running(env.config(env.flow_yaml(mode="replace")), nursery):
        await env.publish(
            env.subject() + ".parent", [envelope("parent", "upsert", {"id": 1, "name": "uno"})]
        )
        await env.applied(1)
    assert await env.rows("parent") == [{"id": 1, "name": "uno", "note": "none", "updates": 1}]
    assert [r["id"] for r in await env.rows("child")] == [10, 11]


async def test_a_table_that_cannot_roll_back_is_never_written(
    env: Env, nursery: trio.Nursery, target: str
) -> None:
    """An event for a MyISAM table is a dead letter saying why and how to fix it (its rows
    would survive a rolled-back batch, and so be applied twice); the flow goes on."""
    await env.create_schema(ITEMS + "CREATE TABLE plain (id int PRIMARY KEY) ENGINE=MyISAM;")
    async with env.running(env.config(), nursery):
        await env.publish(
            env.subject() + ".x",
            [
                envelope("plain", "insert", {"id": 1}),
                envelope("items", "insert", {"id": 1, "name": "a"}),
            ],
        )
        await env.applied(2)
    assert await env.count("plain") == 0
    assert await env.count("items") == 1
    [letter] = await env.dead_letters()
    assert "MyISAM" in letter["error"] and "ENGINE=InnoDB" in letter["error"], letter["error"]


async def test_names_that_differ_only_in_case_are_looked_up_together(env: Env, target: str) -> None:
    """On a case-sensitive server, `USERS` and `users` looked up in one catalog query: MariaDB
    answered `TABLE_NAME IN ('USERS', 'users')` with no row at all, so the existing `users`
    was cached as missing and its good events were dead-lettered as "unknown table" (found
    by the identifier-injection test, 1 run in about 15). The good event must land."""
    await env.create_schema("CREATE TABLE users (id int PRIMARY KEY, name text);")
    sink = env.destination()
    try:
        await sink.connect()
        await sink.claim({P0: EPOCH})
        items = [
            Item(
                Delivery(seq, f"x.{table}", b"{}", None, 0.0, P0),
                ChangeEvent(table, Op.INSERT, {"id": seq, "name": table}),
            )
            for seq, table in ((1, "USERS"), (2, "users"))
        ]
        result = await sink.write(Batch(1, items))
    finally:
        await sink.close()
    assert [tuple(r) for r in await env.sql(f"SELECT id, name FROM {env.schema}.users")] == [
        (2, "users")
    ]
    assert result.written == 1 and result.dead_lettered == 1


async def test_an_idle_writer_keeps_its_session_and_its_fence(env: Env, target: str) -> None:
    """The writer pings while idle: after longer than the server's wait_timeout without a
    batch it writes on the same session (no reconnect), and nobody else got its fence."""
    await env.create_schema(ITEMS)
    sink = env.destination(session_timeout_s=3)
    rival = env.destination(session_timeout_s=3)
    try:
        await sink.connect()
        assert await sink.claim({P0: EPOCH}) == {P0: None}
        session = sink._conn
        result = await sink.write(_batch(1, range(1, 3), "items"))
        assert result.written == 2
        await trio.sleep(5)  # longer than wait_timeout (3 s)
        await rival.connect()
        assert await rival.claim({P0: EPOCH}) is None, "the idle writer lost its fence"
        result = await sink.write(_batch(2, range(3, 5), "items"))
        assert result.written == 2
        assert sink._conn is session and not session.closed
    finally:
        await rival.close()
        await sink.close()
    assert await env.count("items") == 4


async def test_dead_letters_are_listed_grouped_and_paged(
    env: Env, nursery: trio.Nursery, target: str
) -> None:
    """The operator tools' view of MySQL's dead letters: newest first, grouped by reason with
    values masked, a page of one reason, all through the destination protocol."""
    await env.create_schema("CREATE TABLE items (id int PRIMARY KEY, qty int);")
    bad = [envelope("items", "insert", {"id": i, "qty": f"x{i}"}) for i in range(1, 4)]
    bad.append(envelope("nope", "insert", {"id": 9}))
    async with env.running(env.config(), nursery):
        await env.publish(env.subject() + ".x", bad)
        await env.applied(len(bad))
    sink = env.destination()
    try:
        letters = await sink.dead_letters(limit=10)
        assert [d.stream_seq for d in letters] == [4, 3, 2, 1]
        assert [d.payload for d in letters] == bad[::-1]
        assert all(d.failed_at.tzinfo is not None for d in letters)
        reasons = await sink.dead_letter_reasons()
        assert reasons.total == 4
        [values, unknown] = reasons.groups
        assert (values.count, unknown.count) == (3, 1), reasons
        assert values.reason.startswith("1366: Incorrect integer value: '…' for column"), values
        page = await sink.dead_letters(limit=2, offset=1, reason=values.reason)
        assert [d.stream_seq for d in page] == [2, 1]
    finally:
        await sink.close()
