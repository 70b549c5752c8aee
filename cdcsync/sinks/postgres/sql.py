"""PostgreSQL catalog lookups and set-based statement builders.

Identifiers in SQL text only ever come from :class:`TableInfo`, which is read
from the catalog; :func:`quote_ident` quotes them. Values travel as one JSON
parameter per statement and are typed by ``json_populate_recordset`` against
the table's own row type, so PostgreSQL does the conversion (and reports a
value that does not fit as a data error that we dead-letter).
"""

from __future__ import annotations

from cdcsync.plugin.sql import Kind, TableInfo

__all__ = [
    "CATALOG_COLUMNS",
    "CATALOG_KEYS",
    "CATALOG_TABLES",
    "LEGACY_TABLES",
    "checkpoint_sql",
    "checkpoints_sql",
    "dead_letter_sql",
    "dead_letter_table",
    "delete_sql",
    "legacy_migration_sql",
    "qualified",
    "quote_ident",
    "system_tables_sql",
    "truncate_sql",
    "write_sql",
]


def quote_ident(name: str) -> str:
    """Quote an identifier the way ``quote_ident()`` in PostgreSQL does (always)."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def qualified(table: TableInfo) -> str:
    return f"{quote_ident(table.schema)}.{quote_ident(table.name)}"


CATALOG_TABLES = """
SELECT c.oid, c.relname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND c.relkind IN ('r', 'p')
"""

# ``nested``: the column's type (or a domain's base type) takes a JSON array or object;
# json_populate_recordset would store either as its JSON text in any other column.
CATALOG_COLUMNS = """
SELECT a.attrelid, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
       a.attnotnull, a.atthasdef, a.attgenerated <> '',
       b.typcategory IN ('A', 'C') OR b.oid IN ('json'::regtype, 'jsonb'::regtype)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
JOIN pg_catalog.pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

# Primary key first, then the narrowest unique index usable as a conflict target:
# not partial, no expressions, every column NOT NULL.
CATALOG_KEYS = """
SELECT i.indrelid, i.indisprimary,
       array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             ORDER BY k.ord) AS cols,
       bool_and(a2.attnotnull) AS all_not_null
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_attribute a2 ON a2.attrelid = i.indrelid AND a2.attnum = ANY(i.indkey)
WHERE i.indrelid = ANY($1::oid[]) AND i.indisunique AND i.indisvalid
  AND i.indpred IS NULL AND i.indexprs IS NULL
GROUP BY i.indexrelid, i.indrelid, i.indisprimary, i.indkey
ORDER BY i.indrelid, i.indisprimary DESC, array_length(i.indkey, 1)
"""


def _columns(cols: tuple[str, ...]) -> str:
    return ", ".join(quote_ident(c) for c in cols)


def write_sql(
    table: TableInfo, kind: Kind, cols: tuple[str, ...], keep: frozenset[str], param: int = 1
) -> str:
    """One ``INSERT ... SELECT FROM json_populate_recordset(...) ON CONFLICT`` for a row group.

    ``cols`` are the columns present in every row of the group (key included); the rows are
    parameter ``$param``.
    """
    collist = _columns(cols)
    head = (
        f"INSERT INTO {qualified(table)} ({collist}) "
        f"SELECT {collist} FROM json_populate_recordset(NULL::{qualified(table)}, "
        f"${param}::json) "
        f"ON CONFLICT ({_columns(table.key)}) DO "
    )
    key = set(table.key)
    if kind is Kind.INSERT:
        return head + "NOTHING"
    sets = [f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in cols if c not in key]
    if kind is Kind.REPLACE:
        present = set(cols)
        for c, info in table.columns.items():
            if c not in key and c not in present and c not in keep and not info.generated:
                sets.append(f"{quote_ident(c)} = DEFAULT")
    if not sets:
        return head + "NOTHING"  # every column is in the key: nothing to update
    return head + "UPDATE SET " + ", ".join(sets)


def delete_sql(table: TableInfo, param: int = 1) -> str:
    match = " AND ".join(f"t.{quote_ident(c)} = k.{quote_ident(c)}" for c in table.key)
    return (
        f"DELETE FROM {qualified(table)} AS t "
        f"USING json_populate_recordset(NULL::{qualified(table)}, ${param}::json) AS k "
        f"WHERE {match}"
    )


def truncate_sql(table: TableInfo) -> str:
    return f"TRUNCATE {qualified(table)}"


