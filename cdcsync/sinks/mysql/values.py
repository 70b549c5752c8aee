"""How event values travel to MySQL: checks, key canonicalisation and the JSON parameter.

Pure functions, no I/O. Strict mode makes the server refuse most values that do not fit
(its error is the dead letter's reason), but a few it still changes silently where
PostgreSQL refuses or differs (docs/dev/mysql-notes.md): a non-integral number into an
integer column is rounded, a number into a date column is read as YYYYMMDD, an ISO-8601
offset is an error. Those are decided here, per column type, before anything is sent.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import re
import unicodedata
from collections.abc import Callable
from typing import Any

import orjson

from cdcsync.plugin.sql import Column

__all__ = [
    "BadValue",
    "base_type",
    "canonical_key",
    "converter",
    "key_literal",
    "rows_json",
    "suspect",
]

INT_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint"})
_NUMERIC = frozenset({"decimal", "numeric", "float", "double", "real"})
_STRINGS = frozenset(
    {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"}
)
_TIMESTAMPS = frozenset({"datetime", "timestamp"})
_INT_TEXT = re.compile(r"[ \t\n\r\f\v]*[+-]?[0-9]+[ \t\n\r\f\v]*")
_VARCHAR = re.compile(r"(?:var)?char\((\d+)\)")
_UNSIGNED_MAX = {"tinyint": 2**8, "smallint": 2**16, "mediumint": 2**24, "int": 2**32}
_SIGNED_MAX = {"tinyint": 2**7, "smallint": 2**15, "mediumint": 2**23, "int": 2**31}

Convert = Callable[[Any], Any]


class BadValue(Exception):
    """A value cdcsync refuses before sending it (MySQL would change it, or it cannot be
    serialized): a data error for its event."""


@functools.lru_cache(maxsize=1024)
def base_type(column_type: str) -> str:
    """``int(11) unsigned`` -> ``int``; ``json`` for a column that takes JSON documents."""
    return column_type.split("(", 1)[0].split(" ", 1)[0]


def is_bool(column_type: str) -> bool:
    return column_type.startswith("tinyint(1)")


def _number_text(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _utc(value: str) -> str | None:
    """An ISO-8601 timestamp with an offset (or Z) as UTC wall time; None if it has none."""
    if len(value) <= 19:
        return None
    if value[-1] in "Zz" and value[10] in "Tt ":
        return value[:-1]  # UTC already (Debezium's and most producers' spelling): the fast path
    if not ("+" in value[19:] or "-" in value[19:]):
        return None
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        return None  # the server says what is wrong with it
    if stamp.tzinfo is None:
        return None
    return stamp.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")


def converter(col: Column) -> Convert | None:
    """What to do to a value for ``col`` before sending it (None: send it as it is)."""
    kind = base_type(col.type)
    name = col.name
    if col.nested:
        return _json_text
    if kind in INT_TYPES:
        boolean = is_bool(col.type)

        def integer(v: Any) -> Any:
            if type(v) is int or v is None:
                return v
            if isinstance(v, bool):
                return int(v) if boolean else v  # the server refuses 'true' (1366)
            if isinstance(v, (float, decimal.Decimal)):
                raise BadValue(f"not an integer: {v} (column {name!r} is {col.type})")
            if isinstance(v, str) and _INT_TEXT.fullmatch(v) is None and _number_text(v):
                raise BadValue(f"not an integer: {v!r} (column {name!r} is {col.type})")
            return v

        return integer
    if kind in _TIMESTAMPS or kind == "date":
        date_only = kind == "date"

        def temporal(v: Any) -> Any:
            if isinstance(v, str):
                if date_only:
                    # PostgreSQL's date takes the date as written, whatever the time part.
                    if len(v) > 10 and v[10] in "Tt ":
                        try:
                            dt.datetime.fromisoformat(v)
                        except ValueError:
                            return v
                        return v[:10]
                    return v
                return _utc(v) or v
            if isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool):
                # MySQL reads 20260101 as a date; PostgreSQL refuses a number.
                raise BadValue(f"a number, not a {kind}: {v} (column {name!r})")
            return v

        return temporal
    return None


def _exact(value: Any) -> Any:
    """Exact numbers (see events.py) travel as the JSON numbers they were, digit for digit."""
    if isinstance(value, decimal.Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _exact_text(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _dumps(value: Any) -> bytes:
    """JSON text; orjson stops at 255 levels of nesting and 64-bit integers, the standard
    library goes on (past that the value is bad data for its event)."""
    try:
        return orjson.dumps(value, default=_exact)
    except TypeError:
        try:
            return json.dumps(
                value, ensure_ascii=False, allow_nan=False, default=_exact_text
            ).encode()
        except (RecursionError, TypeError, ValueError) as exc:
            raise BadValue(f"value cannot be serialized: {type(exc).__name__}: {exc}") from None


def _json_text(value: Any) -> Any:
    """A JSON column's value as its JSON text (JSON null is SQL NULL, as in PostgreSQL)."""
    if value is None:
        return None
    return _dumps(value).decode()


