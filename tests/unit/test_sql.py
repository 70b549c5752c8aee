"""The SQL builders: identifiers always quoted, and each write kind updates the right columns."""

from __future__ import annotations

import re

import pytest

from cdcsync.plugin.sql import Column, Kind, TableInfo
from cdcsync.sinks.postgres.sql import (
    checkpoint_sql,
    dead_letter_sql,
    delete_sql,
    qualified,
    quote_ident,
    system_tables_sql,
    truncate_sql,
    write_sql,
)


def col(name: str, *, generated: bool = False, has_default: bool = False) -> Column:
    return Column(name, "text", not_null=False, has_default=has_default, generated=generated)


def table(names: list[str], key: tuple[str, ...], generated: tuple[str, ...] = ()) -> TableInfo:
    cols = {n: col(n, generated=n in generated) for n in names}
    return TableInfo("app", "users", cols, key)


def set_clause(stmt: str) -> dict[str, str]:
    """``DO UPDATE SET "a" = EXCLUDED."a", "b" = DEFAULT`` -> {'"a"': 'EXCLUDED."a"', ...}."""
    assert " DO UPDATE SET " in stmt, stmt
    sets = stmt.split(" DO UPDATE SET ", 1)[1]
    out = {}
    for part in re.split(r',\s*(?=")', sets):
        target, value = part.split(" = ", 1)
        out[target] = value
    return out


# --- quote_ident ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("users", '"users"'),
        ("Users", '"Users"'),
        ('we"ird', '"we""ird"'),
        ('""', '""""""'),
        ("a b; DROP TABLE x; --", '"a b; DROP TABLE x; --"'),
        ("ünïcödé", '"ünïcödé"'),
    ],
)
def test_quote_ident_always_quotes_and_doubles_quotes(name: str, quoted: str) -> None:
    """Every identifier is wrapped in double quotes, with inner double quotes doubled."""
    assert quote_ident(name) == quoted


def test_quote_ident_rejects_nul() -> None:
    """An identifier containing NUL cannot be quoted safely and is refused."""
    with pytest.raises(ValueError, match="NUL"):
        quote_ident("bad\x00name")


# --- write_sql -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [Kind.MERGE, Kind.REPLACE, Kind.INSERT])
def test_all_key_table_does_nothing_on_conflict(kind: Kind) -> None:
    """A table whose every column is in the key gets DO NOTHING, never an empty DO UPDATE SET."""
    info = table(["a", "b"], key=("a", "b"))
    stmt = write_sql(info, kind, ("a", "b"), frozenset())
    assert stmt.endswith('ON CONFLICT ("a", "b") DO NOTHING')
    assert "UPDATE SET" not in stmt


def test_insert_kind_never_updates() -> None:
    """An INSERT (ignore mode) leaves an existing row untouched: DO NOTHING."""
    info = table(["id", "name", "email"], key=("id",))
    stmt = write_sql(info, Kind.INSERT, ("id", "name"), frozenset())
    assert stmt.endswith('ON CONFLICT ("id") DO NOTHING')


def test_merge_updates_present_non_key_columns_only() -> None:
    """A MERGE updates exactly the given non-key columns from EXCLUDED."""
    info = table(["id", "name", "email", "score"], key=("id",))
    stmt = write_sql(info, Kind.MERGE, ("id", "name"), frozenset())
    assert stmt.startswith('INSERT INTO "app"."users" ("id", "name") SELECT "id", "name" FROM ')
    assert 'json_populate_recordset(NULL::"app"."users", $1::json)' in stmt
    assert set_clause(stmt) == {'"name"': 'EXCLUDED."name"'}


def test_merge_with_only_key_columns_does_nothing() -> None:
    """A MERGE that carries only the key inserts if absent and otherwise changes nothing."""
    info = table(["id", "name"], key=("id",))
    stmt = write_sql(info, Kind.MERGE, ("id",), frozenset())
    assert stmt.endswith('ON CONFLICT ("id") DO NOTHING')


