"""A dependency-free progress display for long operations.

On a terminal it redraws one line in place (a bar when the total is known, a counter
otherwise); anywhere else (a pipe, a CI log) it prints a plain line every few seconds and
one at the end, so logs stay readable::

    with Progress(10_000, "publishing") as p:
        for item in work:
            send(item)
            p.advance()

Not thread-safe: advance it from one thread.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Self, TextIO

__all__ = ["Progress"]

_BAR_WIDTH = 24


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def _rate(per_s: float) -> str:
    return f"{per_s:,.0f}/s" if per_s >= 10 else f"{per_s:.1f}/s"


class Progress:
    """Progress of ``total`` steps (``None``: open-ended) under ``label``.

    ``interval`` is the time between redraws: 0.1 s on a terminal, 2 s elsewhere by
    default. ``note(text)`` shows extra status after the counts; ``write(line)`` prints a
    line without garbling the bar.
    """

    def __init__(
        self,
        total: int | None,
        label: str,
        *,
        stream: TextIO | None = None,
        interval: float | None = None,
        tty: bool | None = None,
    ) -> None:
        self.total = total if total is None or total > 0 else None
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.interval = interval if interval is not None else (0.1 if tty else 2.0)
        self.count = 0
        self._note = ""
        self._started = time.monotonic()
        self._last_draw = self._started
        self._drawn = False
        self._closed = False

    # -- public API -----------------------------------------------------------------------

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more steps done; redraws when ``interval`` has passed."""
        self.count += n
        now = time.monotonic()
        if now - self._last_draw >= self.interval:
            self._draw(now)

    def note(self, text: str) -> None:
        """Extra status shown after the counts (e.g. ``written 1,200``) from the next redraw."""
        self._note = text

    def write(self, line: str) -> None:
        """Print a line of text; on a terminal the bar is redrawn below it."""
        redraw = self.tty and self._drawn and not self._closed
        if redraw:
            self.stream.write("\r\x1b[K")
        self.stream.write(line.rstrip("\n") + "\n")
        if redraw:
            self.stream.write(self._line(time.monotonic()))
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state (always, on a terminal and off it) and end the line."""
        if self._closed:
            return
        self._closed = True
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\x1b[K" + self._line(now) + "\n")
        else:
            self.stream.write(self._line(now, final=True) + "\n")
        self.stream.flush()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- drawing --------------------------------------------------------------------------

    def _draw(self, now: float) -> None:
        self._last_draw = now
        if self.tty:
            self.stream.write("\r\x1b[K" + self._line(now))
            self._drawn = True
        else:
            self.stream.write(self._line(now) + "\n")
        self.stream.flush()

    def _line(self, now: float, *, final: bool = False) -> str:
        elapsed = max(now - self._started, 1e-9)
        per_s = self.count / elapsed
        parts = [self.label]
        if self.total is not None:
            frac = min(self.count / self.total, 1.0)
            if self.tty:
                filled = int(frac * _BAR_WIDTH)
                parts.append("[" + "#" * filled + "-" * (_BAR_WIDTH - filled) + "]")
            parts.append(f"{self.count:,}/{self.total:,} ({frac:.0%})")
        else:
            parts.append(f"{self.count:,}")
        parts.append(_rate(per_s))
        if final:
            parts.append(f"in {elapsed:.1f} s")
        elif self.total is not None and 0 < per_s and self.count < self.total:
            parts.append(f"eta {_duration((self.total - self.count) / per_s)}")
        else:
            parts.append(_duration(elapsed))
        if self._note:
            parts.append(self._note)
        return "  ".join(parts)
