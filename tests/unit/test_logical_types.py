"""Debezium logical types from a hostile schema: the exact text, or a DecodeError, nothing else.

Issue 17: a Decimal whose ``parameters`` was ``{"scale": "100000000"}`` or a string raised
inside decoding and restarted the flow forever. Every logical type, parameter shape, value
type and schema shape here must give the exact value or a DecodeError naming the problem.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from cdcsync.errors import DecodeError
from cdcsync.events import ChangeEvent, Op, decode_debezium

DECIMAL = "org.apache.kafka.connect.data.Decimal"


def event(value: Any, name: str = DECIMAL, params: Any = None, **column: Any) -> bytes:
    """A wrapped Debezium create whose column ``v`` has logical type ``name``."""
    field: dict[str, Any] = {"type": "bytes", "optional": True, "name": name, "field": "v"}
    if params is not None:
        field["parameters"] = params
    field.update(column)
    schema = {
        "type": "struct",
        "fields": [{"type": "struct", "field": "after", "fields": [{"field": "id"}, field]}],
    }
    payload = {"op": "c", "source": {"table": "t"}, "after": {"id": 1, "v": value}}
    return json.dumps({"schema": schema, "payload": payload}).encode()


def converted(raw: bytes) -> Any:
    ev = decode_debezium(raw)
    assert ev is not None
    return ev.data["v"]


SCALE_2 = {"scale": "2", "connect.decimal.precision": "10"}


@pytest.mark.parametrize(
    ("value", "params", "expected"),
    [
        ("MDk=", SCALE_2, "123.45"),
        ("z8c=", SCALE_2, "-123.45"),
        ("AA==", SCALE_2, "0.00"),
        ("AQ==", {"scale": 2}, "0.01"),  # an int instead of Connect's string
        ("AQ==", {"scale": "-3"}, "1E+3"),  # negative scales exist (Oracle NUMBER(5,-3))
        ("AQ==", {"scale": "0"}, "1"),
        # a scale far beyond PostgreSQL's numeric is still the exact value, as text:
        # PostgreSQL refuses it (22003) and the event is dead-lettered there
        ("AQ==", {"scale": "100000000"}, "1E-100000000"),
        ("AQ==", {"scale": "2147483647"}, "1E-2147483647"),
        ("/w==", {"scale": "-2147483648"}, "-1E+2147483648"),
        ("AQID", SCALE_2, "660.51"),
        (12.5, SCALE_2, 12.5),  # decimal.format=NUMERIC: already a number
        (7, SCALE_2, 7),
        pytest.param("f" + "/" * 1363, {"scale": "0"}, None, id="1023-bytes"),  # accepted
    ],
)
def test_decimal_is_exact(value: Any, params: Any, expected: Any) -> None:
    """A Decimal converts to its exact text, whatever the scale (none is rounded or trapped)."""
    got = converted(event(value, params=params))
    if expected is None:
        assert isinstance(got, str) and got.isdigit()
    else:
        assert got == expected


@pytest.mark.parametrize(
    ("value", "params", "reason"),
    [
        ("AQ==", "scale=2", "parameters: expected an object, got a string 'scale=2'"),
        ("AQ==", [2], "parameters: expected an object, got an array"),
        ("AQ==", 2, "parameters: expected an object, got an integer 2"),
        ("AQ==", True, "parameters: expected an object"),
        ("AQ==", {}, "parameter 'scale': expected an integer, missing"),
        ("AQ==", {"scale": None}, "parameter 'scale': expected an integer, missing"),
        ("AQ==", {"scale": "two"}, "parameter 'scale': expected an integer, got a string 'two'"),
        ("AQ==", {"scale": "2.0"}, "parameter 'scale': expected an integer"),
        ("AQ==", {"scale": " 2"}, "parameter 'scale': expected an integer"),
        ("AQ==", {"scale": 2.0}, "parameter 'scale': expected an integer, got a number 2.0"),
        ("AQ==", {"scale": True}, "parameter 'scale': expected an integer, got a boolean true"),
        ("AQ==", {"scale": [2]}, "parameter 'scale': expected an integer, got an array"),
        ("AQ==", {"scale": {"v": 2}}, "parameter 'scale': expected an integer, got an object"),
        ("AQ==", {"scale": "2147483648"}, "outside Kafka Connect's range"),
        ("AQ==", {"scale": -(2**31) - 1}, "outside Kafka Connect's range"),
        pytest.param("AQ==", {"scale": "9" * 100_000}, "outside", id="scale-100k-digits"),
        pytest.param("AQ==", {"scale": 10**400}, "outside", id="scale-10**400"),
        ("!!not base64!!", SCALE_2, "value: not base64"),
        ("MD!k=", SCALE_2, "value: not base64"),  # b64decode would skip the '!'
        ("MDk", SCALE_2, "value: not base64"),
        ("MD k=", SCALE_2, "value: not base64"),
        ("", SCALE_2, "value: no bytes"),
        pytest.param("A" * 1372, SCALE_2, "more than 1024 bytes", id="1029-bytes"),
        pytest.param("A" * 8_000_000, SCALE_2, "more than 1024 bytes", id="8MB"),
        (True, SCALE_2, "value: expected a base64 string or a number, got a boolean true"),
        ([1], SCALE_2, "value: expected a base64 string or a number, got an array"),
        ({"scale": 2, "value": "AQ=="}, SCALE_2, "got an object"),
    ],
)
def test_bad_decimal_is_a_decode_error(value: Any, params: Any, reason: str) -> None:
    """A bad Decimal value or parameter is a DecodeError naming the column and the problem."""
    with pytest.raises(DecodeError) as info:
        decode_debezium(event(value, params=params))
    assert str(info.value).startswith(f"column 'v': bad {DECIMAL} ")
    assert reason in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("io.debezium.time.Date", 19000, "2022-01-08"),
        ("io.debezium.time.Date", -719162, "0001-01-01"),
        ("io.debezium.time.Date", 2932896, "9999-12-31"),
        ("org.apache.kafka.connect.data.Date", 0, "1970-01-01"),
        ("io.debezium.time.Timestamp", 1_700_000_000_123, "2023-11-14T22:13:20.123"),
        ("io.debezium.time.Timestamp", -1, "1969-12-31T23:59:59.999"),
        ("org.apache.kafka.connect.data.Timestamp", 0, "1970-01-01T00:00:00"),
        ("io.debezium.time.MicroTimestamp", 1_700_000_000_123_456, "2023-11-14T22:13:20.123456"),
        ("io.debezium.time.MicroTimestamp", 1_700_000_000_000_001, "2023-11-14T22:13:20.000001"),
        (
            "io.debezium.time.NanoTimestamp",
            1_700_000_000_123_456_789,
            "2023-11-14T22:13:20.123456789",
        ),
        ("io.debezium.time.Time", 80_000_123, "22:13:20.123"),
        ("org.apache.kafka.connect.data.Time", 0, "00:00:00"),
        ("io.debezium.time.MicroTime", 80_000_123_456, "22:13:20.123456"),
        ("io.debezium.time.MicroTime", 86_400_000_000, "24:00:00"),  # PostgreSQL's end of day
        ("io.debezium.time.MicroTime", 86_399_999_999, "23:59:59.999999"),
        ("io.debezium.time.NanoTime", 80_000_123_456_789, "22:13:20.123456789"),
    ],
)
def test_times_are_exact(name: str, value: int, expected: str) -> None:
    """Dates and times convert to ISO text with every digit the producer sent."""
    assert converted(event(value, name)) == expected


TIME_TYPES = [
    "io.debezium.time.Date",
    "io.debezium.time.Timestamp",
    "io.debezium.time.MicroTimestamp",
    "io.debezium.time.NanoTimestamp",
    "io.debezium.time.Time",
    "io.debezium.time.MicroTime",
    "io.debezium.time.NanoTime",
]


@pytest.mark.parametrize("name", TIME_TYPES)
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "expected an integer, got a boolean true"),
        (1.5, "expected an integer, got a number 1.5"),
        ("19000", "expected an integer, got a string '19000'"),
        ([19000], "expected an integer, got an array"),
        ({"days": 1}, "expected an integer, got an object"),
        (10**30, "outside the years 1 to 9999|not a time of day"),
        (-(10**30), "outside the years 1 to 9999|not a time of day"),
        pytest.param(10**4000, "an integer of 13288 bits", id="10**4000"),
    ],
)
def test_bad_time_is_a_decode_error(name: str, value: Any, reason: str) -> None:
    """A time value of the wrong type or out of range is a DecodeError naming column and type."""
    with pytest.raises(DecodeError, match=rf"column 'v': bad {name} value: .*({reason})"):
        decode_debezium(event(value, name))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("io.debezium.time.MicroTime", 90_000_000_000),  # 25:00 would wrap to 01:00
        ("io.debezium.time.MicroTime", 86_400_000_001),
        ("io.debezium.time.Time", -1),
        ("io.debezium.time.NanoTime", 86_400_000_000_001),
        ("io.debezium.time.Date", 2932897),  # year 10000
        ("io.debezium.time.Date", -719163),  # year 0
        ("io.debezium.time.MicroTimestamp", 9223372036825200000),  # Debezium's +infinity
    ],
)
def test_time_out_of_range_is_not_wrapped(name: str, value: int) -> None:
    """A time past midnight or a date out of range is a DecodeError, never wrapped around."""
    with pytest.raises(DecodeError, match=r"outside the years|not a time of day"):
        decode_debezium(event(value, name))


def wrapped_schema(schema: Any) -> bytes:
    payload = {"op": "c", "source": {"table": "t"}, "after": {"id": 1, "v": 19000}}
    return json.dumps({"schema": schema, "payload": payload}).encode()


AFTER = {"type": "struct", "field": "after"}
DATE_COL = {"field": "v", "name": "io.debezium.time.Date"}


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ("a string", "debezium 'schema' must be an object, got a string"),
        ([AFTER], "debezium 'schema' must be an object, got an array"),
        (42, "debezium 'schema' must be an object"),
        ({"fields": "after"}, "'fields' of the schema must be an array, got a string"),
        ({"fields": {"after": {}}}, "'fields' of the schema must be an array, got an object"),
        ({"fields": [AFTER, "source"]}, "an entry of the schema is a string 'source'"),
        ({"fields": [None]}, "an entry of the schema is null"),
        ({"fields": [{**AFTER, "fields": 5}]}, "'fields' of 'after' must be an array"),
        ({"fields": [{**AFTER, "fields": [[DATE_COL]]}]}, "an entry of 'after' is an array"),
        ({"fields": [{**AFTER, "fields": [{**DATE_COL, "name": ["x"]}]}]}, "a 'name' in 'after'"),
        ({"fields": [{**AFTER, "fields": [{**DATE_COL, "name": 7}]}]}, "a 'name' in 'after'"),
        ({"fields": [{**AFTER, "fields": [{**DATE_COL, "field": ["v"]}]}]}, "has 'field' an array"),
        ({"fields": [{**AFTER, "fields": [{**DATE_COL, "field": None}]}]}, "has 'field' null"),
    ],
)
def test_malformed_schema_is_a_decode_error(schema: Any, reason: str) -> None:
    """A schema whose shape cannot say which columns are logical types is a DecodeError (the
    values would otherwise pass unconverted: a silently different value in a text column)."""
    with pytest.raises(DecodeError) as info:
        decode_debezium(wrapped_schema(schema))
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "schema",
    [
        None,  # schemas.enable=false style: no types, values as they are
        {"type": "struct"},
        {"fields": None},
        {"fields": []},
        {"fields": [{"field": "before", "fields": "ignored: not the image"}]},
        {"fields": [{**AFTER, "fields": None}]},
        {"fields": [{**AFTER, "fields": [{"field": "v", "name": "io.debezium.data.Json"}]}]},
        {"fields": [{**AFTER, "fields": [{"field": ["v"], "type": "int32"}]}]},
    ],
)
def test_schema_without_logical_types_leaves_values(schema: Any) -> None:
    """A schema that names no logical type for the row leaves its values as they are."""
    assert converted(wrapped_schema(schema)) == 19000


def test_logical_type_in_schema_but_not_in_row() -> None:
    """A logical column the row does not carry (or carries as null) is simply absent."""
    raw = event(None, params=SCALE_2)
    assert decode_debezium(raw) == ChangeEvent("t", Op.INSERT, {"id": 1, "v": None})
    schema = {"fields": [{**AFTER, "fields": [{"field": "gone", "name": DECIMAL}]}]}
    assert converted(wrapped_schema(schema)) == 19000
