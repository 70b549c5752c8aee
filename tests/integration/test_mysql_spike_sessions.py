"""Spike for the MySQL/MariaDB destination (issue 13), part 2: sessions and identifiers.

GET_LOCK as the writer fence, transactions and savepoints, what a writer sees when the
server goes, identifier quoting and table-name case. Part 1 (test_mysql_spike.py) has the
catalog, strict mode and the statements; docs/dev/mysql-notes.md has the conclusions.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import asyncmy
import pytest
from mysqlkit import Db, Session, quote, run
from servers import MariaDBServer

# --------------------------------------------------------------------------- d. writer fence

HOLDER = """
import asyncio, sys, asyncmy
async def main():
    c = await asyncmy.connect(host=sys.argv[1], port=int(sys.argv[2]), user="root")
    async with c.cursor() as cur:
        await cur.execute("SET SESSION wait_timeout = %s", (int(sys.argv[4]),))
        await cur.execute("SELECT GET_LOCK(%s, 0)", (sys.argv[3],))
        print((await cur.fetchone())[0], flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def _hold_lock(db: Db, name: str, wait_timeout: int) -> subprocess.Popen[str]:
    """A client process of its own that takes the lock and then idles."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, db.host, str(db.port), name, str(wait_timeout)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "1"
    return proc


def _end(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


async def _seconds_until_acquired(s: Session, name: str, limit: float) -> float:
    started = time.monotonic()
    while await s.one("SELECT GET_LOCK(%s, 0)", (name,)) != 1:
        assert time.monotonic() - started < limit, f"lock {name!r} still held after {limit} s"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


def test_get_lock_is_a_session_fence(mysql_db: Db, unique: str) -> None:
    """GET_LOCK(name, 0): 1 for the first session, 0 for the others, held across COMMIT and
    ROLLBACK until RELEASE_LOCK (only by its owner) or the session's end; IS_USED_LOCK gives
    the owner's connection id. Names are server-wide (not per database) and, on MariaDB,
    case-sensitive (MySQL: insensitive); longer than 192 bytes is error 1059 (MySQL: 64
    characters, error 3057): the dialect hashes its name into ASCII under 64."""

    async def scenario(db: Db) -> None:
        name = f"cdcsync:{unique}"
        a, b = await db.session(), await db.session(database="mysql")
        assert await a.one("SELECT GET_LOCK(%s, 0)", (name,)) == 1
        assert await b.one("SELECT GET_LOCK(%s, 0)", (name,)) == 0  # other database too
        assert await b.one("SELECT IS_USED_LOCK(%s)", (name,)) == await a.id()
        for end in ("COMMIT", "ROLLBACK"):
            await a.rows("BEGIN")
            await a.rows(end)
            assert await b.one("SELECT GET_LOCK(%s, 0)", (name,)) == 0
        assert await b.one("SELECT RELEASE_LOCK(%s)", (name,)) == 0  # not b's to release
        assert await b.one("SELECT GET_LOCK(%s, 0)", (name.upper(),)) == 1
        assert (await a.fails("SELECT GET_LOCK(%s, 0)", ("x" * 193,)))[0] == 1059
        assert await a.one("SELECT GET_LOCK(%s, 0)", ("x" * 192,)) == 1
        a.close()
        assert await _seconds_until_acquired(b, name, 2) < 1

    run(mysql_db, scenario)


def test_get_lock_freed_when_the_holder_is_killed_or_its_host_vanishes(
    mysql_db: Db, unique: str
) -> None:
    """kill -9 of the client: the kernel closes its socket and the server frees the lock
    at once (milliseconds). A client whose host vanishes sends nothing: the lock stays until
    the server drops the idle session after wait_timeout (default 8 hours), so the writer
    sets a short session wait_timeout and pings within it."""

    async def scenario(db: Db) -> None:
        b = await db.session()
        killed = _hold_lock(db, f"{unique}:kill", wait_timeout=600)
        _end(killed)
        freed = await _seconds_until_acquired(b, f"{unique}:kill", limit=2)
        assert freed < 0.5
        frozen = _hold_lock(db, f"{unique}:frozen", wait_timeout=1)
        try:
            frozen.send_signal(signal.SIGSTOP)  # no FIN: a host that is just gone
            assert await b.one("SELECT GET_LOCK(%s, 0)", (f"{unique}:frozen",)) == 0
            waited = await _seconds_until_acquired(b, f"{unique}:frozen", limit=10)
        finally:
            _end(frozen)
        assert 0.5 < waited < 5
        print(f"lock freed {freed * 1000:.1f} ms after kill -9; {waited:.2f} s (wait_timeout 1)")

    run(mysql_db, scenario)


# --------------------------------------------------------------------------- e. transactions


def test_a_failed_statement_does_not_abort_the_transaction(mysql_db: Db) -> None:
    """Unlike PostgreSQL (25P02 until ROLLBACK), a failing statement in InnoDB rolls back
    only itself, including the rows it had already written (the first row of a multi-row
    INSERT whose second row is bad) and what its triggers wrote; the transaction goes on and
    commits the rest."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        await s.rows("CREATE TABLE t (id INT PRIMARY KEY, n INT) ENGINE=InnoDB")
        await s.rows("CREATE TABLE audit (id INT) ENGINE=InnoDB")
        await s.rows(
            "CREATE TRIGGER t_ai AFTER INSERT ON t FOR EACH ROW INSERT INTO audit VALUES (NEW.id)"
        )
        await s.rows("BEGIN")
        await s.rows("INSERT INTO t VALUES (1, 1)")
        assert (await s.fails("INSERT INTO t VALUES (2, 2), (3, 'abc')"))[0] == 1366
        await s.rows("INSERT INTO t VALUES (4, 4)")
        await s.rows("COMMIT")
        assert await s.rows("SELECT id FROM t ORDER BY id") == [(1,), (4,)]
        assert await s.rows("SELECT id FROM audit ORDER BY id") == [(1,), (4,)]  # trigger too

    run(mysql_db, scenario)


def test_one_transaction_spans_the_users_and_the_state_database(mysql_db: Db) -> None:
    """MySQL's schema is a database: the rows (users' database) and the checkpoint (a state
    database, as PostgreSQL's state schema) commit or roll back together in one InnoDB
    transaction on one connection."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        state = quote(f"{db.name}_state")
        await s.rows(f"CREATE DATABASE {state}")
        try:
            await s.rows("CREATE TABLE t (id INT PRIMARY KEY)")
            await s.rows(f"CREATE TABLE {state}.checkpoints (flow TEXT, last_seq BIGINT)")
            for end, want in (("ROLLBACK", (0, 0)), ("COMMIT", (1, 1))):
                await s.rows("BEGIN")
                await s.rows("INSERT INTO t VALUES (1)")
                await s.rows(f"INSERT INTO {state}.checkpoints VALUES ('f', 1)")
                await s.rows(end)
                got = await s.rows(
                    f"SELECT (SELECT COUNT(*) FROM t), (SELECT COUNT(*) FROM {state}.checkpoints)"
                )
                assert got == [want], end
        finally:
            await s.rows(f"DROP DATABASE {state}")

    run(mysql_db, scenario)


def test_a_statement_over_max_allowed_packet_loses_the_connection(mysql_db: Db) -> None:
    """A statement (or a prepared statement's parameter) larger than the server's
    max_allowed_packet (16 MB here, a global setting) fails with 1153 and the server drops
    the connection (2013 next): the dialect splits a batch's JSON below that size."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        limit = await s.one("SELECT @@max_allowed_packet")
        assert (await s.fails("SELECT LENGTH(%s)", ("x" * limit,)))[0] == 1153
        assert (await s.fails("SELECT 1"))[0] in (2006, 2013)

    run(mysql_db, scenario)


def test_truncate_commits_the_open_transaction(mysql_db: Db) -> None:
    """TRUNCATE is DDL: it commits the open transaction first, so rows written before it
    survive a ROLLBACK. A truncate event must be a DELETE inside the batch's transaction."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        await s.rows("CREATE TABLE a (id INT PRIMARY KEY) ENGINE=InnoDB")
        await s.rows("CREATE TABLE b (id INT PRIMARY KEY) ENGINE=InnoDB")
        await s.rows("BEGIN")
        await s.rows("INSERT INTO a VALUES (1)")
        await s.rows("TRUNCATE TABLE b")
        await s.rows("ROLLBACK")
        assert await s.rows("SELECT id FROM a") == [(1,)]
        await s.rows("BEGIN")
        await s.rows("INSERT INTO a VALUES (2)")
        await s.rows("DELETE FROM b")
        await s.rows("ROLLBACK")
        assert await s.rows("SELECT id FROM a") == [(1,)]

    run(mysql_db, scenario)


def test_savepoints_and_the_row_locks_they_keep(mysql_db: Db) -> None:
    """SAVEPOINT / ROLLBACK TO SAVEPOINT / RELEASE SAVEPOINT work as in PostgreSQL, but a
    rollback to a savepoint keeps the row locks taken after it until the transaction ends:
    another writer still waits for the rolled-back row (1205)."""

    async def scenario(db: Db) -> None:
        s, other = await db.session(), await db.session()
        await s.rows("CREATE TABLE t (id INT PRIMARY KEY, n INT) ENGINE=InnoDB")
        await s.rows("INSERT INTO t VALUES (1, 0), (2, 0)")
        await s.rows("BEGIN")
        await s.rows("SAVEPOINT a")
        await s.rows("UPDATE t SET n = 1 WHERE id = 1")
        await s.rows("RELEASE SAVEPOINT a")
        await s.rows("SAVEPOINT b")
        await s.rows("UPDATE t SET n = 2 WHERE id = 2")
        await s.rows("ROLLBACK TO SAVEPOINT b")
        await other.rows("SET SESSION innodb_lock_wait_timeout = 1")
        assert (await other.fails("UPDATE t SET n = 3 WHERE id = 2"))[0] == 1205
        await s.rows("COMMIT")
        assert await s.rows("SELECT n FROM t ORDER BY id") == [(1,), (0,)]

    run(mysql_db, scenario)


def test_cost_of_many_savepoints(mysql_db: Db) -> None:
    """No cap and no cliff like PostgreSQL's 64 cached subtransactions: 2,000 savepoints in
    one transaction, each updating its own row (as the bad-event isolation would), work. The
    transaction holds a lock on every row it wrote, rolled back or not, but InnoDB keeps row
    locks as per-page bitmaps: a few KB for thousands of rows (information_schema.INNODB_TRX,
    whose figures are refreshed at most every 0.1 s)."""

    async def scenario(db: Db) -> None:
        s, watcher = await db.session(), await db.session()
        await s.rows("CREATE TABLE t (id INT PRIMARY KEY, n INT) ENGINE=InnoDB")
        await s.rows("INSERT INTO t SELECT seq, 0 FROM seq_1_to_2000")
        sid = await s.id()
        await s.rows("BEGIN")
        started = time.perf_counter()
        for i in range(1, 2001):
            await s.rows(f"SAVEPOINT s{i}")
            await s.rows(f"UPDATE t SET n = 1 WHERE id = {i}")
            await s.rows(f"RELEASE SAVEPOINT s{i}" if i % 2 else f"ROLLBACK TO SAVEPOINT s{i}")
        per_savepoint_ms = (time.perf_counter() - started) / 2000 * 1000
        await asyncio.sleep(0.2)
        rows_locked, structs, lock_bytes = (
            await watcher.rows(
                "SELECT trx_rows_locked, trx_lock_structs, trx_lock_memory_bytes "
                "FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = %s",
                (sid,),
            )
        )[0]
        await s.rows("COMMIT")
        assert 2000 <= rows_locked < 2020  # InnoDB counts a few more than written
        assert lock_bytes < 64 * 1024
        assert await s.one("SELECT SUM(n) FROM t") == 1000
        print(
            f"2000 savepoints: {rows_locked} rows locked in {structs} lock structs, "
            f"{lock_bytes} bytes; {per_savepoint_ms:.2f} ms per savepoint + update + release"
        )

    run(mysql_db, scenario)


def test_a_cancelled_query_closes_the_connection(mysql_db: Db) -> None:
    """asyncmy (0.2.13+) closes a connection whose read was cancelled, so a later query
    can never read the stale tail of the cancelled one: cancellation = a new connection."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(s.rows("SELECT SLEEP(2)"), timeout=0.2)
        with pytest.raises(asyncmy.errors.Error):
            await s.rows("SELECT 1")

    run(mysql_db, scenario)


# --------------------------------------------------------------------------- f. identifiers


def test_identifiers_quoted_with_doubled_backticks(mysql_db: Db) -> None:
    """Backtick quoting (a backtick inside doubled) carries any catalog name, keyword,
    space, quote or non-ASCII, and information_schema returns it unchanged. Names longer
    than 64 characters fail (table 1103, column 1059); column names compare
    case-insensitively, so a table never has two columns that differ only by case (1060)."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        names = ["a`b", "select", "with space", 'd"q', "ünï", "x" * 64]
        cols = ", ".join(f"{quote(n)} INT" for n in names)
        await s.rows(f"CREATE TABLE {quote('t`; DROP TABLE x; --')} (id INT PRIMARY KEY, {cols})")
        got = await s.rows(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
            "ORDER BY ORDINAL_POSITION",
            (db.name,),
        )
        assert [r[0] for r in got] == ["id", *names]
        assert await s.rows(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (db.name,)
        ) == [("t`; DROP TABLE x; --",)]
        assert (await s.fails(f"CREATE TABLE {quote('y' * 65)} (id INT)"))[0] == 1103
        assert (await s.fails(f"CREATE TABLE y ({quote('y' * 65)} INT)"))[0] == 1059
        assert (await s.fails("CREATE TABLE c (Name INT, name INT)"))[0] == 1060
        await s.rows("CREATE TABLE c (Name INT)")
        await s.rows("INSERT INTO c (NAME) VALUES (1)")

    run(mysql_db, scenario)


def test_table_names_and_lower_case_table_names(mysql_db: Db) -> None:
    """With lower_case_table_names = 0 (Linux default) `Orders` and `orders` are two tables
    and information_schema matches the exact name; the dialect still compares catalog names
    in Python, exactly."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        assert await s.one("SELECT @@lower_case_table_names") == 0
        await s.rows("CREATE TABLE `Orders` (id INT PRIMARY KEY)")
        await s.rows("CREATE TABLE `orders` (id INT PRIMARY KEY)")
        await s.rows("INSERT INTO `Orders` VALUES (1)")
        assert await s.one("SELECT COUNT(*) FROM `orders`") == 0
        assert await s.rows(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME = 'orders'",
            (db.name,),
        ) == [("orders",)]

    run(mysql_db, scenario)


def test_lower_case_table_names_1_folds_names() -> None:
    """With lower_case_table_names = 1 (Windows and macOS default, or chosen at install) a
    table created as `Orders` is `orders` in the catalog and any spelling reaches it: the
    dialect lower-cases table names before matching when the setting is not 0."""
    with MariaDBServer(options=("--lower-case-table-names=1",)) as server:
        server.create_database("test")
        db = Db("127.0.0.1", server.port, "test")

        async def scenario(db: Db) -> None:
            s = await db.session()
            assert await s.one("SELECT @@lower_case_table_names") == 1
            await s.rows("CREATE TABLE `Orders` (id INT PRIMARY KEY)")
            assert (await s.fails("CREATE TABLE `ORDERS` (id INT)"))[0] == 1050
            await s.rows("INSERT INTO `oRdErS` VALUES (1)")
            assert await s.rows(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'test'"
            ) == [("orders",)]

        run(db, scenario)


def test_server_stop_and_crash_are_connection_errors() -> None:
    """What a writer sees when the server goes: a graceful stop or a kill -9 ends a running
    statement with 2013 and the next one on an idle connection with 2006; while it is down,
    connecting fails with 2003. All retryable."""
    with MariaDBServer() as server:
        server.create_database("test")
        db = Db("127.0.0.1", server.port, "test")

        async def scenario(db: Db) -> None:
            for stop in (server.stop, server.kill):
                running, idle = await db.session(), await db.session()
                waiting = asyncio.ensure_future(running.fails("SELECT SLEEP(5)"))
                await asyncio.sleep(0.3)
                await asyncio.get_running_loop().run_in_executor(None, stop)
                assert (await waiting)[0] == 2013
                assert (await idle.fails("SELECT 1"))[0] == 2006
                with pytest.raises(asyncmy.errors.OperationalError) as caught:
                    await db.session()
                assert caught.value.args[0] == 2003
                server.start()

        run(db, scenario)
