"""Trio-side helpers for end-to-end tests: real NATS, real PostgreSQL or MySQL, cdcsync
in-process.

`Env` names everything after the test's `unique` id (stream, subjects, durable,
schema), so tests share the servers without seeing each other's data. Its destination is
PostgreSQL, or the `target` a test asks for (the `target` fixture: each test that takes it
runs against PostgreSQL and against MySQL/MariaDB): `flow_yaml` configures it, and `sql`,
`rows`, `dead_letters`, `applied` read it back the same way for both (mysqlread.py).
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import mysqlread
import nats
import orjson
import trio

from cdcsync import config as cfg
from cdcsync import registry
from cdcsync.app import Service
from cdcsync.bridge import aio

__all__ = ["TARGETS", "Env", "Running", "SseRead", "envelope", "read_sse", "wait_until"]

TARGETS = ("postgres", "mysql")  # the destinations the `target` fixture runs a test against


def envelope(table: str, op: str, data: dict[str, Any], **extra: Any) -> bytes:
    """A message in the original `cdc` envelope format."""
    body = {
        "id": "00000000-0000-0000-0000-000000000000",
        "timestamp": "2026-01-01T00:00:00Z",
        "source": "test",
        "table": table,
        "operation": op,
        "data": data,
        "metadata": {},
    }
    body.update(extra)
    return json.dumps(body).encode()


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = "condition"
) -> None:
    """Poll ``check`` until true; fail the test with ``what`` after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while True:
            if await check():
                return
            await trio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Running:
    """A cdcsync instance running in the test's nursery."""

    shutdown: trio.Event
    finished: trio.Event
    binds: list[str]
    cancel_scope: trio.CancelScope
    service: Service

    @property
    def api(self) -> str:
        return self.binds[0] if self.binds else ""


