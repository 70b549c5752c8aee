"""Spike for the MySQL/MariaDB destination (issue 13): what its dialect can rely on.

Each test pins one fact of the real server (MariaDB 10.11 here) that docs/dev/mysql-notes.md
builds on: the catalog in information_schema, strict mode and its error codes, upsert /
replace / ignore / delete statements (part 2, test_mysql_spike_sessions.py: GET_LOCK,
transactions, identifiers). When a server upgrade changes one of them, the test that fails
names the assumption to revisit. Clients are asyncmy on plain asyncio (tests/mysqlkit.py):
these are facts of the server, not of cdcsync.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

from mysqlkit import Db, run

# --------------------------------------------------------------------------- a. catalog

CATALOG_COLUMNS = """
SELECT c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, c.IS_NULLABLE = 'YES', c.COLUMN_DEFAULT,
       c.EXTRA LIKE '%%GENERATED%%',
       c.DATA_TYPE = 'json' OR EXISTS (
           SELECT 1 FROM information_schema.CHECK_CONSTRAINTS k
           WHERE k.CONSTRAINT_SCHEMA = c.TABLE_SCHEMA AND k.TABLE_NAME = c.TABLE_NAME
             AND k.LEVEL = 'Column' AND k.CONSTRAINT_NAME = c.COLUMN_NAME
             AND k.CHECK_CLAUSE = CONCAT('json_valid(`', REPLACE(c.COLUMN_NAME, '`', '``'), '`)'))
FROM information_schema.COLUMNS c
WHERE c.TABLE_SCHEMA = %s AND c.TABLE_NAME = %s ORDER BY c.ORDINAL_POSITION
"""

CATALOG_KEYS = """
SELECT s.INDEX_NAME, s.COLUMN_NAME, s.SUB_PART, s.NULLABLE = 'YES', s.INDEX_TYPE
FROM information_schema.STATISTICS s
WHERE s.TABLE_SCHEMA = %s AND s.TABLE_NAME = %s AND s.NON_UNIQUE = 0
ORDER BY s.INDEX_NAME = 'PRIMARY' DESC, s.INDEX_NAME, s.SEQ_IN_INDEX
"""


def pick_key(rows: list[tuple[Any, ...]]) -> tuple[str, ...] | None:
    """PRIMARY, else the narrowest unique index on whole columns that are all NOT NULL."""
    indexes: dict[str, list[tuple[Any, ...]]] = {}
    for r in rows:
        indexes.setdefault(r[0], []).append(r)
    usable = [
        tuple(r[1] for r in cols)
        for name, cols in indexes.items()
        if name == "PRIMARY" or all(r[2] is None and not r[3] and r[1] for r in cols)
    ]
    if "PRIMARY" in indexes:
        return usable[0]
    return min(usable, key=len) if usable else None


def test_catalog_columns_json_generated_defaults_keys_engine(mysql_db: Db) -> None:
    """information_schema gives what TableInfo needs: JSON columns are LONGTEXT with a
    column-level CHECK (json_valid(`c`)) on MariaDB (the same as a hand-written one),
    generated columns say so in EXTRA, defaults are SQL text ('7', "'x'", NULL = none),
    unique indexes show prefix parts and nullability, TABLES.ENGINE joins ENGINES."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        await s.rows(
            """CREATE TABLE t (
                id BIGINT NOT NULL PRIMARY KEY, email VARCHAR(50) NOT NULL,
                nick VARCHAR(20) NULL, j JSON, lt LONGTEXT CHECK (JSON_VALID(lt)),
                plain LONGTEXT, g INT AS (id * 2) VIRTUAL, gs INT AS (id * 3) STORED,
                n INT NOT NULL DEFAULT 7, s VARCHAR(10) DEFAULT 'x',
                ts DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), nd INT NOT NULL,
                body TEXT NOT NULL, pre VARCHAR(100) NOT NULL,
                UNIQUE KEY u_email (email), UNIQUE KEY u_nick (nick),
                UNIQUE KEY u_body (body), UNIQUE KEY u_pre (pre(10))) ENGINE=InnoDB"""
        )
        cols = {r[0]: r[1:] for r in await s.rows(CATALOG_COLUMNS, (db.name, "t"))}
        assert cols["j"][:2] == ("longtext", "longtext")  # no JSON type on MariaDB
        assert {c for c, r in cols.items() if r[5]} == {"j", "lt"}  # takes JSON documents
        assert {c for c, r in cols.items() if r[4]} == {"g", "gs"}  # generated
        defaults = {c: (r[3], r[2]) for c, r in cols.items()}
        assert defaults["n"] == ("7", False)
        assert defaults["s"] == ("'x'", True)  # literals come quoted (MySQL 8: unquoted)
        assert defaults["ts"] == ("current_timestamp(6)", False)
        assert defaults["nd"] == (None, False)  # NOT NULL without default
        assert defaults["nick"] == ("NULL", True)

        keys = await s.rows(CATALOG_KEYS, (db.name, "t"))
        by_index = {r[0]: r[1:] for r in keys}
        assert by_index["u_pre"][1] == 10  # prefix: unique on 10 chars only, not a key
        assert by_index["u_nick"][2] == 1  # nullable: NULLs never conflict
        assert by_index["u_body"][3] == "HASH"  # MariaDB's long unique on TEXT
        assert pick_key(keys) == ("id",)
        await s.rows("ALTER TABLE t DROP PRIMARY KEY")
        assert pick_key(await s.rows(CATALOG_KEYS, (db.name, "t"))) == ("body",)

        await s.rows("CREATE TABLE m (id INT PRIMARY KEY) ENGINE=MyISAM")
        engines = await s.rows(
            "SELECT t.TABLE_NAME, t.ENGINE, e.TRANSACTIONS FROM information_schema.TABLES t "
            "JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE "
            "WHERE t.TABLE_SCHEMA = %s ORDER BY 1",
            (db.name,),
        )
        assert engines == [("m", "MyISAM", "NO"), ("t", "InnoDB", "YES")]

    run(mysql_db, scenario)