def test_replace_defaults_absent_columns_but_not_keep_or_generated() -> None:
    """REPLACE sets absent non-key columns to DEFAULT, except keep and generated columns."""
    info = table(
        ["id", "name", "email", "bio", "score", "total"], key=("id",), generated=("total",)
    )
    stmt = write_sql(info, Kind.REPLACE, ("id", "name"), frozenset({"bio"}))
    assert set_clause(stmt) == {
        '"name"': 'EXCLUDED."name"',
        '"email"': "DEFAULT",
        '"score"': "DEFAULT",
    }


def test_replace_with_composite_key_leaves_key_alone() -> None:
    """REPLACE never assigns a key column, present or not."""
    info = table(["tenant", "id", "name"], key=("tenant", "id"))
    stmt = write_sql(info, Kind.REPLACE, ("tenant", "id"), frozenset())
    assert 'ON CONFLICT ("tenant", "id") DO UPDATE SET' in stmt
    assert set_clause(stmt) == {'"name"': "DEFAULT"}


def test_replace_where_everything_is_kept_does_nothing() -> None:
    """A REPLACE whose absent columns are all kept has nothing to set: DO NOTHING."""
    info = table(["id", "bio"], key=("id",))
    stmt = write_sql(info, Kind.REPLACE, ("id",), frozenset({"bio"}))
    assert stmt.endswith("DO NOTHING")


# --- hostile identifiers -------------------------------------------------------------------

EVIL = ['x"; DROP TABLE users; --', "a;b", 'q"', "sp ace", "semi;colon"]


def evil_table() -> TableInfo:
    cols = {n: col(n) for n in ["id", *EVIL]}
    return TableInfo('s"; DROP SCHEMA app; --', 't"; DELETE FROM x; --', cols, ("id", EVIL[0]))


def strip_quoted(stmt: str) -> str:
    """The statement with every double-quoted identifier removed."""
    return re.sub(r'"(?:[^"]|"")*"', "<ident>", stmt)


def statements() -> list[str]:
    info = evil_table()
    stmts = [
        write_sql(info, kind, ("id", *EVIL), frozenset())
        for kind in (Kind.MERGE, Kind.REPLACE, Kind.INSERT)
    ]
    stmts.append(write_sql(info, Kind.REPLACE, ("id", EVIL[0]), frozenset({EVIL[1]})))
    stmts += [delete_sql(info), truncate_sql(info)]
    stmts += system_tables_sql(info.schema)
    stmts += [*checkpoint_sql(info.schema), dead_letter_sql(info.schema)]
    return stmts


@pytest.mark.parametrize("stmt", statements())
def test_hostile_identifiers_appear_only_quoted(stmt: str) -> None:
    """Names with quotes and semicolons occur only inside quoted identifiers, never as SQL."""
    outside = strip_quoted(stmt)
    assert outside.count('"') == 0, outside
    assert ";" not in outside
    assert "DROP" not in outside and "DELETE FROM x" not in outside


def test_hostile_names_round_trip_through_quoting() -> None:
    """Each hostile column of a statement is exactly its quoted form in the column list."""
    info = evil_table()
    stmt = write_sql(info, Kind.MERGE, ("id", *EVIL), frozenset())
    collist = ", ".join(quote_ident(c) for c in ("id", *EVIL))
    assert f"INSERT INTO {qualified(info)} ({collist}) SELECT {collist} FROM" in stmt
    assert qualified(info) == '"s""; DROP SCHEMA app; --"."t""; DELETE FROM x; --"'


def test_delete_matches_on_every_key_column() -> None:
    """A delete joins the key rows on every key column."""
    info = table(["tenant", "id", "name"], key=("tenant", "id"))
    stmt = delete_sql(info)
    assert stmt.endswith('WHERE t."tenant" = k."tenant" AND t."id" = k."id"')
