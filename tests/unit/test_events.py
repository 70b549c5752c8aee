"""The decoders: message bytes -> ChangeEvent, None (tombstone) or DecodeError, never a crash."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cdcsync.errors import DecodeError
from cdcsync.events import (
    UNAVAILABLE,
    ChangeEvent,
    Op,
    decode,
    decode_auto,
    decode_cdc,
    decode_debezium,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"  # copies of ../shared/fixtures


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def envelope(operation: Any, data: Any = None, table: Any = "users", **extra: Any) -> bytes:
    obj: dict[str, Any] = {"table": table, "operation": operation, **extra}
    if data is not None:
        obj["data"] = data
    return body(obj)


def debezium(op: str, *, before: Any = None, after: Any = None, table: str = "customers") -> dict:
    return {
        "before": before,
        "after": after,
        "source": {"connector": "postgresql", "schema": "public", "table": table},
        "op": op,
        "ts_ms": 1465584025523,
    }


def wrapped(payload: Any, after_fields: list[dict[str, Any]] | None = None) -> dict:
    """A Debezium event with the ``schema``/``payload`` wrapper (schemas.enable=true)."""
    fields = after_fields or []
    return {
        "schema": {
            "type": "struct",
            "name": "srv.public.customers.Envelope",
            "fields": [
                {"type": "struct", "field": "before", "optional": True, "fields": fields},
                {"type": "struct", "field": "after", "optional": True, "fields": fields},
                {"type": "struct", "field": "source", "fields": []},
                {"type": "string", "field": "op"},
            ],
        },
        "payload": payload,
    }


# --- the cdc envelope ------------------------------------------------------------------------


def test_cdc_fixture_decodes_to_insert() -> None:
    """The original design's sample event decodes to an insert of its data into its table."""
    ev = decode_cdc(fixture("cdc-envelope-insert.json"))
    assert ev == ChangeEvent("users", Op.INSERT, {"id": 1, "name": "John Doe"})
    assert ev.unavailable == frozenset()


@pytest.mark.parametrize(
    ("operation", "op"),
    [
        ("insert", Op.INSERT),
        ("update", Op.UPDATE),
        ("upsert", Op.UPSERT),
        ("snapshot", Op.UPSERT),
        ("delete", Op.DELETE),
    ],
)
def test_cdc_operations(operation: str, op: Op) -> None:
    """Every envelope operation maps to its Op (``snapshot`` is an upsert)."""
    ev = decode_cdc(envelope(operation, {"id": 7, "name": "x"}))
    assert ev == ChangeEvent("users", op, {"id": 7, "name": "x"})


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (body({"operation": "insert", "data": {"id": 1}}), "table"),
        (envelope("insert", {"id": 1}, table=""), "table"),
        (envelope("insert", {"id": 1}, table=5), "table"),
        (body({"table": "users", "data": {"id": 1}}), "operation"),
        (envelope("merge", {"id": 1}), "unknown operation 'merge'"),
        (envelope(None, {"id": 1}), "unknown operation"),
        (envelope(["insert"], {"id": 1}), "unknown operation"),
        (envelope("insert"), "missing field 'data'"),
        (envelope("insert", [1, 2]), "must be a JSON object"),
        (envelope("insert", "id=1"), "must be a JSON object"),
        (body({"table": "users", "operation": "insert", "data": None}), "JSON object"),
        (envelope("insert", {}), "empty"),
        (body([{"table": "users"}]), "JSON object"),
        (b"null", "JSON object"),
        (b'{"table": "users", "operation": "insert", "data": {"id": 1}', "not valid JSON"),
        (b"\xff\xfe not utf-8", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"   \n", "not valid JSON"),
    ],
)
def test_cdc_rejects_bad_envelopes(raw: bytes, reason: str) -> None:
    """A malformed envelope raises DecodeError with a reason an operator can act on."""
    with pytest.raises(DecodeError, match=reason):
        decode_cdc(raw)


# --- Debezium --------------------------------------------------------------------------------