def test_myisam_keeps_rows_of_a_rolled_back_transaction(mysql_db: Db) -> None:
    """Why a non-transactional table is refused: its rows do not roll back (warning 1196),
    so rows and checkpoint could not commit together; and under STRICT_TRANS_TABLES a bad
    value in a later row of a multi-row insert is silently coerced (warning 1366)."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        await s.rows("CREATE TABLE m (id INT PRIMARY KEY, n INT) ENGINE=MyISAM")
        await s.rows("BEGIN")
        await s.rows("INSERT INTO m VALUES (1, 1)")
        await s.rows("ROLLBACK")
        assert await s.warnings() == [1196]
        assert await s.rows("SELECT id FROM m") == [(1,)]
        await s.rows("SET SESSION sql_mode = 'STRICT_TRANS_TABLES'")
        await s.rows("INSERT INTO m VALUES (2, 2), (3, 'abc')")
        assert await s.warnings() == [1366]
        assert await s.rows("SELECT id, n FROM m WHERE id > 1") == [(2, 2), (3, 0)]

    run(mysql_db, scenario)


# --------------------------------------------------------------------------- b. strict mode

MISFITS = [  # (column, SQL literal, error code)
    ("n", "'abc'", 1366),
    ("n", "'true'", 1366),
    ("n", str(2**40), 1264),
    ("ti", "-1", 1264),
    ("dec2", "12345.6", 1264),
    ("f", "'NaN'", 1366),
    ("s", "'abcdef'", 1406),
    ("d", "'2026-02-30 00:00:00'", 1292),
    ("d", "'2026-01-01T00:00:00Z'", 1292),  # ISO-8601 with an offset: convert first
    ("d", "'2026-01-01T00:00:00+02:00'", 1292),
    ("ts", "'1960-01-01 00:00:00'", 1292),  # TIMESTAMP starts in 1970
    ("e", "'c'", 1265),  # not an ENUM member
    ("j", "'{bad'", 4025),  # the JSON alias's CHECK (json_valid)
    ("u3", "'\U0001f600'", 1366),  # 4-byte character into utf8mb3
    ("nn", "NULL", 1048),
]


def test_strict_mode_fails_misfits_with_an_error_code(mysql_db: Db) -> None:
    """With the session's sql_mode strict, a value that does not fit fails the statement
    with its code (no row, no warning); without strict mode the same 'abc' silently
    becomes 0 with warning 1366, so the dialect must set sql_mode on every session."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        await s.rows(
            "CREATE TABLE c (id INT PRIMARY KEY, n INT, ti TINYINT UNSIGNED, "
            "dec2 DECIMAL(5,2), f DOUBLE, s VARCHAR(5), d DATETIME(6), ts TIMESTAMP(6) NULL, "
            "e ENUM('a','b'), j JSON, u3 VARCHAR(5) CHARACTER SET utf8mb3, nn INT NOT NULL "
            "DEFAULT 0, b BOOL, dt DATE, req INT NOT NULL DEFAULT 0) ENGINE=InnoDB"
        )
        got = []
        for i, (col, literal, _) in enumerate(MISFITS):
            code, message = await s.fails(f"INSERT INTO c (id, {col}) VALUES ({i}, {literal})")
            got.append(code)
            assert message  # the server's own words go into the dead letter
        assert got == [code for _, _, code in MISFITS]
        assert await s.one("SELECT COUNT(*) FROM c") == 0

        await s.rows("ALTER TABLE c MODIFY req INT NOT NULL")  # no default any more
        assert (await s.fails("INSERT INTO c (id) VALUES (1)"))[0] == 1364

        lax = await db.session(strict=False)
        await lax.rows("INSERT INTO c (id, n, req) VALUES (1, 'abc', 1)")
        assert await lax.warnings() == [1366]
        assert await lax.rows("SELECT n FROM c WHERE id = 1") == [(0,)]

    run(mysql_db, scenario)


