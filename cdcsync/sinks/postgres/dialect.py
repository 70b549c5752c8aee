"""What is PostgreSQL's own in the PostgreSQL destination (asyncpg, on asyncio).

Statements are set-based with one JSON parameter per statement, typed by
``json_populate_recordset`` against the table's row type, so PostgreSQL converts every value
(and reports one that does not fit as a data error for that event). Writer fences are session
advisory locks; cdcsync's own tables live in the state schema (sql.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Hashable, Sequence
from typing import Any

import asyncpg
import structlog

from cdcsync.plugin import DeadLetter, Item, Partition, scrub, url_secrets
from cdcsync.plugin.sql import CheckpointRow, Column, Kind, Statement, TableInfo, pick_key
from cdcsync.sinks.postgres import sql
from cdcsync.sinks.postgres.options import PostgresOptions
from cdcsync.sinks.postgres.values import BadValue, canonical_key, rows_json, suspect

__all__ = ["CountingConnection", "PostgresDialect", "is_retryable"]

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


class CountingConnection(asyncpg.Connection):
    """An asyncpg connection that counts its requests, for ``round_trips`` in the statistics.

    Each call below sends its messages and waits for the answer: one round trip (a statement
    new to the connection's statement cache adds one to prepare it, which is not counted).
    A transaction's BEGIN, COMMIT, ROLLBACK and savepoints go through ``execute``. One
    integer increment per call, not per row.
    """

    round_trips = 0

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.round_trips += 1
        return await super().execute(*args, **kwargs)

    async def executemany(self, *args: Any, **kwargs: Any) -> Any:
        self.round_trips += 1
        return await super().executemany(*args, **kwargs)

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        self.round_trips += 1
        return await super().fetch(*args, **kwargs)

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        self.round_trips += 1
        return await super().fetchval(*args, **kwargs)

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        self.round_trips += 1
        return await super().fetchrow(*args, **kwargs)


class PostgresDialect:
    """PostgreSQL behind :class:`cdcsync.plugin.sql.SqlDestination`."""

    label = "PostgreSQL"

    def __init__(self, flow: str, name: str, options: PostgresOptions) -> None:
        self.flow, self.name, self.options = flow, name, options
        self._sql_cache: dict[Hashable, str] = {}
        state = options.state_schema
        self._cp_select, self._cp_upsert = sql.checkpoint_sql(state)
        self._dl_insert = sql.dead_letter_sql(state)
        self._dl_table = sql.dead_letter_table(state)
        self._secrets = url_secrets(options.url)

    # --- connections and errors ----------------------------------------------------------

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self.options.url,
            timeout=self.options.connect_timeout_s,
            server_settings={"application_name": f"cdcsync:{self.flow}:{self.name}"},
            connection_class=CountingConnection,
        )

    def round_trips(self, conn: CountingConnection) -> int:
        """Requests ``conn`` has sent so far (the sink counts those that write batches)."""
        return conn.round_trips

    async def close(self, conn: asyncpg.Connection) -> None:
        await conn.close(timeout=2)

    def terminate(self, conn: asyncpg.Connection) -> None:
        conn.terminate()

    def is_closed(self, conn: asyncpg.Connection) -> bool:
        return bool(conn.is_closed())

    def transaction(self, conn: asyncpg.Connection) -> Any:
        return conn.transaction()

    def is_retryable(self, exc: BaseException) -> bool:
        return is_retryable(exc)

    def is_stale_catalog(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) in _STALE_CATALOG

    def is_data_error(self, exc: BaseException) -> bool:
        return isinstance(exc, (BadValue, asyncpg.PostgresError))

    def is_fatal_connect(self, exc: BaseException) -> bool:
        return isinstance(
            exc, (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError)
        )

    def describe(self, exc: BaseException) -> str:
        if isinstance(exc, asyncpg.PostgresError):
            detail = f" ({exc.detail})" if getattr(exc, "detail", None) else ""
            text = f"{exc.sqlstate}: {exc}{detail}"
        elif isinstance(exc, BadValue):
            text = str(exc)
        else:
            text = f"{type(exc).__name__}: {exc}"
        return scrub(text.replace("\x00", ""), self._secrets)

    # --- fences ---------------------------------------------------------------------------

    async def try_lock(self, conn: asyncpg.Connection, name: str) -> bool:
        got = await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", name)
        return bool(got)

    async def unlock(self, conn: asyncpg.Connection, name: str) -> None:
        await conn.fetchval("SELECT pg_advisory_unlock(hashtextextended($1, 0))", name)

    # --- bookkeeping ----------------------------------------------------------------------

    async def prepare_state(
        self, conn: asyncpg.Connection, flow: str, destination: str, legacy: bool
    ) -> None:
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
            if legacy:
                await self._migrate_legacy(conn, flow, destination)

    async def _migrate_legacy(self, conn: asyncpg.Connection, flow: str, destination: str) -> None:
        """Move this pair's rows from cdcsync 0.1's tables in the users' schema (upgrade).

        Runs under the writer fence, which 0.1 takes under the same name, so no old instance
        moves this position meanwhile. The emptied old tables stay (an old instance of
        another flow may still use them); a warning says when to drop them.
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
            status = await conn.execute(move_checkpoints, flow, destination)
            moved["checkpoints"] = int(status.split()[-1])
        if "cdcsync_dead_letters" in names:
            status = await conn.execute(move_letters, flow, destination)
            moved["dead_letters"] = int(status.split()[-1])
        left = 0
        if "cdcsync_checkpoints" in names:
            left = await conn.fetchval(
                f"SELECT count(*) FROM {sql.quote_ident(schema)}.cdcsync_checkpoints"
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
                flow=flow,
                destination=destination,
                schema=schema,
                state_schema=self.options.state_schema,
                **moved,
            )

    async def load_checkpoints(
        self, conn: asyncpg.Connection, flow: str, dest: str
    ) -> list[CheckpointRow]:
        rows = await conn.fetch(self._cp_select, flow, dest)
        return [CheckpointRow(r[0], r[1], r[2], int(r[3])) for r in rows]

    async def save(
        self,
        conn: asyncpg.Connection,
        flow: str,
        dest: str,
        dead: list[tuple[Item, str]],
        positions: dict[Partition, tuple[str, int]],
    ) -> None:
        if dead:
            await conn.execute(self._dl_insert, flow, dest, *_letter_columns(dead))
        for p, (epoch, seq) in positions.items():
            await conn.execute(self._cp_upsert, flow, dest, p.stream, p.index, epoch, seq)

    # --- catalog and values ---------------------------------------------------------------

    async def schema_problems(self, conn: asyncpg.Connection) -> list[str]:
        schema = self.options.schema
        if await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            return []
        return [
            f"destination {self.name!r}: schema {schema!r} does not exist (fix: CREATE SCHEMA "
            f"{sql.quote_ident(schema)}, or correct 'schema')"
        ]

    async def lookup(self, conn: asyncpg.Connection, names: list[str]) -> dict[str, TableInfo]:
        schema = self.options.schema
        rows = await conn.fetch(sql.CATALOG_TABLES, schema, names)
        oids = {r["oid"]: r["relname"] for r in rows}
        columns: dict[int, dict[str, Column]] = {oid: {} for oid in oids}
        keys: dict[int, list[tuple[bool, list[str], bool]]] = {oid: [] for oid in oids}
        if oids:
            for r in await conn.fetch(sql.CATALOG_COLUMNS, list(oids)):
                columns[r[0]][r[1]] = Column(r[1], r[2], r[3], r[4], r[5], r[6])
            for r in await conn.fetch(sql.CATALOG_KEYS, list(oids)):
                keys[r[0]].append((r[1], list(r[2]), r[3]))
        return {
            name: TableInfo(schema, name, columns[oid], pick_key(keys[oid]) or ())
            for oid, name in oids.items()
        }

    def missing_key_fix(self, table: str) -> str:
        q = sql.quote_ident
        return f"ALTER TABLE {q(self.options.schema)}.{q(table)} ADD PRIMARY KEY (...)"

    def canonical_key(self, value: Any, column_type: str) -> Any:
        return canonical_key(value, column_type)

    def suspect(self, value: Any, column_type: str) -> bool:
        return suspect(value, column_type)

    # --- statements -----------------------------------------------------------------------

    def _sql(self, cache_key: Hashable, build: Any, *args: Any) -> str:
        text = self._sql_cache.get(cache_key)
        if text is None:
            if len(self._sql_cache) > 2_000:
                self._sql_cache.clear()
            text = self._sql_cache[cache_key] = build(*args)
        return text

    async def truncate(self, conn: asyncpg.Connection, table: TableInfo) -> None:
        await conn.execute(self._sql(("truncate", table.name), sql.truncate_sql, table))

    async def delete(
        self, conn: asyncpg.Connection, table: TableInfo, keys: list[dict[str, Any]]
    ) -> None:
        stmt = self._sql(("delete", table.name, table.key), sql.delete_sql, table)
        await conn.execute(stmt, rows_json(keys))

    async def write(
        self,
        conn: asyncpg.Connection,
        table: TableInfo,
        kind: Kind,
        cols: tuple[str, ...],
        keep: frozenset[str],
        rows: list[dict[str, Any]],
        encoded: str | None = None,
    ) -> None:
        stmt = self._sql(
            ("write", table.name, kind, cols, keep, table.key),
            sql.write_sql,
            table,
            kind,
            cols,
            keep,
        )
        await conn.execute(stmt, rows_json(rows) if encoded is None else encoded)

    def encode(self, conn: asyncpg.Connection, st: Statement) -> str:
        """A write's rows as the one JSON document its statement takes (see :meth:`write`)."""
        return rows_json(st.rows)

    async def apply_batch(
        self,
        conn: asyncpg.Connection,
        stmts: list[Statement],
        flow: str,
        dest: str,
        dead: list[tuple[Item, str]],
        positions: dict[Partition, tuple[str, int]],
    ) -> bool:
        """A whole batch, its dead letters and its positions as one statement: one round trip.

        Each set-based statement becomes a data-modifying CTE of one ``WITH ... SELECT``, run
        outside any transaction block, which PostgreSQL executes atomically on its own (no
        BEGIN, no COMMIT). A wave touches each key once, so no row is modified twice. False
        (nothing done) for what one statement cannot hold (a truncate, a second wave: those
        must see what came before them) or more statements than make a plan worth caching;
        the caller then uses a transaction.
        """
        if not stmts and not dead and not positions:
            return True
        if len(stmts) > _ONE_STATEMENT_MAX or any(st.truncate or st.step for st in stmts):
            return False  # a truncate, or a key changed twice: its waves run one by one
        await conn.execute(*self._combined(stmts, flow, dest, dead, positions))
        return True

    async def apply_waves(
        self,
        conn: asyncpg.Connection,
        stmts: list[Statement],
        flow: str,
        dest: str,
        dead: list[tuple[Item, str]],
        positions: dict[Partition, tuple[str, int]],
    ) -> None:
        """A batch inside the caller's transaction, one statement per wave.

        A wave's statements touch distinct rows, so they run as the data-modifying CTEs of
        one statement (PostgreSQL orders their effects as it likes: a unique value moved from
        one key to another that collides fails the batch, which then isolates its events one
        by one, correctly and slowly); the last wave also carries the dead letters and the
        positions. A truncate is a step of its own and runs alone; a wave of one statement
        stays that statement (its text is cached, a combined one is often new).
        """
        groups: list[list[Statement]] = []
        for st in stmts:
            if groups and groups[-1][0].step == st.step:
                groups[-1].append(st)
            else:
                groups.append([st])
        last = len(groups) - 1
        for i, group in enumerate(groups):
            if i == last and not any(st.truncate for st in group):
                await conn.execute(*self._combined(group, flow, dest, dead, positions))
                return
            if len(group) == 1 or any(st.truncate for st in group):
                for st in group:
                    await self._one(conn, st)
            else:
                await conn.execute(*self._combined(group, flow, dest, [], {}))
        await self.save(conn, flow, dest, dead, positions)

    async def _one(self, conn: asyncpg.Connection, st: Statement) -> None:
        if st.truncate:
            await self.truncate(conn, st.table)
        elif st.kind is None:
            await self.delete(conn, st.table, st.keys)
        else:
            await self.write(conn, st.table, st.kind, st.cols, st.keep, st.rows, st.encoded)

    def _combined(
        self,
        stmts: list[Statement],
        flow: str,
        dest: str,
        dead: list[tuple[Item, str]],
        positions: dict[Partition, tuple[str, int]],
    ) -> list[Any]:
        """One ``WITH ... SELECT 1`` of ``stmts`` (one step), the dead letters and the
        positions, followed by its arguments."""
        parts: list[str] = []
        args: list[Any] = []
        for st in stmts:
            n = len(args) + 1
            key: Hashable
            if st.kind is None:
                key = ("delete", st.table.name, st.table.key, n)
                parts.append(self._sql(key, sql.delete_sql, st.table, n))
                args.append(rows_json(st.keys))
            else:
                key = ("write", st.table.name, st.kind, st.cols, st.keep, st.table.key, n)
                parts.append(self._sql(key, sql.write_sql, st.table, st.kind, st.cols, st.keep, n))
                args.append(rows_json(st.rows) if st.encoded is None else st.encoded)
        state = self.options.state_schema
        if dead:
            n = len(args) + 1
            parts.append(self._sql(("dead", n), sql.dead_letter_sql, state, n))
            args += [flow, dest, *_letter_columns(dead)]
        if positions:
            n = len(args) + 1
            parts.append(self._sql(("positions", n), sql.checkpoints_sql, state, n))
            args += [
                flow,
                dest,
                [p.stream for p in positions],
                [p.index for p in positions],
                [epoch for epoch, _ in positions.values()],
                [seq for _, seq in positions.values()],
            ]
        text = "WITH " + ", ".join(f"s{i} AS ({p})" for i, p in enumerate(parts)) + " SELECT 1"
        return [text, *args]

    # --- dead letters ---------------------------------------------------------------------

    async def _has_letters(self, conn: asyncpg.Connection) -> bool:
        return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", self._dl_table))

    # Last to fail first, and within one batch (one failed_at) in stream order, newest first.
    _ORDER = "failed_at DESC, stream_seq DESC NULLS LAST, id DESC"

    async def list_letters(
        self,
        conn: asyncpg.Connection,
        flow: str,
        dest: str,
        limit: int,
        ids: Sequence[int] | None,
        offset: int,
    ) -> list[DeadLetter]:
        if not await self._has_letters(conn):
            return []
        where = "flow = $1 AND destination = $2"
        args: list[Any] = [flow, dest, limit, offset]
        if ids is not None:
            where += " AND id = ANY($5::bigint[])"
            args.append(list(ids))
        rows = await conn.fetch(
            f"SELECT id, flow, destination, subject, stream_seq, partition, error, table_name, "
            f"failed_at, payload FROM {self._dl_table} WHERE {where} "
            f"ORDER BY {self._ORDER} LIMIT $3 OFFSET $4",
            *args,
        )
        return [DeadLetter(**{**dict(r), "payload": bytes(r["payload"] or b"")}) for r in rows]

    async def recent_letters(
        self, conn: asyncpg.Connection, flow: str, dest: str, limit: int
    ) -> list[tuple[int, str, str | None, dt.datetime]]:
        if not await self._has_letters(conn):
            return []
        rows = await conn.fetch(
            f"SELECT id, error, table_name, failed_at FROM {self._dl_table} "
            f"WHERE flow = $1 AND destination = $2 ORDER BY {self._ORDER} LIMIT $3",
            flow,
            dest,
            limit,
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def count_letters(self, conn: asyncpg.Connection, flow: str, dest: str) -> int:
        if not await self._has_letters(conn):
            return 0
        return int(
            await conn.fetchval(
                f"SELECT count(*) FROM {self._dl_table} WHERE flow = $1 AND destination = $2",
                flow,
                dest,
            )
        )

    async def letters_for_replay(
        self, conn: asyncpg.Connection, flow: str, dest: str, ids: Sequence[int] | None
    ) -> list[tuple[int, str, int | None, int | None, bytes]]:
        if not await self._has_letters(conn):
            return []
        where = "flow = $1 AND destination = $2"
        args: list[Any] = [flow, dest]
        if ids is not None:
            where += " AND id = ANY($3::bigint[])"
            args.append(list(ids))
        rows = await conn.fetch(
            f"SELECT id, subject, stream_seq, partition, payload FROM {self._dl_table} "
            f"WHERE {where} ORDER BY id",
            *args,
        )
        return [(r[0], r[1], r[2], r[3], bytes(r[4] or b"")) for r in rows]

    async def settle_letters(
        self, conn: asyncpg.Connection, applied: list[int], failed: dict[int, str]
    ) -> None:
        if applied:
            await conn.execute(f"DELETE FROM {self._dl_table} WHERE id = ANY($1)", applied)
        if failed:
            await conn.execute(
                f"UPDATE {self._dl_table} AS d SET error = f.error, failed_at = now() "
                f"FROM unnest($1::bigint[], $2::text[]) AS f(id, error) WHERE d.id = f.id",
                list(failed),
                [why.replace("\x00", "") for why in failed.values()],
            )

    async def purge_letters(
        self, conn: asyncpg.Connection, flow: str, dest: str, before: dt.datetime
    ) -> int:
        if not await self._has_letters(conn):
            return 0
        status = await conn.execute(
            f"DELETE FROM {self._dl_table} WHERE flow = $1 AND destination = $2 AND failed_at < $3",
            flow,
            dest,
            before,
        )
        return int(status.split()[-1])


# Statements of one batch beyond which a batch runs as a transaction of separate statements:
# the one-statement form is planned anew for every new combination of statements, so it pays
# off only for the few shapes a steady stream repeats (full row images: one write statement).
_ONE_STATEMENT_MAX = 4


def _letter_columns(dead: list[tuple[Item, str]]) -> list[list[Any]]:
    """The dead letters' columns as the arrays ``dead_letter_sql`` unnests."""
    return [
        [i.delivery.subject.replace("\x00", "") for i, _ in dead],
        [i.delivery.seq if i.delivery.partition.stream else None for i, _ in dead],
        [i.delivery.partition.index if i.delivery.partition.stream else None for i, _ in dead],
        [i.delivery.data for i, _ in dead],
        [reason.replace("\x00", "") for _, reason in dead],
        [i.event.table.replace("\x00", "") if i.event else None for i, _ in dead],
    ]
