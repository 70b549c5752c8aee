"""What is MySQL's own in the MySQL / MariaDB destination (asyncmy, on asyncio).

Writes are prepared ``INSERT ... SELECT FROM JSON_TABLE(?)`` statements, one JSON parameter
per table, kind and column set, converted by the server under strict mode (sql.py). Writer
fences are ``GET_LOCK`` named locks of the writer's session; cdcsync's own tables live in a
database of their own (``state_schema``). Errors are classified by the server's code, never
by the driver's exception class (asyncmy maps codes onto PEP 249 classes inconsistently).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
from collections.abc import Hashable, Sequence
from typing import Any

import asyncmy.errors

from cdcsync.plugin import DeadLetter, Item, Partition, scrub, url_secrets
from cdcsync.plugin.sql import CheckpointRow, Column, Kind, Statement, TableInfo, pick_key
from cdcsync.sinks.mysql import sql
from cdcsync.sinks.mysql.options import MAX_NAME, MysqlOptions
from cdcsync.sinks.mysql.session import Session, Transaction, open_session, route_driver_logs
from cdcsync.sinks.mysql.values import (
    BadValue,
    Convert,
    canonical_key,
    converter,
    key_literal,
    rows_json,
    suspect,
)

__all__ = ["MysqlDialect", "error_code", "is_retryable"]

# Contention, interruptions, a server going away or read-only: retry the whole batch.
# 1205 lock wait timeout, 1213 deadlock, 1317 query interrupted, 1040 too many connections,
# 1053 shutdown, 1927 connection killed, 4031 idle session closed, 1290 / 1836 / 1792 read
# only, 1153 / 1161 / 1159 packet too large or network timeouts, 1049 unknown database (it
# may be being created), 1030 / 1180 storage engine errors, 1615 statement needs re-prepare.
_RETRY = frozenset(
    {1205, 1213, 1317, 1040, 1053, 1927, 4031, 1290, 1836, 1792, 1153, 1158, 1159, 1160, 1161}
    | {1049, 1030, 1180, 1615, 1203, 1226, 1037, 1041}
)
_STALE_CATALOG = frozenset({1146, 1054})  # unknown table / column: our cached catalog is old
# A refused login cannot be cured by retrying: access denied (to the server, to the
# database), an unsupported or expired authentication.
_FATAL_CONNECT = frozenset({1045, 1044, 1698, 1251, 1862, 1820, 2059, 2061})
# What a refused connection means, in plain words, and what to do (``check --connect``,
# the flow's last error): (code, words in the message or "", meaning, fix).
_CONNECT_FIXES = [
    (
        2003,
        "refused",
        "nothing accepts connections there",
        "start MySQL, or correct host and port in 'url'",
    ),
    (
        2003,
        "Connect call failed",
        "nothing accepts connections there",
        "start MySQL, or correct host and port in 'url'",
    ),
    (2003, "not known", "the host name does not resolve", "correct the host in 'url'"),
    (2003, "resolution", "the host name does not resolve", "correct the host in 'url'"),
    (2003, "timed out", "no answer", "check host, port and firewall"),
    (2005, "", "the host name does not resolve", "correct the host in 'url'"),
    (1045, "", "the server refused the login", "correct the user name or password in 'url'"),
    (1698, "", "the server refused the login", "correct the user name or password in 'url'"),
    (
        1044,
        "",
        "the user may not use this database",
        "GRANT it the rights docs/operations.md lists",
    ),
    (
        1049,
        "",
        "the server is up but has no such database",
        "CREATE DATABASE {db}, or correct 'url'",
    ),
    (
        1251,
        "",
        "the server wants an authentication the driver lacks",
        "give the user mysql_native_password",
    ),
]


def error_code(exc: BaseException) -> int | None:
    """The server's (or the client library's) error code of an asyncmy error."""
    if isinstance(exc, asyncmy.errors.Error) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def is_retryable(exc: BaseException) -> bool:
    """True when retrying the same batch later can succeed (connection, server, contention)."""
    code = error_code(exc)
    if code is not None:
        # 0: "Not connected"; 2000-2999: the client library's own (lost connection,
        # server gone, cannot connect, packet sequence).
        return code in _RETRY or code == 0 or 2000 <= code < 3000
    return isinstance(
        exc,
        (OSError, TimeoutError, EOFError, asyncio.IncompleteReadError, asyncmy.errors.Error),
    )


class MysqlDialect:
    """MySQL and MariaDB behind :class:`cdcsync.plugin.sql.SqlDestination`."""

    label = "MySQL"
    statement_atomic = True  # a failed statement undoes only itself, the transaction goes on
    nested_columns = "JSON columns"

    def __init__(self, flow: str, name: str, options: MysqlOptions) -> None:
        self.flow, self.name, self.options = flow, name, options
        state = options.state_schema
        self._state = sql.quote(state)
        self._cp_select, self._cp_upsert = sql.checkpoint_sql(state)
        self._dl_insert = sql.dead_letter_sql(state)
        # In text statements with %s parameters: a '%' of the name doubled.
        self._dl_table = f"{self._state}.dead_letters".replace("%", "%%")
        self._secrets = url_secrets(options.url)
        # Per (table as read from the catalog, kind, columns): the entry holds the TableInfo,
        # so a refreshed catalog (a new TableInfo) never meets a statement built for another.
        self._writes: dict[Hashable, tuple[TableInfo, str, tuple[Convert | None, ...]]] = {}
        self._uniques: dict[str, list[str]] = {}  # table -> its unique indexes but the key
        route_driver_logs()

    # --- connections and errors ----------------------------------------------------------

    async def connect(self) -> Session:
        return await open_session(self.options, f"cdcsync:{self.flow}:{self.name}")

    async def close(self, conn: Session) -> None:
        await conn.close()

    def terminate(self, conn: Session) -> None:
        conn.terminate()

    def is_closed(self, conn: Session) -> bool:
        return conn.closed

    def transaction(self, conn: Session) -> Transaction:
        return Transaction(conn)

    def is_retryable(self, exc: BaseException) -> bool:
        return is_retryable(exc)

    def is_stale_catalog(self, exc: BaseException) -> bool:
        return error_code(exc) in _STALE_CATALOG

    def is_data_error(self, exc: BaseException) -> bool:
        if isinstance(exc, BadValue):
            return True
        code = error_code(exc)
        # Server errors: 1000-1999, and MySQL 8 / MariaDB's newer ranges from 3000.
        return code is not None and (1000 <= code < 2000 or code >= 3000)

    def is_fatal_connect(self, exc: BaseException) -> bool:
        return error_code(exc) in _FATAL_CONNECT

    def describe(self, exc: BaseException) -> str:
        code = error_code(exc)
        if code is not None:
            message = str(exc.args[1]) if len(exc.args) > 1 else ""
            text = f"{code}: {message}"
            for known, words, meaning, fix in _CONNECT_FIXES:
                if code == known and words in message:
                    db = sql.quote(self.options.schema)
                    text += f": {meaning} (fix: {fix.format(db=db)})"
                    break
        elif isinstance(exc, BadValue):
            text = str(exc)
        else:
            text = f"{type(exc).__name__}: {exc}"
        return scrub(text.replace("\x00", ""), self._secrets)

    # --- fences ---------------------------------------------------------------------------

    @staticmethod
    def lock_name(name: str) -> str:
        """GET_LOCK names are server-wide and capped (MariaDB 192 bytes, MySQL 64
        characters): a hash of the fence's name, which holds the state database, the flow,
        the destination and the partition: the scope of one checkpoint row."""
        return "cdcsync:" + hashlib.sha256(name.encode()).hexdigest()[:40]

    async def try_lock(self, conn: Session, name: str) -> bool:
        [(got,)] = await conn.rows("SELECT GET_LOCK(%s, 0)", (self.lock_name(name),))
        return bool(got == 1)

    async def unlock(self, conn: Session, name: str) -> None:
        await conn.rows("SELECT RELEASE_LOCK(%s)", (self.lock_name(name),))

    # --- bookkeeping ----------------------------------------------------------------------

    async def prepare_state(self, conn: Session, flow: str, destination: str, legacy: bool) -> None:
        # CREATE ... IF NOT EXISTS checks the privilege first: skip what exists (a DBA may
        # have created it), so cdcsync needs no CREATE right then. cdcsync 0.1 had no MySQL
        # destination: nothing to migrate.
        state = self.options.state_schema
        have = await conn.rows(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME IN ('checkpoints', 'dead_letters')",
            (state,),
        )
        if have[0][0] == 2:
            return
        exists = await conn.rows(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (state,)
        )
        for stmt in sql.state_tables_sql(state):
            if exists[0][0] and stmt.startswith("CREATE DATABASE"):
                continue
            await conn.execute(stmt)

    async def load_checkpoints(self, conn: Session, flow: str, dest: str) -> list[CheckpointRow]:
        rows = await conn.rows(self._cp_select, (flow, dest))
        return [CheckpointRow(r[0], int(r[1]), r[2], int(r[3])) for r in rows]

    async def save(
        self,
        conn: Session,
        flow: str,
        dest: str,
        dead: list[tuple[Item, str]],
        positions: dict[Partition, tuple[str, int]],
    ) -> None:
        if dead:
            rows = []
            for item, reason in dead:
                d = item.delivery
                positioned = bool(d.partition.stream)
                payload = d.data
                # The letter must fit one statement: a payload above max_allowed_packet is
                # kept cut, and its reason says so.
                room = (conn.budget - 8 * len(reason) - 8 * len(d.subject) - 4096) * 3 // 4
                if len(payload) > room:
                    payload = payload[: max(0, room)]
                    reason += (
                        f" (payload of {len(d.data)} bytes cut to {len(payload)}: the server's "
                        f"max_allowed_packet)"
                    )
                rows.append(
                    [
                        _text(d.subject),
                        d.seq if positioned else None,
                        d.partition.index if positioned else None,
                        base64.b64encode(payload).decode(),
                        _text(reason),
                        _text(item.event.table) if item.event else None,
                    ]
                )
            for chunk in _chunks(rows, conn.budget):
                await conn.prepared(self._dl_insert, (flow, dest, chunk))
        for p, (epoch, seq) in positions.items():
            await conn.prepared(self._cp_upsert, (flow, dest, p.stream, p.index, epoch, seq))

    # --- catalog and values ---------------------------------------------------------------

    async def schema_problems(self, conn: Session) -> list[str]:
        return []  # the URL's database exists, or the connection was refused (1049)

    async def lookup(self, conn: Session, names: list[str]) -> dict[str, TableInfo]:
        schema = self.options.schema
        # Longer names cannot exist; a name MySQL cannot hold (unpaired surrogates) neither.
        wanted = [n for n in names if len(n) <= MAX_NAME and _encodable(n)]
        if not wanted:
            return {}
        fold = conn.fold_names
        marks = ", ".join(["%s"] * len(wanted))
        match = "LOWER(t.TABLE_NAME)" if fold else "CAST(t.TABLE_NAME AS BINARY)"
        query = sql.CATALOG_TABLES.format(match=match, names=marks)
        args = [schema, *(n.lower() if fold else n for n in wanted)]
        tables = {r[0]: (r[1], r[2] == "YES") for r in await conn.rows(query, args)}
        if not tables:
            return {}
        marks = ", ".join(["%s"] * len(tables))
        cols_sql = sql.CATALOG_COLUMNS_MARIADB if conn.mariadb else sql.CATALOG_COLUMNS_MYSQL
        columns: dict[str, dict[str, Column]] = {t: {} for t in tables}
        for r in await conn.rows(cols_sql.format(names=marks), [schema, *tables]):
            if r[0] not in columns:
                continue  # a view of a matching name (a collation that folds case)
            nested = bool(r[7])
            columns[r[0]][r[1]] = Column(
                r[1], "json" if nested else r[2], bool(r[4]), bool(r[5]), bool(r[6]), nested
            )
        indexes: dict[str, dict[str, list[tuple[str, bool]]]] = {t: {} for t in tables}
        for r in await conn.rows(sql.CATALOG_KEYS.format(names=marks), [schema, *tables]):
            if r[0] in indexes:
                indexes[r[0]].setdefault(r[1], []).append((r[2], bool(r[3])))
        found: dict[str, TableInfo] = {}
        by_name = {(t.lower() if fold else t): t for t in tables}
        for n in wanted:
            actual = by_name.get(n.lower() if fold else n)
            if actual is None:
                continue
            engine, transactional = tables[actual]
            cols = columns[actual]
            refusal = ""
            if not transactional:
                refusal = (
                    f"uses the {engine} engine, which cannot roll back a batch with its "
                    f"checkpoint (fix: ALTER TABLE {sql.quote(schema)}.{sql.quote(actual)} "
                    f"ENGINE=InnoDB)"
                )
            key = pick_key(_key_candidates(indexes[actual], cols)) or ()
            found[n] = TableInfo(schema, actual, cols, key, refusal)
            self._uniques[actual] = [
                f"{index} ({', '.join(c for c, _ in parts)})"
                for index, parts in indexes[actual].items()
                if tuple(c for c, _ in parts) != key
            ]
        return found

    def missing_key_fix(self, table: str) -> str:
        where = f"{sql.quote(self.options.schema)}.{sql.quote(table)}"
        return f"ALTER TABLE {where} ADD PRIMARY KEY (...)"

    def canonical_key(self, value: Any, column_type: str) -> Any:
        return canonical_key(value, column_type)

    def suspect(self, value: Any, column_type: str) -> bool:
        return suspect(value, column_type)

    # --- statements -----------------------------------------------------------------------

    def _write_plan(
        self, table: TableInfo, kind: Kind, cols: tuple[str, ...], keep: frozenset[str]
    ) -> tuple[str, tuple[Convert | None, ...]]:
        cache_key = (id(table), kind, cols, keep)
        found = self._writes.get(cache_key)
        if found is None or found[0] is not table:
            if len(self._writes) > 2_000:
                self._writes.clear()
            convert = tuple(converter(table.columns[c]) for c in cols)
            found = (table, sql.write_sql(table, kind, cols, keep), convert)
            self._writes[cache_key] = found
        return found[1], found[2]

    async def truncate(self, conn: Session, table: TableInfo) -> None:
        await conn.execute(sql.truncate_sql(table))

    async def delete(self, conn: Session, table: TableInfo, keys: list[dict[str, Any]]) -> None:
        escape = conn.raw.escape
        cols = [table.columns[c] for c in table.key]
        literals = [[key_literal(k[c.name], c, escape) for c in cols] for k in keys]
        statements, start, size = [], 0, 0
        for i, row in enumerate(literals):
            width = sum(len(v) + 4 for v in row)
            if i > start and (size + width > conn.budget or i - start >= 1_000):
                statements.append(sql.delete_sql(table, literals[start:i]))
                start, size = i, 0
            size += width
        statements.append(sql.delete_sql(table, literals[start:]))
        await _atomically(conn, [(s, None) for s in statements])

    async def write(
        self,
        conn: Session,
        table: TableInfo,
        kind: Kind,
        cols: tuple[str, ...],
        keep: frozenset[str],
        rows: list[dict[str, Any]],
        encoded: list[str] | None = None,
    ) -> None:
        stmt, convert = self._write_plan(table, kind, cols, keep)
        if encoded is None:
            encoded = _chunks(_converted(rows, cols, convert), conn.budget)
        try:
            await _atomically(conn, [(stmt, (c,)) for c in encoded])
        except asyncmy.errors.Error as exc:
            raise _explain(exc, table, self._uniques.get(table.name, [])) from exc

    def encode(self, conn: Session, st: Statement) -> list[str]:
        """A write's rows as the JSON documents its statement takes (see :meth:`write`)."""
        if st.kind is None:
            raise ValueError("a delete has no rows to encode")
        _, convert = self._write_plan(st.table, st.kind, st.cols, st.keep)
        return _chunks(_converted(st.rows, st.cols, convert), conn.budget)

    # --- dead letters ---------------------------------------------------------------------

    async def _has_letters(self, conn: Session) -> bool:
        rows = await conn.rows(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME = 'dead_letters'",
            (self.options.state_schema,),
        )
        return bool(rows[0][0])

    # Last to fail first, and within one batch (one failed_at) in stream order, newest first
    # (DESC puts NULLs last in MySQL).
    _ORDER = "failed_at DESC, stream_seq DESC, id DESC"
    _COLUMNS = (
        "id, flow, destination, subject, stream_seq, `partition`, error, table_name, "
        "failed_at, payload"
    )

    async def list_letters(
        self,
        conn: Session,
        flow: str,
        dest: str,
        limit: int,
        ids: Sequence[int] | None,
        offset: int,
    ) -> list[DeadLetter]:
        if not await self._has_letters(conn) or (ids is not None and not ids):
            return []
        where = "flow = %s AND destination = %s"
        args: list[Any] = [flow, dest]
        if ids is not None:
            where += f" AND id IN ({', '.join(['%s'] * len(ids))})"
            args += [int(i) for i in ids]
        rows = await conn.rows(
            f"SELECT {self._COLUMNS} FROM {self._dl_table} WHERE {where} "
            f"ORDER BY {self._ORDER} LIMIT %s OFFSET %s",
            [*args, int(limit), int(offset)],
        )
        return [
            DeadLetter(
                id=r[0],
                flow=r[1],
                destination=r[2],
                subject=r[3],
                stream_seq=r[4],
                partition=r[5],
                error=r[6],
                table_name=r[7],
                failed_at=_aware(r[8]),
                payload=bytes(r[9] or b""),
            )
            for r in rows
        ]

    async def recent_letters(
        self, conn: Session, flow: str, dest: str, limit: int
    ) -> list[tuple[int, str, str | None, dt.datetime]]:
        if not await self._has_letters(conn):
            return []
        rows = await conn.rows(
            f"SELECT id, error, table_name, failed_at FROM {self._dl_table} "
            f"WHERE flow = %s AND destination = %s ORDER BY {self._ORDER} LIMIT %s",
            (flow, dest, int(limit)),
        )
        return [(r[0], r[1], r[2], _aware(r[3])) for r in rows]

    async def count_letters(self, conn: Session, flow: str, dest: str) -> int:
        if not await self._has_letters(conn):
            return 0
        rows = await conn.rows(
            f"SELECT COUNT(*) FROM {self._dl_table} WHERE flow = %s AND destination = %s",
            (flow, dest),
        )
        return int(rows[0][0])

    async def letters_for_replay(
        self, conn: Session, flow: str, dest: str, ids: Sequence[int] | None
    ) -> list[tuple[int, str, int | None, int | None, bytes]]:
        if not await self._has_letters(conn) or (ids is not None and not ids):
            return []
        where = "flow = %s AND destination = %s"
        args: list[Any] = [flow, dest]
        if ids is not None:
            where += f" AND id IN ({', '.join(['%s'] * len(ids))})"
            args += [int(i) for i in ids]
        rows = await conn.rows(
            f"SELECT id, subject, stream_seq, `partition`, payload FROM {self._dl_table} "
            f"WHERE {where} ORDER BY id",
            args,
        )
        return [(r[0], r[1], r[2], r[3], bytes(r[4] or b"")) for r in rows]

    async def settle_letters(
        self, conn: Session, applied: list[int], failed: dict[int, str]
    ) -> None:
        if applied:
            marks = ", ".join(["%s"] * len(applied))
            await conn.execute(f"DELETE FROM {self._dl_table} WHERE id IN ({marks})", applied)
        for letter_id, why in failed.items():
            await conn.execute(
                f"UPDATE {self._dl_table} SET error = %s, failed_at = CURRENT_TIMESTAMP(6) "
                f"WHERE id = %s",
                (_text(why), letter_id),
            )

    async def purge_letters(self, conn: Session, flow: str, dest: str, before: dt.datetime) -> int:
        if not await self._has_letters(conn):
            return 0
        if before.tzinfo is not None:
            before = before.astimezone(dt.UTC).replace(tzinfo=None)
        return await conn.execute(
            f"DELETE FROM {self._dl_table} WHERE flow = %s AND destination = %s AND failed_at < %s",
            (flow, dest, before),
        )


