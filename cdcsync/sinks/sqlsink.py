"""The SQL destination, written once for every database; a :class:`Dialect` says the rest.

What is the same everywhere lives here: one connection per (flow, destination) that holds a
writer fence per partition; each batch one transaction carrying the rows, the dead letters
and every touched partition's new position (what makes a redelivery a no-op); events resolved
against the catalog; batches applied as a few set-based statements per wave (compaction.py);
bad events isolated with bounded locks; dead letters listed, replayed and purged. What
differs between databases (connections, statements, catalog queries, locks, error codes)
sits behind the dialect, as in Kafka Connect's and Debezium's JDBC sinks.

Methods prefixed ``_aio`` run on asyncio (the dialect's driver); the public methods are
Trio and cross the bridge once per call.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Protocol

import structlog

from cdcsync.bridge import aio
from cdcsync.config import redact_url
from cdcsync.errors import FatalSinkError, RetryableSinkError
from cdcsync.flow.batch import Batch, Delivery, Item, Partition, WriteResult
from cdcsync.plugin import DeadLetter, Decoder, Reasons, ReplayResult
from cdcsync.sinks.compaction import Kind, Mode, Statement, statements
from cdcsync.sinks.reasons import WINDOW, group, mask
from cdcsync.sinks.resolve import Resolution, Resolved, Resolver
from cdcsync.sinks.tables import TableInfo

__all__ = [
    "CheckpointRow",
    "Dialect",
    "Prepared",
    "SqlDestination",
    "SqlOptions",
    "Transaction",
    "fence_name",
]

log = structlog.get_logger("cdcsync.sinks")

# Savepoints released (kept) per transaction while isolating bad events. A released
# savepoint that wrote keeps its subtransaction's lock until the top-level commit, and past
# 64 subtransactions PostgreSQL's per-backend cache overflows (slowing every other session):
# after this many the isolation commits what it has applied so far, with the positions of
# that point in the stream, and goes on in a new transaction.
MAX_KEPT = 32
# Dead letters replayed per transaction (bounded locks and memory, whatever the backlog).
_REPLAY_CHUNK = 200


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    stream: str
    partition: int
    epoch: str
    position: int


class Transaction(Protocol):
    """A transaction, or a savepoint when one is already open (asyncpg's Transaction)."""

    async def start(self) -> None: ...
    async def commit(self) -> None: ...
    async def rollback(self) -> None: ...
    async def __aenter__(self) -> Any: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any: ...


class SqlOptions(Protocol):
    """The options every SQL destination has (each dialect's options add their own)."""

    @property
    def url(self) -> str: ...
    @property
    def schema(self) -> str: ...
    @property
    def state_schema(self) -> str: ...
    @property
    def conflict_resolution(self) -> Mode: ...
    @property
    def tables(self) -> dict[str, str]: ...
    @property
    def truncate(self) -> bool: ...
    @property
    def unmapped_tables(self) -> str: ...


class Dialect(Protocol):
    """What differs between SQL databases. Every coroutine runs on asyncio.

    Optional attributes (read with defaults, so older dialects keep working):
    ``statement_atomic`` (default False): a statement that fails undoes only itself and
    leaves the transaction usable (MySQL), so isolating bad events needs no savepoint
    around a single statement; ``nested_columns`` (default PostgreSQL's words): which
    columns take JSON arrays and objects, for the dead letter of one that does not;
    ``round_trips(conn) -> int`` (default none): the requests ``conn`` has sent so far, from
    which the sink counts what writing batches costs (``round_trips`` in the statistics).
    Optional methods, each a faster way to do what the required ones do:
    ``apply_batch(conn, stmts, flow, dest, dead, positions) -> bool`` (a whole batch as one
    statement outside a transaction; False: not possible, nothing done) and
    ``apply_waves(conn, stmts, flow, dest, dead, positions)`` (the batch inside the
    transaction, fewer round trips than one per statement); see PostgreSQL's.
    """

    label: str  # "PostgreSQL", "MySQL": in messages

    # connections and errors
    async def connect(self) -> Any: ...
    async def close(self, conn: Any) -> None: ...
    def terminate(self, conn: Any) -> None: ...
    def is_closed(self, conn: Any) -> bool: ...
    def transaction(self, conn: Any) -> Transaction: ...
    def is_retryable(self, exc: BaseException) -> bool: ...
    def is_stale_catalog(self, exc: BaseException) -> bool: ...
    def is_data_error(self, exc: BaseException) -> bool: ...
    def is_fatal_connect(self, exc: BaseException) -> bool: ...
    def describe(self, exc: BaseException) -> str: ...

    # writer fences: session-level named locks, released when the session ends
    async def try_lock(self, conn: Any, name: str) -> bool: ...
    async def unlock(self, conn: Any, name: str) -> None: ...

    # bookkeeping (in the state schema)
    async def prepare_state(self, conn: Any, flow: str, destination: str, legacy: bool) -> None: ...
    async def load_checkpoints(self, conn: Any, flow: str, dest: str) -> list[CheckpointRow]: ...
    async def save(
        self,
        conn: Any,
        flow: str,
        dest: str,
        dead: list[tuple[Item, str]],
        positions: dict[Partition, tuple[str, int]],
    ) -> None: ...

    # catalog and values
    async def schema_problems(self, conn: Any) -> list[str]:
        """Whether the destination's schema exists (``check --connect``), with the fix."""
        ...

    async def lookup(self, conn: Any, names: list[str]) -> dict[str, TableInfo]: ...
    def missing_key_fix(self, table: str) -> str: ...
    def canonical_key(self, value: Any, column_type: str) -> Any: ...
    def suspect(self, value: Any, column_type: str) -> bool: ...

    # statements for one wave of one table
    async def truncate(self, conn: Any, table: TableInfo) -> None: ...
    async def delete(self, conn: Any, table: TableInfo, keys: list[dict[str, Any]]) -> None: ...
    async def write(
        self,
        conn: Any,
        table: TableInfo,
        kind: Kind,
        cols: tuple[str, ...],
        keep: frozenset[str],
        rows: list[dict[str, Any]],
    ) -> None:
        """Optional companion: ``encode(conn, statement)`` (no I/O) returns the write's
        argument (its rows as the database takes them), worked out for the next batch while
        the current one is written; ``write`` then gets it as ``encoded=`` and must use it
        instead of ``rows``. Only a dialect that has ``encode`` is ever passed ``encoded``."""
        ...

    # dead letters (operator tools)
    async def list_letters(
        self,
        conn: Any,
        flow: str,
        dest: str,
        limit: int,
        ids: Sequence[int] | None,
        offset: int,
    ) -> list[DeadLetter]:
        """Last to fail first: ``failed_at`` descending, then stream position descending."""
        ...

    async def recent_letters(
        self, conn: Any, flow: str, dest: str, limit: int
    ) -> list[tuple[int, str, str | None, dt.datetime]]:
        """(id, error, table, failed_at) of the newest ``limit``, in list_letters' order."""
        ...

    async def count_letters(self, conn: Any, flow: str, dest: str) -> int: ...
    async def letters_for_replay(
        self, conn: Any, flow: str, dest: str, ids: Sequence[int] | None
    ) -> list[tuple[int, str, int | None, int | None, bytes]]: ...
    async def settle_letters(
        self, conn: Any, applied: list[int], failed: dict[int, str]
    ) -> None: ...
    async def purge_letters(self, conn: Any, flow: str, dest: str, before: dt.datetime) -> int: ...


def fence_name(flow: str, destination: str, state_schema: str, partition: Partition) -> str:
    """The session-lock name that makes one connection the writer of a partition.

    A stream's only partition (and a source without positions) keeps the name cdcsync 0.1
    used for the whole (flow, destination), so an old and a new instance exclude each other
    during a rolling upgrade.
    """
    prefix = "cdcsync" if state_schema == "cdcsync" else f"cdcsync:{state_schema}"
    name = f"{prefix}:{flow}:{destination}"
    return name if partition.sole else f"{name}:{partition.stream}:{partition.index}"


class _StaleCatalog(Exception):
    """A statement named a table or column that the catalog no longer has."""


@dataclass(slots=True)
class Prepared:
    """What :meth:`SqlDestination.prepare` worked out for a batch ahead of its write."""

    todo: list[Item]
    last: dict[Partition, int]
    skipped: int
    res: Resolution | None
    stmts: list[Statement] | None = None  # planned from ``res``


class SqlDestination:
    """Applies batches to one SQL database as the only writer of its partitions."""

    def __init__(self, flow: str, name: str, options: SqlOptions, dialect: Dialect) -> None:
        self.flow = flow
        self.name = name
        self.options = options
        self.dialect = dialect
        self._conn: Any = None
        self._tables: dict[str, TableInfo | None] = {}
        self._claimed: dict[Partition, str] = {}  # partition -> epoch
        self._fences: set[str] = set()
        self._checkpoints: dict[Partition, int] = {}
        self._state_ready = False
        self._prepared = False  # claimed once: a mapped table gone later is waited for
        self._stale_is_data = False
        self._resolver = Resolver(
            schema=options.schema,
            mapping=options.tables,
            truncate=options.truncate,
            unmapped=options.unmapped_tables,
            canonical_key=dialect.canonical_key,
            nested_columns=getattr(
                dialect, "nested_columns", "json, jsonb, array and composite columns"
            ),
        )
        self._atomic = bool(getattr(dialect, "statement_atomic", False))
        self._count_trips: Callable[[Any], int] | None = getattr(dialect, "round_trips", None)
        # Round trips spent applying batches (rows, dead letters, positions, BEGIN/COMMIT,
        # savepoints; failed attempts too; not the catalog look-ups): None when not counted.
        self.round_trips: int | None = None if self._count_trips is None else 0
        # Why the last connection attempt failed: a write with no connection says so.
        self._connect_error: str | None = None

    # --- Trio side -----------------------------------------------------------------------

    async def connect(self) -> None:
        try:
            await aio(self._aio_connect)
        except Exception as exc:
            self._connect_error = self.dialect.describe(exc)
            if self.dialect.is_fatal_connect(exc):
                raise FatalSinkError(self._connect_error) from exc
            # Anything else (unreachable, starting up, database not created yet): retry.
            raise RetryableSinkError(self._connect_error) from exc
        self._connect_error = None

    async def claim(
        self, partitions: Mapping[Partition, str]
    ) -> dict[Partition, int | None] | None:
        try:
            return await aio(self._aio_claim, dict(partitions))
        except (FatalSinkError, RetryableSinkError):
            raise
        except Exception as exc:
            text = self.dialect.describe(exc)
            if self.dialect.is_retryable(exc) or not self.dialect.is_data_error(exc):
                raise RetryableSinkError(text) from exc
            raise FatalSinkError(text) from exc  # e.g. no right to create our tables

    async def release(self, partitions: Collection[Partition]) -> None:
        try:
            await aio(self._aio_release, list(partitions))
        except Exception as exc:  # the connection is gone: so are its fences
            log.debug("release failed", error=self.dialect.describe(exc))

    def prepare(self, batch: Batch) -> Prepared | None:
        """The CPU half of :meth:`write`, done while the previous batch is still being written.

        Filters the batch by the checkpoints and resolves it against the cached catalog.
        Valid for the next :meth:`write` of this batch: positions only grow within a lane, so
        the batch before it cannot change which of its items are new. None when the catalog
        must be asked first (an unknown name): :meth:`write` then does all of it.
        """
        todo, last, skipped = self._fresh(batch.items)
        if not todo:
            return Prepared(todo, last, skipped, None)
        tables = self._tables
        if any(n not in tables for n in self._resolver.targets(todo)):
            return None
        res = self._resolver.resolve(todo, tables)
        if res.suspects or res.missing_mapped:
            return None
        try:
            stmts = self._statements(res.resolved)
        except Exception:  # whatever it is, the write meets it again where it is handled
            return Prepared(todo, last, skipped, res)
        encode = getattr(self.dialect, "encode", None)
        if encode is not None and self._conn is not None:
            for st in stmts:
                if st.kind is not None:
                    try:
                        st.encoded = encode(self._conn, st)
                    except Exception:  # a bad value: the write meets it where it is judged
                        st.encoded = None
        return Prepared(todo, last, skipped, res, stmts)

    async def write(self, batch: Batch, prepared: Prepared | None = None) -> WriteResult:
        """Apply a batch in one transaction; raises RetryableSinkError to be retried whole."""
        try:
            return await aio(self._aio_write, batch.items, prepared)
        except Exception as exc:
            if self.dialect.is_retryable(exc):
                raise RetryableSinkError(self.dialect.describe(exc)) from exc
            raise

    def checkpoints(self) -> Mapping[Partition, int]:
        return self._checkpoints

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        self._forget_session()
        if conn is not None:
            try:
                await aio(self.dialect.close, conn)
            except Exception:
                self.dialect.terminate(conn)

    def abort(self) -> None:
        """Drop the connection at once (and with it every fence)."""
        conn, self._conn = self._conn, None
        self._forget_session()
        if conn is not None:
            self.dialect.terminate(conn)

    async def problems(self) -> list[str]:
        """What stops this destination from working, in plain words (for ``check --connect``)."""
        try:
            await aio(self._aio_connect)
        except Exception as exc:
            where = redact_url(self.options.url)
            return [f"cannot connect to {where}: {self.dialect.describe(exc)}"]
        try:
            missing_schema = await aio(self.dialect.schema_problems, self._conn)
            return missing_schema or (await aio(self._aio_check_mapped))[1]
        finally:
            await self.close()

    async def dead_letters(
        self,
        *,
        limit: int,
        ids: Sequence[int] | None = None,
        offset: int = 0,
        reason: str | None = None,
    ) -> list[DeadLetter]:
        async def go() -> list[DeadLetter]:
            conn = await self._aio_operator_conn()
            dialect = self.dialect
            if reason is not None:  # among the letters that dead_letter_reasons() grouped
                recent = await dialect.recent_letters(conn, self.flow, self.name, WINDOW)
                chosen = [r[0] for r in recent if mask(r[1]) == reason]
                if ids is not None:
                    chosen = [i for i in chosen if i in set(ids)]
                page = chosen[offset : offset + limit]
                if not page:
                    return []
                found = await dialect.list_letters(conn, self.flow, self.name, len(page), page, 0)
            else:
                found = await dialect.list_letters(conn, self.flow, self.name, limit, ids, offset)
            return [replace(d, reason=mask(d.error)) for d in found]

        return await aio(go)

    async def dead_letter_reasons(self, *, limit: int = 1000) -> Reasons:
        async def go() -> Reasons:
            conn = await self._aio_operator_conn()
            total = await self.dialect.count_letters(conn, self.flow, self.name)
            recent = await self.dialect.recent_letters(conn, self.flow, self.name, WINDOW)
            return group(total, recent, limit)

        return await aio(go)

    async def replay(self, decode: Decoder, *, ids: Sequence[int] | None = None) -> ReplayResult:
        async def go() -> ReplayResult:
            conn = await self._aio_operator_conn()
            rows = await self.dialect.letters_for_replay(conn, self.flow, self.name, ids)
            missing = tuple(sorted(set(ids or ()) - {r[0] for r in rows}))
            applied = failed = 0
            self._tables.clear()
            self._stale_is_data = True
            for start in range(0, len(rows), _REPLAY_CHUNK):
                chunk = rows[start : start + _REPLAY_CHUNK]
                deliveries = [
                    Delivery(seq or 0, subject or "", bytes(payload or b""), letter_id)
                    for letter_id, subject, seq, _partition, payload in chunk
                ]
                items = decode(deliveries)
                await self._aio_lookup(self._resolver.targets(items))
                res = self._resolver.resolve(items, self._tables)
                async with self.dialect.transaction(conn):  # rows and letters commit together
                    for group in _runs(res.resolved, self.dialect):
                        await self._aio_isolate(conn, group, res.dead, None)
                    reasons = {item.delivery.handle: why for item, why in res.dead}
                    done = [d.handle for d in deliveries if d.handle not in reasons]
                    await self.dialect.settle_letters(conn, done, reasons)
                applied += len(done)
                failed += len(reasons)
            return ReplayResult(applied, failed, missing)

        return await aio(go)

    async def purge(self, before: dt.datetime) -> int:
        async def go() -> int:
            conn = await self._aio_operator_conn()
            return await self.dialect.purge_letters(conn, self.flow, self.name, before)

        return await aio(go)

    # --- asyncio side: connection, fences, bookkeeping ----------------------------------

    def _forget_session(self) -> None:
        self._fences.clear()
        self._claimed.clear()
        self._state_ready = False

    async def _aio_connect(self) -> None:
        if self._conn is not None:
            self.dialect.terminate(self._conn)
            self._conn = None
        self._forget_session()
        self._conn = await self.dialect.connect()

    async def _aio_operator_conn(self) -> Any:
        """A plain connection for operator tools; no fence is taken, no table created."""
        if self._conn is None or self.dialect.is_closed(self._conn):
            await self._aio_connect()
        return self._conn

    async def _aio_claim(
        self, partitions: dict[Partition, str]
    ) -> dict[Partition, int | None] | None:
        conn = self._conn
        assert conn is not None
        names = {
            p: fence_name(self.flow, self.name, self.options.state_schema, p) for p in partitions
        }
        taken: list[str] = []
        for p in sorted(partitions, key=str):  # one order everywhere: no deadlock
            name = names[p]
            if name in self._fences or name in taken:
                continue
            if not await self.dialect.try_lock(conn, name):
                for n in taken:
                    await self.dialect.unlock(conn, n)
                return None
            taken.append(name)
        self._fences.update(taken)
        if not self._state_ready:
            # The sole partition's fence is 0.1's writer lock: moving 0.1's rows is safe now.
            legacy = any(p.sole for p in partitions)
            await self.dialect.prepare_state(conn, self.flow, self.name, legacy)
            self._state_ready = True
        missing, problems = await self._aio_check_mapped()
        if missing and self._prepared and len(missing) == len(problems):
            # It ran before: a dropped mapped table is an outage to wait out, not a reason to
            # stop the flow for good (its events stay in the source meanwhile).
            raise RetryableSinkError("; ".join(problems))
        if problems:
            raise FatalSinkError("; ".join(problems))
        rows = await self.dialect.load_checkpoints(conn, self.flow, self.name)
        found = {(r.stream, r.partition): r for r in rows}
        out: dict[Partition, int | None] = {}
        for p, epoch in partitions.items():
            self._checkpoints.pop(p, None)
            out[p] = None
            if not p.stream:
                continue  # no positions (core NATS)
            row = found.get((p.stream, p.index))
            if row is None or (row.epoch and epoch and row.epoch != epoch):
                if (row is not None) or (p.sole and rows):
                    log.warning(
                        "checkpoint is for another stream; starting this destination from scratch",
                        flow=self.flow,
                        destination=self.name,
                        checkpoint_stream=(row or rows[0]).stream,
                        stream=p.stream,
                    )
                continue
            out[p] = self._checkpoints[p] = row.position
        self._claimed.update(partitions)
        self._prepared = True
        return out

    async def _aio_release(self, partitions: list[Partition]) -> None:
        conn = self._conn
        for p in partitions:
            self._claimed.pop(p, None)
            self._checkpoints.pop(p, None)
            name = fence_name(self.flow, self.name, self.options.state_schema, p)
            if name in self._fences:
                self._fences.discard(name)
                if conn is not None and not self.dialect.is_closed(conn):
                    await self.dialect.unlock(conn, name)

    async def _aio_check_mapped(self) -> tuple[list[str], list[str]]:
        """(missing mapped tables, every problem with the mapped tables, in words)."""
        targets = sorted(set(self.options.tables.values()))
        if not targets:
            return [], []
        self._tables = {k: v for k, v in self._tables.items() if k not in targets}
        await self._aio_lookup(targets)
        problems, missing = [], []
        schema = self.options.schema
        for target in targets:
            info = self._tables.get(target)
            if info is None:
                missing.append(target)
                problems.append(
                    f"destination {self.name!r}: table {schema}.{target} does not exist "
                    f"(create it, or fix the 'tables' mapping)"
                )
            elif info.refusal:
                problems.append(
                    f"destination {self.name!r}: table {schema}.{target} {info.refusal}"
                )
            elif not info.key:
                fix = self.dialect.missing_key_fix(target)
                problems.append(
                    f"destination {self.name!r}: table {schema}.{target} has no primary key or "
                    f"unique index on NOT NULL columns (fix: {fix})"
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
        found = await self.dialect.lookup(self._conn, missing)
        if len(self._tables) > 10_000:
            self._tables.clear()  # hostile input naming endless tables: keep the cache bounded
        for n in missing:
            self._tables[n] = found.get(n)

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

    # --- asyncio side: the write path ---------------------------------------------------

    def _statements(self, group: list[Resolved]) -> list[Statement]:
        return statements(
            ((r.table, r.key, r.event, r.cols) for r in group), self.options.conflict_resolution
        )

    async def _aio_run(self, conn: Any, stmts: list[Statement]) -> None:
        dialect = self.dialect
        for st in stmts:
            if st.truncate:
                await dialect.truncate(conn, st.table)
            elif st.kind is None:
                await dialect.delete(conn, st.table, st.keys)
            elif st.encoded is not None:  # only a dialect with ``encode``: its write takes it
                write: Any = dialect.write
                await write(conn, st.table, st.kind, st.cols, st.keep, st.rows, encoded=st.encoded)
            else:
                await dialect.write(conn, st.table, st.kind, st.cols, st.keep, st.rows)

    async def _aio_execute(self, conn: Any, group: list[Resolved]) -> None:
        """Run the set-based statements for a group of resolved events, wave by wave."""
        await self._aio_run(conn, self._statements(group))

    def _data_error(self, exc: BaseException) -> str:
        """Why the events failed, when it is their data's fault; re-raises anything else.

        Retryable errors go up to be retried whole; an undefined table or column first
        means our cached catalog is stale (until ``_stale_is_data``).
        """
        dialect = self.dialect
        if dialect.is_retryable(exc) or not dialect.is_data_error(exc):
            raise exc
        if dialect.is_stale_catalog(exc) and not self._stale_is_data:
            raise _StaleCatalog from exc
        return dialect.describe(exc)

    def _fresh(self, items: list[Item]) -> tuple[list[Item], dict[Partition, int], int]:
        """The items above their partition's checkpoint, the batch's new positions, and how
        many were skipped (applied before: a redelivery, or a duplicate within the batch)."""
        checkpoints = self._checkpoints
        last: dict[Partition, int] = {}
        todo: list[Item] = []
        skipped = 0
        for item in items:
            d = item.delivery
            p = d.partition
            if p.stream:
                seen = last.get(p)
                if seen is None:
                    seen = checkpoints.get(p, -1)
                if d.seq <= seen:
                    skipped += 1
                    continue
                last[p] = d.seq
            todo.append(item)
        return todo, last, skipped

    async def _aio_write(self, items: list[Item], prepared: Prepared | None) -> WriteResult:
        started = time.perf_counter()
        conn = self._conn
        if conn is None or self.dialect.is_closed(conn):
            cause = f" (last attempt: {self._connect_error})" if self._connect_error else ""
            raise ConnectionError(f"not connected to {self.dialect.label}{cause}")
        checkpoints = self._checkpoints
        planned = None
        if prepared is not None:
            todo, last, skipped, res0 = prepared.todo, prepared.last, prepared.skipped, prepared.res
            planned = prepared.stmts
        else:
            (todo, last, skipped), res0 = self._fresh(items), None
        if not todo:
            return WriteResult(skipped=skipped, seconds=time.perf_counter() - started)
        names = None if res0 is not None else self._resolver.targets(todo)
        if names is not None:
            await self._aio_lookup(names)
        for attempt in range(3):
            # After two catalog refreshes, a schema error is the event's fault: dead-letter it.
            self._stale_is_data = attempt == 2
            if res0 is not None and attempt == 0:
                res = res0  # resolved while the batch before was being written
            else:
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
                written = await self._aio_counted(
                    res, todo, last, split=attempt > 0, planned=planned if res is res0 else None
                )
            except _StaleCatalog:
                self._tables.clear()
                if names is None:  # prepared: the names were found then, not kept
                    names = self._resolver.targets(todo)
                await self._aio_lookup(names)
                continue
            checkpoints.update(last)
            return WriteResult(
                written, len(res.dead), skipped + res.skipped, seconds=time.perf_counter() - started
            )
        raise RetryableSinkError("catalog keeps changing under the batch; retrying later")

    def _positions(self, last: dict[Partition, int]) -> dict[Partition, tuple[str, int]]:
        claimed = self._claimed
        return {p: (claimed.get(p, ""), seq) for p, seq in last.items()}

    async def _aio_counted(
        self,
        res: Resolution,
        todo: list[Item],
        last: dict[Partition, int],
        split: bool,
        planned: list[Statement] | None,
    ) -> int:
        """:meth:`_aio_transaction`, adding the round trips it took to ``round_trips``."""
        count = self._count_trips
        if count is None:
            return await self._aio_transaction(res, todo, last, split, planned)
        conn = self._conn
        before = count(conn)
        try:
            return await self._aio_transaction(res, todo, last, split, planned)
        finally:
            self.round_trips = (self.round_trips or 0) + count(conn) - before

    async def _aio_transaction(
        self,
        res: Resolution,
        todo: list[Item],
        last: dict[Partition, int],
        split: bool,
        planned: list[Statement] | None = None,
    ) -> int:
        conn = self._conn
        dialect = self.dialect
        if not split:
            # Fast path: no savepoints. A data error rolls back and we come back to split.
            try:
                if planned is not None:
                    stmts = planned  # planned while the batch before was being written
                else:
                    stmts = self._statements(res.resolved) if res.resolved else []
                positions = self._positions(last)
                one = getattr(dialect, "apply_batch", None)
                if one is not None and await one(
                    conn, stmts, self.flow, self.name, res.dead, positions
                ):
                    return len(res.resolved)
                waves = getattr(dialect, "apply_waves", None)
                async with dialect.transaction(conn):
                    if waves is not None:
                        await waves(conn, stmts, self.flow, self.name, res.dead, positions)
                    else:
                        await self._aio_run(conn, stmts)
                        await dialect.save(conn, self.flow, self.name, res.dead, positions)
                return len(res.resolved)
            except Exception as exc:
                self._data_error(exc)
        return await self._aio_isolate_batch(conn, res, todo, last)

    async def _aio_isolate_batch(
        self, conn: Any, res: Resolution, todo: list[Item], last: dict[Partition, int]
    ) -> int:
        """Apply a batch that failed as a whole, dead-lettering exactly the events that fail.

        Events are tried in stream order, in runs: values that look wrong for their column
        (the dialect's ``suspect``) stand alone, the events between them go together; a run
        that still fails is halved until its bad events stand alone. Each try is a savepoint;
        locks stay bounded because after ``MAX_KEPT`` released savepoints the transaction
        commits what it has (rows, dead letters and the positions of that point: a batch
        prefix, so a crash in between resumes exactly there) and a new one starts.
        """
        position = {id(item): i for i, item in enumerate(todo)}
        dead = res.dead
        isolation = _Isolation(self, conn, todo, position, dead)
        await isolation.begin()
        try:
            written = 0
            for group in _runs(res.resolved, self.dialect):
                written += await self._aio_isolate(conn, group, dead, isolation)
            dead.sort(key=lambda d: position[id(d[0])])
            await self.dialect.save(
                conn, self.flow, self.name, dead[isolation.flushed :], self._positions(last)
            )
            await isolation.tx.commit()
        except BaseException:
            try:  # a commit that failed has ended it already
                await isolation.tx.rollback()
            except Exception:
                pass
            raise
        return written

    async def _aio_isolate(
        self,
        conn: Any,
        group: list[Resolved],
        dead: list[tuple[Item, str]],
        isolation: _Isolation | None,
    ) -> int:
        """Apply ``group`` in a savepoint, halving it on data errors; returns rows applied.

        A database whose failed statement undoes only itself and leaves the transaction
        usable (the dialect's ``statement_atomic``, MySQL) needs no savepoint around a
        group that is a single statement.
        """
        stmts = self._statements(group)
        try:
            if self._atomic and len(stmts) <= 1:
                await self._aio_run(conn, stmts)
            else:
                async with self.dialect.transaction(conn):
                    await self._aio_run(conn, stmts)
        except Exception as exc:
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


class _Isolation:
    """The commit-as-you-go state of :meth:`SqlDestination._aio_isolate_batch`."""

    def __init__(
        self,
        sink: SqlDestination,
        conn: Any,
        todo: list[Item],
        position: dict[int, int],
        dead: list[tuple[Item, str]],
    ) -> None:
        self.sink, self.conn = sink, conn
        self.todo, self.position, self.dead = todo, position, dead
        self.tx: Transaction = sink.dialect.transaction(conn)
        self.count = 0
        self.flushed = 0  # dead[:flushed] are written

    async def begin(self) -> None:
        self.tx = self.sink.dialect.transaction(self.conn)
        await self.tx.start()
        self.count = 0

    async def kept(self, last_item: Item) -> None:
        """A savepoint was released; past the budget, commit through ``last_item``."""
        self.count += 1
        if self.count < MAX_KEPT:
            return
        # Everything up to last_item (in stream order) is applied or known bad.
        end = self.position[id(last_item)]
        self.dead.sort(key=lambda d: self.position[id(d[0])])
        now = [d for d in self.dead[self.flushed :] if self.position[id(d[0])] <= end]
        upto: dict[Partition, int] = {}
        for item in self.todo[: end + 1]:
            p = item.delivery.partition
            if p.stream:
                upto[p] = item.delivery.seq
        sink = self.sink
        await sink.dialect.save(self.conn, sink.flow, sink.name, now, sink._positions(upto))
        await self.tx.commit()
        self.flushed += len(now)
        sink._checkpoints.update(upto)  # a retry of this batch skips what is committed
        await self.begin()


def _runs(resolved: list[Resolved], dialect: Dialect) -> list[list[Resolved]]:
    """Stream-ordered runs to try one savepoint each: a suspect event alone, else together."""
    runs: list[list[Resolved]] = []
    current: list[Resolved] = []
    suspect = dialect.suspect
    for r in resolved:
        cols = r.table.columns
        if any(suspect(v, cols[c].type) for c, v in r.event.data.items() if c in cols):
            if current:
                runs.append(current)
                current = []
            runs.append([r])
        else:
            current.append(r)
    if current:
        runs.append(current)
    return runs
