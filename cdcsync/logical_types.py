"""Debezium and Kafka Connect logical types: their JSON form to text that PostgreSQL reads.

The schema that names a column's logical type and its ``parameters`` arrives in the same
message as the value, so both are hostile input. A conversion returns the exact value or
raises :class:`DecodeError` naming the column and what is wrong; nothing else escapes, so
one bad message is one dead letter and never a flow restart. Nothing is silently changed
either: a time past midnight is not wrapped, base64 with stray characters is not skipped
over, a boolean is not read as 1, nanoseconds are not cut to microseconds.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import re
from collections.abc import Callable
from typing import Any

from cdcsync.errors import DecodeError

__all__ = ["LOGICAL_TYPES", "convert_row"]

_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_DATE = dt.date(1970, 1, 1)
# Python's dates end at these years; PostgreSQL's go further, Debezium's rarely do.
_MIN_DAYS = (dt.date.min - _EPOCH_DATE).days
_MAX_DAYS = (dt.date.max - _EPOCH_DATE).days
_MIN_SECONDS = _MIN_DAYS * 86_400
_MAX_SECONDS = (_MAX_DAYS + 1) * 86_400 - 1
# Kafka Connect keeps a Decimal's scale in a Java int, written as a string parameter.
_JAVA_INT = (-(2**31), 2**31 - 1)
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
# The unscaled value is two's complement bytes. Converting them to decimal digits takes time
# quadratic in their length (1 MiB: 100 s, with the event loop blocked); 1 KiB is 2,466
# digits, more than any database declares (PostgreSQL numeric(1000), MySQL 65, Oracle 38).
_MAX_DECIMAL_BYTES = 1024


class _Bad(Exception):
    """A value or parameter its logical type cannot have; the message says which and why."""


def _show(value: Any) -> str:
    """A value for an error message: its JSON kind, and the value itself when short."""
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "an array"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean {str(value).lower()}"
    if isinstance(value, str):
        kind, text = "a string", repr(value)
    elif isinstance(value, int):
        if value.bit_length() > 128:
            return _int_text(value)
        kind, text = "an integer", str(value)
    else:
        kind, text = "a number", str(value)
    return f"{kind} {text[:37] + '...' if len(text) > 40 else text}"


def _int_text(value: int) -> str:
    """An int for a message; str() itself refuses ints of more than 4300 digits."""
    return str(value) if value.bit_length() <= 128 else f"an integer of {value.bit_length()} bits"


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"value: expected an integer, got {_show(value)}")
    return value


def _fraction(ticks: int, per_second: int) -> str:
    """The sub-second part, all of its digits (PostgreSQL rounds to what its column holds)."""
    if not ticks:
        return ""
    return f".{ticks:0{len(str(per_second)) - 1}d}"


def _scale(params: dict[str, Any]) -> int:
    raw = params.get("scale")
    if isinstance(raw, str) and _INT_TEXT.fullmatch(raw):
        scale = int(raw) if len(raw) <= 40 else _JAVA_INT[1] + 1  # no int() of a million digits
    elif isinstance(raw, int) and not isinstance(raw, bool):
        scale = raw
    else:
        got = "missing" if raw is None else f"got {_show(raw)}"
        raise _Bad(f"parameter 'scale': expected an integer, {got}")
    if not _JAVA_INT[0] <= scale <= _JAVA_INT[1]:
        shown = raw if isinstance(raw, str) else _int_text(raw)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise _Bad(f"parameter 'scale': {shown} is outside Kafka Connect's range (a Java int)")
    return scale


def _decimal(value: Any, params: dict[str, Any]) -> Any:
    """``org.apache.kafka.connect.data.Decimal``: big-endian two's complement, base64."""
    scale = _scale(params)
    if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
        return value  # the converter's decimal.format=NUMERIC: already the exact number
    if not isinstance(value, str):
        raise _Bad(f"value: expected a base64 string or a number, got {_show(value)}")
    if len(value) > _MAX_DECIMAL_BYTES * 4 // 3 + 4:
        raise _Bad(f"value: more than {_MAX_DECIMAL_BYTES} bytes, more digits than any numeric")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise _Bad(f"value: not base64 ({exc})") from None
    if not raw:
        raise _Bad("value: no bytes (Kafka Connect has no empty Decimal)")
    digits = decimal.Decimal(int.from_bytes(raw, "big", signed=True)).as_tuple()
    # Built from its parts: exact whatever the scale (scaleb() would round or trap).
    return str(decimal.Decimal((digits.sign, digits.digits, -scale)))