def test_debezium_create_fixture_with_schema_wrapper() -> None:
    """The documented create event (schema/payload wrapper) is an insert of the after image."""
    ev = decode_debezium(fixture("debezium-postgres-create.json"))
    assert ev == ChangeEvent(
        "customers",
        Op.INSERT,
        {"id": 1, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"},
    )


def test_debezium_update_fixture_without_wrapper() -> None:
    """The documented update event (bare payload) is an update carrying the after image."""
    ev = decode_debezium(fixture("debezium-postgres-update.json"))
    assert ev == ChangeEvent(
        "customers",
        Op.UPDATE,
        {
            "id": 1,
            "first_name": "Anne Marie",
            "last_name": "Kretchmar",
            "email": "annek@noanswer.org",
        },
    )


def test_debezium_delete_fixture_uses_before_image() -> None:
    """The documented delete event is a delete keyed by the before image."""
    ev = decode_debezium(fixture("debezium-postgres-delete.json"))
    assert ev == ChangeEvent("customers", Op.DELETE, {"id": 1})


@pytest.mark.parametrize("wrap", [False, True], ids=["bare", "wrapped"])
@pytest.mark.parametrize(
    ("code", "op"), [("c", Op.INSERT), ("u", Op.UPDATE), ("r", Op.UPSERT), ("d", Op.DELETE)]
)
def test_debezium_row_ops(code: str, op: Op, wrap: bool) -> None:
    """Ops c/u/r/d decode to insert/update/upsert/delete, with or without the wrapper."""
    row = {"id": 3, "name": "n"}
    event = (
        debezium(code, before=row, after=None)
        if code == "d"
        else debezium(code, before=None, after=row)
    )
    raw = body(wrapped(event) if wrap else event)
    assert decode_debezium(raw) == ChangeEvent("customers", op, row)


@pytest.mark.parametrize("wrap", [False, True], ids=["bare", "wrapped"])
def test_debezium_truncate(wrap: bool) -> None:
    """Op t decodes to a truncate of the source table with no row data."""
    event = {"source": {"table": "customers"}, "op": "t", "ts_ms": 1}
    ev = decode_debezium(body(wrapped(event) if wrap else event))
    assert ev == ChangeEvent("customers", Op.TRUNCATE, {})


@pytest.mark.parametrize(
    "raw",
    [b"", b"  \n", b"null", body({"schema": None, "payload": None})],
    ids=["empty", "blank", "null", "wrapped-null"],
)
def test_debezium_tombstone_is_none(raw: bytes) -> None:
    """A tombstone (empty body or null payload) carries no change and decodes to None."""
    assert decode_debezium(raw) is None


def test_debezium_unavailable_columns_are_removed_and_listed() -> None:
    """Unchanged-TOAST placeholders never reach data; their columns are listed as unavailable."""
    after = {"id": 1, "bio": UNAVAILABLE, "notes": UNAVAILABLE, "name": "Anne"}
    ev = decode_debezium(body(debezium("u", after=after)))
    assert ev is not None
    assert ev.data == {"id": 1, "name": "Anne"}
    assert ev.unavailable == frozenset({"bio", "notes"})
    assert UNAVAILABLE not in json.dumps(ev.data)


def test_debezium_unavailable_columns_with_schema_wrapper() -> None:
    """The placeholder is removed the same way when the event has the schema wrapper."""
    fields = [{"type": "string", "optional": True, "field": "bio"}]
    after = {"id": 1, "bio": UNAVAILABLE}
    ev = decode_debezium(body(wrapped(debezium("u", after=after), fields)))
    assert ev == ChangeEvent("customers", Op.UPDATE, {"id": 1}, frozenset({"bio"}))


LOGICAL_FIELDS = [
    {"type": "int32", "optional": False, "field": "id"},
    {"type": "int32", "optional": True, "name": "io.debezium.time.Date", "field": "born"},
    {
        "type": "int64",
        "optional": True,
        "name": "io.debezium.time.MicroTimestamp",
        "field": "seen",
    },
    {
        "type": "bytes",
        "optional": True,
        "name": "org.apache.kafka.connect.data.Decimal",
        "parameters": {"scale": "2", "connect.decimal.precision": "10"},
        "field": "price",
    },
    {
        "type": "bytes",
        "optional": True,
        "name": "org.apache.kafka.connect.data.Decimal",
        "parameters": {"scale": "2", "connect.decimal.precision": "10"},
        "field": "debt",
    },
]
LOGICAL_ROW = {
    "id": 1,
    "born": 19000,
    "seen": 1_700_000_000_123_456,
    "price": "MDk=",
    "debt": "z8c=",
}


def test_debezium_logical_types_converted_with_schema() -> None:
    """With the schema present, Date, MicroTimestamp and Decimal values become PostgreSQL text."""
    ev = decode_debezium(body(wrapped(debezium("c", after=LOGICAL_ROW), LOGICAL_FIELDS)))
    assert ev is not None
    assert ev.data == {
        "id": 1,
        "born": "2022-01-08",
        "seen": "2023-11-14T22:13:20.123456",
        "price": "123.45",
        "debt": "-123.45",
    }


def test_debezium_logical_types_in_delete_before_image() -> None:
    """Logical types of the before image are converted too (a delete keyed by a date)."""
    before = {"id": 1, "born": 0}
    ev = decode_debezium(body(wrapped(debezium("d", before=before), LOGICAL_FIELDS)))
    assert ev == ChangeEvent("customers", Op.DELETE, {"id": 1, "born": "1970-01-01"})


def test_debezium_logical_nulls_stay_null() -> None:
    """A null value of a logical-type column stays null."""
    row = {"id": 1, "born": None, "seen": None, "price": None, "debt": None}
    ev = decode_debezium(body(wrapped(debezium("c", after=row), LOGICAL_FIELDS)))
    assert ev is not None
    assert ev.data == row


def test_debezium_without_schema_leaves_values_alone() -> None:
    """Without a schema there is no type information, so values pass through unchanged."""
    ev = decode_debezium(body(debezium("c", after=LOGICAL_ROW)))
    assert ev is not None
    assert ev.data == LOGICAL_ROW


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"id": 1, "price": "!!not base64!!"}, "price"),
        ({"id": 1, "seen": 9 * 10**18}, "seen"),
        ({"id": 1, "born": 10**12}, "born"),
    ],
)
def test_debezium_bad_logical_value_is_decode_error(row: dict, reason: str) -> None:
    """A logical value that cannot be converted is a DecodeError naming the column."""
    with pytest.raises(DecodeError, match=reason):
        decode_debezium(body(wrapped(debezium("c", after=row), LOGICAL_FIELDS)))


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (debezium("x", after={"id": 1}), "unknown debezium op 'x'"),
        ({"after": {"id": 1}, "source": {"table": "t"}}, "unknown debezium op None"),
        ({**debezium("c", after={"id": 1}), "source": None}, "source"),
        ({**debezium("c", after={"id": 1}), "source": {"schema": "public"}}, "source.table"),
        (debezium("c", after=None), "without 'after'"),
        (debezium("d", before=None), "without 'before'"),
        (debezium("u", after=[1, 2]), "must be a JSON object"),
        (debezium("c", after={}), "empty"),
        ([1, 2, 3], "JSON object"),
        ("just a string", "JSON object"),
        (wrapped("payload is a string"), "JSON object"),
    ],
)
def test_debezium_rejects_bad_events(obj: Any, reason: str) -> None:
    """A malformed Debezium event raises DecodeError with its reason."""
    with pytest.raises(DecodeError, match=reason):
        decode_debezium(body(obj))