def rows_json(rows: list[list[Any]]) -> bytes:
    """Rows (arrays of values in column order) as one JSON document for JSON_TABLE."""
    return _dumps(rows)


def _fold(text: str) -> str:
    """One spelling for strings that a case- and accent-insensitive collation with trailing
    space padding (MySQL's defaults) may compare equal. It may fold more than the column's
    collation does: that only puts those events in separate waves."""
    text = text.rstrip(" ").casefold()
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def canonical_key(value: Any, column_type: str) -> Any:
    """One spelling per key value, so that events naming one row keep their order.

    Spellings MySQL reads as one key become one (``7`` and ``" 7"`` for an integer,
    ``"Ann"`` and ``"ann "`` for a string); anything else keeps its type in the key, so
    ``true`` or ``1.0`` never fold into key ``1``. Only used to group events by key.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return ("bool", value)
    kind = base_type(column_type)
    try:
        if kind in INT_TYPES:
            if isinstance(value, int):
                return value
            if isinstance(value, str) and _INT_TEXT.fullmatch(value):
                return int(value)
        elif kind in _NUMERIC and isinstance(value, (int, float, str, decimal.Decimal)):
            return ("n", decimal.Decimal(str(value).strip()).normalize())
        elif kind in _STRINGS:
            if isinstance(value, str):
                return _fold(value)
            if isinstance(value, (int, float, decimal.Decimal)):
                return _fold(str(value))
        elif kind in _TIMESTAMPS and isinstance(value, str):
            return ("t", (_utc(value) or value).replace("T", " ", 1).replace("t", " ", 1))
    except (ArithmeticError, ValueError):
        pass
    return (type(value).__name__, value) if not isinstance(value, str) else value


def key_literal(value: Any, col: Column, escape: Callable[[Any], str]) -> str:
    """A key value as a SQL literal for ``WHERE key IN (...)``, or BadValue.

    A comparison never fails in MySQL: ``'abc'`` against an integer key is 0, and a number
    against a string key compares every row as a number. So a key is only sent in its
    column's own domain: an integer as an integer, text as text.
    """
    kind = base_type(col.type)
    convert = converter(col)
    if convert is not None:
        value = convert(value)
    if kind in INT_TYPES:
        if isinstance(value, bool) or not (
            type(value) is int or (isinstance(value, str) and _INT_TEXT.fullmatch(value))
        ):
            raise BadValue(f"key not an integer: {value!r} (column {col.name!r} is {col.type})")
        return str(int(value))
    if kind in _NUMERIC:
        try:
            number = decimal.Decimal(str(value).strip())
        except ArithmeticError:
            number = None
        if isinstance(value, bool) or number is None or not number.is_finite():
            raise BadValue(f"key not a number: {value!r} (column {col.name!r} is {col.type})")
        return escape(str(number))
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, (int, float, decimal.Decimal)):
        value = str(value)
    if not isinstance(value, str):
        raise BadValue(f"key not a scalar: {value!r} (column {col.name!r})")
    return escape(value)


def suspect(value: Any, column_type: str) -> bool:
    """True when ``value`` looks like it will not fit a column of ``column_type``.

    Only a hint for isolating bad events with few round trips (a suspect is tried on its
    own); the server and :func:`converter` decide.
    """
    if value is None or isinstance(value, (dict, list)):
        return False
    kind = base_type(column_type)
    if kind in INT_TYPES:
        if isinstance(value, bool):
            return not is_bool(column_type)
        if isinstance(value, str):
            if _INT_TEXT.fullmatch(value) is None:
                return True
            value = int(value)
        if type(value) is not int:
            return True
        short = "int" if kind == "integer" else kind
        if "unsigned" in column_type:
            return not 0 <= value < (2**64 if kind == "bigint" else _UNSIGNED_MAX[short])
        limit = 2**63 if kind == "bigint" else _SIGNED_MAX[short]
        return not -limit <= value < limit
    if isinstance(value, str):
        if kind in _NUMERIC:
            try:
                decimal.Decimal(value.strip())
            except ArithmeticError:
                return True
            return False
        match = _VARCHAR.fullmatch(column_type.split(" ", 1)[0])
        return match is not None and len(value) > int(match.group(1))
    if kind in _TIMESTAMPS or kind == "date":
        return not isinstance(value, str)
    return isinstance(value, bool) and kind in _NUMERIC
