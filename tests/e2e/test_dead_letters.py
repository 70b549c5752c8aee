"""Bad messages go to the state schema's `dead_letters` with a reason; good ones still land."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import asyncpg
import pytest
import trio
from harness import Env, envelope

from cdcsync.bridge import aio

USERS = """
CREATE TABLE users (
    id int PRIMARY KEY,
    name text,
    age int CHECK (age >= 0),
    email text NOT NULL DEFAULT '',
    handle text UNIQUE
);
CREATE TABLE x (id int PRIMARY KEY);
INSERT INTO x VALUES (1);
"""
ONE_BATCH = "{max_size: 1000, max_delay_ms: 200}"


def good(i: int) -> bytes:
    return envelope("users", "insert", {"id": i, "name": f"u{i}", "age": i, "handle": f"h{i}"})


def debezium(op: str, table: str, after: dict[str, Any]) -> bytes:
    return json.dumps(
        {"before": None, "after": after, "source": {"table": table}, "op": op}
    ).encode()


# (message, words the reason must contain, table_name recorded)
BAD: list[tuple[bytes, list[str], str | None]] = [
    (b"{not json", ["not valid JSON"], None),
    (b"\xff\xfe\x00binary", ["not valid JSON"], None),
    (b'{"hello": "world"}', ["unknown event format"], None),
    (b"[1, 2, 3]", ["unknown event format"], None),
    (envelope("users", "merge", {"id": 900}), ["unknown operation", "merge"], None),
    (debezium("x", "users", {"id": 901}), ["unknown debezium op", "x"], None),
    (envelope("nope", "insert", {"id": 902}), ["unknown table", "nope"], "nope"),
    (envelope("users", "insert", {"id": 903, "bogus": 1}), ["unknown column", "bogus"], "users"),
    (envelope("users", "insert", {"name": "no key"}), ["missing primary key", "id"], "users"),
    (envelope("users", "insert", {"id": None, "name": "k"}), ["primary key", "null"], "users"),
    (envelope("users", "insert", {"id": 904, "age": "abc"}), ["22P02", "abc"], "users"),
    (envelope("users", "insert", {"id": 905, "age": 2**40}), ["22003", "out of range"], "users"),
    (envelope("users", "insert", {"id": 906, "age": -1}), ["23514", "check constraint"], "users"),
    (envelope("users", "insert", {"id": 907, "email": None}), ["23502", "email"], "users"),
    (envelope("users", "insert", {"id": 908, "handle": "h1"}), ["23505", "handle"], "users"),
    (envelope("users", "insert", {"id": 909, "name": "nul\u0000"}), ["22P05"], "users"),
]


async def test_every_reason_is_dead_lettered(env: Env, nursery: trio.Nursery) -> None:
    """Each kind of bad message is one dead letter with its reason and bytes; good ones land."""
    await env.create_schema(USERS)
    subject = env.subject() + ".users"
    messages: list[bytes] = []
    bad_seqs: dict[int, tuple[bytes, list[str], str | None]] = {}
    for k, case in enumerate(BAD, 1):
        messages.append(good(k))
        messages.append(case[0])
        bad_seqs[len(messages)] = case
    messages.append(good(len(BAD) + 1))
    before = dt.datetime.now(dt.UTC)
    async with env.running(env.config(), nursery) as running:
        await env.publish(subject, messages)
        await env.applied(len(messages))
        # the flow keeps running after all of that
        await env.publish(subject, [good(100)])
        await env.applied(len(messages) + 1)
        assert [f.stats.status for f in running.service.flows] == ["running"]
    ids = [r["id"] for r in await env.rows("users")]
    assert ids == [*range(1, len(BAD) + 2), 100]
    letters = await env.dead_letters()
    assert [d["stream_seq"] for d in letters] == sorted(bad_seqs)
    for letter in letters:
        payload, words, table = bad_seqs[letter["stream_seq"]]
        assert letter["flow"] == "f"
        assert letter["destination"] == "primary"
        assert letter["subject"] == subject
        assert letter["payload"] == payload
        for word in words:
            assert word in letter["error"], (word, letter["error"])
        assert letter["table_name"] == table
        assert before - dt.timedelta(seconds=5) < letter["failed_at"] < dt.datetime.now(dt.UTC)


async def test_big_mixed_batch_lands_every_good_row(env: Env, nursery: trio.Nursery) -> None:
    """One batch of 600 events with 30 bad rows scattered in it lands all 570 good rows."""
    await env.create_schema(USERS)
    subject = env.subject() + ".users"
    kinds = [{"age": "abc"}, {"age": 2**40}, {"age": -5}, {"email": None}, {"handle": "h0"}]
    messages, bad_seqs = [], []
    for i in range(600):
        if i % 20 == 7:
            row = {"id": i, "name": f"u{i}", **kinds[(i // 20) % len(kinds)]}
            messages.append(envelope("users", "insert", row))
            bad_seqs.append(i + 1)
        else:
            messages.append(good(i))
    await env.ensure_stream([f"{env.subject()}.>"])
    await env.publish(subject, messages)  # all waiting before the service starts: one batch
    async with env.running(env.config(env.flow_yaml(batch=ONE_BATCH)), nursery):
        await env.applied(len(messages))
    ids = [r["id"] for r in await env.rows("users")]
    assert ids == [i for i in range(600) if i % 20 != 7]
    letters = await env.dead_letters()
    assert [d["stream_seq"] for d in letters] == bad_seqs
    assert all(d["payload"] == messages[d["stream_seq"] - 1] for d in letters)


async def test_identifier_injection_is_dead_lettered(env: Env, nursery: trio.Nursery) -> None:
    """Hostile table and column names are dead-lettered and no SQL of theirs runs."""
    other = f"{env.schema}_o"
    await env.create_schema(USERS + "INSERT INTO users (id, name) VALUES (1, 'one');")
    await env.execute(
        f"DROP SCHEMA IF EXISTS {other} CASCADE; CREATE SCHEMA {other};"
        f"CREATE TABLE {other}.users (id int PRIMARY KEY, name text);"
        f"INSERT INTO {other}.users VALUES (1, 'other');"
    )
    try:
        tables = [
            "users; drop table x",
            "x; DROP TABLE x; --",
            'users"; DROP TABLE x; --',
            'us"ers',
            '"users"',
            "pg_catalog.pg_class",
            "public.users",
            f"{other}.users",
            f"{env.schema}.users",
            "users\u0000; drop table x",
            "USERS",
        ]
        columns = [
            "name\" = 'x'; --",
            'name"',
            "name; DROP TABLE x",
            "id) VALUES (2); DROP TABLE x; --",
            "name\u0000",
        ]
        bad = [envelope(t, "insert", {"id": 1, "name": "pwned"}) for t in tables]
        bad += [envelope(t, "delete", {"id": 1}) for t in tables]
        bad += [envelope("users", "insert", {"id": 1, c: "pwned"}) for c in columns]
        bad += [envelope("users", "update", {"id": 1, c: "pwned"}) for c in columns]
        bad += [envelope("users", "delete", {"id": 1, c: "pwned"}) for c in columns]
        # a hostile value is only data
        value = "'); DROP TABLE x; --"
        messages = [*bad, envelope("users", "insert", {"id": 2, "name": value})]
        async with env.running(env.config(), nursery):
            await env.publish(env.subject() + ".users", messages)
            await env.applied(len(messages))
        assert await env.rows("x") == [{"id": 1}]
        rows = await env.sql(f"SELECT id, name FROM {env.schema}.users ORDER BY id")
        assert [tuple(r) for r in rows] == [(1, "one"), (2, value)]
        rows = await env.sql(f"SELECT id, name FROM {other}.users")
        assert [tuple(r) for r in rows] == [(1, "other")]
        letters = await env.dead_letters()
        assert [d["payload"] for d in letters] == bad
        n_tables = 2 * len(tables)
        assert all("unknown table" in d["error"] for d in letters[:n_tables])
        assert all("unknown column" in d["error"] for d in letters[n_tables:])
    finally:
        await env.execute(f"DROP SCHEMA IF EXISTS {other} CASCADE")


async def test_names_that_need_quoting_are_applied(env: Env, nursery: trio.Nursery) -> None:
    """Real tables and columns whose names need quoting receive their events."""
    await env.create_schema(
        'CREATE TABLE "Odd Table" ("Key" int PRIMARY KEY, "we""ird; --" text, "select" int);'
    )
    table = "Odd Table"
    messages = [
        envelope(table, "insert", {"Key": 1, 'we"ird; --': "a", "select": 1}),
        envelope(table, "insert", {"Key": 2, 'we"ird; --': "b"}),
        envelope(table, "update", {"Key": 1, "select": 10}),
        envelope(table, "delete", {"Key": 2}),
        envelope(table, "insert", {"Key": 3}),
    ]
    async with env.running(env.config(), nursery):
        await env.publish(env.subject() + ".odd", messages)
        await env.applied(len(messages))
    rows = await env.sql(f'SELECT * FROM {env.schema}."Odd Table" ORDER BY "Key"')
    assert [tuple(r) for r in rows] == [(1, "a", 10), (3, None, None)]
    assert await env.dead_letters() == []


async def test_unknown_table_or_column_is_judged_on_the_current_schema(
    env: Env, nursery: trio.Nursery
) -> None:
    """Once a missing table is created or a missing column added, new events for it land."""
    await env.create_schema("CREATE TABLE items (id int PRIMARY KEY, name text);")
    subject = env.subject() + ".items"
    early = [
        envelope("later", "insert", {"id": 1}),
        envelope("items", "insert", {"id": 1, "extra": 1}),
    ]
    late = [
        envelope("later", "insert", {"id": 2}),
        envelope("items", "insert", {"id": 2, "extra": 2}),
    ]
    async with env.running(env.config(), nursery):
        await env.publish(subject, early)
        await env.applied(2)
        await env.execute(
            f"CREATE TABLE {env.schema}.later (id int PRIMARY KEY);"
            f"ALTER TABLE {env.schema}.items ADD COLUMN extra int;"
        )
        await env.publish(subject, late)
        await env.applied(4)
    assert await env.rows("later") == [{"id": 2}]
    assert await env.rows("items") == [{"id": 2, "name": None, "extra": 2}]
    assert [d["payload"] for d in await env.dead_letters()] == early


LOCKS = """
CREATE TABLE typed (id int PRIMARY KEY, i4 int, c int CHECK (c >= 0));
"""


async def writer_locks(env: Env, peak: list[int], done: trio.Event) -> None:
    """Sample the writer session's entries in the lock table (pg_locks) every 20 ms until
    ``done`` (one connection, closed at the end: never cancelled mid-query)."""
    conn = await aio(asyncpg.connect, env.pg_url)
    try:
        while not done.is_set():
            count = await aio(
                conn.fetchval,
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE a.application_name = $1",
                "cdcsync:f:primary",
            )
            peak[0] = max(peak[0], int(count))
            await trio.sleep(0.02)
    finally:
        with trio.CancelScope(shield=True):
            await aio(conn.close)


@pytest.mark.parametrize(
    ("bad", "count"),
    [
        ({"i4": "bad"}, 10_000),  # a value PostgreSQL cannot convert (the case)
        ({"c": -1}, 4_000),  # a value only the table's CHECK constraint refuses
    ],
    ids=["bad-value", "check-constraint"],
)
async def test_half_bad_huge_batch_costs_bounded_locks(
    env: Env, nursery: trio.Nursery, bad: dict[str, Any], count: int
) -> None:
    """One batch of up to 20,000 upserts, every other one bad: every good row lands, every bad
    one is a dead letter in stream order, and the writer never holds more than a few hundred
    lock-table entries (before, isolation kept a subtransaction lock per good event and ran the
    server out of shared memory: `53200`, retried forever)."""
    await env.create_schema(LOCKS)
    await env.ensure_stream([f"{env.subject()}.>"])
    messages = [
        envelope("typed", "upsert", {"id": i, "i4": i, "c": i, **(bad if i % 2 else {})})
        for i in range(count)
    ]
    await env.publish(env.subject() + ".typed", messages)
    flow = env.flow_yaml(batch="{max_size: 20000, max_delay_ms: 500}")
    peak = [0]
    started = trio.current_time()
    async with env.running(env.config(flow), nursery) as running:
        done = trio.Event()
        async with trio.open_nursery() as sampler:
            sampler.start_soon(writer_locks, env, peak, done)
            try:
                await env.applied(count, timeout=120)  # a few seconds; more on a loaded machine
            finally:
                done.set()
        stats = running.service.flows[0].stats.snapshot()
    elapsed = trio.current_time() - started
    print(f"{count} events, half bad ({bad}): {elapsed:.1f} s, peak locks {peak[0]}")
    assert [r["id"] for r in await env.rows("typed")] == list(range(0, count, 2))
    letters = await env.dead_letters()
    assert [d["stream_seq"] for d in letters] == list(range(2, count + 1, 2))
    assert stats["destinations"][0]["dead_lettered"] == count // 2
    assert peak[0] < 300, peak[0]