def test_strict_mode_still_changes_some_values_silently(mysql_db: Db) -> None:
    """What strict mode lets through altered, where PostgreSQL errs or differs: a
    non-integral number into an integer column is rounded (1.5 -> 2, no warning), '1e3' is
    1000, a BOOL is a TINYINT (5 stays 5, 'true' is an error), DECIMAL rounds with note
    1265. The dialect checks these itself (like values.suspect) or documents them."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        await s.rows(
            "CREATE TABLE c (id INT PRIMARY KEY, n INT, b BOOL, dec2 DECIMAL(5,2), "
            "d DATETIME(6), s VARCHAR(5))"
        )
        cases = [
            ("n", "1.5", 2, []),
            ("n", "'1.5'", 2, []),
            ("n", "'1e3'", 1000, []),
            ("n", "' 7 '", 7, [1265]),
            ("b", "5", 5, []),
            ("b", "TRUE", 1, []),
            ("dec2", "1.005", Decimal("1.01"), [1265]),
            ("s", "'abcde '", "abcde", [1265]),
        ]
        for i, (col, literal, stored, warnings) in enumerate(cases):
            await s.rows(f"INSERT INTO c (id, {col}) VALUES ({i}, {literal})")
            assert (await s.warnings(), await s.one(f"SELECT {col} FROM c WHERE id = {i}")) == (
                warnings,
                stored,
            ), (col, literal)

    run(mysql_db, scenario)


def test_contention_errors_and_what_they_roll_back(mysql_db: Db) -> None:
    """Retryable codes: 1205 lock wait timeout rolls back the statement only, 1213 deadlock
    rolls back the victim's whole transaction, 1317 after KILL QUERY (the connection lives),
    2013 when the connection is killed during a statement and 2006 on the next one."""

    async def scenario(db: Db) -> None:
        a, b, c = await db.session(), await db.session(), await db.session()
        await a.rows("CREATE TABLE t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
        await a.rows("INSERT INTO t VALUES (1, 0), (2, 0), (3, 0)")
        await b.rows("SET SESSION innodb_lock_wait_timeout = 1")
        b_id = await b.id()  # asked now: b's connection is busy when it is killed

        await a.rows("BEGIN")
        await a.rows("UPDATE t SET v = 1 WHERE id = 1")
        await b.rows("BEGIN")
        await b.rows("UPDATE t SET v = 2 WHERE id = 3")
        assert (await b.fails("UPDATE t SET v = 2 WHERE id = 1"))[0] == 1205
        await b.rows("COMMIT")  # the transaction went on without the timed-out statement
        assert await c.one("SELECT v FROM t WHERE id = 3") == 2

        await b.rows("SET SESSION innodb_lock_wait_timeout = 10")
        await b.rows("BEGIN")
        await b.rows("UPDATE t SET v = 3 WHERE id = 3")
        await b.rows("UPDATE t SET v = 3 WHERE id = 2")
        waiting = asyncio.ensure_future(b.rows("UPDATE t SET v = 3 WHERE id = 1"))
        await asyncio.sleep(0.3)
        assert (await a.fails("UPDATE t SET v = 1 WHERE id = 2"))[0] == 1213  # a: victim
        await waiting
        await b.rows("COMMIT")
        await a.rows("COMMIT")  # a's first update went with the deadlock
        assert await c.rows("SELECT v FROM t ORDER BY id") == [(3,), (3,), (3,)]

        await a.rows("BEGIN")
        await a.rows("UPDATE t SET v = 4 WHERE id = 1")
        waiting = asyncio.ensure_future(b.fails("UPDATE t SET v = 5 WHERE id = 1"))
        await asyncio.sleep(0.3)
        await c.rows(f"KILL QUERY {b_id}")
        assert (await waiting)[0] == 1317
        assert await b.one("SELECT 1") == 1
        waiting = asyncio.ensure_future(b.fails("UPDATE t SET v = 5 WHERE id = 1"))
        await asyncio.sleep(0.3)
        await c.rows(f"KILL CONNECTION {b_id}")
        assert (await waiting)[0] == 2013
        assert (await b.fails("SELECT 1"))[0] == 2006
        await a.rows("ROLLBACK")

    run(mysql_db, scenario)


# --------------------------------------------------------------------------- c. statements


def test_upsert_merges_present_columns_values_function_not_as_alias(mysql_db: Db) -> None:
    """MariaDB 10.11: ON DUPLICATE KEY UPDATE c = VALUES(c) updates only the listed columns;
    MySQL 8.0.19's row alias (VALUES (...) AS new ... new.c) is a syntax error (1064)."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        await s.rows("CREATE TABLE u (id INT PRIMARY KEY, a TEXT, b TEXT)")
        await s.rows("INSERT INTO u VALUES (1, 'a1', 'b1')")
        await s.rows(
            "INSERT INTO u (id, a) VALUES (1, 'a2'), (2, 'a3') "
            "ON DUPLICATE KEY UPDATE a = VALUES(a)"
        )
        assert await s.rows("SELECT * FROM u ORDER BY id") == [(1, "a2", "b1"), (2, "a3", None)]
        code, _ = await s.fails(
            "INSERT INTO u (id, a) VALUES (1, 'x') AS new ON DUPLICATE KEY UPDATE a = new.a"
        )
        assert code == 1064

    run(mysql_db, scenario)


