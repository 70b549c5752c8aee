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

import contextlib
import time
from collections.abc import Hashable
from typing import Any

import asyncpg
import structlog

from cdcsync.bridge import aio
from cdcsync.config import redact_url, scrub, url_secrets
from cdcsync.errors import FatalSinkError, RetryableSinkError
from cdcsync.events import Op
from cdcsync.flow.batch import Batch, Item, WriteResult
from cdcsync.registry import ComponentSpec
from cdcsync.sinks import sql
from cdcsync.sinks.compaction import Kind, TablePlan, plan
from cdcsync.sinks.postgres_options import SCHEMA, PostgresOptions, parse_options
from cdcsync.sinks.resolve import Resolution, Resolved, Resolver
from cdcsync.sinks.values import BadValue, canonical_key, rows_json, suspect

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


# Savepoints released (kept) per transaction while isolating bad events. Every released
# savepoint that wrote keeps its subtransaction's lock until the top-level commit, and past
# 64 subtransactions PostgreSQL's per-backend cache overflows (slowing every other session):
# after this many the isolation commits what it has applied so far, with the checkpoint of
# that point, and goes on in a new transaction.
_MAX_KEPT = 32


def lock_key(flow: str, destination: str, state_schema: str) -> str:
    """The advisory-lock name that makes one session the writer of (flow, destination).

    With the default state schema it is the name cdcsync 0.1 used, so an old and a new
    instance exclude each other during a rolling upgrade.
    """
    prefix = "cdcsync" if state_schema == "cdcsync" else f"cdcsync:{state_schema}"
    return f"{prefix}:{flow}:{destination}"


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
        self._cp_select, self._cp_upsert = sql.checkpoint_sql(options.state_schema)
        self._dl_insert = sql.dead_letter_sql(options.state_schema)
        self._lock_key = lock_key(flow, name, options.state_schema)
        self._resolver = Resolver(
            schema=options.schema,
            mapping=options.tables,
            truncate=options.truncate,
            unmapped=options.unmapped_tables,
            canonical_key=canonical_key,
        )
        self._stale_is_data = False
        self._prepared = False  # prepared once: a mapped table gone later is waited for
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
        """(asyncio side) Apply items inside the caller's transaction; return those that
        failed, with why. For replaying dead letters: no checkpoint, no new dead letters.
        """
        conn = await self.raw_connection()
        self._tables.clear()
        await self._aio_lookup(self._resolver.targets(items))
        res = self._resolver.resolve(items, self._tables)
        self._stale_is_data = True
        for group in _runs(res.resolved):
            await self._aio_isolate(conn, group, res.dead, None)
        return res.dead

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
            return (await aio(self._aio_check_mapped))[1]
        finally:
            await self.close()

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
        state = self.options.state_schema
        async with conn.transaction():
            # Several flows may start at once against one database: serialize the DDL.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('cdcsync:ddl'))")
            # CREATE ... IF NOT EXISTS checks the privilege before the existence: skip what
            # a DBA created beforehand, so cdcsync needs no CREATE right once it exists.
            have_schema = await conn.fetchval(
                "SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = $1", state
            )
            have = await conn.fetchval(
                "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = $1 "
                "AND tablename IN ('checkpoints', 'dead_letters')",
                state,
            )
            if not (have_schema and have == 2):
                for stmt in sql.system_tables_sql(state):
                    if have_schema and stmt.startswith("CREATE SCHEMA"):
                        continue
                    await conn.execute(stmt)
            await self._aio_migrate_legacy(conn)
        missing, problems = await self._aio_check_mapped()
        if missing and self._prepared and len(missing) == len(problems):
            # It ran before: a dropped mapped table is an outage to wait out, not a reason
            # to stop the flow for good (its events stay in the stream meanwhile).
            raise RetryableSinkError("; ".join(problems))
        if problems:
            raise FatalSinkError("; ".join(problems))
        self._checkpoint = await self._aio_load_checkpoint()
        self._prepared = True
        return self._checkpoint

    async def _aio_migrate_legacy(self, conn: asyncpg.Connection) -> None:
        """Move this pair's rows from cdcsync 0.1's tables in the users' schema (upgrade).

        Runs under the writer lock, which 0.1 takes under the same name, so no old instance
        moves this position meanwhile. The emptied old tables stay (an old instance of
        another flow may still use them); ``check --connect`` says when to drop them.
        """
        schema = self.options.schema
        found = await conn.fetch(
            "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = $1 "
            "AND tablename = ANY($2::text[])",
            schema,
            list(sql.LEGACY_TABLES),
        )
        if not found:
            return
        names = {r[0] for r in found}
        move_checkpoints, move_letters = sql.legacy_migration_sql(schema, self.options.state_schema)
        moved: dict[str, int] = {}
        if "cdcsync_checkpoints" in names:
            status = await conn.execute(move_checkpoints, self.flow, self.name)
            moved["checkpoints"] = int(status.split()[-1])
        if "cdcsync_dead_letters" in names:
            status = await conn.execute(move_letters, self.flow, self.name)
            moved["dead_letters"] = int(status.split()[-1])
        left = (
            await conn.fetchval(
                f"SELECT count(*) FROM {sql.quote_ident(schema)}.cdcsync_checkpoints"
            )
            if "cdcsync_checkpoints" in names
            else 0
        )
        if not left:
            log.warning(
                "cdcsync 0.1's bookkeeping tables are no longer used: drop them once no 0.1 "
                "instance runs against this database",
                fix="DROP TABLE IF EXISTS "
                + ", ".join(f"{sql.quote_ident(schema)}.{t}" for t in sorted(names)),
            )
        if any(moved.values()):
            log.info(
                "moved bookkeeping rows from the users' schema into the state schema",
                flow=self.flow,
                destination=self.name,
                schema=schema,
                state_schema=self.options.state_schema,
                **moved,
            )

    async def _aio_load_checkpoint(self) -> int | None:
        if self._stream is None:
            return None
        assert self._conn is not None
        rows = await self._conn.fetch(self._cp_select, self.flow, self.name)
        stream, created = self._stream
        mine = [r for r in rows if r["stream"] == stream and r["partition"] == 0]
        if not rows:
            return None
        if not mine or (mine[0]["stream_created"] and mine[0]["stream_created"] != created):
            log.warning(
                "checkpoint is for another stream; starting this destination from scratch",
                flow=self.flow,
                destination=self.name,
                checkpoint_stream=(mine or rows)[0]["stream"],
                stream=stream,
            )
            return None
        return int(mine[0]["last_seq"])

    async def _aio_check_mapped(self) -> tuple[list[str], list[str]]:
        """(missing mapped tables, every problem with the mapped tables, in words)."""
        targets = sorted(set(self.options.tables.values()))
        if not targets:
            return [], []
        self._tables = {k: v for k, v in self._tables.items() if k not in targets}
        await self._aio_lookup(targets)
        problems = []
        missing = []
        schema = self.options.schema
        for target in targets:
            info = self._tables.get(target)
            if info is None:
                missing.append(target)
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
        return missing, problems

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
                columns[r[0]][r[1]] = sql.Column(r[1], r[2], r[3], r[4], r[5], r[6])
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

    def _sql(self, cache_key: Hashable, build: Any, *args: Any) -> str:
        text = self._sql_cache.get(cache_key)
        if text is None:
            if len(self._sql_cache) > 2_000:
                self._sql_cache.clear()
            text = self._sql_cache[cache_key] = build(*args)
        return text

    async def _aio_execute(self, group: list[Resolved]) -> None:
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
        names = self._resolver.targets(todo)
        await self._aio_lookup(names)
        for attempt in range(3):
            # After two catalog refreshes, a schema error is the event's fault: dead-letter it.
            self._stale_is_data = attempt == 2
            res = self._resolver.resolve(todo, self._tables)
            if res.suspects and await self._aio_refresh(res.suspects):
                res = self._resolver.resolve(todo, self._tables)
            if res.missing_mapped:
                shown = ", ".join(f"{self.options.schema}.{t}" for t in sorted(res.missing_mapped))
                raise RetryableSinkError(
                    f"mapped table {shown} does not exist (dropped?): waiting for it to be "
                    f"recreated; nothing is acknowledged meanwhile"
                )
            try:
                written = await self._aio_transaction(res, todo, last, split=attempt > 0)
            except _StaleCatalog:
                self._tables.clear()
                await self._aio_lookup(names)
                continue
            self._checkpoint = last if checkpointed else None
            return WriteResult(
                written, len(res.dead), skipped + res.skipped, seconds=time.perf_counter() - started
            )
        raise RetryableSinkError("catalog keeps changing under the batch; retrying later")

    async def _aio_transaction(
        self, res: Resolution, todo: list[Item], last: int, split: bool
    ) -> int:
        conn = self._conn
        assert conn is not None
        if not split:
            # Fast path: no savepoints. A data error rolls back and we come back to split.
            try:
                async with conn.transaction():
                    if res.resolved:
                        await self._aio_execute(res.resolved)
                    await self._aio_finish(res.dead, last)
                return len(res.resolved)
            except (BadValue, asyncpg.PostgresError) as exc:
                self._data_error(exc)
        return await self._aio_isolate_batch(conn, res, todo, last)

    async def _aio_isolate_batch(
        self, conn: asyncpg.Connection, res: Resolution, todo: list[Item], last: int
    ) -> int:
        """Apply a batch that failed as a whole, dead-lettering exactly the events that fail.

        Events are tried in stream order, in runs: values that look wrong for their column
        (:func:`suspect`) stand alone, the events between them go together; a run that still
        fails is halved until its bad events stand alone. Each try is a savepoint; locks stay
        bounded because after ``_MAX_KEPT`` released savepoints the transaction commits what
        it has (rows, dead letters and the checkpoint of that point in the stream: a batch
        prefix, so a crash in between resumes exactly there) and a new one starts.
        """
        position = {id(item): i for i, item in enumerate(todo)}
        dead = res.dead
        tx = conn.transaction()
        await tx.start()
        isolation = _Isolation(self, conn, tx, todo, position, dead)
        try:
            written = 0
            for group in _runs(res.resolved):
                written += await self._aio_isolate(conn, group, dead, isolation)
            dead.sort(key=lambda d: position[id(d[0])])
            await self._aio_finish(dead[isolation.flushed :], last)
            await isolation.tx.commit()
        except BaseException:
            with contextlib.suppress(Exception):  # a failed commit has ended it already
                await isolation.tx.rollback()
            raise
        return written

    async def _aio_isolate(
        self,
        conn: asyncpg.Connection,
        group: list[Resolved],
        dead: list[tuple[Item, str]],
        isolation: _Isolation | None,
    ) -> int:
        """Apply ``group`` in a savepoint, halving it on data errors; returns rows applied."""
        try:
            async with conn.transaction():
                await self._aio_execute(group)
        except (BadValue, asyncpg.PostgresError) as exc:
            reason = self._data_error(exc)
            if len(group) == 1:
                dead.append((group[0].item, reason))
                return 0
            mid = len(group) // 2
            return await self._aio_isolate(conn, group[:mid], dead, isolation) + (
                await self._aio_isolate(conn, group[mid:], dead, isolation)
            )
        if isolation is not None:
            await isolation.kept(group[-1].item)
        return len(group)

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
                [None for _ in dead],
                [i.delivery.data for i, _ in dead],
                [reason.replace("\x00", "") for _, reason in dead],
                [i.event.table.replace("\x00", "") if i.event else None for i, _ in dead],
            )
        if self._stream is not None:
            stream, created = self._stream
            await conn.execute(self._cp_upsert, self.flow, self.name, stream, 0, created, last)


