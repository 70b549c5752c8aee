"""PostgreSQL catalog lookups and set-based statement builders.

Identifiers in SQL text only ever come from :class:`TableInfo`, which is read
from the catalog; :func:`quote_ident` quotes them. Values travel as one JSON
parameter per statement and are typed by ``json_populate_recordset`` against
the table's own row type, so PostgreSQL does the conversion (and reports a
value that does not fit as a data error that we dead-letter).
"""

from __future__ import annotations

from dataclasses import dataclass

from cdcsync.sinks.compaction import Kind

__all__ = [
    "CATALOG_COLUMNS",
    "CATALOG_KEYS",
    "CATALOG_TABLES",
    "Column",
    "TableInfo",
    "checkpoint_sql",
    "dead_letter_sql",
    "delete_sql",
    "pick_key",
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


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    not_null: bool
    has_default: bool
    generated: bool


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A target table as the catalog describes it."""

    schema: str
    name: str
    columns: dict[str, Column]
    key: tuple[str, ...]

    @property
    def qualified(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    @property
    def writable(self) -> frozenset[str]:
        return frozenset(c for c, info in self.columns.items() if not info.generated)


CATALOG_TABLES = """
SELECT c.oid, c.relname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND c.relkind IN ('r', 'p')
"""

CATALOG_COLUMNS = """
SELECT a.attrelid, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
       a.attnotnull, a.atthasdef, a.attgenerated <> ''
FROM pg_catalog.pg_attribute a
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


def pick_key(rows: list[tuple[bool, list[str], bool]]) -> tuple[str, ...] | None:
    """The primary key, else the narrowest unique index whose columns are all NOT NULL."""
    for primary, cols, all_not_null in rows:
        if primary or all_not_null:
            return tuple(cols)
    return None


def _columns(cols: tuple[str, ...]) -> str:
    return ", ".join(quote_ident(c) for c in cols)


def write_sql(table: TableInfo, kind: Kind, cols: tuple[str, ...], keep: frozenset[str]) -> str:
    """One ``INSERT ... SELECT FROM json_populate_recordset(...) ON CONFLICT`` for a row group.

    ``cols`` are the columns present in every row of the group (key included).
    """
    collist = _columns(cols)
    head = (
        f"INSERT INTO {table.qualified} ({collist}) "
        f"SELECT {collist} FROM json_populate_recordset(NULL::{table.qualified}, $1::json) "
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


def delete_sql(table: TableInfo) -> str:
    match = " AND ".join(f"t.{quote_ident(c)} = k.{quote_ident(c)}" for c in table.key)
    return (
        f"DELETE FROM {table.qualified} AS t "
        f"USING json_populate_recordset(NULL::{table.qualified}, $1::json) AS k WHERE {match}"
    )


def truncate_sql(table: TableInfo) -> str:
    return f"TRUNCATE {table.qualified}"


def system_tables_sql(schema: str) -> list[str]:
    """DDL for the checkpoint and dead-letter tables in the destination's schema."""
    s = quote_ident(schema)
    return [
        f"""CREATE TABLE IF NOT EXISTS {s}.cdcsync_checkpoints (
            flow text NOT NULL,
            destination text NOT NULL,
            stream text NOT NULL,
            stream_created text NOT NULL DEFAULT '',
            last_seq bigint NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (flow, destination))""",
        f"""CREATE TABLE IF NOT EXISTS {s}.cdcsync_dead_letters (
            id bigserial PRIMARY KEY,
            flow text NOT NULL,
            destination text NOT NULL,
            subject text,
            stream_seq bigint,
            payload bytea,
            error text NOT NULL,
            table_name text,
            failed_at timestamptz NOT NULL DEFAULT now())""",
        f"""CREATE INDEX IF NOT EXISTS cdcsync_dead_letters_flow_idx
            ON {s}.cdcsync_dead_letters (flow, failed_at)""",
    ]


def checkpoint_sql(schema: str) -> tuple[str, str]:
    """(select, upsert) statements for the checkpoint row of a (flow, destination)."""
    t = f"{quote_ident(schema)}.cdcsync_checkpoints"
    select = (
        f"SELECT stream, stream_created, last_seq FROM {t} WHERE flow = $1 AND destination = $2"
    )
    upsert = (
        f"INSERT INTO {t} (flow, destination, stream, stream_created, last_seq) "
        f"VALUES ($1, $2, $3, $4, $5) ON CONFLICT (flow, destination) DO UPDATE SET "
        f"stream = EXCLUDED.stream, stream_created = EXCLUDED.stream_created, "
        f"last_seq = EXCLUDED.last_seq, updated_at = now()"
    )
    return select, upsert


def dead_letter_sql(schema: str) -> str:
    t = f"{quote_ident(schema)}.cdcsync_dead_letters"
    return (
        f"INSERT INTO {t} (flow, destination, subject, stream_seq, payload, error, table_name) "
        f"SELECT $1, $2, * FROM unnest($3::text[], $4::bigint[], $5::bytea[], $6::text[], "
        f"$7::text[])"
    )
