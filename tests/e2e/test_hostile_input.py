"""Hostile input through the real decoder and sink: each message is applied or dead-lettered.

docs/operations.md ("Hostile messages") promises that every message is applied or
dead-lettered with its reason, that nothing a message names runs unless the catalog has it,
and that the flow goes on. These tests publish garbage, hostile values and hostile names to
real JetStream, interleaved with good events, and check all of it from the database: each
test runs against PostgreSQL and against MySQL (the `target` fixture), whose own verdicts on
values differ where the databases do (a NUL byte, JSON nesting, error codes).
"""

from __future__ import annotations

import decimal
import json
import random
from dataclasses import dataclass
from typing import Any

import nats.errors
import orjson
import pytest
import trio
from harness import Env, Running, envelope, wait_until

from cdcsync.bridge import aio

CANARY = "CREATE TABLE x (id int PRIMARY KEY); INSERT INTO x VALUES (1);"
USERS = "CREATE TABLE users (id int PRIMARY KEY, name text, email text);"
LOOKALIKE = "us\u0435rs"  # with a Cyrillic ie: a different table that really exists
TABLES = f"""
{USERS}
{CANARY}
CREATE TABLE fuzz (id int PRIMARY KEY, v text);
CREATE TABLE typed (
    id int PRIMARY KEY, i4 int, i2 smallint, n52 numeric(5,2), n numeric, t text, j jsonb,
    arr int[]
);
CREATE TABLE nk (k numeric PRIMARY KEY, v text);
CREATE TABLE "{LOOKALIKE}" (id int PRIMARY KEY, name text);
"""
# MySQL has no arrays and no unbounded numeric; TEXT holds 64 KiB, LONGTEXT 4 GiB.
MYSQL_TABLES = f"""
{USERS}
{CANARY}
CREATE TABLE fuzz (id int PRIMARY KEY, v text);
CREATE TABLE typed (
    id int PRIMARY KEY, i4 int, i2 smallint, n52 decimal(5,2), n decimal(65,30), t longtext,
    j json
);
CREATE TABLE nk (k decimal(65,30) PRIMARY KEY, v text);
CREATE TABLE "{LOOKALIKE}" (id int PRIMARY KEY, name text);
"""
NUL = "\u0000"


def tables_ddl(env: Env) -> str:
    return MYSQL_TABLES if env.mysql else TABLES


# --------------------------------------------------------------------------- helpers


def good(i: int) -> bytes:
    return envelope("users", "insert", {"id": i, "name": f"u{i}"})


async def letters_by_seq(env: Env) -> dict[int, dict[str, Any]]:
    letters = await env.dead_letters()
    by_seq = {d["stream_seq"]: d for d in letters}
    assert len(by_seq) == len(letters), "a message was dead-lettered twice"
    return by_seq


async def wait_checkpoint(env: Env, running: Running, seq: int, timeout: float = 30.0) -> None:
    """Wait until stream sequence ``seq`` is committed; on timeout say what the flow is doing."""

    async def check() -> bool:
        rows = await env.sql(
            f"SELECT last_seq FROM {env.state}.checkpoints "
            "WHERE flow = 'f' AND destination = 'primary'"
        )
        return bool(rows) and rows[0]["last_seq"] >= seq

    try:
        await wait_until(check, timeout=timeout, what=f"checkpoint reaching {seq}")
    except AssertionError as exc:
        stats = running.service.flows[0].stats
        raise AssertionError(
            f"{exc}; flow {stats.status}, {stats.restarts} restarts, last error: {stats.last_error}"
        ) from None


def assert_healthy(running: Running) -> None:
    """The flow never crashed: still running and never restarted."""
    [flow] = running.service.flows
    assert flow.stats.status == "running", (flow.stats.status, flow.stats.last_error)
    assert flow.stats.restarts == 0, flow.stats.last_error


async def accounted(running: Running, published: int) -> dict[str, int]:
    """Every published message was received, acked, and written, dead-lettered or skipped.

    The acknowledgement follows the commit that moved the checkpoint: wait for it a moment.
    """
    flow = running.service.flows[0]

    async def acked() -> bool:
        return bool(flow.stats.snapshot()["acked"] >= published)

    with trio.move_on_after(5):
        await wait_until(acked, what="the acknowledgements")
    snap = flow.stats.snapshot()
    [dest] = snap["destinations"]
    assert (snap["received"], snap["acked"]) == (published, published), snap
    assert dest["written"] + dest["dead_lettered"] + dest["skipped"] == published, dest
    assert dest["checkpoint"] == published, dest
    return dest


