"""Property tests of the decoders: any bytes in, a ChangeEvent, a skip or a DecodeError out.

The flow turns a DecodeError into the message's dead letter; any other exception was a flow
restart on the same message, forever (issue 17). Hypothesis generates arbitrary JSON built
from the words the decoders look for, and near-valid Debezium events whose schemas,
logical-type parameters and values are random: that is where such bugs hid. The budget is
fixed and the examples derandomized, so CI runs the same cases in a few seconds.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcsync.errors import DecodeError
from cdcsync.events import ChangeEvent, _loads_exact, decode
from cdcsync.logical_types import LOGICAL_TYPES
from cdcsync.sinks.postgres.values import rows_json

BUDGET = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FORMATS = ("cdc", "debezium", "auto")


def check(raw: bytes) -> None:
    """Every decoder gives an event, a skip or a DecodeError with a reason; never another
    exception. An event's row must also be writable as the sink's JSON document."""
    for fmt in FORMATS:
        try:
            ev = decode(raw, fmt)
        except DecodeError as exc:
            assert str(exc).strip(), "a dead letter needs a reason"
            continue
        assert ev is None or isinstance(ev, ChangeEvent)
        if ev is not None:
            assert isinstance(ev.table, str) and ev.table
            assert isinstance(ev.data, dict)
            rows_json([ev.data])


# --------------------------------------------------------------------------- JSON as text

WORDS = [
    "table", "operation", "data", "op", "payload", "schema", "before", "after", "source",
    "fields", "field", "name", "parameters", "scale", "type", "id", "v", "insert", "delete",
    "c", "u", "d", "r", "t", *sorted(LOGICAL_TYPES), "__debezium_unavailable_value",
]  # fmt: skip
DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=24)
NUMBER = st.builds(
    "{}{}{}{}".format,
    st.sampled_from(["", "-"]),
    st.integers(0, 10**25).map(str),
    st.just("") | DIGITS.map(".{}".format),
    st.just("")
    | st.builds(
        "{}{}{}".format,
        st.sampled_from("eE"),
        st.sampled_from(["", "+", "-"]),
        DIGITS.map(lambda d: d[:6]),
    ),
)
# Exponents around a float's limits, where rounding to a float goes wrong.
EDGE_NUMBER = st.builds(
    "{}{}{}e{}".format,
    st.sampled_from(["", "-"]),
    st.integers(1, 10**15).map(str),
    st.just("") | DIGITS.map(lambda d: "." + d[:5]),
    st.integers(-400, 400),
)
STRING = st.one_of(
    st.sampled_from(WORDS),
    st.text(max_size=10),
    st.sampled_from(["\ud800", "\U0001f600", "AQ==", "MDk=", "!!", ""]),
).map(lambda s: json.dumps(s, ensure_ascii=False))
SCALAR = st.one_of(NUMBER, EDGE_NUMBER, STRING, st.sampled_from(["null", "true", "false"]))
KEY = st.one_of(st.sampled_from(WORDS), st.text(max_size=6)).map(json.dumps)
JSON_TEXT = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(KEY, inner), max_size=6).map(
            lambda kvs: "{" + ",".join(f"{k}:{v}" for k, v in kvs) + "}"
        ),
    ),
    max_leaves=20,
)


@BUDGET
@given(JSON_TEXT)
def test_any_json_is_an_event_a_skip_or_a_decode_error(text: str) -> None:
    """Arbitrary JSON, spelled with the decoders' own words and edge numbers."""
    check(text.encode("utf-8", "surrogatepass"))


@BUDGET
@given(st.binary(max_size=200))
def test_any_bytes_are_an_event_a_skip_or_a_decode_error(raw: bytes) -> None:
    """Arbitrary bytes."""
    check(raw)


# --------------------------------------------------------------------------- near-valid Debezium

JSON_VALUE = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**40), 10**40),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def junk(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, JSON_VALUE)


