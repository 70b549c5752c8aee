"""The MySQL phases of ``e2e.py``: cdcsync into MySQL next to the driver's own best loop and
a naive loop, on the same events, in the same run.

- ``mysql``: the real service draining the backlog into MariaDB/MySQL (as ``cdcsync``
  does into PostgreSQL);
- ``mysql-limit``: the least work any writer can give the server for the workload, with
  the fastest loop ``mysql_drivers.py`` measured (asyncmy's MariaDB bulk execute of a
  one-row prepared upsert; on a server without bulk operations, the same statement with
  the rows as one multi-row VALUES): per chunk of ``--batch-size`` events one ``DELETE``
  and one upsert of the final rows, one transaction; no NATS. The target is cdcsync at
  least half of this;
- ``mysql-naive``: what a team writes first: pull, decode, one autocommitted upsert (or
  delete) and one ack per message.

Each verifies the table against the expected state. Plain asyncio (asyncmy, nats-py).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncmy
import nats
import orjson
import workload as wl

__all__ = [
    "MYSQL_DDL",
    "create_database",
    "drop_databases",
    "mysql_facts",
    "run_mysql_limit",
    "run_mysql_naive",
    "verify_mysql",
    "with_database",
]

# The workload's table in MySQL's types (timestamptz -> DATETIME(6) in UTC, jsonb -> JSON).
MYSQL_DDL = """CREATE TABLE {table} (
    id int PRIMARY KEY,
    name text,
    email text,
    score int,
    balance decimal(14, 2),
    active bool,
    updated_at datetime(6),
    payload json
) ENGINE=InnoDB"""

_COLS = ", ".join(wl.COLUMNS)
# asyncmy logs every server note (e.g. "Can't drop database ...; database doesn't exist"
# after DROP DATABASE IF EXISTS) on the stdlib logger: not part of the benchmark's output.
logging.getLogger("asyncmy").setLevel(logging.ERROR)
_SETS = ", ".join(f"{c} = VALUES({c})" for c in wl.COLUMNS[1:])


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def connect(url: str, autocommit: bool = True) -> Any:
    u = urlsplit(url)
    conn = await asyncmy.connect(
        host=u.hostname or "127.0.0.1",
        port=u.port or 3306,
        user=unquote(u.username or "root"),
        password=unquote(u.password or ""),
        database=u.path.lstrip("/") or None,
        autocommit=autocommit,
    )
    async with conn.cursor() as cur:
        await cur.execute("SET SESSION time_zone = '+00:00'")
    return conn


async def _execute(url: str, *statements: str) -> None:
    conn = await connect(url)
    try:
        async with conn.cursor() as cur:
            for s in statements:
                await cur.execute(s)
    finally:
        conn.close()


async def create_database(url: str, database: str, ddl: str = MYSQL_DDL) -> None:
    """A fresh database (and no state database of a previous run) with the users table."""
    await _execute(
        url,
        f"DROP DATABASE IF EXISTS {database}",
        f"DROP DATABASE IF EXISTS {database}_state",
        f"CREATE DATABASE {database}",
        ddl.format(table=f"{database}.users"),
    )


async def drop_databases(url: str, databases: list[str]) -> None:
    await _execute(url, *(f"DROP DATABASE IF EXISTS {d}" for d in databases))


async def mysql_facts(url: str) -> dict[str, Any]:
    conn = await connect(url)
    try:
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@innodb_buffer_pool_size"
            )
            version, flush, pool = await cur.fetchone()
    finally:
        conn.close()
    return {
        "version": version,
        "innodb_flush_log_at_trx_commit": flush,
        "innodb_buffer_pool_size": pool,
    }


def _canonical_row(row: tuple[Any, ...]) -> tuple[int, bytes]:
    """(id, canonical bytes) of a row read from MySQL, comparable with the expected state:
    BOOL comes back as 1/0, DATETIME as UTC wall time, JSON as text."""
    key, name, email, score, balance, active, ts, payload = row
    if ts is not None:
        ts = ts.replace(tzinfo=dt.UTC)
    return wl.canonical_db_row((key, name, email, score, balance, active, ts, payload))


async def verify_mysql(url: str, table: str, expected: dict[int, bytes]) -> dict[str, Any]:
    conn = await connect(url)
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"SELECT {_COLS} FROM {table}")
            records = list(await cur.fetchall())
    finally:
        conn.close()
    got = dict(_canonical_row(r) for r in records)
    want_sum, got_sum = wl.state_checksum(expected), wl.state_checksum(got)
    diff = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
    return {
        "ok": want_sum == got_sum and len(records) == len(got),
        "rows": len(records),
        "expected_rows": len(expected),
        "checksum": got_sum[:16],
        "expected_checksum": want_sum[:16],
        "differing_keys": diff[:5],
        "differing_count": len(diff),
    }


def _mysql_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A typed row (workload._typed) as the driver sends it: UTC wall time, 1/0, JSON text."""
    key, name, email, score, balance, active, ts, payload = row
    if ts is not None:
        ts = ts.astimezone(dt.UTC).replace(tzinfo=None)
    return (key, name, email, score, balance, None if active is None else int(active), ts, payload)


