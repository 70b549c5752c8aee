"""Change events and the decoders that make them from message bytes.

Pure functions, no I/O: everything here is unit-tested with plain values.
A decoder returns a :class:`ChangeEvent`, ``None`` for a message that carries
no change (a Debezium tombstone), or raises :class:`DecodeError` with a reason
that an operator can act on (it is stored with the dead letter).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from cdcsync.errors import DecodeError

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


@dataclass(slots=True, frozen=True)
class ChangeEvent:
    """One row change, independent of the wire format.

    ``data`` is the row image (for a delete: at least the key columns).
    ``unavailable`` names columns whose value the producer did not send
    (Debezium's unchanged-TOAST placeholder): they must never be overwritten.
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


# A number of 16 or more digits may not survive a float or a 64-bit integer. Mapping digits
# and dots to NUL and searching for 16 NULs finds such a run (and, harmlessly, a few runs
# that are not numbers) about 5x faster than a regular expression: it ran on every message
# and cost more than the JSON parse itself.
_DIGITS = bytes.maketrans(b"0123456789.", b"\x00" * 11)
_LONG_RUN = b"\x00" * 16


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(data: bytes) -> Any:
    """Parse JSON; numbers that a float or int64 would round are kept exact (Decimal, int)."""
    if _LONG_RUN in data.translate(_DIGITS):
        try:
            return json.loads(data, parse_float=decimal.Decimal, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"not valid JSON: {exc}") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
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

_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_DATE = dt.date(1970, 1, 1)


def _decimal(value: Any, params: dict[str, Any]) -> Any:
    if not isinstance(value, str):
        return value
    raw = base64.b64decode(value)
    scale = int(params.get("scale", 0))
    unscaled = int.from_bytes(raw, "big", signed=True)
    return str(decimal.Decimal(unscaled).scaleb(-scale))


def _ts(divisor: int) -> Callable[[Any, dict[str, Any]], Any]:
    def convert(value: Any, _params: dict[str, Any]) -> Any:
        if not isinstance(value, int):
            return value
        return (_EPOCH + dt.timedelta(microseconds=value * 1_000_000 // divisor)).isoformat()

    return convert


def _time(divisor: int) -> Callable[[Any, dict[str, Any]], Any]:
    def convert(value: Any, _params: dict[str, Any]) -> Any:
        if not isinstance(value, int):
            return value
        micros = value * 1_000_000 // divisor
        return (dt.datetime.min + dt.timedelta(microseconds=micros)).time().isoformat()

    return convert


def _date(value: Any, _params: dict[str, Any]) -> Any:
    if not isinstance(value, int):
        return value
    return (_EPOCH_DATE + dt.timedelta(days=value)).isoformat()


# Debezium / Kafka Connect logical types whose JSON form PostgreSQL cannot take as is.
_LOGICAL: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "io.debezium.time.Date": _date,
    "org.apache.kafka.connect.data.Date": _date,
    "io.debezium.time.Timestamp": _ts(1_000),
    "org.apache.kafka.connect.data.Timestamp": _ts(1_000),
    "io.debezium.time.MicroTimestamp": _ts(1_000_000),
    "io.debezium.time.NanoTimestamp": _ts(1_000_000_000),
    "io.debezium.time.Time": _time(1_000),
    "org.apache.kafka.connect.data.Time": _time(1_000),
    "io.debezium.time.MicroTime": _time(1_000_000),
    "io.debezium.time.NanoTime": _time(1_000_000_000),
    "org.apache.kafka.connect.data.Decimal": _decimal,
}


def _logical_fields(schema: Any, image: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Column -> (logical type, parameters) for the ``before``/``after`` struct of a schema."""
    if not isinstance(schema, dict):
        return {}
    for field in schema.get("fields") or ():
        if isinstance(field, dict) and field.get("field") == image:
            out = {}
            for col in field.get("fields") or ():
                if isinstance(col, dict) and col.get("name") in _LOGICAL:
                    out[col["field"]] = (col["name"], col.get("parameters") or {})
            return out
    return {}


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
        for col, (name, params) in _logical_fields(schema, image).items():
            if col in row and row[col] is not None:
                try:
                    row[col] = _LOGICAL[name](row[col], params)
                except (ValueError, OverflowError, TypeError) as exc:
                    raise DecodeError(f"column {col!r}: bad {name} value: {exc}") from None
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