async def _atomically(conn: Session, statements: list[tuple[str, tuple[Any, ...] | None]]) -> None:
    """Run what is one statement for the shared core (a write or a delete that had to be
    split under max_allowed_packet): all or nothing, with a savepoint when there are several
    (the core runs a single statement without one, ``statement_atomic``)."""
    if len(statements) == 1:
        await _run(conn, *statements[0])
        return
    async with Transaction(conn):  # inside the batch's transaction: a savepoint
        for text, args in statements:
            await _run(conn, text, args)


async def _run(conn: Session, text: str, args: tuple[Any, ...] | None) -> None:
    if args is None:
        await conn.execute(text)
    else:
        await conn.prepared(text, args)


def _key_candidates(
    indexes: dict[str, list[tuple[str, bool]]], cols: dict[str, Column]
) -> list[tuple[bool, list[str], bool]]:
    """pick_key's input: PRIMARY first, then the narrowest unique index usable as a key
    (whole columns, no functional part, every column NOT NULL)."""
    out = []
    for name, parts in indexes.items():
        usable = all(whole and c in cols for c, whole in parts)
        if not usable:
            continue
        names = [c for c, _ in parts]
        out.append((name == "PRIMARY", names, all(cols[c].not_null for c in names)))
    out.sort(key=lambda k: (not k[0], len(k[1])))
    return out