async def run_mysql_limit(
    url: str, table: str, plans: list[tuple[list[int], list[tuple[Any, ...]]]]
) -> tuple[float, str]:
    """Per chunk: one ``DELETE ... IN`` and one bulk upsert, one transaction; no NATS.
    Returns (seconds, the loop used)."""
    marks = ", ".join(["?"] * len(wl.COLUMNS))
    one = f"INSERT INTO {table} ({_COLS}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {_SETS}"
    chunks = [(deletes, [_mysql_row(r) for r in rows]) for deletes, rows in plans]
    conn = await connect(url, autocommit=False)
    try:
        stmt = await conn.prepare(one)
        loop = "bulk execute"
        started = time.perf_counter()
        for deletes, rows in chunks:
            if deletes:
                async with conn.cursor() as cur:
                    await cur.execute(
                        f"DELETE FROM {table} WHERE id IN ({', '.join(map(str, deletes))})"
                    )
            if rows:
                try:
                    await stmt.execute_bulk(rows)
                except Exception:  # no MariaDB bulk operations (MySQL): one multi-row VALUES
                    loop = "multi-row VALUES"
                    values = ", ".join([f"({', '.join(['%s'] * len(wl.COLUMNS))})"] * len(rows))
                    async with conn.cursor() as cur:
                        await cur.execute(
                            f"INSERT INTO {table} ({_COLS}) VALUES {values} "
                            f"ON DUPLICATE KEY UPDATE {_SETS}",
                            [v for r in rows for v in r],
                        )
            await conn.commit()
        return time.perf_counter() - started, loop
    finally:
        conn.close()


def _naive_value(col: str, value: Any) -> Any:
    if value is None:
        return None
    if col == "balance":
        return Decimal(str(value))
    if col == "updated_at":
        return dt.datetime.fromisoformat(value).astimezone(dt.UTC).replace(tzinfo=None)
    if col == "payload":
        return json.dumps(value)
    if col == "active":
        return int(value)
    return value


async def run_mysql_naive(
    nats_url: str, url: str, stream: str, subject: str, durable: str, table: str, count: int
) -> float:
    """Pull, decode, one autocommitted upsert (or delete) and one ack per message."""
    nc = await nats.connect(nats_url)
    conn = await connect(url)
    statements: dict[tuple[str, ...], str] = {}
    try:
        js = nc.jetstream()
        started = time.perf_counter()
        psub = await js.pull_subscribe(subject, durable=durable, stream=stream)
        done = 0
        async with conn.cursor() as cur:
            while done < count:
                for msg in await psub.fetch(min(100, count - done), timeout=10):
                    event = orjson.loads(msg.data)
                    data = event["data"]
                    if event["operation"] == "delete":
                        await cur.execute(f"DELETE FROM {table} WHERE id = %s", (data["id"],))
                    else:
                        cols = tuple(data)
                        sql = statements.get(cols)
                        if sql is None:
                            sets = ", ".join(f"{c} = VALUES({c})" for c in cols if c != "id")
                            sql = statements[cols] = (
                                f"INSERT INTO {table} ({', '.join(cols)}) "
                                f"VALUES ({', '.join(['%s'] * len(cols))}) "
                                f"ON DUPLICATE KEY UPDATE {sets}"
                            )
                        await cur.execute(sql, [_naive_value(c, data[c]) for c in cols])
                    await msg.ack()
                    done += 1
        await nc.flush()
        return time.perf_counter() - started
    finally:
        conn.close()
        await nc.close()
