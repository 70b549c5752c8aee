"""Helpers shared by the fault tests: a workload with its expected outcome, and cdcsync
run as a real ``cdcsync serve`` subprocess that can be killed.

Everything here is plain asyncio (nats-py, asyncpg, asyncmy) plus ``subprocess``: the fault tests
are sync tests that call ``asyncio.run``, so nothing here depends on Trio or on the
code under test except through its command line.

The workload writes to two tables:

* ``ledger`` receives only inserts of distinct ids; a BEFORE UPDATE trigger counts in
  ``updates`` every time a row is written again, so ``sum(updates) > 0`` means some event
  was applied twice (an upsert of an existing key turns into an UPDATE).
* ``state`` receives inserts, partial updates, deletes and re-inserts over a small key
  space; its expected final content comes from a one-event-at-a-time Python model.

The database is PostgreSQL or MySQL/MariaDB, told apart by the URL's scheme (``mysql://``):
every helper that takes a URL works with both; for MySQL a "schema" is a database.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncmy.errors
import asyncpg
import cdcproc
import mysqlread
import nats
import nats.js.errors
from harness import envelope

__all__ = [
    "FAULT_DDL",
    "MYSQL_FAULT_DDL",
    "CdcProcess",
    "Fleet",
    "Scenario",
    "Workload",
    "checkpoint",
    "config_yaml",
    "consumer_info",
    "create_schema",
    "drop_schema",
    "flow_done",
    "kill_mid_run",
    "ledger_count",
    "make_workload",
    "open_js",
    "outcome_problems",
    "publish",
    "sql",
    "wait_for",
]


FAULT_DDL = """
CREATE TABLE ledger (id int PRIMARY KEY, v int, updates int NOT NULL DEFAULT 0);
CREATE FUNCTION count_rewrites() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updates := OLD.updates + 1;
  RETURN NEW;
END $$;
CREATE TRIGGER ledger_rewrites BEFORE UPDATE ON ledger
  FOR EACH ROW EXECUTE FUNCTION count_rewrites();
CREATE TABLE state (id int PRIMARY KEY, v int, note text);
"""
MYSQL_FAULT_DDL = """
CREATE TABLE ledger (id int PRIMARY KEY, v int, updates int NOT NULL DEFAULT 0);
CREATE TRIGGER ledger_rewrites BEFORE UPDATE ON ledger
  FOR EACH ROW SET NEW.updates = OLD.updates + 1;
CREATE TABLE state (id int PRIMARY KEY, v int, note text);
"""
# What a helper polling a database that is down or restarting may meet.
DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
DB_ERRORS += (asyncmy.errors.Error,)


def is_mysql(url: str) -> bool:
    return url.startswith(("mysql://", "mariadb://"))


# --------------------------------------------------------------------------- workload


@dataclass
class Workload:
    """Events in publish order and what PostgreSQL must hold once all are applied."""

    events: list[tuple[str, bytes]]  # (table, envelope)
    ledger_ids: int
    state: dict[int, dict[str, Any]]

    def __len__(self) -> int:
        return len(self.events)


def make_workload(total: int, keys: int = 2_000, seed: int = 7) -> Workload:
    """``total`` events: about half ledger inserts, half mutations of ``keys`` state rows."""
    rng = random.Random(seed)
    events: list[tuple[str, bytes]] = []
    model: dict[int, dict[str, Any]] = {}
    ledger = 0
    for n in range(total):
        if rng.random() < 0.5:
            ledger += 1
            events.append(("ledger", envelope("ledger", "insert", {"id": ledger, "v": n})))
            continue
        k = rng.randint(1, keys)
        row = model.get(k)
        if row is None:  # first insert, or re-insert after a delete: a whole new row
            data: dict[str, Any] = {"id": k, "v": n, "note": f"n{n}"}
            model[k] = dict(data)
            events.append(("state", envelope("state", "insert", data)))
            continue
        r = rng.random()
        if r < 0.40:
            data = {"id": k, "v": n}
            op = "update"
        elif r < 0.65:
            data = {"id": k, "note": None if rng.random() < 0.2 else f"u{n}"}
            op = "update"
        elif r < 0.80:
            data = {"id": k, "v": -n, "note": f"w{n}"}
            op = "update"
        else:
            events.append(("state", envelope("state", "delete", {"id": k})))
            del model[k]
            continue
        row.update(data)
        events.append(("state", envelope("state", op, data)))
    return Workload(events, ledger, model)


# --------------------------------------------------------------------------- NATS


async def open_js(url: str) -> Any:
    """A client for the test's own use (publishing, consumer info); no reconnect games."""
    return await nats.connect(url, connect_timeout=3, max_reconnect_attempts=3)


async def publish(
    nc: Any,
    subject_prefix: str,
    events: list[tuple[str, bytes]],
    chunk: int = 2_000,
    pause: float = 0.0,
) -> int:
    """Publish in order to ``{subject_prefix}.{table}``; returns the last stream sequence.

    ``pause`` seconds between chunks keep a steady trickle (events still arriving when a
    fault strikes) instead of one burst.
    """
    js = nc.jetstream()
    last = 0
    for start in range(0, len(events), chunk):
        futures = [
            await js.publish_async(f"{subject_prefix}.{table}", body)
            for table, body in events[start : start + chunk]
        ]
        for fut in futures:
            ack = await fut
            last = max(last, ack.seq)
        if pause:
            await asyncio.sleep(pause)
    return last