# --------------------------------------------------------------------------- fuzzing


JSONISH = b'{}[]":,\\0123456789-+eE.ntfurlas '


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four mutations: replace, bit flip, delete, insert, truncate, splice a token."""
    b = bytearray(data)
    splices = [b"null", b'"delete"', b"1e999", b"-1", b'"\\u0000"', b"{}", b"[]", b'"', b"\xff"]
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(b)) if b else 0
        kind = rng.randrange(7)
        if kind == 0 and b:
            b[pos] = rng.choice(JSONISH)
        elif kind == 1 and b:
            b[pos] = rng.randrange(256)
        elif kind == 2 and b:
            b[pos] ^= 1 << rng.randrange(7)
        elif kind == 3 and b:
            del b[pos]
        elif kind == 4:
            b.insert(pos, rng.choice(JSONISH))
        elif kind == 5 and rng.random() < 0.3:
            del b[pos:]
        else:
            b[pos:pos] = rng.choice(splices)
    return bytes(b)


def random_value(rng: random.Random) -> Any:
    """A JSON value for a column: fitting, out of range, of the wrong type, or hostile."""
    text = "".join(rng.choice("abc xyz'\";\\%$é😀\u202e") for _ in range(rng.randint(0, 8)))
    return rng.choice(
        [text, text, rng.randint(-5, 5), 2**31, -(2**15) - 1, 999.99, 1000, 1.5, "7", " 8 ",
         True, None, {"k": text}, [1, 2], [[1], [2, 3]], f"a{NUL}", "", "1e999999999999"]
    )  # fmt: skip


def event_seed(rng: random.Random) -> bytes:
    """A well-formed event, cdc envelope or Debezium, for `fuzz`, `typed` or a wrong table."""
    table = rng.choice(["fuzz", "fuzz", "typed", "typed", "nope", "typed ", "FUZZ"])
    columns = ["v"] if table.strip().lower() == "fuzz" else ["i4", "i2", "n52", "t", "j", "arr"]
    columns += ["nope"] if rng.random() < 0.1 else []
    k: Any = rng.randint(1, 40) if rng.random() < 0.9 else random_value(rng)
    picked = rng.sample(columns, min(len(columns), rng.randint(1, 2)))
    row = {"id": k} | {c: random_value(rng) for c in picked}
    if rng.random() < 0.6:
        op = rng.choice(["insert", "update", "upsert", "snapshot", "delete"])
        return envelope(table, op, {"id": k} if op == "delete" else row)
    op = rng.choice("cudr")
    event = {
        "before": row if op in "ud" else None,
        "after": None if op == "d" else row,
        "source": {"table": table, "schema": "public"},
        "op": op,
    }
    if rng.random() < 0.3:
        event = {"schema": {"type": "struct"}, "payload": event}
    return json.dumps(event, ensure_ascii=rng.random() < 0.5).encode()


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value built from the words the decoders look for."""
    words = ["table", "operation", "data", "op", "payload", "before", "after", "source", "id", "v"]
    values = ["fuzz", "nope", "FUZZ", "fuzz ", "insert", "delete", "c", "u", "d", "t", "merge"]
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice([*values, None, True, 0, -1, 7, 2**31, 1.5, "", NUL])
    if r < 0.4:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(words): random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def garbage(rng: random.Random) -> bytes:
    """Random bytes, a mutated event, a random but well-formed event, or random JSON."""
    r = rng.random()
    if r < 0.15:
        return rng.randbytes(rng.randint(0, 256))
    if r < 0.5:
        return mutate(rng, event_seed(rng))
    if r < 0.8:
        return event_seed(rng)
    if r < 0.95:
        return json.dumps(random_json(rng)).encode()
    return bytes(rng.choice(JSONISH) for _ in range(rng.randint(1, 64)))


@dataclass
class Change:
    """What a message that was not dead-lettered must have done, per the documented formats."""

    table: str | None  # None: a documented no-op (tombstone, truncate while disabled)
    op: str = ""
    data: dict[str, Any] | None = None