class _Isolation:
    """The commit-as-you-go state of :meth:`PostgresSink._aio_isolate_batch`."""

    def __init__(
        self,
        sink: PostgresSink,
        conn: asyncpg.Connection,
        tx: Any,
        todo: list[Item],
        position: dict[int, int],
        dead: list[tuple[Item, str]],
    ) -> None:
        self.sink, self.conn, self.tx = sink, conn, tx
        self.todo, self.position, self.dead = todo, position, dead
        self.count = 0
        self.flushed = 0  # dead[:flushed] are written

    async def kept(self, last_item: Item) -> None:
        """A savepoint was released; past the budget, commit through ``last_item``."""
        self.count += 1
        if self.count < _MAX_KEPT:
            return
        # Everything up to last_item (in stream order) is applied or known bad.
        end = self.position[id(last_item)]
        self.dead.sort(key=lambda d: self.position[id(d[0])])
        now = [d for d in self.dead[self.flushed :] if self.position[id(d[0])] <= end]
        seq = self.todo[end].delivery.seq
        await self.sink._aio_finish(now, seq)
        await self.tx.commit()
        self.flushed += len(now)
        if self.sink._stream is not None:
            self.sink._checkpoint = seq  # a retry of this batch skips what is committed
        self.tx = self.conn.transaction()
        await self.tx.start()
        self.count = 0


def _runs(resolved: list[Resolved]) -> list[list[Resolved]]:
    """Stream-ordered runs to try one savepoint each: a suspect event alone, else together."""
    runs: list[list[Resolved]] = []
    current: list[Resolved] = []
    for r in resolved:
        if _is_suspect(r):
            if current:
                runs.append(current)
                current = []
            runs.append([r])
        else:
            current.append(r)
    if current:
        runs.append(current)
    return runs


def _is_suspect(r: Resolved) -> bool:
    cols = r.table.columns
    return any(suspect(v, cols[c].type) for c, v in r.event.data.items() if c in cols)


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
