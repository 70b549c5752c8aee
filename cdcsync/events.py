"""Change events and the decoders that make them from message bytes.

Pure functions, no I/O: everything here is unit-tested with plain values.
A decoder returns a :class:`ChangeEvent`, ``None`` for a message that carries
no change (a Debezium tombstone), or raises :class:`DecodeError` with a reason
that an operator can act on (it is stored with the dead letter).
"""

from __future__ import annotations

import decimal
import enum
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from cdcsync.errors import DecodeError
from cdcsync.logical_types import convert_row

__all__ = [
    "FORMATS",
    "UNAVAILABLE",
    "ChangeEvent",
    "Op",
    "decode",
    "decode_auto",
    "decode_cdc",
    "decode_debezium",
]

UNAVAILABLE = "__debezium_unavailable_value"
# The same placeholder as Debezium sends it for bytea (base64) and array columns.
_UNAVAILABLE_FORMS = (UNAVAILABLE, "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==")


def _is_unavailable(value: Any) -> bool:
    if isinstance(value, str):
        return value in _UNAVAILABLE_FORMS
    return isinstance(value, list) and len(value) == 1 and value[0] in _UNAVAILABLE_FORMS


class Op(enum.Enum):
    INSERT = "insert"
    UPDATE = "update"
    UPSERT = "upsert"
    DELETE = "delete"
    TRUNCATE = "truncate"


@dataclass(slots=True)
class ChangeEvent:
    """One row change, independent of the wire format.

    ``data`` is the row image (for a delete: at least the key columns).
    ``unavailable`` names columns whose value the producer did not send
    (Debezium's unchanged-TOAST placeholder): they must never be overwritten.
    Treated as immutable; not frozen because a frozen dataclass's ``__init__`` cost 0.4 us
    per event (two thirds of its construction) on the hot path.
    """

    table: str
    op: Op
    data: dict[str, Any]
    unavailable: frozenset[str] = frozenset()


_CDC_OPS = {
    "insert": Op.INSERT,
    "update": Op.UPDATE,
    "upsert": Op.UPSERT,
    "snapshot": Op.UPSERT,
    "delete": Op.DELETE,
}
_DBZ_OPS = {"c": Op.INSERT, "u": Op.UPDATE, "r": Op.UPSERT, "d": Op.DELETE, "t": Op.TRUNCATE}


# Numbers a float cannot hold exactly are parsed exactly (Decimal, int) instead:
# - 16 or more digits (a float holds 15 for sure, an int64 18);
# - an exponent of -100 or below: under 2.2e-308 a float loses digits and under 5e-324 it is 0
#   (with at most 15 digits that needs an exponent of -294 or below);
# - a number beyond a float's range: orjson refuses it ("number is infinity"), see _loads.
# Mapping digits and dots to NUL, e/E to 1 and '-' to 2, then searching for two fixed runs,
# finds the first two (and, harmlessly, a few look-alikes in strings) about 4x faster than a
# regular expression: it runs on every message and cost more than the JSON parse itself.
_NUMBERISH = bytes.maketrans(b"0123456789.eE-", b"\x00" * 11 + b"\x01\x01\x02")
_LONG_RUN = b"\x00" * 16
_TINY = b"\x00\x01\x02\x00\x00\x00"  # 5e-400: a digit, e, minus, three digits
_INFINITE = "number is infinity"  # how orjson refuses 1e400
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Python's int() refuses more digits than this (sys.get_int_max_str_digits()).
_MAX_INT_DIGITS = 4300


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _int(text: str) -> int | decimal.Decimal:
    return int(text) if len(text) <= _MAX_INT_DIGITS else decimal.Decimal(text)


def _float(text: str) -> float | decimal.Decimal:
    """A JSON number with a fraction or an exponent, exactly."""
    try:
        value = decimal.Decimal(text)
    except decimal.InvalidOperation:  # an exponent beyond 10**18 in either direction
        short = text if len(text) <= 40 else text[:37] + "..."
        raise DecodeError(f"number {short} is too large or too small for any numeric") from None
    # A zero is a zero: 0e-20000 as 0.0 rather than a scale PostgreSQL refuses.
    return value if value else float(value)


def _loads_exact(data: bytes) -> Any:
    """The standard library's parser, held to what orjson accepts, with exact numbers."""
    try:
        # Decoded here: json.loads(bytes) would take a BOM, UTF-16 and encoded surrogates.
        obj = json.loads(
            data.decode(), parse_float=_float, parse_int=_int, parse_constant=_no_constant
        )
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None
    if b"\\u" in data:
        _reject_lone_surrogates(obj)
    return obj