@dataclass
class Env:
    """One test's world: servers, unique names and open connections."""

    nats_url: str
    pg_url: str
    unique: str
    target: str = "postgres"  # the destination's database: postgres or mysql
    mysql_url: str = ""  # the shared MariaDB (target mysql)
    _pg: list[asyncpg.Connection] = field(default_factory=list)
    _nc: Any = None

    @property
    def mysql(self) -> bool:
        return self.target == "mysql"

    @property
    def dest_url(self) -> str:
        """The destination's URL (for MySQL it names the test's database)."""
        if self.mysql:
            return mysqlread.with_database(self.mysql_url, self.schema)
        return self.pg_url

    @property
    def schema(self) -> str:
        return self.unique

    @property
    def state(self) -> str:
        """The test's own state schema (cdcsync's checkpoints and dead letters)."""
        return f"{self.unique}_state"

    @property
    def stream(self) -> str:
        return self.unique.upper()

    def subject(self, flow: str = "f") -> str:
        return f"{self.unique}.{flow}"

    def destination(self, flow: str = "f", name: str = "primary", **options: Any) -> Any:
        """A destination object of the test's target, as a flow's configuration would build it."""
        spec = registry.destinations()[self.target]
        data: dict[str, Any] = {
            "url": self.dest_url,
            "state_schema": self.state,
            "conflict_resolution": "upsert",
            "truncate": False,
            "unmapped_tables": "apply",
            **({} if self.mysql else {"schema": self.schema}),
            **options,
        }
        return spec.factory(flow, name, spec.parse(data))

    async def sql(self, query: str, *args: Any, url: str | None = None) -> list[Any]:
        """Rows of one query (``$1`` placeholders, ``"quoted"`` identifiers for both)."""
        if self.mysql:
            return await aio(mysqlread.fetch, url or self.mysql_url, query, *args)
        conn = await aio(asyncpg.connect, url or self.pg_url)
        try:
            return await aio(conn.fetch, query, *args)
        finally:
            await aio(conn.close)

    async def execute(self, script: str, url: str | None = None) -> None:
        if self.mysql:
            await aio(mysqlread.execute, url or self.mysql_url, script)
            return
        conn = await aio(asyncpg.connect, url or self.pg_url)
        try:
            await aio(conn.execute, script)
        finally:
            await aio(conn.close)

    async def execute_in_schema(self, script: str) -> None:
        """Run ``script`` with the test's schema as the default one."""
        if self.mysql:
            await self.execute(script, url=self.dest_url)
        else:
            await self.execute(f"SET search_path = {self.schema};" + script)

    def url_in_schema(self) -> str:
        """A URL whose unqualified table names are the test's schema's."""
        if self.mysql:
            return self.dest_url
        return f"{self.pg_url}?search_path={self.schema}"

    async def tables(self, schema: str | None = None) -> list[str]:
        """The tables and views of ``schema`` (default: the test's), sorted."""
        if self.mysql:
            rows = await self.sql(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = $1 "
                "ORDER BY 1",
                schema or self.schema,
            )
        else:
            rows = await self.sql(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm') ORDER BY 1",
                schema or self.schema,
            )
        return [r[0] for r in rows]

    async def rows(
        self, table: str, url: str | None = None, order: str = "id"
    ) -> list[dict[str, Any]]:
        records = await self.sql(f"SELECT * FROM {self.schema}.{table} ORDER BY {order}", url=url)
        return [dict(r) for r in records]

    async def count(self, table: str, url: str | None = None) -> int:
        records = await self.sql(f"SELECT count(*) FROM {self.schema}.{table}", url=url)
        return int(records[0][0])

    async def dead_letters(self, url: str | None = None) -> list[dict[str, Any]]:
        records = await self.sql(f"SELECT * FROM {self.state}.dead_letters ORDER BY id", url=url)
        letters = [dict(r) for r in records]
        if self.mysql:  # stored as UTC wall time: aware, as PostgreSQL's timestamptz
            for d in letters:
                d["failed_at"] = d["failed_at"].replace(tzinfo=dt.UTC)
        return letters

    async def applied(
        self, seq: int, flow: str = "f", dest: str = "primary", timeout: float = 15.0
    ) -> None:
        """Wait until the destination's checkpoint covers stream sequence ``seq``."""

        async def check() -> bool:
            rows = await self.sql(
                f"SELECT last_seq FROM {self.state}.checkpoints "
                "WHERE flow = $1 AND destination = $2",
                flow,
                dest,
            )
            return bool(rows) and rows[0]["last_seq"] >= seq

        await wait_until(check, timeout, what=f"checkpoint of {flow}/{dest} reaching {seq}")

    async def create_schema(
        self, ddl: str = "", url: str | None = None, name: str | None = None
    ) -> None:
        """(Re)create the test's schema (or ``name``), then run ``ddl`` in it."""
        name = name or self.schema
        if self.mysql:
            await self.execute(
                f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}; USE {name};" + ddl,
                url=url,
            )
            return
        await self.execute(
            f"DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name};"
            f"SET search_path = {name};" + ddl,
            url=url,
        )

    async def drop_schema(self, name: str) -> None:
        if self.mysql:
            await self.execute(f"DROP DATABASE IF EXISTS {name}")
        else:
            await self.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")

    async def nc(self) -> Any:
        if self._nc is None:
            self._nc = await aio(nats.connect, self.nats_url)
        return self._nc

    async def publish(self, subject: str, payloads: list[bytes], jetstream: bool = True) -> None:
        """Publish in order; with JetStream every publish is acknowledged by the stream."""
        nc = await self.nc()

        async def go() -> None:
            if jetstream:
                js = nc.jetstream()
                futures = [await js.publish_async(subject, p) for p in payloads]
                for f in futures:
                    await f
            else:
                for p in payloads:
                    await nc.publish(subject, p)
                await nc.flush()

        await aio(go)

    async def ensure_stream(self, subjects: list[str], name: str | None = None) -> None:
        nc = await self.nc()
        js = nc.jetstream()
        await aio(js.add_stream, name=name or self.stream, subjects=subjects)

    async def close(self) -> None:
        if self._nc is not None:
            await aio(self._nc.close)
            self._nc = None

    def flow_yaml(
        self,
        name: str = "f",
        *,
        jetstream: bool = True,
        fmt: str = "auto",
        mode: str = "upsert",
        destinations: list[tuple[str, str]] | None = None,
        extra_dest: str = "",
        batch: str = "{max_size: 1000, max_delay_ms: 20}",
        subject: str | None = None,
        source_extra: str = "",
    ) -> str:
        """One flow reading ``{unique}.{name}.>`` into this test's schema."""
        source = self.source_yaml(name, jetstream, fmt, subject, source_extra)
        dests = destinations or [("primary", self.dest_url)]
        dest_yaml = "".join(
            f"""
      - name: {dname}
        type: mysql
        url: "{durl}"
        state_schema: {self.state}
        conflict_resolution: {mode}{extra_dest}"""
            if durl.startswith("mysql")
            else f"""
      - name: {dname}
        type: postgres
        url: "{durl}"
        schema: {self.schema}
        state_schema: {self.state}
        conflict_resolution: {mode}{extra_dest}"""
            for dname, durl in dests
        )
        return f"""
  - name: {name}
    source:{source}
    batch: {batch}
    destinations:{dest_yaml}
"""

    def source_yaml(
        self, name: str, jetstream: bool, fmt: str, subject: str | None, source_extra: str
    ) -> str:
        """The ``source`` block's keys of :meth:`flow_yaml` (NATS; KafkaEnv has its own)."""
        subject = subject or f"{self.subject(name)}.>"
        js = (
            f"""
      jetstream:
        stream: {self.stream}
        durable: {self.unique}-{name}
        ack_wait_s: 30"""
            if jetstream
            else ""
        )
        return f"""
      type: nats
      servers: ["{self.nats_url}"]
      subject: "{subject}"{js}
      format: {fmt}{source_extra}"""

    def config(self, *flows: str, api: bool = True) -> cfg.Config:
        text = "api:\n  bind: 127.0.0.1:0\n" if api else "api:\n  enabled: false\n"
        text += "flows:\n" + "".join(flows or (self.flow_yaml(),))
        return cfg.loads(textwrap.dedent(text), path="test.yaml")

    @asynccontextmanager
    async def running(
        self, config: cfg.Config, nursery: trio.Nursery, wait_running: bool = True
    ) -> AsyncIterator[Running]:
        """Start cdcsync in ``nursery``; on exit stop it gracefully and wait."""
        shutdown = trio.Event()
        finished = trio.Event()
        scope = trio.CancelScope()
        service = Service(config)

        async def run(
            *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
        ) -> None:
            try:
                with scope:
                    await service.run(shutdown=shutdown, task_status=task_status)
            finally:
                finished.set()

        binds = await nursery.start(run)
        handle = Running(shutdown, finished, binds, scope, service)
        if wait_running:

            async def all_running() -> bool:
                return all(f.stats.status == "running" for f in service.flows)

            await wait_until(all_running, timeout=20, what="every flow running")
        try:
            yield handle
        finally:
            shutdown.set()
            with trio.move_on_after(20):
                await finished.wait()
            scope.cancel()


@dataclass
class SseRead:
    """What ``read_sse`` got: the response head, the data events, the raw bytes, the time."""

    head: str
    events: list[dict[str, Any]]
    raw: bytes
    elapsed: float


async def read_sse(api: str, count: int) -> SseRead:
    """``count`` data events of ``GET /api/stream``, read by a plain HTTP/1.1 client over a
    Trio TCP stream (a real SSE client, no library in between)."""
    host, port = api.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            f"GET /api/stream HTTP/1.1\r\nHost: {host}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        buffer, events = b"", []
        started = trio.current_time()
        while len(events) < count:
            chunk = await stream.receive_some(65536)
            assert chunk, "server closed the event stream"
            buffer += chunk
            events = [
                orjson.loads(line[6:])
                for line in buffer.split(b"\n")
                if line.startswith(b"data: ") and line.rstrip().endswith(b"}")
            ]
        head = buffer.split(b"\r\n\r\n", 1)[0].decode()
        return SseRead(head, events[:count], buffer, trio.current_time() - started)
