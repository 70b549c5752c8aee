"""Structured logging, configured once: JSON lines in production, console on a TTY.

Libraries that log through the standard library (hypercorn, quart, asyncio) go through the
same renderer: with JSON, every line is one JSON object, a traceback included as a field.
Error texts are scrubbed of the configuration's secrets (:func:`hide`), whoever wrote them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from cdcsync.redact import scrub_fields

__all__ = ["configure", "hide"]

# Fields holding free text (exception messages, tracebacks) that may quote a secret.
ERROR_FIELDS = frozenset({"error", "errors", "exception", "reason", "reasons", "last_error"})
_hidden: tuple[str, ...] = ()


def hide(secrets: Iterable[str]) -> None:
    """Scrub these secrets from the error texts of every later log line."""
    global _hidden
    _hidden = tuple(sorted({*_hidden, *(s for s in secrets if s)}, key=len, reverse=True))


def _scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if not _hidden:
        return event
    scrubbed: MutableMapping[str, Any] = scrub_fields(event, _hidden, ERROR_FIELDS)
    return scrubbed


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=repr).decode()


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog; ``fmt`` is ``json``, ``console`` or ``auto`` (console on a TTY)."""
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    # Libraries that log through the standard library: warnings and errors, same format.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
                stamp,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _scrub,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