def test_debezium_rejects_invalid_json() -> None:
    """A body that is not JSON raises DecodeError."""
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_debezium(b'{"op": "c", ')


# --- auto ------------------------------------------------------------------------------------


def test_auto_detects_each_message_on_its_own() -> None:
    """In one stream, each message is decoded by its own format (envelope, Debezium, both)."""
    messages = [
        fixture("cdc-envelope-insert.json"),
        fixture("debezium-postgres-create.json"),
        envelope("snapshot", {"id": 2}),
        fixture("debezium-postgres-update.json"),
        b"",
        fixture("debezium-postgres-delete.json"),
        body({"schema": None, "payload": None}),
        envelope("delete", {"id": 1}),
    ]
    decoded = [decode_auto(m) for m in messages]
    assert [(e.table, e.op) if e else None for e in decoded] == [
        ("users", Op.INSERT),
        ("customers", Op.INSERT),
        ("users", Op.UPSERT),
        ("customers", Op.UPDATE),
        None,
        ("customers", Op.DELETE),
        None,
        ("users", Op.DELETE),
    ]
    assert [decode(m, "auto") for m in messages] == decoded


def test_auto_matches_the_explicit_decoders() -> None:
    """auto gives the same event as the explicit decoder of the message's format."""
    for name in ("debezium-postgres-create.json", "debezium-postgres-update.json"):
        assert decode_auto(fixture(name)) == decode_debezium(fixture(name))
    raw = fixture("cdc-envelope-insert.json")
    assert decode_auto(raw) == decode_cdc(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (body({"table": "users", "data": {"id": 1}}), "unknown event format"),
        (body([1, 2]), "unknown event format"),
        (b"42", "unknown event format"),
        (envelope("merge", {"id": 1}), "unknown operation"),
        (body(debezium("x", after={"id": 1})), "unknown debezium op"),
        (b"{not json", "not valid JSON"),
    ],
)
def test_auto_rejects_unknown_formats(raw: bytes, reason: str) -> None:
    """A message that is neither format, or a broken one of either, raises DecodeError."""
    with pytest.raises(DecodeError, match=reason):
        decode_auto(raw)


