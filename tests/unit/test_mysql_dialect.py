"""The MySQL dialect's pure parts: statements (identifiers quoted, the key guard first, replace
by DEFAULT(c)), the values it decides itself, key spellings, fence names and error classes."""

from __future__ import annotations

import decimal
import re

import asyncmy.errors
import pytest

from cdcsync.plugin.sql import Column, Kind, TableInfo
from cdcsync.sinks.mysql.dialect import MysqlDialect, is_retryable
from cdcsync.sinks.mysql.options import MysqlOptions
from cdcsync.sinks.mysql.sql import (
    checkpoint_sql,
    dead_letter_sql,
    delete_sql,
    state_tables_sql,
    truncate_sql,
    write_sql,
)
from cdcsync.sinks.mysql.values import BadValue, canonical_key, converter, key_literal, suspect

EVIL = ["x`; DROP TABLE users; --", "a;b", "q'", "sp ace", "semi;colon", "?", "50%"]


def column(name: str, kind: str = "text", generated: bool = False) -> Column:
    return Column(name, kind, not_null=True, has_default=False, generated=generated)


def table(names: list[str], key: tuple[str, ...], generated: tuple[str, ...] = ()) -> TableInfo:
    cols = {n: column(n, generated=n in generated) for n in names}
    return TableInfo("app", "users", cols, key)


def sets(stmt: str) -> list[str]:
    """The assignments of ON DUPLICATE KEY UPDATE, split at the commas outside parentheses."""
    out, depth, part = [], 0, ""
    for ch in stmt.split(" ON DUPLICATE KEY UPDATE ", 1)[1]:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            out.append(part.strip())
            part = ""
        else:
            part += ch
    return [*out, part.strip()]


def test_the_key_guard_comes_first_in_every_kind() -> None:
    """ON DUPLICATE KEY UPDATE fires on any unique index: its first assignment refuses a row
    with another key (NULL into the NOT NULL key), before anything changes."""
    info = table(["a", "b", "name", "note"], key=("a", "b"))
    for kind in (Kind.MERGE, Kind.REPLACE, Kind.INSERT):
        first = sets(write_sql(info, kind, ("a", "b", "name"), frozenset()))[0]
        assert first == "`a` = IF(`a` <=> VALUES(`a`) AND `b` <=> VALUES(`b`), `a`, NULL)"


def test_each_kind_updates_the_right_columns() -> None:
    """upsert: the present columns; replace: also DEFAULT(c) for the absent ones except the
    kept (unavailable) and generated ones; ignore: nothing but the guard."""
    info = table(["id", "name", "note", "toast", "gen"], key=("id",), generated=("gen",))
    merge = sets(write_sql(info, Kind.MERGE, ("id", "name"), frozenset()))
    assert merge[1:] == ["`name` = VALUES(`name`)"]
    replace = sets(write_sql(info, Kind.REPLACE, ("id", "name"), frozenset({"toast"})))
    assert replace[1:] == ["`name` = VALUES(`name`)", "`note` = DEFAULT(`note`)"]
    assert sets(write_sql(info, Kind.INSERT, ("id", "name"), frozenset()))[1:] == []


def test_values_are_cast_and_extracted_by_position() -> None:
    """Positions, not names, in the JSON paths; every value through CAST(... AS CHAR)."""
    stmt = write_sql(table(["id", *EVIL], ("id",)), Kind.MERGE, ("id", *EVIL), frozenset())
    assert "SELECT CAST(j.c0 AS CHAR), CAST(j.c1 AS CHAR)," in stmt
    assert "c7 LONGTEXT PATH '$[7]'" in stmt
    extraction = stmt.split(" FROM JSON_TABLE", 1)[1].split(" ON DUPLICATE")[0]
    assert not any(name in extraction for name in EVIL if name != "?")  # '?': the parameter


def statements() -> list[str]:
    info = TableInfo("s`; DROP DATABASE app; --", "t`x", {n: column(n) for n in ["id", *EVIL]},
                     ("id", EVIL[0]))  # fmt: skip
    out = [write_sql(info, k, ("id", *EVIL), frozenset()) for k in Kind if k is not Kind.DELETE]
    out += [delete_sql(info, [["1", "'a'"], ["2", "'b'"]]), truncate_sql(info)]
    out += [*state_tables_sql(info.schema), *checkpoint_sql(info.schema)]
    out.append(dead_letter_sql(info.schema))
    return out


@pytest.mark.parametrize("stmt", statements())
def test_hostile_identifiers_appear_only_quoted(stmt: str) -> None:
    """Names with backticks, quotes, semicolons, '?' and '%' occur only inside backticks."""
    outside = re.sub(r"`(?:[^`]|``)*`", "<ident>", stmt)
    for bad in ("DROP", "--", "a;b", "semi;colon", "sp ace"):
        assert bad not in outside, outside


def test_a_delete_names_each_key_once() -> None:
    info = table(["a", "b"], key=("a", "b"))
    assert delete_sql(info, [["1", "2"], ["3", "4"]]).endswith(
        "WHERE (`a`, `b`) IN ((1, 2), (3, 4))"
    )
    assert delete_sql(table(["id"], ("id",)), [["7"]]).endswith("WHERE `id` IN (7)")


