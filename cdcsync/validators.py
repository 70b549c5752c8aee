"""The configuration's value types: strictyaml validators that resolve ``${VAR}`` and
``${VAR:-default}`` after parsing (so a variable's value can never change the structure of
the document), check what they hold, and carry the reference text of their key."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

import strictyaml as sy

__all__ = ["CheckedStr", "EnvBool", "EnvEnum", "EnvInt", "EnvStr", "described"]

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(chunk: Any) -> str:
    text: str = chunk.contents

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        value = os.environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                chunk.expecting_but_found(
                    "while resolving environment variables",
                    f"${{{name}}} is not set (set it, or write ${{{name}:-default}})",
                )
            return default
        return value

    return _VAR.sub(sub, text)


class EnvStr(sy.ScalarValidator):
    """A string with ``${VAR}`` / ``${VAR:-default}`` resolved."""

    def validate_scalar(self, chunk: Any) -> str:
        return _interpolate(chunk)

    def to_yaml(self, data: Any) -> str:
        return str(data)


class CheckedStr(EnvStr):
    """An :class:`EnvStr` that ``check`` accepts: it returns None, or what is wrong with the
    value and how to fix it (never the value itself when it may hold a secret).

    The error names the value's own line, and ``check`` refuses what ``serve`` would.
    """

    def __init__(self, what: str, check: Callable[[str], str | None]) -> None:
        self._what, self._check = what, check

    def validate_scalar(self, chunk: Any) -> str:
        value = super().validate_scalar(chunk)
        problem = self._check(value)
        if problem is not None:
            chunk.expecting_but_found(f"when expecting {self._what}", problem)
        return value


class EnvInt(sy.ScalarValidator):
    """An integer, possibly given as ``${VAR:-100}``, with optional bounds."""

    def __init__(self, minimum: int | None = None, maximum: int | None = None) -> None:
        self._min, self._max = minimum, maximum

    def validate_scalar(self, chunk: Any) -> int:
        text = _interpolate(chunk).strip().replace("_", "")
        if not re.fullmatch(r"[-+]?\d+", text):
            chunk.expecting_but_found("when expecting an integer", f"found {text!r}")
        value = int(text)
        if self._min is not None and value < self._min:
            chunk.expecting_but_found(f"when expecting an integer >= {self._min}")
        if self._max is not None and value > self._max:
            chunk.expecting_but_found(f"when expecting an integer <= {self._max}")
        return value

    def to_yaml(self, data: Any) -> str:
        return str(data)


class EnvBool(sy.ScalarValidator):
    def validate_scalar(self, chunk: Any) -> bool:
        text = _interpolate(chunk).strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        chunk.expecting_but_found("when expecting a boolean (true or false)", f"found {text!r}")
        raise AssertionError  # unreachable: expecting_but_found raises

    def to_yaml(self, data: Any) -> str:
        return "true" if data else "false"


def EnvEnum(*choices: str) -> sy.ScalarValidator:
    class _Enum(sy.ScalarValidator):
        choices: tuple[str, ...] = ()

        def validate_scalar(self, chunk: Any) -> str:
            text = _interpolate(chunk).strip()
            if text not in choices:
                chunk.expecting_but_found(
                    f"when expecting one of: {', '.join(choices)}", f"found {text!r}"
                )
            return text

        def to_yaml(self, data: Any) -> str:
            return str(data)

    enum = _Enum()
    enum.choices = choices
    return enum


_V = TypeVar("_V", bound=sy.Validator)


def described(validator: _V, doc: str, example: str | None = None, kind: str | None = None) -> _V:
    """Attach the reference text to a schema validator, next to the key it validates.

    ``python -m cdcsync.reference`` builds docs/reference/configuration.md from these, so
    the reference cannot drift from what the schema accepts. ``example`` is a YAML value
    (the default is shown when absent); ``kind`` overrides the type derived from the validator.
    """
    validator.doc = doc
    validator.example = example
    validator.kind = kind
    return validator
