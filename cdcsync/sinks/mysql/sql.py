"""MySQL catalog queries and set-based statement builders.

Identifiers in SQL text only ever come from :class:`TableInfo`, which is read from
information_schema; :func:`quote` quotes them with backticks. A write is one prepared
``INSERT ... SELECT ... FROM JSON_TABLE(?, ...) ON DUPLICATE KEY UPDATE`` per table, kind and
column set: the rows travel as one JSON array of arrays (positions, not names, so no name
ever enters a JSON path), each value extracted as text (JSON text for JSON columns) so that
the INSERT converts it under strict mode and reports a value that does not fit as an error
for that event (docs/dev/mysql-notes.md). A JSON column's value travels as its JSON text.
"""

from __future__ import annotations

from cdcsync.plugin.sql import Kind, TableInfo

__all__ = [
    "CATALOG_COLUMNS_MARIADB",
    "CATALOG_COLUMNS_MYSQL",
    "CATALOG_KEYS",
    "CATALOG_TABLES",
    "checkpoint_sql",
    "dead_letter_sql",
    "delete_sql",
    "qualified",
    "quote",
    "state_tables_sql",
    "truncate_sql",
    "write_sql",
]


def quote(name: str) -> str:
    """A MySQL identifier in backticks, a backtick inside doubled."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return "`" + name.replace("`", "``") + "`"


def qualified(table: TableInfo) -> str:
    return f"{quote(table.schema)}.{quote(table.name)}"


# Base tables (and MariaDB's system-versioned ones) with whether their engine can roll back.
# ``{names}`` is a list of %s placeholders; names are compared as the server stores them.
# Never a bare ``TABLE_NAME IN (...)``: MariaDB 10.11 answers one whose names differ only in
# case (`USERS`, `users`) with no row at all, on a case-sensitive server; compared as bytes
# (or lowered, ``{match}``) the list is an ordinary filter.
CATALOG_TABLES = """
SELECT t.TABLE_NAME, t.ENGINE, COALESCE(e.TRANSACTIONS, 'NO')
FROM information_schema.TABLES t
LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE
WHERE t.TABLE_SCHEMA = %s AND {match} IN ({names})
  AND t.TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')
"""

# (table, column, column type, data type, NOT NULL, has a default, generated, takes JSON).
# MariaDB has no JSON type: JSON is LONGTEXT with a column-level CHECK (json_valid(`c`)).
# EXTRA is 'VIRTUAL GENERATED' / 'STORED GENERATED' for generated columns (MySQL 8 also
# says 'DEFAULT_GENERATED' for expression defaults, which are writable).
_COLUMNS = """
SELECT c.TABLE_NAME, c.COLUMN_NAME, LOWER(c.COLUMN_TYPE), LOWER(c.DATA_TYPE),
       c.IS_NULLABLE = 'NO', c.COLUMN_DEFAULT IS NOT NULL OR c.EXTRA LIKE '%%auto_increment%%',
       c.EXTRA LIKE '%%VIRTUAL GENERATED%%' OR c.EXTRA LIKE '%%STORED GENERATED%%', {json}