JT = "JSON_TABLE(%s, '$[*]' COLUMNS ({cols})) AS j"


def jt(**types: str) -> str:
    return JT.format(cols=", ".join(f"{c} {t} PATH '$.{c}'" for c, t in types.items()))


def test_json_table_upsert_converts_under_strict_mode_only_as_text(mysql_db: Db) -> None:
    """INSERT ... SELECT FROM JSON_TABLE(one JSON parameter) ... ON DUPLICATE KEY UPDATE
    c = j.c works (no VALUES(), no alias: portable). Columns must come out as LONGTEXT so the
    INSERT converts them strictly ('abc' -> 1366; a bigint past 2**53 exact): a typed
    JSON_TABLE column turns 'abc' into 0 with a warning only. JSON null in a JSON PATH
    column is the JSON literal null, not SQL NULL; JSON true into a BOOL fails as 'true'."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        await s.rows("CREATE TABLE u (id BIGINT PRIMARY KEY, n INT, b BOOL, doc JSON)")
        rows = [
            {"id": 2**53 + 1, "n": 5, "doc": {"a": [1]}},
            {"id": 7, "n": "6", "doc": None},
            {"id": 8, "doc": "text"},
        ]
        await s.rows(
            f"INSERT INTO u (id, n, doc) SELECT j.id, j.n, j.doc FROM "
            f"{jt(id='LONGTEXT', n='LONGTEXT', doc='JSON')} ON DUPLICATE KEY UPDATE n = j.n",
            (json.dumps(rows),),
        )
        assert await s.rows("SELECT id, n, doc FROM u ORDER BY id") == [
            (7, 6, "null"),
            (8, None, '"text"'),
            (2**53 + 1, 5, '{"a": [1]}'),  # the document's own text
        ]
        bad = json.dumps([{"id": 9, "n": "abc"}])
        as_text = f"INSERT INTO u (id, n) SELECT j.id, j.n FROM {jt(id='LONGTEXT', n='LONGTEXT')}"
        assert (await s.fails(as_text, (bad,)))[0] == 1366
        typed = f"INSERT INTO u (id, n) SELECT j.id, j.n FROM {jt(id='BIGINT', n='INT')}"
        await s.rows(typed, (bad,))
        assert await s.warnings() == [1366]
        assert await s.rows("SELECT n FROM u WHERE id = 9") == [(0,)]  # silently 0
        truth = json.dumps([{"id": 10, "b": True}])
        bools = f"INSERT INTO u (id, b) SELECT j.id, j.b FROM {jt(id='LONGTEXT', b='LONGTEXT')}"
        assert (await s.fails(bools, (truth,)))[0] == 1366

    run(mysql_db, scenario)


def test_replace_mode_with_default_not_replace_into(mysql_db: Db) -> None:
    """Replace without REPLACE INTO: ON DUPLICATE KEY UPDATE present = VALUES(present),
    absent = DEFAULT(absent) resets absent columns to their defaults (expressions too) in
    place: the row keeps its auto-increment surrogate, its FK children, and fires the UPDATE
    trigger. REPLACE INTO deletes and re-inserts: new surrogate, children cascaded away,
    DELETE + INSERT triggers."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        await s.rows(
            "CREATE TABLE p (code VARCHAR(10) NOT NULL, surrogate INT AUTO_INCREMENT PRIMARY "
            "KEY, a TEXT, n INT NOT NULL DEFAULT 7, at DATETIME(6) DEFAULT '2000-01-01', "
            "UNIQUE KEY (code)) ENGINE=InnoDB"
        )
        await s.rows(
            "CREATE TABLE child (id INT PRIMARY KEY, p INT, FOREIGN KEY (p) REFERENCES "
            "p (surrogate) ON DELETE CASCADE) ENGINE=InnoDB"
        )
        await s.rows("CREATE TABLE fired (what TEXT)")
        for event in ("UPDATE", "DELETE", "INSERT"):
            await s.rows(
                f"CREATE TRIGGER p_{event.lower()} AFTER {event} ON p FOR EACH ROW "
                f"INSERT INTO fired VALUES ('{event}')"
            )
        await s.rows("INSERT INTO p (code, a, n, at) VALUES ('k', 'old', 1, '2026-05-05')")
        await s.rows("INSERT INTO child VALUES (1, 1)")
        await s.rows("DELETE FROM fired")
        await s.rows(
            "INSERT INTO p (code, a) VALUES ('k', 'new') ON DUPLICATE KEY UPDATE "
            "a = VALUES(a), n = DEFAULT(n), at = DEFAULT(at)"
        )
        assert await s.rows("SELECT surrogate, a, n, CAST(at AS CHAR) FROM p") == [
            (1, "new", 7, "2000-01-01 00:00:00.000000")
        ]
        assert await s.rows("SELECT what FROM fired") == [("UPDATE",)]
        assert await s.one("SELECT COUNT(*) FROM child") == 1

        await s.rows("DELETE FROM fired")
        await s.rows("REPLACE INTO p (code, a) VALUES ('k', 'replaced')")
        # A new surrogate: 3, since the upsert above burned 2 (InnoDB takes an
        # auto-increment value for every row an INSERT tries, duplicates included).
        assert await s.rows("SELECT surrogate, a FROM p") == [(3, "replaced")]
        assert await s.rows("SELECT what FROM fired") == [("DELETE",), ("INSERT",)]
        assert await s.one("SELECT COUNT(*) FROM child") == 0

    run(mysql_db, scenario)