def _date(value: Any, _params: dict[str, Any]) -> str:
    """Days since 1970-01-01."""
    days = _integer(value)
    if not _MIN_DAYS <= days <= _MAX_DAYS:
        raise _Bad(f"value: {_int_text(days)} days from 1970-01-01 is outside the years 1 to 9999")
    return (_EPOCH_DATE + dt.timedelta(days=days)).isoformat()


def _timestamp(per_second: int) -> Callable[[Any, dict[str, Any]], str]:
    """Milli-, micro- or nanoseconds since 1970-01-01T00:00:00 (no time zone)."""

    def convert(value: Any, _params: dict[str, Any]) -> str:
        seconds, ticks = divmod(_integer(value), per_second)
        if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
            raise _Bad(f"value: {_int_text(value)} is outside the years 1 to 9999")
        when = _EPOCH + dt.timedelta(seconds=seconds)
        return when.isoformat() + _fraction(ticks, per_second)

    return convert


def _time(per_second: int) -> Callable[[Any, dict[str, Any]], str]:
    """Milli-, micro- or nanoseconds since midnight, up to 24:00:00 (PostgreSQL's ``time``)."""

    def convert(value: Any, _params: dict[str, Any]) -> str:
        seconds, ticks = divmod(_integer(value), per_second)
        if not 0 <= seconds < 86_400 and (seconds, ticks) != (86_400, 0):
            raise _Bad(f"value: {_int_text(value)} is not a time of day (00:00:00 to 24:00:00)")
        hours, rest = divmod(seconds, 3600)
        return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}" + _fraction(ticks, per_second)

    return convert


# Debezium / Kafka Connect logical types whose JSON form PostgreSQL cannot take as is.
LOGICAL_TYPES: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "io.debezium.time.Date": _date,
    "org.apache.kafka.connect.data.Date": _date,
    "io.debezium.time.Timestamp": _timestamp(1_000),
    "org.apache.kafka.connect.data.Timestamp": _timestamp(1_000),
    "io.debezium.time.MicroTimestamp": _timestamp(1_000_000),
    "io.debezium.time.NanoTimestamp": _timestamp(1_000_000_000),
    "io.debezium.time.Time": _time(1_000),
    "org.apache.kafka.connect.data.Time": _time(1_000),
    "io.debezium.time.MicroTime": _time(1_000_000),
    "io.debezium.time.NanoTime": _time(1_000_000_000),
    "org.apache.kafka.connect.data.Decimal": _decimal,
}


def _fields(struct: dict[str, Any], image: str | None) -> list[Any]:
    """The ``fields`` of the schema (``image`` None) or of its ``image`` struct, checked."""
    fields = struct.get("fields")
    if fields is None:
        return []
    where = "the schema" if image is None else repr(image)
    if not isinstance(fields, list):
        raise DecodeError(
            f"debezium schema: 'fields' of {where} must be an array, got {_show(fields)}"
        )
    for entry in fields:
        if not isinstance(entry, dict):
            raise DecodeError(
                f"debezium schema: an entry of {where} is {_show(entry)}, not an object"
            )
    return fields


def _logical_columns(schema: Any, image: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Column -> (logical type, parameters), from the schema of the ``before``/``after`` struct."""
    if not isinstance(schema, dict):
        raise DecodeError(f"debezium 'schema' must be an object, got {_show(schema)}")
    for struct in _fields(schema, None):
        if struct.get("field") == image:
            break
    else:
        return {}
    out = {}
    for col in _fields(struct, image):
        name = col.get("name")
        if name is None:
            continue
        if not isinstance(name, str):
            raise DecodeError(f"debezium schema: a 'name' in {image!r} is {_show(name)}")
        if name not in LOGICAL_TYPES:
            continue
        column = col.get("field")
        if not isinstance(column, str):
            raise DecodeError(f"debezium schema: a {name} in {image!r} has 'field' {_show(column)}")
        params = col.get("parameters")
        if params is None:
            params = {}
        elif not isinstance(params, dict):
            raise DecodeError(
                f"column {column!r}: bad {name} parameters: expected an object, got {_show(params)}"
            )
        out[column] = (name, params)
    return out


def convert_row(row: dict[str, Any], schema: Any, image: str) -> None:
    """Convert, in place, the values of ``row`` whose column ``schema`` gives a logical type."""
    for col, (name, params) in _logical_columns(schema, image).items():
        value = row.get(col)
        if value is not None:
            try:
                row[col] = LOGICAL_TYPES[name](value, params)
            except _Bad as exc:
                raise DecodeError(f"column {col!r}: bad {name} {exc}") from None