COLUMNS = st.sampled_from(["id", "v", "w"])
# Decimal has the most to go wrong (base64, the scale parameter): drawn as often as the rest.
NAMES = [*sorted(LOGICAL_TYPES), *["org.apache.kafka.connect.data.Decimal"] * 10]
SCALE = st.one_of(
    st.integers(-(2**40), 2**40),
    st.integers(-(2**40), 2**40).map(str),
    st.sampled_from(["2", "-3", "100000000", "2147483648", "1e3", " 2", "+4", "", "0x10"]),
    JSON_VALUE,
)
PARAMETERS = st.one_of(
    st.fixed_dictionaries({"scale": SCALE}, optional={"connect.decimal.precision": SCALE}),
    st.dictionaries(st.text(max_size=6), JSON_VALUE, max_size=3),
    JSON_VALUE,
)
VALUE = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 86_400_000_000, 2932897, 9223372036825200000, 10**30]),
    st.binary(min_size=1, max_size=24).map(lambda b: base64.b64encode(b).decode()),
    st.sampled_from(["MD!k=", "MDk", "", "__debezium_unavailable_value"]),
    JSON_VALUE,
)


def debezium(broken: bool) -> st.SearchStrategy[bytes]:
    """Debezium events whose logical-type parameters and values are random; with ``broken``,
    any node of the schema and the payload may also be any JSON value.

    A valid skeleton gets every event to the conversions, past the checks that a wholly
    random event fails early; the broken one tries the shapes around them.
    """
    node = junk if broken else (lambda strategy: strategy)
    column = node(
        st.fixed_dictionaries(
            {"field": node(COLUMNS), "name": node(st.sampled_from(NAMES))},
            optional={"parameters": PARAMETERS, "type": st.sampled_from(["bytes", "int32"])},
        )
    )
    image = node(
        st.fixed_dictionaries(
            {
                "field": node(st.sampled_from(["after", "before"])),
                "fields": node(st.lists(column, min_size=1, max_size=4)),
            },
            optional={"type": st.just("struct")},
        )
    )
    schema = node(st.fixed_dictionaries({"fields": node(st.lists(image, min_size=1, max_size=3))}))
    row = node(st.dictionaries(COLUMNS, VALUE, min_size=1, max_size=3))
    payload = st.fixed_dictionaries(
        {
            "op": node(st.sampled_from(["c", "u", "d", "r"])),
            "source": node(st.fixed_dictionaries({"table": node(st.just("t"))})),
            "after": row,
            "before": row,
        },
    )
    wrapped = st.builds(lambda s, p: {"schema": s, "payload": p}, schema, payload)
    return (wrapped | payload if broken else wrapped).map(lambda e: json.dumps(e).encode())


@BUDGET
@given(debezium(broken=False))
def test_debezium_logical_types_are_an_event_or_a_decode_error(raw: bytes) -> None:
    """Debezium events with random logical types, parameters (any shape) and values."""
    check(raw)


@BUDGET
@given(debezium(broken=True))
def test_near_valid_debezium_is_an_event_a_skip_or_a_decode_error(raw: bytes) -> None:
    """Debezium events with random schema and payload shapes around the logical types."""
    check(raw)


# --------------------------------------------------------------------------- exactness


@BUDGET
@given(NUMBER | EDGE_NUMBER)
def test_a_number_reaches_postgresql_exactly_or_is_a_decode_error(text: str) -> None:
    """The number in the document the sink sends is the number in the message."""
    raw = b'{"table":"t","operation":"insert","data":{"id":1,"v":%s}}' % text.encode()
    try:
        ev = decode(raw, "auto")
    except DecodeError:
        return
    assert ev is not None
    [row] = json.loads(rows_json([ev.data]), parse_float=Decimal, parse_int=Decimal)
    assert Decimal(str(row["v"])) == Decimal(text)


JSONISH = st.text(alphabet='{}[]":,\\/0123456789-+eE.ntrufalsbd \t\ufeff\ud800\x00é', max_size=30)


@BUDGET
@given(JSON_TEXT | JSONISH)
def test_the_exact_parser_accepts_what_orjson_accepts(text: str) -> None:
    """The exact path (long or tiny numbers) is held to orjson's JSON: same yes, same no."""
    raw = text.encode("utf-8", "surrogatepass")
    try:
        orjson.loads(raw)
        fast = True
    except orjson.JSONDecodeError as exc:
        if "number is infinity" in str(exc):
            return  # orjson cannot hold it; that is what the exact path is for
        fast = False
    try:
        _loads_exact(raw)
        exact = True
    except DecodeError:
        exact = False
    assert exact == fast