FROM information_schema.COLUMNS c
WHERE c.TABLE_SCHEMA = %s AND CAST(c.TABLE_NAME AS BINARY) IN ({names})
ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION
"""
CATALOG_COLUMNS_MARIADB = _COLUMNS.replace(
    "{json}",
    """c.DATA_TYPE = 'json' OR EXISTS (
           SELECT 1 FROM information_schema.CHECK_CONSTRAINTS k
           WHERE k.CONSTRAINT_SCHEMA = c.TABLE_SCHEMA AND k.TABLE_NAME = c.TABLE_NAME
             AND k.LEVEL = 'Column' AND k.CONSTRAINT_NAME = c.COLUMN_NAME
             AND k.CHECK_CLAUSE =
                 CONCAT('json_valid(`', REPLACE(c.COLUMN_NAME, '`', '``'), '`)'))""",
)
CATALOG_COLUMNS_MYSQL = _COLUMNS.replace("{json}", "c.DATA_TYPE = 'json'")

# Unique indexes, column by column. A prefix part (SUB_PART) or a functional part (MySQL 8:
# COLUMN_NAME NULL) makes an index unusable as a key; nullability comes from COLUMNS.
CATALOG_KEYS = """
SELECT s.TABLE_NAME, s.INDEX_NAME, s.COLUMN_NAME, s.SUB_PART IS NULL AND s.COLUMN_NAME IS NOT NULL
FROM information_schema.STATISTICS s
WHERE s.TABLE_SCHEMA = %s AND CAST(s.TABLE_NAME AS BINARY) IN ({names}) AND s.NON_UNIQUE = 0
ORDER BY s.TABLE_NAME, s.INDEX_NAME, s.SEQ_IN_INDEX
"""


def _cols(cols: tuple[str, ...]) -> str:
    return ", ".join(quote(c) for c in cols)


def write_sql(
    table: TableInfo,
    kind: Kind,
    cols: tuple[str, ...],
    keep: frozenset[str],
) -> str:
    """One prepared ``INSERT ... SELECT FROM JSON_TABLE(?) ON DUPLICATE KEY UPDATE`` for a
    row group whose rows are arrays of ``cols`` (key included), in that order.

    ``ON DUPLICATE KEY UPDATE`` fires on a conflict with any unique index, not only the key:
    its first assignment is a guard that sets the key to NULL (error 1048, NOT NULL) when
    the row it met has another key, so an event never overwrites another row (PostgreSQL's
    ``ON CONFLICT (key)`` raises there too). Assignments run left to right, so the guard
    sees the stored key before anything changes. Each value is CAST to CHAR: MariaDB 10.11
    inserts a JSON_TABLE column into a TEXT column with its length wrapped modulo 64 KiB
    (70,000 characters are stored as the first 4,464, without an error or a warning); the
    cast makes the server check the length (error 1406). Replace sets the absent columns to
    ``DEFAULT(c)`` in place: unlike ``REPLACE INTO`` (a delete and an insert) the row keeps
    its auto-increment value, its foreign-key children and fires UPDATE triggers.
    """
    extracted = ", ".join(f"c{i} LONGTEXT PATH '$[{i}]'" for i in range(len(cols)))
    key = table.key
    same = " AND ".join(f"{quote(k)} <=> VALUES({quote(k)})" for k in key)
    guard = f"{quote(key[0])} = IF({same}, {quote(key[0])}, NULL)"
    sets = [guard]
    if kind is not Kind.INSERT:
        keyset = set(key)
        sets += [f"{quote(c)} = VALUES({quote(c)})" for c in cols if c not in keyset]
        if kind is Kind.REPLACE:
            present = set(cols)
            for c, info in table.columns.items():
                if c not in keyset and c not in present and c not in keep and not info.generated:
                    sets.append(f"{quote(c)} = DEFAULT({quote(c)})")
    return (
        f"INSERT INTO {qualified(table)} ({_cols(cols)}) "
        f"SELECT {', '.join(f'CAST(j.c{i} AS CHAR)' for i in range(len(cols)))} "
        f"FROM JSON_TABLE(?, '$[*]' COLUMNS ({extracted})) AS j "
        f"ON DUPLICATE KEY UPDATE {', '.join(sets)}"
    )


def delete_sql(table: TableInfo, literals: list[list[str]]) -> str:
    """``DELETE ... WHERE key IN (...)`` with the keys as literals the driver escaped: a
    range scan of the key index (a join with JSON_TABLE is planned as a table scan)."""
    if len(table.key) == 1:
        match = quote(table.key[0])
        rows = ", ".join(r[0] for r in literals)
    else:
        match = f"({_cols(table.key)})"
        rows = ", ".join(f"({', '.join(r)})" for r in literals)
    return f"DELETE FROM {qualified(table)} WHERE {match} IN ({rows})"


def truncate_sql(table: TableInfo) -> str:
    """``TRUNCATE`` is DDL and commits the open transaction: a DELETE stays in it."""
    return f"DELETE FROM {qualified(table)}"


def state_tables_sql(state: str) -> list[str]:
    """DDL for cdcsync's own tables, in their own database (never the target tables').

    The shape of PostgreSQL's: one checkpoint row per (flow, destination, stream,
    partition). Names compare as bytes (utf8mb4_bin), as in PostgreSQL and the fences.
    """
    s = quote(state)
    table = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
    return [
        f"CREATE DATABASE IF NOT EXISTS {s} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
        f"""CREATE TABLE IF NOT EXISTS {s}.checkpoints (
            flow VARCHAR(190) NOT NULL,
            destination VARCHAR(190) NOT NULL,
            stream VARCHAR(255) NOT NULL,
            `partition` INT NOT NULL DEFAULT 0,
            stream_created VARCHAR(255) NOT NULL DEFAULT '',
            last_seq BIGINT NOT NULL,
            updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
            PRIMARY KEY (flow, destination, stream, `partition`)) {table}""",
        f"""CREATE TABLE IF NOT EXISTS {s}.dead_letters (
            id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            flow VARCHAR(190) NOT NULL,
            destination VARCHAR(190) NOT NULL,
            subject TEXT,
            stream_seq BIGINT,
            `partition` INT,
            payload LONGBLOB,
            error MEDIUMTEXT NOT NULL,
            table_name TEXT,
            failed_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
            KEY dead_letters_flow_idx (flow, destination, failed_at)) {table}""",
    ]


def checkpoint_sql(state: str) -> tuple[str, str]:
    """(select, upsert): the select takes (flow, destination) as %s parameters; the upsert
    is prepared and takes (flow, destination, stream, partition, stream_created, last_seq)."""
    t = f"{quote(state)}.checkpoints"
    select = (
        f"SELECT stream, `partition`, stream_created, last_seq FROM {t.replace('%', '%%')} "
        f"WHERE flow = %s AND destination = %s"
    )
    upsert = (
        f"INSERT INTO {t} (flow, destination, stream, `partition`, stream_created, last_seq) "
        f"VALUES (?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE "
        f"stream_created = VALUES(stream_created), last_seq = VALUES(last_seq), "
        f"updated_at = CURRENT_TIMESTAMP(6)"
    )
    return select, upsert


def dead_letter_sql(state: str) -> str:
    """Prepared: (flow, destination, rows) where rows is a JSON array of
    [subject, stream_seq, partition, payload as base64, error, table_name]."""
    return (
        f"INSERT INTO {quote(state)}.dead_letters "
        f"(flow, destination, subject, stream_seq, `partition`, payload, error, table_name) "
        f"SELECT ?, ?, j.subject, j.seq, j.part, FROM_BASE64(j.payload), j.error, j.tbl "
        f"FROM JSON_TABLE(?, '$[*]' COLUMNS (subject LONGTEXT PATH '$[0]', "
        f"seq BIGINT PATH '$[1]', part INT PATH '$[2]', payload LONGTEXT PATH '$[3]', "
        f"error LONGTEXT PATH '$[4]', tbl LONGTEXT PATH '$[5]')) AS j"
    )
