"""decode_batch: whatever decoding a message raises, it is that message's dead letter."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from cdcsync.events import ChangeEvent, Op, decode_auto
from cdcsync.flow import stages
from cdcsync.flow.batch import Delivery

GOOD = b'{"table":"t","operation":"insert","data":{"id":1}}'


@pytest.mark.parametrize("error", [KeyError("x"), AttributeError("no"), ArithmeticError()])
def test_a_decoder_bug_is_the_messages_dead_letter(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """An exception other than DecodeError (a decoder bug) costs its message, not the flow:
    raised out of the fan-out it restarted the flow onto the same message, forever."""

    def buggy(data: bytes) -> Any:
        if data == b"boom":
            raise error
        return decode_auto(data)

    monkeypatch.setitem(stages.FORMATS, "auto", buggy)
    batch = [Delivery(1, "s", GOOD), Delivery(2, "s", b"boom"), Delivery(3, "s", GOOD)]
    with capture_logs() as logs:
        items = stages.decode_batch(batch, "auto", 1 << 20)
    assert [i.delivery.seq for i in items] == [1, 2, 3]
    assert items[0].event == items[2].event == ChangeEvent("t", Op.INSERT, {"id": 1})
    assert items[1].event is None
    assert items[1].error == f"cannot decode: {type(error).__name__}: {error}"
    [logged] = [e for e in logs if e["event"] == "decoder failed unexpectedly"]
    assert logged["log_level"] == "error" and logged["seq"] == 2 and logged["exc_info"] is error