# --- hostile input ---------------------------------------------------------------------------

DEPTH = 100_000
DEEP_BODIES = {
    "lists": b"[" * DEPTH + b"]" * DEPTH,
    "objects": b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
    "in-cdc-data": b'{"table":"t","operation":"insert","data":{"id":1,"x":'
    + b"[" * DEPTH
    + b"]" * DEPTH
    + b"}}",
    "in-debezium-after": b'{"op":"c","source":{"table":"t"},"after":{"id":1,"x":'
    + b"[" * DEPTH
    + b"]" * DEPTH
    + b"}}",
    "wrapped-payload": b'{"schema":null,"payload":' + b"[" * DEPTH + b"]" * DEPTH + b"}",
}


@pytest.mark.parametrize("fmt", ["cdc", "debezium", "auto"])
@pytest.mark.parametrize("shape", sorted(DEEP_BODIES))
def test_deeply_nested_json_is_a_decode_error(fmt: str, shape: str) -> None:
    """100k levels of nesting are rejected with DecodeError, never RecursionError or a crash."""
    with pytest.raises(DecodeError):
        decode(DEEP_BODIES[shape], fmt)


@pytest.mark.parametrize("fmt", ["cdc", "auto"])
def test_moderately_nested_values_are_kept(fmt: str) -> None:
    """A nested JSON value in a column (within sane depth) is passed through as data."""
    value: Any = 1
    for _ in range(200):
        value = [value]
    ev = decode(envelope("insert", {"id": 1, "doc": value}), fmt)
    assert ev is not None
    assert ev.data == {"id": 1, "doc": value}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12345678901234567.89", Decimal("12345678901234567.89")),
        ("1234567890123456789012", 1234567890123456789012),
        ("0.1000000000000000055511", Decimal("0.1000000000000000055511")),
    ],
)
def test_long_numbers_stay_exact(text: str, expected: Any) -> None:
    """A number a float or int64 would round arrives digit for digit."""
    ev = decode_cdc(
        b'{"table":"t","operation":"insert","data":{"id":1,"v":' + text.encode() + b"}}"
    )
    assert ev is not None
    assert ev.data["v"] == expected
    assert str(ev.data["v"]) == text


def test_short_numbers_stay_fast_floats() -> None:
    """Ordinary numbers (and digit runs in strings like timestamps) take the fast parser."""
    ev = decode_cdc(
        b'{"table":"t","operation":"insert",'
        b'"data":{"id":1,"v":55025.9,"at":"2026-01-01T00:00:00.000000Z"}}'
    )
    assert ev is not None
    assert type(ev.data["v"]) is float