async def consumer_info(nc: Any, stream: str, durable: str) -> Any | None:
    try:
        return await nc.jetstream().consumer_info(stream, durable)
    except nats.js.errors.NotFoundError:
        return None


# --------------------------------------------------------------------------- PostgreSQL


async def sql(url: str, query: str, *args: Any) -> list[Any]:
    """One query on a fresh connection (survives the server being restarted in between)."""
    if is_mysql(url):
        return await mysqlread.fetch(url, query, *args)
    conn = await asyncpg.connect(url, timeout=3)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def create_schema(url: str, schema: str, ddl: str = FAULT_DDL) -> None:
    if is_mysql(url):
        ddl = MYSQL_FAULT_DDL if ddl == FAULT_DDL else ddl
        await mysqlread.execute(
            url, f"DROP DATABASE IF EXISTS {schema}; CREATE DATABASE {schema}; USE {schema};" + ddl
        )
        return
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(
            f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
            f"SET search_path = {schema};" + ddl
        )
    finally:
        await conn.close()


async def drop_schema(url: str, schema: str) -> None:
    if is_mysql(url):
        with contextlib.suppress(*DB_ERRORS):
            await mysqlread.execute(
                url, f"DROP DATABASE IF EXISTS {schema}; DROP DATABASE IF EXISTS {schema}_state"
            )
        return
    with contextlib.suppress(OSError, asyncpg.PostgresError):
        await sql(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await sql(url, f"DROP SCHEMA IF EXISTS {schema}_state CASCADE")


async def checkpoint(url: str, schema: str, flow: str = "f") -> int | None:
    try:
        rows = await sql(
            url, f"SELECT last_seq FROM {schema}_state.checkpoints WHERE flow = $1", flow
        )
    except asyncpg.UndefinedTableError:
        return None
    except asyncmy.errors.Error as exc:
        if exc.args[0] in (1146, 1049):  # no table, no database yet
            return None
        raise
    return int(rows[0]["last_seq"]) if rows else None


async def ledger_count(url: str, schema: str) -> int:
    return int((await sql(url, f"SELECT count(*) FROM {schema}.ledger"))[0][0])


async def flow_done(url: str, schema: str, last_seq: int) -> bool:
    """The checkpoint reached the last published sequence."""
    try:
        return await checkpoint(url, schema) == last_seq
    except DB_ERRORS:
        return False


async def outcome_problems(url: str, schema: str, work: Workload) -> list[str]:
    """Every way the tables differ from the model; empty when the sync was exact."""
    problems: list[str] = []
    ledger = await sql(
        url,
        f"SELECT count(*) AS n, count(DISTINCT id) AS d, min(id) AS lo, max(id) AS hi, "
        f"coalesce(sum(updates), 0) AS rewrites FROM {schema}.ledger",
    )
    n, d, lo, hi, rewrites = ledger[0]
    want = (work.ledger_ids, work.ledger_ids, 1, work.ledger_ids, 0)
    if (n, d, lo, hi, rewrites) != want:
        problems.append(
            f"ledger (count, distinct, min, max, sum(updates)) = {(n, d, lo, hi, rewrites)}, "
            f"expected {want}"
        )
        twice = await sql(
            url, f"SELECT id, updates FROM {schema}.ledger WHERE updates > 0 ORDER BY id LIMIT 10"
        )
        if twice:
            problems.append(f"ledger rows written more than once: {[tuple(r) for r in twice]}")
    rows = {r["id"]: dict(r) for r in await sql(url, f"SELECT * FROM {schema}.state")}
    if rows != work.state:
        missing = sorted(set(work.state) - set(rows))
        extra = sorted(set(rows) - set(work.state))
        wrong = sorted(k for k in set(rows) & set(work.state) if rows[k] != work.state[k])
        problems.append(
            f"state differs from the model: {len(missing)} missing {missing[:5]}, "
            f"{len(extra)} extra {extra[:5]}, {len(wrong)} wrong "
            + ", ".join(f"{rows[k]} != {work.state[k]}" for k in wrong[:3])
        )
    dead = await sql(url, f"SELECT stream_seq, error FROM {schema}_state.dead_letters LIMIT 5")
    if dead:
        problems.append(f"dead letters: {[tuple(r) for r in dead]}")
    return problems


# --------------------------------------------------------------------------- waiting


async def wait_for(
    check: Callable[[], Awaitable[bool]],
    timeout: float,
    what: str,
    interval: float = 0.1,
    alive: CdcProcess | None = None,
) -> float:
    """Poll ``check`` until true and return the seconds it took; fail after ``timeout``.

    With ``alive``, fail at once (with its log tail) if that process exits meanwhile.
    """
    started = time.monotonic()
    while True:
        # Checked first: once the process is gone, ``check`` may fail in confusing ways
        # (its API refusing connections).
        if alive is not None and alive.returncode is not None:
            raise AssertionError(
                f"cdcsync exited with {alive.returncode} while waiting for {what}:\n" + alive.tail()
            )
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- cdcsync


def config_yaml(
    *,
    nats_url: str,
    pg_url: str,
    stream: str,
    subject: str,
    schema: str,
    durable: str,
    ack_wait_s: int = 30,
    batch: str = "{max_size: 1000, max_delay_ms: 20}",
    extra: str = "",
) -> str:
    """One JetStream flow ``f`` into ``schema`` (destination ``primary``), API on a free port.

    A ``mysql://`` URL makes it a MySQL destination writing the database ``schema``."""
    if is_mysql(pg_url):
        destination = f"""\
      - name: primary
        type: mysql
        url: "{mysqlread.with_database(pg_url, schema)}"
        state_schema: {schema}_state
        conflict_resolution: upsert
{extra}"""
    else:
        destination = f"""\
      - name: primary
        type: postgres
        url: "{pg_url}"
        schema: {schema}
        state_schema: {schema}_state
        conflict_resolution: upsert
{extra}"""
    return f"""\
api:
  bind: 127.0.0.1:0
flows:
  - name: f
    source:
      type: nats
      servers: ["{nats_url}"]
      subject: "{subject}"
      jetstream:
        stream: {stream}
        durable: {durable}
        ack_wait_s: {ack_wait_s}
      format: cdc
    batch: {batch}
    destinations:
{destination}"""


@dataclass(frozen=True)
class Scenario:
    """One fault test's world: its servers and the names derived from one word.

    Flow ``f`` reads ``{name}.f.>`` from stream ``{NAME}`` with durable ``{name}-f`` into
    schema ``{name}``; the same word is the ``unique`` fixture's value for tests on the
    shared servers, so they never see each other's data.
    """

    nats_url: str
    pg_url: str
    name: str

    @property
    def schema(self) -> str:
        return self.name

    @property
    def stream(self) -> str:
        return self.name.upper()

    @property
    def prefix(self) -> str:
        return f"{self.name}.f"

    @property
    def durable(self) -> str:
        return f"{self.name}-f"

    def write_config(self, directory: Path, **options: Any) -> Path:
        """``cdcsync.yaml`` in ``directory`` for this scenario (``options``: see config_yaml)."""
        path = directory / "cdcsync.yaml"
        path.write_text(
            config_yaml(
                nats_url=self.nats_url,
                pg_url=self.pg_url,
                stream=self.stream,
                subject=f"{self.prefix}.>",
                schema=self.schema,
                durable=self.durable,
                **options,
            )
        )
        return path

    async def prepare(self, ddl: str = FAULT_DDL) -> Any:
        """Create the schema and the stream; the test's own NATS client, for it to close."""
        await create_schema(self.pg_url, self.schema, ddl)
        nc = await open_js(self.nats_url)
        try:
            await nc.jetstream().add_stream(name=self.stream, subjects=[f"{self.prefix}.>"])
        except BaseException:
            await nc.close()
            raise
        return nc


class CdcProcess(cdcproc.CdcProcess):
    """A ``cdcsync serve`` child process, with the fault tests' async wait for its API."""

    async def api(self, timeout: float = 15.0) -> str:
        """Base URL of this instance's API, from its ``api listening`` log line."""
        found: list[str] = []

        async def listening() -> bool:
            for e in self.logged("api listening"):
                found.extend(e["binds"])
            return bool(found)

        await wait_for(listening, timeout, "the API to listen", alive=self)
        return found[0]


async def kill_mid_run(
    fleet: Fleet,
    config: Path,
    url: str,
    schema: str,
    work: Workload,
    timings: dict[str, float],
    after_kill: Callable[[int], Awaitable[None]] | None = None,
) -> list[int]:
    """Start ``cdcsync serve`` three times, each killed (SIGKILL) once the ledger holds more
    than 8,000, 20,000 and 35,000 rows; the ledger's row count at each kill. ``after_kill(n)``
    runs after the n-th kill, while nothing runs."""
    kills = []
    for run, threshold in enumerate((8_000, 20_000, 35_000), start=1):
        proc = fleet.spawn(config, f"run{run}")

        async def past(threshold: int = threshold) -> bool:
            return await ledger_count(url, schema) > threshold

        timings[f"run{run} until kill"] = await wait_for(
            past, 90, f"more than {threshold} ledger rows", alive=proc
        )
        proc.kill9()
        at_kill = await ledger_count(url, schema)
        kills.append(at_kill)
        assert at_kill < work.ledger_ids, "the kill came too late to test anything"
        if after_kill is not None:
            await after_kill(run)
    return kills


class Fleet:
    """The cdcsync processes of one test: all stopped at the end, logs shown on failure."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[CdcProcess] = []

    def spawn(self, config: Path, name: str) -> CdcProcess:
        proc = CdcProcess(config, self.directory / f"{name}.log").start()
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: Any, tb: Any) -> None:
        for p in self.procs:
            p.stop()
        if et is not None:
            for p in self.procs:
                print(p.tail(400))