UNAVAILABLE = "__debezium_unavailable_value"


def expected_change(payload: bytes) -> Change:
    """The change a non-dead-lettered message stands for (docs/semantics.md, event formats)."""
    if not payload.strip():
        return Change(None)
    obj = orjson.loads(payload)
    if obj is None:
        return Change(None)
    assert isinstance(obj, dict), payload
    if "operation" in obj:
        op = {"snapshot": "upsert"}.get(obj["operation"], obj["operation"])
        return Change(obj["table"], op, obj["data"])
    if "payload" in obj and "op" not in obj:
        obj = obj["payload"]
        if obj is None:
            return Change(None)
    op = {"c": "insert", "u": "update", "r": "upsert", "d": "delete", "t": "truncate"}[obj["op"]]
    table = obj["source"]["table"]
    if op == "truncate":
        return Change(None, op)
    row = obj["before" if op == "delete" else "after"]
    return Change(table, op, {c: v for c, v in row.items() if v != UNAVAILABLE})


def int_key(value: Any) -> int:
    """How PostgreSQL (and MySQL) read a JSON value into an int key column that accepted it."""
    if isinstance(value, bool):
        raise AssertionError(f"PostgreSQL accepted {value!r} as an int key")
    if isinstance(value, int):
        return value
    return int(str(value).strip())


async def test_fuzzed_messages_are_applied_or_dead_lettered(
    env: Env, nursery: trio.Nursery, target: str
) -> None:
    """300 random or mutated messages among 300 good ones: each is applied, dead-lettered with a
    reason, or a documented no-op; every good one lands; nothing outside the catalog runs."""
    other = f"{env.schema}_o"
    await env.create_schema(tables_ddl(env))
    await env.create_schema(
        "CREATE TABLE users (id int PRIMARY KEY, name text);INSERT INTO users VALUES (1, 'other');",
        name=other,
    )
    try:
        rng = random.Random(20261125)
        junk = [garbage(rng) for _ in range(300)]
        goods: list[bytes] = []
        users: dict[int, dict[str, Any]] = {}
        for i in range(300):
            if i < 200:
                goods.append(good(i + 1))
                users[i + 1] = {"id": i + 1, "name": f"u{i + 1}", "email": None}
            elif i % 3:
                k = i - 199
                goods.append(envelope("users", "update", {"id": k, "email": f"{k}@x"}))
                users[k]["email"] = f"{k}@x"
            else:
                k = i - 50
                goods.append(envelope("users", "delete", {"id": k}))
                users.pop(k, None)
        # Interleave: half the stream is garbage, in random places.
        order = [True] * len(goods) + [False] * len(junk)
        rng.shuffle(order)
        good_iter, junk_iter = iter(goods), iter(junk)
        messages = [next(good_iter) if is_good else next(junk_iter) for is_good in order]
        good_seqs = {seq for seq, is_good in enumerate(order, 1) if is_good}

        async with env.running(env.config(), nursery) as running:
            tables_before = await env.tables()
            await env.publish(env.subject() + ".fuzz", messages)
            await wait_checkpoint(env, running, len(messages), timeout=60)
            assert_healthy(running)
            dest = await accounted(running, len(messages))

        letters = await letters_by_seq(env)
        assert dest["dead_lettered"] == len(letters)
        assert not good_seqs & set(letters), "a good event was dead-lettered"
        for seq, letter in letters.items():
            assert letter["payload"] == messages[seq - 1]
            assert letter["error"].strip(), f"dead letter {seq} has no reason"

        # Every other message is a documented no-op or a change to `fuzz` or `typed`.
        model: dict[str, dict[int, dict[str, Any]]] = {"fuzz": {}, "typed": {}}
        skipped = 0
        for seq, payload in enumerate(messages, 1):
            if seq in letters or seq in good_seqs:
                continue
            change = expected_change(payload)
            if change.table is None:
                skipped += 1
                continue
            assert change.table in model, (seq, payload)
            assert change.data is not None
            rows = model[change.table]
            k = int_key(change.data["id"])
            if change.op == "delete":
                rows.pop(k, None)
            else:
                rows[k] = {**rows.get(k, {}), **change.data}
        assert dest["skipped"] == skipped

        assert await env.rows("users") == [users[k] for k in sorted(users)]
        for table, text_column in (("fuzz", "v"), ("typed", "t")):
            stored = {r["id"]: r for r in await env.rows(table)}
            assert sorted(stored) == sorted(model[table]), table
            for k, row in model[table].items():
                if isinstance(row.get(text_column), str):
                    assert stored[k][text_column] == row[text_column], (table, k, row)
        # Nothing was created, dropped or touched that the catalog did not name.
        assert await env.tables() == tables_before
        assert await env.rows("x") == [{"id": 1}]
        assert [tuple(r) for r in await env.sql(f"SELECT * FROM {other}.users")] == [(1, "other")]
    finally:
        await env.drop_schema(other)