def test_ignore_mode_without_insert_ignore(mysql_db: Db) -> None:
    """INSERT IGNORE also turns data errors into warnings ('abc' stored as 0): never use it.
    ON DUPLICATE KEY UPDATE id = id keeps the existing row untouched (0 rows affected) and
    still fails bad values."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        await s.rows("CREATE TABLE u (id INT PRIMARY KEY, n INT)")
        await s.rows("INSERT INTO u VALUES (1, 1)")
        await s.rows("INSERT IGNORE INTO u VALUES (1, 2), (2, 'abc')")
        assert await s.warnings() == [1062, 1366]
        assert await s.rows("SELECT * FROM u ORDER BY id") == [(1, 1), (2, 0)]
        async with s.conn.cursor() as cur:
            assert (
                await cur.execute("INSERT INTO u VALUES (1, 3) ON DUPLICATE KEY UPDATE id = id")
                == 0
            )
        assert await s.rows("SELECT n FROM u WHERE id = 1") == [(1,)]
        code, _ = await s.fails("INSERT INTO u VALUES (3, 'abc') ON DUPLICATE KEY UPDATE id = id")
        assert code == 1366

    run(mysql_db, scenario)


def test_duplicate_key_update_fires_on_any_unique_key_and_a_guard_refuses_it(mysql_db: Db) -> None:
    """Unlike PostgreSQL's ON CONFLICT (pk), ON DUPLICATE KEY UPDATE fires on a conflict with
    ANY unique key: an upsert of id 2 whose email belongs to id 1 silently rewrites row 1.
    Guard (first assignment, evaluated before the others): id = IF(id = VALUES(id), id,
    NULL) makes that case fail with 1048 (a data error: dead-lettered, like PG's 23505),
    and costs nothing when the key matches."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        await s.rows(
            "CREATE TABLE u (id INT PRIMARY KEY, email VARCHAR(20) NOT NULL UNIQUE, name TEXT)"
        )
        await s.rows("INSERT INTO u VALUES (1, 'a@x', 'one')")
        await s.rows(
            "INSERT INTO u VALUES (2, 'a@x', 'two') "
            "ON DUPLICATE KEY UPDATE email = VALUES(email), name = VALUES(name)"
        )
        assert await s.rows("SELECT * FROM u") == [(1, "a@x", "two")]  # id 2's data in row 1

        guarded = (
            "INSERT INTO u VALUES (%s, %s, %s) ON DUPLICATE KEY UPDATE "
            "id = IF(id = VALUES(id), id, NULL), email = VALUES(email), name = VALUES(name)"
        )
        assert (await s.fails(guarded, (3, "a@x", "three")))[0] == 1048
        await s.rows(guarded, (1, "a@x", "ONE"))
        assert await s.rows("SELECT * FROM u") == [(1, "a@x", "ONE")]

    run(mysql_db, scenario)


