"""Numbers are exact or a DecodeError: never a different value on the way to PostgreSQL.

Issue 17: ``1e-400`` into a ``numeric`` column was stored as 0, because orjson reads it as a
float that underflows. Each case goes through the decoder and the JSON document the sink
sends (``rows_json``), and the number in that document must be the number in the message.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from cdcsync.errors import DecodeError
from cdcsync.events import decode_auto, decode_cdc
from cdcsync.sinks.postgres.values import rows_json


def message(number: bytes, extra: bytes = b"") -> bytes:
    return b'{"table":"t","operation":"insert","data":{"id":1,"v":%s%s}}' % (number, extra)


def sent(raw: bytes) -> Any:
    """The value of ``v`` in the document PostgreSQL receives, its digits kept."""
    ev = decode_cdc(raw)
    assert ev is not None
    [row] = json.loads(rows_json([ev.data]), parse_float=Decimal, parse_int=Decimal)
    return row["v"]


NUMBERS = [
    "1e-400",
    "1E-400",
    "-1e-400",
    "1e400",
    "-1.5E+400",
    "123456789e-330",  # a subnormal: a float keeps 3 of its 9 digits
    "2.5e-310",
    "4.9e-324",
    "1e-324",  # below the smallest subnormal: 0.0 as a float
    "1e-0400",
    "5e-00000000000000000400",
    "1.8e308",  # just past the largest float
    "1.7976931348623157e308",
    "2.2250738585072014e-308",
    "1.23456789012345678e5",
    "1.0000000000000001",
    "12345678901234567.89",
    "0.1000000000000000055511",
    "1e-5",
    "1e22",
    "0.1",
    "-0.5",
    "123456789012345",
    "9007199254740993",
    "-9223372036854775809",
    "18446744073709551616",
    "1e999999999999999999",
]


@pytest.mark.parametrize("text", NUMBERS)
def test_numbers_reach_postgresql_exactly(text: str) -> None:
    """The number in the document PostgreSQL receives equals the number in the message."""
    assert Decimal(str(sent(message(text.encode())))) == Decimal(text)


@pytest.mark.parametrize("text", ["0e-400", "-0.0e-999", "0E-20000", "0.000e+5000"])
def test_zero_with_any_exponent_is_zero(text: str) -> None:
    """A zero stays zero, with no scale PostgreSQL would refuse (0E-20000 overflows numeric)."""
    assert sent(message(text.encode())) == 0


def test_an_int_beyond_pythons_digit_limit_is_exact() -> None:
    """An integer of 5000 digits (Python's int() refuses more than 4300) is exact."""
    digits = "9" * 5000
    assert str(sent(message(digits.encode()))) == digits


@pytest.mark.parametrize("text", ["1e99999999999999999999", "-1e-99999999999999999999"])
def test_an_exponent_beyond_any_numeric_is_a_decode_error(text: str) -> None:
    """An exponent no decimal type can hold is a DecodeError naming the number."""
    with pytest.raises(DecodeError, match=f"number {text} is too large or too small"):
        decode_cdc(message(text.encode()))


# The exact parser runs for these messages; it must refuse what the fast one refuses.
LONG = b"12345678901234567"
TINY = b"1e-400"


@pytest.mark.parametrize("number", [LONG, TINY, b"1e400"], ids=["long", "tiny", "huge"])
@pytest.mark.parametrize(
    "raw",
    [
        b'{"table":"t","operation":"insert","data":{"id":1,"v":%s,"t":"\\ud800"}}',
        b'{"table":"t","operation":"insert","data":{"id":1,"v":%s,"t":"\\udfff x"}}',
        b'{"table":"t","operation":"insert","data":{"id":1,"v":%s,"\\ud800":1}}',
        b'{"table":"t","operation":"insert","data":{"id":1,"v":[%s,["\\ud83d"]]}}',
        b'{"table":"t","operation":"insert","data":{"id":1,"v":%s,"t":"\xed\xa0\x80"}}',
        b'{"table":"t","operation":"insert","data":{"id":1,"v":%s,"t":"\xff"}}',
        b'\xef\xbb\xbf{"table":"t","operation":"insert","data":{"id":1,"v":%s}}',
        b'{"table":"t","operation":"insert","data":{"id":1,"v":%s,"w":NaN}}',
        b'{"table":"t","operation":"insert","data":{"id":1,"v":%s,"w":-Infinity}}',
        b'{"table":"t","operation":"insert","data":{"id":1,"v":%s}',
        b'{"table":"t","operation":"insert","data":{"id":1,"v":%s}}}',
        b'{"table":"t","operation":"insert","data":{"id":1,"v":0%s}}',
    ],
    ids=[
        "lone-high",
        "lone-low",
        "lone-in-key",
        "lone-nested",
        "encoded-surrogate",
        "invalid-utf8",
        "bom",
        "nan",
        "infinity",
        "truncated",
        "trailing",
        "leading-zero",
    ],
)
def test_the_exact_parser_refuses_what_orjson_refuses(number: bytes, raw: bytes) -> None:
    """A message that takes the exact path is held to the same JSON as every other."""
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_auto(raw % number)


@pytest.mark.parametrize("number", [LONG, TINY])
def test_the_exact_parser_accepts_surrogate_pairs_and_utf8(number: bytes) -> None:
    """A surrogate pair (one emoji) and UTF-8 text are fine on the exact path too."""
    raw = b'{"table":"t","operation":"insert","data":{"id":1,"v":%s,"t":"\\ud83d\\ude00 \xc3\xa9"}}'
    ev = decode_auto(raw % number)
    assert ev is not None
    assert ev.data["t"] == "\U0001f600 é"


def test_utf16_is_not_json() -> None:
    """UTF-16 (which json.loads of bytes would detect and accept) is refused on every path."""
    for number in (b"1", LONG, TINY):
        text = message(number).decode().encode("utf-16-le")
        with pytest.raises(DecodeError, match="not valid JSON"):
            decode_auto(text)