# --------------------------------------------------------------------------- hostile values


@dataclass
class Dead:
    """Dead-lettered with a reason containing every word."""

    words: tuple[str, ...]


@dataclass
class Landed:
    """Applied: ``query`` (with $1 = key) returns ``expected``."""

    query: str
    key: Any
    expected: Any


@dataclass
class Skipped:
    """A documented no-op: neither applied nor dead-lettered."""


def cdc(table: Any, op: Any, data: Any) -> bytes:
    return json.dumps({"table": table, "operation": op, "data": data}).encode()


def typed(i: int, **cols: Any) -> bytes:
    """An insert into `typed`, non-ASCII text as UTF-8 (control characters stay escaped)."""
    body = {"table": "typed", "operation": "insert", "data": {"id": i, **cols}}
    return json.dumps(body, ensure_ascii=False).encode()


def nested(levels: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * levels + close * levels


def typed_raw(i: int, column: str, raw: bytes) -> bytes:
    """An insert into `typed` whose ``column`` holds the JSON text ``raw`` as it is."""
    head = b'{"table":"typed","operation":"insert","data":{"id":%d,"%s":' % (i, column.encode())
    return head + raw + b"}}"


def hostile_cases(
    schema: str, other: str, target: str
) -> list[tuple[bytes, Dead | Landed | Skipped]]:
    t_of = "SELECT t FROM typed WHERE id = $1"
    bad_json = Dead(("not valid JSON",))
    my = target == "mysql"
    # MySQL: the server's codes; a NUL byte is text like any other; JSON nests 32 deep at most
    # (MariaDB's json_valid); a number MySQL would round is refused before it is sent.
    out_of_range = Dead(("1264",)) if my else Dead(("22003",))
    not_integer = Dead(("not an integer",)) if my else Dead(("22P02",))
    int_words = "int" if my else "integer"
    cases: list[tuple[bytes, Dead | Landed | Skipped]] = [
        # deep nesting
        (nested(100_000), bad_json),
        (nested(100_000, b'{"a":', b"}").replace(b"}", b"1}", 1), bad_json),
        (typed_raw(1, "j", nested(100_000)), bad_json),
        (
            typed_raw(2, "j", nested(200)),
            Dead(("4025",))
            if my
            else Landed("SELECT j::text FROM typed WHERE id = $1", 2, "[" * 200 + "]" * 200),
        ),
        # huge values
        (
            typed(3, t="x" * 1_000_000),
            Landed(
                f"SELECT {'char_length' if my else 'length'}(t) FROM typed WHERE id = $1",
                3,
                1_000_000,
            ),
        ),
        (
            typed(4, t="é" * 300_000),
            Landed(
                f"SELECT {'char_length' if my else 'length'}(t) FROM typed WHERE id = $1",
                4,
                300_000,
            ),
        ),
        # NUL bytes
        (typed(5, t=f"a{NUL}b"), Landed(t_of, 5, f"a{NUL}b") if my else Dead(("22P05",))),
        (
            typed(6, j={"k": f"x{NUL}"}),
            Landed("SELECT j FROM typed WHERE id = $1", 6, '{"k":"x\\u0000"}')
            if my
            else Dead(("22P05",)),
        ),
        (typed(7, **{f"t{NUL}": "v"}), Dead(("unknown column",))),
        (cdc(f"typed{NUL}", "insert", {"id": 8}), Dead(("unknown table",))),
        (typed(9, t="\u00001"), Landed(t_of, 9, f"{NUL}1") if my else Dead(("22P05",))),
        # invalid UTF-8 and surrogates
        (b'{"table":"typed","operation":"insert","data":{"id":10,"t":"\xff\xfe"}}', bad_json),
        (b'{"table":"typed","operation":"insert","data":{"id":11,"t":"\xc0\xaf"}}', bad_json),
        (b'{"table":"typed","operation":"insert","data":{"id":12,"t":"\xed\xa0\x80"}}', bad_json),
        (b'{"table":"typed","operation":"insert","data":{"id":13,"t":"\\ud800"}}', bad_json),
        (b'{"table":"typed","operation":"insert","data":{"id":14,"t":"ok"}}\xff', bad_json),
        (b"\xef\xbb\xbf" + typed(15, t="bom"), Dead(("JSON",))),
        # numbers that do not fit
        (typed(16, i4=2**31), out_of_range),
        (typed(17, i4=-(2**31) - 1), out_of_range),
        (typed(18, i2=40_000), out_of_range),
        (typed(19, n52=1000), out_of_range),
        (typed(20, n52=-999.999), out_of_range),
        (typed(21, i4=2**64 - 1), out_of_range),
        (typed(22, i4=2**70), Dead(("1264",)) if my else Dead(("22",))),
        (b'{"table":"typed","operation":"insert","data":{"id":23,"i4":1e400}}', not_integer),
        (typed(24, i4=1.5), not_integer),
        (
            typed(25, i4=2**31 - 1, i2=-(2**15), n52=999.99),
            Landed(
                "SELECT concat_ws(',', i4, i2, n52) FROM typed WHERE id = $1"
                if my
                else "SELECT (i4, i2, n52)::text FROM typed WHERE id = $1",
                25,
                "2147483647,-32768,999.99" if my else "(2147483647,-32768,999.99)",
            ),
        ),
        # wrong types
        (typed(26, i4={"a": 1}), Dead(("'i4'", int_words, "an object cannot be stored"))),
        (typed(27, i4=[1]), Dead(("'i4'", int_words, "an array cannot be stored"))),
        (typed(28, i4=True), Dead(("1366",)) if my else Dead(("22P02",))),
        (typed(29, i4="abc"), Dead(("1366", "abc")) if my else Dead(("22P02", "abc"))),
        (typed(30, arr={"a": 1}), Dead(("unknown column",)) if my else Dead(("22P02",))),
        (typed(31, arr=[[1], [2, 3]]), Dead(("unknown column",)) if my else Dead(("22P02",))),
        (typed(32, t=[1, 2]), Dead(("'t'", "text", "an array cannot be stored"))),
        (typed(33, t={"a": 1}), Dead(("'t'", "text", "an object cannot be stored"))),
        (typed(34, i4="42"), Landed("SELECT i4 FROM typed WHERE id = $1", 34, 42)),
        (envelope("typed", "insert", {"id": {"a": 1}}), Dead(("primary key",))),
        (envelope("typed", "insert", {"id": [35]}), Dead(("primary key",))),
        (envelope("typed", "insert", {"id": None, "t": "k"}), Dead(("primary key", "null"))),
        (envelope("typed", "insert", {"t": "no key"}), Dead(("missing primary key",))),
        (cdc({"t": 1}, "insert", {"id": 36}), Dead(("table",))),
        (cdc("typed", "insert", [36]), Dead(("data",))),
        (cdc("typed", "insert", {}), Dead(("empty",))),
        (cdc("typed", "insert", None), Dead(("data",))),
        (b'{"table":"typed","operation":"insert"}', Dead(("data",))),
        (b'"a string"', Dead(("unknown event format",))),
        (b"12345", Dead(("unknown event format",))),
        (b"true", Dead(("unknown event format",))),
        # unknown operations
        (cdc("typed", "merge", {"id": 37}), Dead(("unknown operation", "merge"))),
        (cdc("typed", "INSERT", {"id": 38}), Dead(("unknown operation",))),
        (cdc("typed", "insert ", {"id": 39}), Dead(("unknown operation",))),
        (cdc("typed", "", {"id": 40}), Dead(("unknown operation",))),
        (cdc("typed", None, {"id": 41}), Dead(("unknown operation",))),
        (cdc("typed", ["insert"], {"id": 42}), Dead(("unknown operation",))),
        (cdc("typed", 1, {"id": 43}), Dead(("unknown operation",))),
        (cdc("typed", "truncate", {"id": 44}), Dead(("unknown operation",))),
        (b'{"op":"x","source":{"table":"typed"},"after":{"id":45}}', Dead(("unknown debezium",))),
        (b'{"op":"C","source":{"table":"typed"},"after":{"id":46}}', Dead(("unknown debezium",))),
        (b'{"op":"c","after":{"id":47}}', Dead(("source",))),
        (b'{"op":"c","source":{"table":"typed"},"after":[47]}', Dead(("after",))),
        # documented no-ops
        (b"", Skipped()),
        (b" \n\t ", Skipped()),
        (b"null", Skipped()),
        (b'{"schema": null, "payload": null}', Skipped()),
        (b'{"op":"t","source":{"table":"typed"}}', Skipped()),
        # identifier tricks
        (
            envelope(LOOKALIKE, "insert", {"id": 1, "name": "cyrillic"}),
            Landed(f'SELECT name FROM "{LOOKALIKE}" WHERE id = $1', 1, "cyrillic"),
        ),
    ]
    tables = [
        "users; drop table x",
        "x; DROP TABLE x; --",
        'users"; DROP TABLE x; --',
        '"users"',
        "users ",
        " users",
        "users\t",
        "USERS",
        "Users",
        "us\u0435rs ",  # the look-alike with a trailing space
        "\uff55\uff53\uff45\uff52\uff53",  # "users" in fullwidth letters
        "users\u200b",  # zero-width space
        "u\u0073ers\u0301",  # combining accent
        "public.users",
        f"{other}.users",
        f"{schema}.users",
        f'"{schema}"."users"',
        "pg_catalog.pg_class",
        "pg_class",
        "cdcsync_checkpoints; DELETE FROM cdcsync_checkpoints",
        "x' OR '1'='1",
    ]
    for n, name in enumerate(tables, 100):
        why = Dead(("reserved",)) if name.startswith("cdcsync_") else Dead(("unknown table",))
        cases.append((envelope(name, "insert", {"id": n, "name": "pwned"}), why))
        cases.append((envelope(name, "delete", {"id": 1}), why))
    columns = [
        "n\u0430me",  # with a Cyrillic a
        "name ",
        "\uff4e\uff41\uff4d\uff45",  # "name" in fullwidth letters
        'name"',
        "name\" = 'x'; --",
        "name; DROP TABLE x",
        "id) VALUES (2); DROP TABLE x; --",
        "NAME",
    ]
    for n, col in enumerate(columns, 200):
        cases.append(
            (envelope("users", "insert", {"id": n, col: "pwned"}), Dead(("unknown column",)))
        )
    value = "'); DROP TABLE x; --"
    cases.append(
        (
            envelope("users", "insert", {"id": 300, "name": value}),
            Landed("SELECT name FROM users WHERE id = $1", 300, value),
        )
    )
    text = "😀 \u202eevil\u202c \uff46\uff55\uff4c\uff4c \u0301 \\ \" ' $1 %s"
    cases.append((typed(301, t=text), Landed(t_of, 301, text)))
    return cases


async def test_hostile_values_and_names_are_applied_or_dead_lettered(
    env: Env, nursery: trio.Nursery, target: str
) -> None:
    """Each hostile message lands as documented or is dead-lettered with its reason; the good
    events between them all land and nothing a message named outside the catalog runs."""
    other = f"{env.schema}_o"
    await env.create_schema(tables_ddl(env))
    await env.create_schema(
        "CREATE TABLE users (id int PRIMARY KEY, name text);INSERT INTO users VALUES (1, 'other');",
        name=other,
    )
    try:
        cases = hostile_cases(env.schema, other, target)
        messages: list[bytes] = []
        expect: dict[int, Dead | Landed | Skipped] = {}
        for k, (payload, outcome) in enumerate(cases, 1):
            messages.append(good(k))
            messages.append(payload)
            expect[len(messages)] = outcome
        messages.append(good(len(cases) + 1))
        async with env.running(env.config(), nursery) as running:
            tables_before = await env.tables()
            await env.publish(env.subject() + ".hostile", messages)
            await wait_checkpoint(env, running, len(messages))
            assert_healthy(running)
            dest = await accounted(running, len(messages))

        letters = await letters_by_seq(env)
        problems = []
        for seq, outcome in expect.items():
            letter = letters.get(seq)
            shown = messages[seq - 1][:120]
            if isinstance(outcome, Dead):
                if letter is None:
                    problems.append(f"seq {seq} {shown!r}: not dead-lettered")
                elif not all(w in letter["error"] for w in outcome.words):
                    problems.append(f"seq {seq} {shown!r}: reason {letter['error']!r}")
                elif letter["payload"] != messages[seq - 1]:
                    problems.append(f"seq {seq}: dead letter payload differs")
            elif letter is not None:
                problems.append(f"seq {seq} {shown!r}: dead-lettered: {letter['error']!r}")
            elif isinstance(outcome, Landed):
                got = await env.sql(outcome.query, outcome.key, url=env.url_in_schema())
                if [r[0] for r in got] != [outcome.expected]:
                    problems.append(f"seq {seq} {shown!r}: table holds {str(got)[:200]}")
        assert not problems, "\n".join(problems)
        assert dest["dead_lettered"] == len(letters)
        assert dest["skipped"] == sum(isinstance(o, Skipped) for o in expect.values())
        # every good event landed, and nothing a hostile name pointed at was touched
        names = [r["name"] for r in await env.rows("users") if r["id"] <= len(cases) + 1]
        assert names == [f"u{k}" for k in range(1, len(cases) + 2)]
        assert await env.tables() == tables_before
        assert await env.rows("x") == [{"id": 1}]
        assert [tuple(r) for r in await env.sql(f"SELECT * FROM {other}.users")] == [(1, "other")]
        cp = await env.sql(f"SELECT flow, last_seq FROM {env.state}.checkpoints")
        assert [tuple(r) for r in cp] == [("f", len(messages))]
    finally:
        await env.drop_schema(other)


# --------------------------------------------------------------------------- poison messages


POISON = [
    # (id, message, the table it would land in)
    ("jsonb-nested-300", typed_raw(1, "j", nested(300)), "typed"),
    ("text-nested-1000", typed_raw(1, "t", nested(1000)), "typed"),
    ("numeric-key-1e999999999999", envelope("nk", "insert", {"k": "1e999999999999"}), "nk"),
]


@pytest.mark.parametrize(("message", "table"), [p[1:] for p in POISON], ids=[p[0] for p in POISON])
async def test_a_poison_value_does_not_block_the_flow(
    env: Env, nursery: trio.Nursery, message: bytes, table: str, target: str
) -> None:
    """A value that JSON accepts but the sink cannot handle is applied or dead-lettered; the
    flow neither restarts nor stops, and the good event after it lands."""
    await env.create_schema(tables_ddl(env))
    messages = [good(1), message, good(2)]
    async with env.running(env.config(), nursery) as running:
        await env.publish(env.subject() + ".poison", messages)
        await wait_checkpoint(env, running, 3, timeout=10)
        assert_healthy(running)
        await accounted(running, 3)
    assert [r["id"] for r in await env.rows("users")] == [1, 2]
    letters = await letters_by_seq(env)
    applied = await env.count(table)
    assert (list(letters), applied) in (([2], 0), ([], 1)), (letters, applied)
    assert all(d["error"].strip() for d in letters.values())


@pytest.mark.parametrize("key", [b"true", b"1.0"])
async def test_a_key_postgresql_rejects_is_not_folded_into_another_key(
    env: Env, nursery: trio.Nursery, key: bytes, target: str
) -> None:
    """A delete whose int key is JSON `true` or `1.0` (PostgreSQL rejects both) is dead-lettered
    and does not touch row 1, even in one batch with an update of row 1 (batches have the
    effect of applying their events one by one, docs/semantics.md)."""
    await env.create_schema(
        tables_ddl(env) + "INSERT INTO typed (id, i4, t) VALUES (1, 0, 'keep');"
    )
    messages = [
        b'{"table":"typed","operation":"delete","data":{"id":%s}}' % key,
        envelope("typed", "update", {"id": 1, "i4": 5}),
    ]
    await env.ensure_stream([f"{env.subject()}.>"])
    await env.publish(env.subject() + ".keys", messages)  # waiting before the start: one batch
    async with env.running(env.config(), nursery) as running:
        await wait_checkpoint(env, running, len(messages))
        assert_healthy(running)
    rows = await env.sql(f"SELECT id, i4, t FROM {env.schema}.typed")
    assert [tuple(r) for r in rows] == [(1, 5, "keep")]
    letters = await letters_by_seq(env)
    assert list(letters) == [1], letters


async def test_numbers_are_not_silently_rounded(
    env: Env, nursery: trio.Nursery, target: str
) -> None:
    """A JSON number lands in a numeric column exactly as written, or is dead-lettered; it is
    never silently rounded (docs/semantics.md: values go to PostgreSQL as they are)."""
    await env.create_schema(tables_ddl(env))
    exact = {
        1: "12345678901234567.89",
        2: str(2**70),
        3: "0.1",
        4: "-99999999999999999999999999999999.000000000000000000001",
    }
    messages = [
        b'{"table":"typed","operation":"insert","data":{"id":%d,"n":%s}}' % (k, v.encode())
        for k, v in exact.items()
    ]
    async with env.running(env.config(), nursery) as running:
        await env.publish(env.subject() + ".numbers", messages)
        await wait_checkpoint(env, running, len(messages))
        assert_healthy(running)
    letters = await letters_by_seq(env)
    rows = {r["id"]: r["n"] for r in await env.rows("typed")}
    wrong = {
        k: (v, str(rows[k]))
        for k, v in exact.items()
        if k not in letters and rows.get(k) != decimal.Decimal(v)
    }
    assert not wrong, f"stored values differ from the JSON numbers sent: {wrong}"


# --------------------------------------------------------------------------- size limits

SMALL = 200_000


def sized(i: int, size: int) -> bytes:
    """A valid insert into `typed` of exactly ``size`` bytes."""
    head = typed(i, t="")
    pad = size - len(head)
    msg = typed(i, t="p" * pad)
    assert len(msg) == size
    return msg


async def test_size_limits(env: Env, nursery: trio.Nursery, target: str) -> None:
    """A message above max_message_bytes is dead-lettered as too large (one at the limit lands);
    one above the server's max_payload is refused at publish; the flow goes on."""
    await env.create_schema(tables_ddl(env))
    flow = env.flow_yaml().replace(
        "format: auto", f"format: auto\n      max_message_bytes: {SMALL}"
    )
    subject = env.subject() + ".sizes"
    messages = [good(1), sized(1, SMALL), good(2), sized(2, SMALL + 1), good(3)]
    async with env.running(env.config(flow), nursery) as running:
        await env.publish(subject, messages)
        await wait_checkpoint(env, running, len(messages))

        # Above the server's max_payload (1 MiB): nats-py refuses it before sending...
        nc = await env.nc()
        max_payload = nc.max_payload
        huge = sized(3, max_payload + 1)
        with pytest.raises(nats.errors.MaxPayloadError):
            await aio(nc.jetstream().publish, subject, huge)
        # ...and the server itself refuses it from a client that does not check.
        reply = await raw_publish(env.nats_url, subject, huge)
        assert b"-ERR" in reply and b"maximum payload" in reply.lower(), reply

        await env.publish(subject, [good(4)])
        await wait_checkpoint(env, running, len(messages) + 1)
        assert_healthy(running)
        await accounted(running, len(messages) + 1)
    assert [r["id"] for r in await env.rows("users")] == [1, 2, 3, 4]
    assert [r["id"] for r in await env.rows("typed")] == [1]
    letters = await letters_by_seq(env)
    assert list(letters) == [4]
    assert letters[4]["error"] == f"message of {SMALL + 1} bytes exceeds {SMALL}"
    assert letters[4]["payload"] == messages[3]


async def raw_publish(nats_url: str, subject: str, payload: bytes) -> bytes:
    """PUB over a bare socket (no client-side size check); returns what the server answered."""
    host, port = nats_url.removeprefix("nats://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        info = await stream.receive_some(65536)
        assert info.startswith(b"INFO "), info
        await stream.send_all(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
        await stream.send_all(b"PUB %s %d\r\n" % (subject.encode(), len(payload)))
        answer = b""
        with trio.move_on_after(5):
            try:
                await stream.send_all(payload + b"\r\n")
            except trio.BrokenResourceError:
                pass  # the server may close before reading it all
            while b"-ERR" not in answer:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                answer += chunk
    return answer
