"""The PostgreSQL destination.

One connection per (flow, destination) does all the writing and holds the
advisory lock that makes it the only writer: a second instance with the same
config waits as a standby until that session ends. Each batch is one
transaction carrying the rows, the dead letters and the checkpoint, which is
what makes a redelivered message a no-op (exactly-once effect).

The coroutines prefixed ``_aio`` run on asyncio (asyncpg); the public methods
are Trio and cross the bridge once per call.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from cdcsync.bridge import aio
from cdcsync.config import redact_url, scrub, url_secrets
from cdcsync.errors import FatalSinkError, RetryableSinkError
from cdcsync.events import ChangeEvent, Op
from cdcsync.flow.batch import Batch, Item, WriteResult
from cdcsync.registry import ComponentSpec
from cdcsync.sinks import sql
from cdcsync.sinks.compaction import Kind, TablePlan, plan
from cdcsync.sinks.postgres_options import SCHEMA, PostgresOptions, parse_options
from cdcsync.sinks.values import BadValue, canonical_key, rows_json

__all__ = ["SPEC", "PostgresOptions", "PostgresSink", "is_retryable"]

log = structlog.get_logger("cdcsync.sinks.postgres")

# SQLSTATE classes that mean "the server or the connection is in trouble, not the data".
_RETRY_CLASSES = {"08", "40", "53", "57", "58", "XX"}
_RETRY_STATES = {"55P03", "55006", "25006"}  # lock not available, object in use, read-only txn
_STALE_CATALOG = {"42P01", "42703"}  # undefined table / column: our cached catalog is old


def is_retryable(exc: BaseException) -> bool:
    """True when retrying the same batch later can succeed (connection, server, contention)."""
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        return state[:2] in _RETRY_CLASSES or state in _RETRY_STATES
    # InternalClientError: asyncpg read a FATAL (server shutdown, terminated backend) but not
    # yet the close, and the protocol is stuck; a new connection is the cure.
    return isinstance(
        exc,
        (
            OSError,
            TimeoutError,
            asyncpg.InterfaceError,
            asyncpg.ConnectionDoesNotExistError,
            asyncpg.InternalClientError,
        ),
    )


def _describe(exc: BaseException, url: str = "") -> str:
    if isinstance(exc, asyncpg.PostgresError):
        detail = f" ({exc.detail})" if getattr(exc, "detail", None) else ""
        text = f"{exc.sqlstate}: {exc}{detail}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = text.replace("\x00", "")
    return scrub(text, url_secrets(url)) if url else text


class _StaleCatalog(Exception):
    """A statement named a table or column that the catalog no longer has."""


@dataclass(slots=True)
class _Resolved:
    item: Item
    table: sql.TableInfo
    key: Hashable
    event: ChangeEvent


class PostgresSink:
    """Applies batches to one PostgreSQL database as the only writer for its flow."""

    def __init__(self, flow: str, name: str, options: PostgresOptions) -> None:
        self.flow = flow
        self.name = name
        self.options = options
        self._conn: asyncpg.Connection | None = None
        self._tables: dict[str, sql.TableInfo | None] = {}
        self._stream: tuple[str, str] | None = None
        self._checkpoint: int | None = None
        self._sql_cache: dict[Hashable, str] = {}
        self._cp_select, self._cp_upsert = sql.checkpoint_sql(options.schema)
        self._dl_insert = sql.dead_letter_sql(options.schema)
        self._lock_key = f"cdcsync:{flow}:{name}"
        self._stale_is_data = False
        # Why the last connection attempt failed: a write with no connection says so, so
        # the flow's last_error names the cause (e.g. connection refused), not just
        # "not connected".
        self._connect_error: str | None = None

    # --- Trio side -----------------------------------------------------------------------

    async def connect(self) -> bool:
        """Connect and try to become the writer; False when another instance holds the lock."""
        try:
            connected = await aio(self._aio_connect)
        except (
            asyncpg.InvalidAuthorizationSpecificationError,
            asyncpg.InvalidPasswordError,
        ) as exc:
            self._connect_error = _describe(exc)
            raise FatalSinkError(self._connect_error) from exc
        except Exception as exc:
            # Anything else (unreachable, starting up, database not created yet): retry.
            self._connect_error = _describe(exc)
            raise RetryableSinkError(self._connect_error) from exc
        self._connect_error = None
        return connected

    async def prepare(self, stream: tuple[str, str] | None) -> int | None:
        """Create the system tables, check mapped tables, and return the checkpoint.

        ``stream`` is (stream name, creation time); ``None`` for a source without
        sequence numbers, which keeps no checkpoint.
        """
        self._stream = stream
        try:
            return await aio(self._aio_prepare)
        except FatalSinkError:
            raise
        except asyncpg.PostgresError as exc:
            if is_retryable(exc):
                raise RetryableSinkError(_describe(exc)) from exc
            raise FatalSinkError(_describe(exc)) from exc  # e.g. no right to create our tables
        except Exception as exc:
            raise RetryableSinkError(_describe(exc)) from exc

    async def write(self, batch: Batch) -> WriteResult:
        """Apply a batch in one transaction; raises RetryableSinkError to be retried whole."""
        try:
            return await aio(self._aio_write, batch.items)
        except Exception as exc:
            if is_retryable(exc):
                raise RetryableSinkError(_describe(exc)) from exc
            raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await aio(conn.close, timeout=2)
            except Exception:
                conn.terminate()

    def abort(self) -> None:
        """Drop the connection at once (and with it the writer lock)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def raw_connection(self) -> asyncpg.Connection:
        """(asyncio side) A plain connection for operator tools; no writer lock is taken."""
        if self._conn is None or self._conn.is_closed():
            await self._aio_connect_only()
        assert self._conn is not None
        return self._conn

    async def apply_without_checkpoint(self, items: list[Item]) -> list[tuple[Item, str]]:
        """(asyncio side) Apply items in one transaction; return those that failed, with why.

        For replaying dead letters: no checkpoint, no new dead letters.
        """
        conn = await self.raw_connection()
        mapping = self.options.tables
        names = {mapping.get(i.event.table, i.event.table) for i in items if i.event is not None}
        self._tables.clear()
        await self._aio_lookup(sorted(names))
        resolved, dead, _skipped, _suspects = self._resolve(items)
        self._stale_is_data = True
        async with conn.transaction():
            if resolved:
                await self._aio_apply_split(resolved, dead)
        return dead

    @property
    def checkpoint(self) -> int | None:
        return self._checkpoint

    async def problems(self) -> list[str]:
        """What stops this destination from working, in plain words (for ``check --connect``)."""
        try:
            await aio(self._aio_connect_only)
        except Exception as exc:
            return [
                f"cannot connect to {redact_url(self.options.url)}: "
                f"{_describe(exc, self.options.url)}"
            ]
        try:
            return await aio(self._aio_check_schema) or await aio(self._aio_check_mapped)
        finally:
            await self.close()

    async def _aio_check_schema(self) -> list[str]:
        assert self._conn is not None
        schema = self.options.schema
        if await self._conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            return []
        return [
            f"destination {self.name!r}: schema {schema!r} does not exist (fix: CREATE SCHEMA "
            f"{sql.quote_ident(schema)}, or correct 'schema')"
        ]

    # --- asyncio side --------------------------------------------------------------------

    async def _aio_connect_only(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        self._conn = await asyncpg.connect(
            self.options.url,
            timeout=self.options.connect_timeout_s,
            server_settings={"application_name": f"cdcsync:{self.flow}:{self.name}"},
        )

    async def _aio_connect(self) -> bool:
        await self._aio_connect_only()
        assert self._conn is not None
        got = await self._conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", self._lock_key
        )
        return bool(got)

    async def _aio_prepare(self) -> int | None:
        conn = self._conn
        assert conn is not None
        async with conn.transaction():
            # Several flows may start at once against one database: serialize the DDL.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('cdcsync:ddl'))")
            for stmt in sql.system_tables_sql(self.options.schema):
                await conn.execute(stmt)
        problems = await self._aio_check_mapped()
        if problems:
            raise FatalSinkError("; ".join(problems))
        self._checkpoint = await self._aio_load_checkpoint()
        return self._checkpoint

    async def _aio_load_checkpoint(self) -> int | None:
        if self._stream is None:
            return None
        assert self._conn is not None
        row = await self._conn.fetchrow(self._cp_select, self.flow, self.name)
        if row is None:
            return None
        stream, created = self._stream
        if row["stream"] != stream or (row["stream_created"] and row["stream_created"] != created):
            log.warning(
                "checkpoint is for another stream; starting this destination from scratch",
                flow=self.flow,
                destination=self.name,
                checkpoint_stream=row["stream"],
                stream=stream,
            )
            return None
        return int(row["last_seq"])

    async def _aio_check_mapped(self) -> list[str]:
        targets = sorted(set(self.options.tables.values()))
        if not targets:
            return []
        self._tables = {k: v for k, v in self._tables.items() if k not in targets}
        await self._aio_lookup(targets)
        problems = []
        schema = self.options.schema
        for target in targets:
            info = self._tables.get(target)
            if info is None:
                problems.append(
                    f"destination {self.name!r}: table {schema}.{target} does not exist "
                    f"(create it, or fix the 'tables' mapping)"
                )
            elif not info.key:
                problems.append(
                    f"destination {self.name!r}: table {schema}.{target} has no primary key or "
                    f"unique index on NOT NULL columns (fix: ALTER TABLE "
                    f"{sql.quote_ident(schema)}.{sql.quote_ident(target)} ADD PRIMARY KEY (...))"
                )
        return problems

    async def _aio_lookup(self, names: list[str]) -> None:
        """Read table definitions from the catalog for names not cached yet."""
        missing = [n for n in names if n not in self._tables and "\x00" not in n]
        for n in names:
            if "\x00" in n:
                self._tables[n] = None
        if not missing:
            return
        conn = self._conn
        assert conn is not None
        rows = await conn.fetch(sql.CATALOG_TABLES, self.options.schema, missing)
        oids = {r["oid"]: r["relname"] for r in rows}
        columns: dict[int, dict[str, sql.Column]] = {oid: {} for oid in oids}
        keys: dict[int, list[tuple[bool, list[str], bool]]] = {oid: [] for oid in oids}
        if oids:
            for r in await conn.fetch(sql.CATALOG_COLUMNS, list(oids)):
                columns[r[0]][r[1]] = sql.Column(r[1], r[2], r[3], r[4], r[5])
            for r in await conn.fetch(sql.CATALOG_KEYS, list(oids)):
                keys[r[0]].append((r[1], list(r[2]), r[3]))
        if len(self._tables) > 10_000:
            self._tables.clear()  # hostile input naming endless tables: keep the cache bounded
        for n in missing:
            self._tables[n] = None
        for oid, name in oids.items():
            key = sql.pick_key(keys[oid]) or ()
            self._tables[name] = sql.TableInfo(self.options.schema, name, columns[oid], key)

    async def _aio_refresh(self, names: set[str]) -> bool:
        """Re-read tables that this batch found missing or short of a column.

        A migration may have added them a moment ago; one catalog query per batch that
        has such events (at most 100 names) is cheap next to dead-lettering good events.
        """
        stale = sorted(names)[:100]
        for n in stale:
            self._tables.pop(n, None)
        if stale:
            await self._aio_lookup(stale)
        return bool(stale)

    def _resolve(
        self, items: list[Item]
    ) -> tuple[list[_Resolved], list[tuple[Item, str]], int, set[str]]:
        """Name every event's table and key from the catalog, or say why it cannot be applied.

        Also returns the target names that were unknown or lacked a column: the caller
        re-reads those from the catalog (a migration may have just added them).
        """
        resolved: list[_Resolved] = []
        dead: list[tuple[Item, str]] = []
        suspects: set[str] = set()
        skipped = 0
        mapping = self.options.tables
        schema = self.options.schema
        shapes: dict[tuple[str, tuple[str, ...]], tuple[list[str], bool]] = {}
        for item in items:
            if item.error is not None:
                dead.append((item, item.error))
                continue
            ev = item.event
            if ev is None:
                skipped += 1
                continue
            target = mapping.get(ev.table, ev.table)
            info = self._tables.get(target)
            if info is None:
                suspects.add(target)
                shown = f"{ev.table!r}" + (f" (mapped to {target!r})" if target != ev.table else "")
                dead.append((item, f"unknown table {shown} in schema {schema!r}"))
                continue
            if not info.key:
                dead.append(
                    (item, f"table {schema}.{target} has no primary key or usable unique index")
                )
                continue
            if ev.op is Op.TRUNCATE:
                if self.options.truncate:
                    resolved.append(_Resolved(item, info, None, ev))
                else:
                    skipped += 1
                continue
            cols = info.columns
            data = ev.data
            # Events of one table mostly share a few column sets: check each set once.
            shape = (target, tuple(data))
            checked = shapes.get(shape)
            if checked is None:
                checked = shapes[shape] = (
                    [c for c in data if c not in cols],
                    any(cols[c].generated for c in data if c in cols),
                )
            unknown, generated = checked
            if unknown:
                suspects.add(target)
                shown_cols = ", ".join(repr(c) for c in unknown[:5])
                dead.append((item, f"unknown column(s) {shown_cols} in table {schema}.{target}"))
                continue
            if generated:
                data = {c: v for c, v in data.items() if not cols[c].generated}
                ev = ChangeEvent(ev.table, ev.op, data, ev.unavailable)
            try:
                key = tuple(canonical_key(data[c], cols[c].type) for c in info.key)
                hash(key)
            except KeyError:
                missing = [c for c in info.key if c not in data]
                dead.append(
                    (item, f"missing primary key column(s) {missing} for {schema}.{target}")
                )
                continue
            except (TypeError, ArithmeticError, ValueError):
                dead.append((item, f"primary key of {schema}.{target} must be scalar values"))
                continue
            if any(v is None for v in key):
                dead.append((item, f"primary key of {schema}.{target} contains null"))
                continue
            resolved.append(_Resolved(item, info, key, ev))
        return resolved, dead, skipped, suspects

    def _sql(self, cache_key: Hashable, build: Any, *args: Any) -> str:
        text = self._sql_cache.get(cache_key)
        if text is None:
            if len(self._sql_cache) > 2_000:
                self._sql_cache.clear()
            text = self._sql_cache[cache_key] = build(*args)
        return text

    async def _aio_execute(self, group: list[_Resolved]) -> None:
        """Run the set-based statements for a group of resolved events, wave by wave."""
        conn = self._conn
        assert conn is not None
        tables: dict[str, sql.TableInfo] = {}
        originals: dict[tuple[str, Hashable], dict[str, Any]] = {}
        for r in group:
            tables.setdefault(r.table.name, r.table)
            if r.event.op is Op.DELETE:  # a delete statement needs the key as the event spelt it
                originals[(r.table.name, r.key)] = {c: r.event.data[c] for c in r.table.key}
        steps = plan(
            ((r.table.name, r.key, r.event) for r in group), self.options.conflict_resolution
        )
        for step in steps:
            await self._aio_step(conn, step, tables, originals)

    async def _aio_step(
        self,
        conn: asyncpg.Connection,
        step: dict[Hashable, TablePlan],
        tables: dict[str, sql.TableInfo],
        originals: dict[tuple[str, Hashable], dict[str, Any]],
    ) -> None:
        # Deletes before writes (tables in reverse order of first appearance), so that a
        # unique value moved from one key to another within a step does not collide.
        order = [name for name in tables if name in step]
        for name in order:
            if step[name].truncate:
                await conn.execute(self._sql(("truncate", name), sql.truncate_sql, tables[name]))
        for name in reversed(order):
            info = tables[name]
            keys = [
                originals[(name, k)] for k, op in step[name].ops.items() if op.kind is Kind.DELETE
            ]
            if keys:
                stmt = self._sql(("delete", name, info.key), sql.delete_sql, info)
                await conn.execute(stmt, rows_json(keys))
        for name in order:
            info = tables[name]
            groups: dict[tuple[Kind, tuple[str, ...], frozenset[str]], list[dict[str, Any]]] = {}
            ordered: dict[frozenset[str], tuple[str, ...]] = {}  # column set -> table order
            for op in step[name].ops.values():
                if op.kind is Kind.DELETE:
                    continue
                shape = frozenset(op.cols)
                cols = ordered.get(shape)
                if cols is None:
                    cols = ordered[shape] = tuple(c for c in info.columns if c in shape)
                groups.setdefault((op.kind, cols, op.keep), []).append(op.cols)
            for (kind, cols, keep), rows in groups.items():
                stmt = self._sql(
                    ("write", name, kind, cols, keep, info.key),
                    sql.write_sql,
                    info,
                    kind,
                    cols,
                    keep,
                )
                await conn.execute(stmt, rows_json(rows))

    def _data_error(self, exc: Exception) -> str:
        """Why the events failed, when it is their data's fault; re-raises anything else.

        Retryable errors go up to be retried whole; an undefined table or column first
        means our cached catalog is stale (until ``_stale_is_data``).
        """
        if isinstance(exc, BadValue):
            return str(exc)
        if is_retryable(exc):
            raise exc
        if getattr(exc, "sqlstate", None) in _STALE_CATALOG and not self._stale_is_data:
            raise _StaleCatalog from exc
        return _describe(exc)

    async def _aio_apply_split(self, group: list[_Resolved], dead: list[tuple[Item, str]]) -> int:
        """Apply in savepoints, halving on data errors until the bad events stand alone."""
        conn = self._conn
        assert conn is not None
        try:
            async with conn.transaction():
                await self._aio_execute(group)
            return len(group)
        except (BadValue, asyncpg.PostgresError) as exc:
            reason = self._data_error(exc)
            if len(group) == 1:
                dead.append((group[0].item, reason))
                return 0
        mid = len(group) // 2
        return await self._aio_apply_split(group[:mid], dead) + await self._aio_apply_split(
            group[mid:], dead
        )

    async def _aio_write(self, items: list[Item]) -> WriteResult:
        started = time.perf_counter()
        conn = self._conn
        if conn is None or conn.is_closed():
            cause = f" (last attempt: {self._connect_error})" if self._connect_error else ""
            raise asyncpg.ConnectionDoesNotExistError(f"not connected to PostgreSQL{cause}")
        checkpointed = self._stream is not None
        last = self._checkpoint or 0
        todo: list[Item] = []
        skipped = 0
        for item in items:
            seq = item.delivery.seq
            if checkpointed and seq <= last:
                skipped += 1  # applied before (redelivery or duplicate within the batch)
                continue
            last = max(last, seq)
            todo.append(item)
        if not todo:
            return WriteResult(skipped=skipped, seconds=time.perf_counter() - started)
        mapping = self.options.tables
        names = {mapping.get(i.event.table, i.event.table) for i in todo if i.event is not None}
        await self._aio_lookup(sorted(names))
        for attempt in range(3):
            # After two catalog refreshes, a schema error is the event's fault: dead-letter it.
            self._stale_is_data = attempt == 2
            resolved, dead, skip2, suspects = self._resolve(todo)
            if suspects and await self._aio_refresh(suspects):
                resolved, dead, skip2, suspects = self._resolve(todo)
            try:
                written = await self._aio_transaction(resolved, dead, last, split=attempt > 0)
            except _StaleCatalog:
                self._tables.clear()
                await self._aio_lookup(sorted(names))
                continue
            self._checkpoint = last if checkpointed else None
            return WriteResult(
                written, len(dead), skipped + skip2, seconds=time.perf_counter() - started
            )
        raise RetryableSinkError("catalog keeps changing under the batch; retrying later")

    async def _aio_transaction(
        self, resolved: list[_Resolved], dead: list[tuple[Item, str]], last: int, split: bool
    ) -> int:
        conn = self._conn
        assert conn is not None
        if not split:
            # Fast path: no savepoints. A data error rolls back and we come back to split.
            try:
                async with conn.transaction():
                    if resolved:
                        await self._aio_execute(resolved)
                    await self._aio_finish(dead, last)
                return len(resolved)
            except (BadValue, asyncpg.PostgresError) as exc:
                self._data_error(exc)
        async with conn.transaction():
            written = await self._aio_apply_split(resolved, dead) if resolved else 0
            await self._aio_finish(dead, last)
        return written

    async def _aio_finish(self, dead: list[tuple[Item, str]], last: int) -> None:
        conn = self._conn
        assert conn is not None
        if dead:
            await conn.execute(
                self._dl_insert,
                self.flow,
                self.name,
                [i.delivery.subject.replace("\x00", "") for i, _ in dead],
                [i.delivery.seq if self._stream is not None else None for i, _ in dead],
                [i.delivery.data for i, _ in dead],
                [reason.replace("\x00", "") for _, reason in dead],
                [i.event.table.replace("\x00", "") if i.event else None for i, _ in dead],
            )
        if self._stream is not None:
            stream, created = self._stream
            await conn.execute(self._cp_upsert, self.flow, self.name, stream, created, last)


SPEC = ComponentSpec(
    name="postgres",
    kind="destination",
    summary="Apply change events to PostgreSQL tables, one transaction per batch.",
    schema=SCHEMA,
    parse=parse_options,
    factory=PostgresSink,
    example="""\
      - name: primary
        type: postgres
        # libpq-style URL; ${VAR:-default} works in every string
        url: ${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}
        schema: public                  # where target tables and cdcsync_* tables live
        conflict_resolution: upsert     # upsert | replace | ignore
        # tables: {users: app_users}    # optional: event table -> target table
        # truncate: false               # apply Debezium truncate events
""",
    secrets=("url",),
)