def system_tables_sql(state_schema: str) -> list[str]:
    """DDL for cdcsync's own tables, in their own schema (never the users' tables' schema).

    One checkpoint row per (flow, destination, stream, partition): a JetStream stream is
    partition 0; a Kafka topic's partitions are its own rows.
    """
    s = quote_ident(state_schema)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""CREATE TABLE IF NOT EXISTS {s}.checkpoints (
            flow text NOT NULL,
            destination text NOT NULL,
            stream text NOT NULL,
            partition integer NOT NULL DEFAULT 0,
            stream_created text NOT NULL DEFAULT '',
            last_seq bigint NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (flow, destination, stream, partition))""",
        f"""CREATE TABLE IF NOT EXISTS {s}.dead_letters (
            id bigserial PRIMARY KEY,
            flow text NOT NULL,
            destination text NOT NULL,
            subject text,
            stream_seq bigint,
            partition integer,
            payload bytea,
            error text NOT NULL,
            table_name text,
            failed_at timestamptz NOT NULL DEFAULT now())""",
        f"""CREATE INDEX IF NOT EXISTS dead_letters_flow_idx
            ON {s}.dead_letters (flow, destination, failed_at)""",
    ]


LEGACY_TABLES = ("cdcsync_checkpoints", "cdcsync_dead_letters")


def legacy_migration_sql(schema: str, state_schema: str) -> tuple[str, str]:
    """Move one (flow, destination)'s rows from the tables of cdcsync 0.1 (which lived in the
    users' schema as ``cdcsync_checkpoints`` / ``cdcsync_dead_letters``) into the state schema.

    Run in one transaction by the writer of that (flow, destination), so no other writer can
    move its position meanwhile; a newer row already in the state schema wins.
    """
    old, new = quote_ident(schema), quote_ident(state_schema)
    checkpoints = (
        f"WITH moved AS (DELETE FROM {old}.cdcsync_checkpoints "
        f"WHERE flow = $1 AND destination = $2 RETURNING *) "
        f"INSERT INTO {new}.checkpoints AS c "
        f"(flow, destination, stream, partition, stream_created, last_seq, updated_at) "
        f"SELECT flow, destination, stream, 0, stream_created, last_seq, updated_at FROM moved "
        f"ON CONFLICT (flow, destination, stream, partition) DO UPDATE SET "
        f"stream_created = EXCLUDED.stream_created, last_seq = EXCLUDED.last_seq, "
        f"updated_at = EXCLUDED.updated_at "
        f"WHERE c.updated_at < EXCLUDED.updated_at"
    )
    letters = (
        f"WITH moved AS (DELETE FROM {old}.cdcsync_dead_letters "
        f"WHERE flow = $1 AND destination = $2 RETURNING *) "
        f"INSERT INTO {new}.dead_letters "
        f"(flow, destination, subject, stream_seq, payload, error, table_name, failed_at) "
        f"SELECT flow, destination, subject, stream_seq, payload, error, table_name, failed_at "
        f"FROM moved ORDER BY id"
    )
    return checkpoints, letters


def checkpoint_sql(state_schema: str) -> tuple[str, str]:
    """(select, upsert) statements for the checkpoint rows of a (flow, destination).

    The select returns every stream and partition of the pair (the caller picks its own);
    the upsert takes (flow, destination, stream, partition, stream_created, last_seq).
    """
    t = f"{quote_ident(state_schema)}.checkpoints"
    select = (
        f"SELECT stream, partition, stream_created, last_seq FROM {t} "
        f"WHERE flow = $1 AND destination = $2"
    )
    upsert = (
        f"INSERT INTO {t} (flow, destination, stream, partition, stream_created, last_seq) "
        f"VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (flow, destination, stream, partition) "
        f"DO UPDATE SET stream_created = EXCLUDED.stream_created, "
        f"last_seq = EXCLUDED.last_seq, updated_at = now()"
    )
    return select, upsert


def dead_letter_table(state_schema: str) -> str:
    return f"{quote_ident(state_schema)}.dead_letters"


def dead_letter_sql(state_schema: str, param: int = 1) -> str:
    """Dead letters from parameters ``$param`` (flow) to ``$param+7`` (the tables, as arrays)."""
    p = [f"${param + i}" for i in range(8)]
    return (
        f"INSERT INTO {dead_letter_table(state_schema)} "
        f"(flow, destination, subject, stream_seq, partition, payload, error, table_name) "
        f"SELECT {p[0]}, {p[1]}, * FROM unnest({p[2]}::text[], {p[3]}::bigint[], "
        f"{p[4]}::integer[], {p[5]}::bytea[], {p[6]}::text[], {p[7]}::text[])"
    )


def checkpoints_sql(state_schema: str, param: int = 1) -> str:
    """Every partition's new position at once, from parameters ``$param`` (flow),
    ``$param+1`` (destination) and four arrays: stream, partition, stream_created, last_seq."""
    p = [f"${param + i}" for i in range(6)]
    t = f"{quote_ident(state_schema)}.checkpoints"
    return (
        f"INSERT INTO {t} (flow, destination, stream, partition, stream_created, last_seq) "
        f"SELECT {p[0]}, {p[1]}, * FROM unnest({p[2]}::text[], {p[3]}::integer[], "
        f"{p[4]}::text[], {p[5]}::bigint[]) "
        f"ON CONFLICT (flow, destination, stream, partition) "
        f"DO UPDATE SET stream_created = EXCLUDED.stream_created, "
        f"last_seq = EXCLUDED.last_seq, updated_at = now()"
    )