def _explain(exc: asyncmy.errors.Error, table: TableInfo, uniques: list[str]) -> BaseException:
    """The key guard's refusal in words: 1048 on a key column means the row the event met
    has another key (a conflict on another unique index), never a NULL key (those are
    dead-lettered before)."""
    code = error_code(exc)
    message = str(exc.args[1]) if len(exc.args) > 1 else ""
    if code == 1048 and message == f"Column '{table.key[0]}' cannot be null":
        key = ", ".join(table.key)
        where = f" (unique indexes: {'; '.join(uniques)})" if uniques else ""
        return BadValue(
            f"1062: duplicate entry in another unique index of {table.schema}.{table.name} "
            f"than its key ({key}){where}: the row holding it has another key, and cdcsync "
            f"does not overwrite another row"
        )
    return exc


def _converted(
    rows: list[dict[str, Any]], cols: tuple[str, ...], convert: tuple[Convert | None, ...]
) -> list[list[Any]]:
    """The rows' values in ``cols`` order, each as MySQL takes it."""
    values = [[r[c] for c in cols] for r in rows]
    # Column by column: most columns need nothing, and a loop per column costs less than a
    # test per value.
    for i, f in enumerate(convert):
        if f is not None:
            for v in values:
                x = v[i]
                if x is not None:
                    v[i] = f(x)
    return values


def _chunks(rows: list[Any], budget: int) -> list[str]:
    """``rows`` as JSON documents of at most ``budget`` bytes each (max_allowed_packet)."""
    doc = rows_json(rows)
    if len(doc) <= budget:
        return [doc.decode()]
    if len(rows) == 1:
        raise BadValue(
            f"a row of {len(doc)} bytes exceeds what the server accepts in one statement "
            f"(max_allowed_packet {budget} bytes after the statement)"
        )
    mid = len(rows) // 2
    return _chunks(rows[:mid], budget) + _chunks(rows[mid:], budget)


def _text(value: str) -> str:
    """Text MySQL can store (utf8mb4): NUL kept, an unpaired surrogate replaced."""
    return value if _encodable(value) else value.encode("utf-8", "replace").decode()


def _encodable(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _aware(value: dt.datetime) -> dt.datetime:
    """Stored as UTC wall time (the session's time zone): an aware datetime, as PostgreSQL's."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value