@pytest.mark.parametrize(
    ("kind", "value", "sent"),
    [
        ("int(11)", 7, 7),
        ("int(11)", "7", "7"),
        ("int(11)", " 8 ", " 8 "),
        ("int(11)", "abc", "abc"),  # the server refuses it (1366) and says so
        ("tinyint(1)", True, 1),
        ("tinyint(1)", False, 0),
        ("int(11)", True, True),  # 'true': refused by the server, as PostgreSQL does
        ("datetime(6)", "2026-01-01T10:00:00Z", "2026-01-01T10:00:00"),
        ("datetime(6)", "2026-01-01T10:00:00+02:00", "2026-01-01 08:00:00"),
        ("timestamp(3)", "2026-01-01T00:30:00.5-01:00", "2026-01-01 01:30:00.500000"),
        ("datetime", "2026-01-01 10:00:00", "2026-01-01 10:00:00"),
        ("date", "2026-01-01T23:00:00-05:00", "2026-01-01"),  # the date as written
        ("json", {"a": [1]}, '{"a":[1]}'),
        ("json", "text", '"text"'),
        ("json", decimal.Decimal("12345678901234567.89"), "12345678901234567.89"),
    ],
)
def test_values_sent_as_the_column_needs(kind: str, value: object, sent: object) -> None:
    convert = converter(Column("c", kind, False, False, False, nested=kind == "json"))
    assert convert is not None
    assert convert(value) == sent


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("int(11)", 1.5),  # MySQL would store 2
        ("int(11)", 1.0),  # PostgreSQL refuses it too
        ("bigint(20)", decimal.Decimal("1E+400")),
        ("int(11)", "1.5"),
        ("int(11)", "1e3"),  # MySQL would store 1000
        ("date", 20260101),  # MySQL would read it as a date
        ("datetime(6)", 1_700_000_000),
    ],
)
def test_values_mysql_would_change_are_refused(kind: str, value: object) -> None:
    convert = converter(Column("c", kind, False, False, False))
    assert convert is not None
    with pytest.raises(BadValue):
        convert(value)
    assert suspect(value, kind)  # tried on its own when isolating


def test_key_spellings_of_one_row_fold_together() -> None:
    """Spellings MySQL's default collations compare equal are one key (events keep their
    order); what MySQL would refuse keeps its type, so it never folds into another key."""
    assert canonical_key(7, "int(11)") == canonical_key(" 7 ", "int(11)") == 7
    assert canonical_key(True, "int(11)") != canonical_key(1, "int(11)")
    assert canonical_key(1.0, "int(11)") != canonical_key(1, "int(11)")
    fold = [canonical_key(v, "varchar(20)") for v in ("Ann", "ann", "ANN  ", "Änn")]
    assert len(set(fold)) == 1
    assert canonical_key("7.50", "decimal(5,2)") == canonical_key(7.5, "decimal(5,2)")
    assert canonical_key("2026-01-01T10:00:00Z", "datetime(6)") == canonical_key(
        "2026-01-01 10:00:00", "datetime(6)"
    )


def test_a_key_is_sent_only_in_its_columns_domain() -> None:
    """MySQL compares 'abc' with an integer key as 0: a delete never sends such a key."""
    escape = repr
    ident = Column("id", "int(11)", True, False, False)
    assert key_literal(" 7", ident, escape) == "7"
    for bad in ("abc", True, 1.5, "1e3", None):
        with pytest.raises(BadValue):
            key_literal(bad, ident, escape)
    name = Column("name", "varchar(20)", True, False, False)
    assert key_literal(7, name, escape) == "'7'"  # text against text, not a number compare
    amount = Column("n", "decimal(5,2)", True, False, False)
    assert key_literal("7.50", amount, escape) == "'7.50'"
    with pytest.raises(BadValue):
        key_literal("seven", amount, escape)


def test_fence_names_fit_mysql_and_mariadb() -> None:
    """GET_LOCK names: 48 ASCII characters whatever the flow, destination and partition."""
    names = {MysqlDialect.lock_name(f"cdcsync:{'f' * 63}:{'d' * 63}:{s}:1") for s in "ab"}
    assert len(names) == 2 and all(len(n) == 48 and n.isascii() for n in names)


def test_errors_are_classified_by_code() -> None:
    dialect = MysqlDialect("f", "d", MysqlOptions(url="mysql://u:s3cret@h/db"))
    deadlock = asyncmy.errors.OperationalError(1213, "Deadlock found")
    value = asyncmy.errors.OperationalError(1292, "Incorrect datetime value")
    lost = asyncmy.errors.OperationalError(2013, "Lost connection")
    login = asyncmy.errors.OperationalError(1045, "Access denied for user 'u' (s3cret)")
    assert is_retryable(deadlock) and is_retryable(lost) and not is_retryable(value)
    assert dialect.is_data_error(value) and not dialect.is_data_error(lost)
    assert dialect.is_fatal_connect(login) and not dialect.is_fatal_connect(lost)
    assert dialect.is_stale_catalog(asyncmy.errors.ProgrammingError(1146, "no table"))
    text = dialect.describe(login)
    assert "s3cret" not in text and "the server refused the login" in text