def _reject_lone_surrogates(obj: Any) -> None:
    """orjson refuses "\\ud800" without its pair (no UTF-8 for it); json.loads keeps it."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                raise DecodeError("not valid JSON: a string holds an unpaired surrogate")
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _loads(data: bytes) -> Any:
    """Parse JSON; numbers that a float or int64 would change are kept exact (Decimal, int)."""
    marks = data.translate(_NUMBERISH)
    if marks.find(_LONG_RUN) >= 0 or marks.find(_TINY) >= 0:  # measured faster than `in`
        return _loads_exact(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if _INFINITE in str(exc):
            return _loads_exact(data)
        raise DecodeError(f"not valid JSON: {exc}") from None


def _table_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise DecodeError(f"missing or non-string table name in {where}")
    return value


def _row(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def decode_cdc_obj(obj: Any) -> ChangeEvent:
    if not isinstance(obj, dict):
        raise DecodeError("cdc envelope must be a JSON object")
    table = _table_name(obj.get("table"), "field 'table'")
    operation = obj.get("operation")
    op = _CDC_OPS.get(operation) if isinstance(operation, str) else None
    if op is None:
        raise DecodeError(f"unknown operation {operation!r} (expected one of {sorted(_CDC_OPS)})")
    if "data" not in obj:
        raise DecodeError("missing field 'data'")
    data = _row(obj["data"], "field 'data'")
    if not data:
        raise DecodeError("field 'data' is empty")
    return ChangeEvent(table, op, data)


def decode_cdc(data: bytes) -> ChangeEvent | None:
    """The original envelope: ``{"table", "operation", "data", ...}``."""
    return decode_cdc_obj(_loads(data))


# --- Debezium -------------------------------------------------------------------------------


def decode_debezium_obj(obj: Any) -> ChangeEvent | None:
    schema = None
    if isinstance(obj, dict) and "payload" in obj and "op" not in obj:
        schema = obj.get("schema")
        obj = obj["payload"]
    if obj is None:
        return None  # tombstone: follows a delete so that Kafka compaction can drop the key
    if not isinstance(obj, dict):
        raise DecodeError("debezium event must be a JSON object")
    op_code = obj.get("op")
    op = _DBZ_OPS.get(op_code) if isinstance(op_code, str) else None
    if op is None:
        raise DecodeError(f"unknown debezium op {op_code!r} (expected one of c, u, r, d, t)")
    source = obj.get("source")
    if not isinstance(source, dict):
        raise DecodeError("debezium event has no 'source' block")
    table = _table_name(source.get("table"), "source.table")
    if op is Op.TRUNCATE:
        return ChangeEvent(table, op, {})
    image = "before" if op is Op.DELETE else "after"
    row = obj.get(image)
    if row is None:
        raise DecodeError(f"debezium op {op_code!r} without '{image}' row image")
    row = dict(_row(row, f"field '{image}'"))
    if not row:
        raise DecodeError(f"field '{image}' is empty")
    unavailable = frozenset(k for k, v in row.items() if _is_unavailable(v))
    for col in unavailable:
        del row[col]
    if schema is not None:
        convert_row(row, schema, image)
    return ChangeEvent(table, op, row, unavailable)


def decode_debezium(data: bytes) -> ChangeEvent | None:
    """A Debezium change event, with or without the ``schema``/``payload`` wrapper."""
    if not data.strip():
        return None  # empty body = tombstone
    return decode_debezium_obj(_loads(data))


def decode_auto(data: bytes) -> ChangeEvent | None:
    """Detect the format per message: envelope (``operation``) or Debezium (``op``)."""
    if not data.strip():
        return None
    obj = _loads(data)
    if obj is None:
        return None
    if isinstance(obj, dict):
        if "operation" in obj:
            return decode_cdc_obj(obj)
        if "op" in obj or "payload" in obj:
            return decode_debezium_obj(obj)
    raise DecodeError("unknown event format (neither a cdc envelope nor a Debezium event)")


FORMATS: dict[str, Callable[[bytes], ChangeEvent | None]] = {
    "cdc": decode_cdc,
    "debezium": decode_debezium,
    "auto": decode_auto,
}


def decode(data: bytes, fmt: str) -> ChangeEvent | None:
    """Decode one message body in the flow's format."""
    return FORMATS[fmt](data)
