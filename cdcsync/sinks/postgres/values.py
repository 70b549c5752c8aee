"""How event values travel to PostgreSQL: key canonicalisation and the JSON parameter.

Pure functions, no I/O: the PostgreSQL sink groups events by :func:`canonical_key` and
sends each statement's rows as one :func:`rows_json` document.
"""

from __future__ import annotations

import contextlib
import decimal
import json
import re
from typing import Any

import orjson

__all__ = ["BadValue", "canonical_key", "rows_json", "suspect"]

_INT_TYPES = {"smallint", "integer", "bigint"}
_INT_RANGE = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}
_INT_TEXT = re.compile(r"[ \t\n\r\f\v]*[+-]?[0-9]+[ \t\n\r\f\v]*")
_BOOL_TEXT = {"t", "true", "y", "yes", "on", "1", "f", "false", "n", "no", "off", "0"}
_VARCHAR = re.compile(r"character(?: varying)?\((\d+)\)")


def suspect(value: Any, pg_type: str) -> bool:
    """True when ``value`` looks like it will not fit a column of ``pg_type``.

    Only a hint for isolating bad events with few round trips (a suspect is tried on
    its own); PostgreSQL still decides, so a wrong guess costs a savepoint, never a row.
    """
    if value is None or isinstance(value, (dict, list)):
        return False
    if isinstance(value, str):
        if "\x00" in value:
            return True  # PostgreSQL text cannot hold NUL
        if pg_type in _INT_TYPES:
            if _INT_TEXT.fullmatch(value) is None:
                return True
            return abs(int(value)) >= _INT_RANGE[pg_type]
        if pg_type == "boolean":
            return value.strip().lower() not in _BOOL_TEXT
        if pg_type.startswith("numeric") or pg_type in ("real", "double precision"):
            try:
                decimal.Decimal(value.strip())
            except ArithmeticError:
                return True
            return False
        match = _VARCHAR.fullmatch(pg_type) if pg_type.startswith("character") else None
        return match is not None and len(value) > int(match.group(1))
    if pg_type in _INT_TYPES:
        if isinstance(value, bool) or not isinstance(value, int):
            return not (isinstance(value, float) and value.is_integer())
        return abs(value) >= _INT_RANGE[pg_type]
    if pg_type == "boolean":
        return not isinstance(value, bool) and value not in (0, 1)
    return False


def canonical_key(value: Any, pg_type: str) -> Any:
    """One spelling per key value, so ``7`` and ``"7"`` compact as the same row.

    Only spellings that PostgreSQL itself reads as the same key are unified (``7``
    and ``" 7"`` for an integer, ``7`` and ``"7.00"`` for a numeric); anything else
    keeps its type in the key, so ``true`` or ``1.0`` never fold into key ``1``.
    Only used to group events by key; the values sent to PostgreSQL are the event's own.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return ("bool", value)
    try:
        if pg_type in _INT_TYPES:
            if isinstance(value, int):
                return value
            if isinstance(value, str):
                with contextlib.suppress(ValueError):
                    return int(value.strip())
        elif pg_type.startswith("numeric") and isinstance(
            value, (int, float, str, decimal.Decimal)
        ):
            with contextlib.suppress(ArithmeticError, ValueError):
                return ("n", decimal.Decimal(str(value).strip()).normalize())
        elif pg_type == "uuid" and isinstance(value, str):
            return ("uuid", value.strip().lower().replace("-", ""))
        elif pg_type.startswith(("text", "character")) and isinstance(value, (int, float)):
            return str(value)
    except (ArithmeticError, ValueError):
        pass
    return (type(value).__name__, value) if not isinstance(value, str) else value


def _exact(value: Any) -> Any:
    """Exact numbers (see events.py) travel as the JSON numbers they were, digit for digit.

    PostgreSQL reads a JSON number into ``numeric`` (and ``jsonb``) exactly; as a string it
    would land in a ``jsonb`` or ``json`` column as a string, a different value.
    """
    if isinstance(value, decimal.Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _exact_text(value: Any) -> Any:
    """The standard library cannot write raw JSON: nested past orjson's limit, a string."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


class BadValue(Exception):
    """A value cdcsync itself cannot pass on (e.g. JSON nested too deep to serialize)."""


def rows_json(rows: list[dict[str, Any]]) -> str:
    """Rows as one JSON document for ``json_populate_recordset``.

    orjson stops at 255 levels of nesting; the standard library goes deeper, and
    past that the value is bad data for its event, not a reason to stop the flow.
    """
    try:
        return orjson.dumps(rows, default=_exact).decode()
    except TypeError:
        try:
            return json.dumps(rows, ensure_ascii=False, allow_nan=False, default=_exact_text)
        except (RecursionError, TypeError, ValueError) as exc:
            raise BadValue(f"value cannot be serialized: {type(exc).__name__}: {exc}") from None