def test_delete_by_key_sets(mysql_db: Db) -> None:
    """Set-based deletes: WHERE (a, b) IN ((..), (..)) is an index range scan. A JOIN with
    JSON_TABLE is not (the table is scanned), and typed JSON_TABLE columns coerce: a key
    'abc' becomes 0 and deletes row 0. Exact past 2**53 either way."""

    async def scenario(db: Db) -> None:
        s = await db.session()
        await s.rows("CREATE TABLE k (a BIGINT, b VARCHAR(5), PRIMARY KEY (a, b))")
        await s.rows(
            "INSERT INTO k VALUES (0, 'x'), (1, 'x'), (1, 'y'), (2, 'x'), (%s, 'x'), (%s, 'x')",
            (2**53, 2**53 + 1),
        )
        await s.rows("ANALYZE TABLE k")
        delete = "DELETE FROM k WHERE (a, b) IN ((%s, %s), (%s, %s))"
        plan = await s.rows("EXPLAIN " + delete, (1, "x", 2**53 + 1, "x"))
        assert plan[0][3] == "range"
        await s.rows(delete, (1, "x", 2**53 + 1, "x"))
        assert await s.rows("SELECT a, b FROM k ORDER BY a, b") == [
            (0, "x"),
            (1, "y"),
            (2, "x"),
            (2**53, "x"),
        ]
        join = f"DELETE k FROM k JOIN {jt(a='BIGINT', b='VARCHAR(5)')} ON k.a = j.a AND k.b = j.b"
        plan = await s.rows("EXPLAIN " + join, (json.dumps([{"a": 2, "b": "x"}]),))
        assert [r[3] for r in plan if r[2] == "k"] in (["ALL"], ["index"])
        await s.rows(join, (json.dumps([{"a": "abc", "b": "x"}]),))
        assert set(await s.warnings()) == {1366}  # one per row of k compared
        assert await s.one("SELECT COUNT(*) FROM k WHERE a = 0") == 0  # row 0 went

    run(mysql_db, scenario)
