"""cdcsync.progress: a bar redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from cdcsync.progress import Progress


def test_terminal_bar_is_redrawn_in_place_and_ends_full() -> None:
    """On a terminal each redraw returns to the line start and clears it; close ends the line."""
    out = io.StringIO()
    with Progress(4, "copying", stream=out, tty=True, interval=0) as p:
        for _ in range(4):
            p.advance()
    text = out.getvalue()
    frames = text.split("\r\x1b[K")[1:]
    assert len(frames) == 5  # four advances and the final frame
    assert frames[0].startswith("copying  [######------------------]  1/4 (25%)")
    assert frames[-1].startswith("copying  [########################]  4/4 (100%)")
    assert text.endswith("\n") and text.count("\n") == 1


def test_plain_lines_off_a_terminal_with_note_and_final_summary() -> None:
    """Off a terminal: one full line per redraw, no control characters, a final `in N s` line."""
    out = io.StringIO()
    p = Progress(None, "events", stream=out, tty=False, interval=0)
    p.note("written 7")
    p.advance(10)
    p.close()
    p.close()  # idempotent
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("events  10  ") and lines[0].endswith("written 7")
    assert " in " in lines[1] and lines[1].startswith("events  10  ")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_write_keeps_the_bar_below_printed_lines() -> None:
    """A line written while the bar shows clears the bar, prints, and redraws the bar."""
    out = io.StringIO()
    p = Progress(2, "x", stream=out, tty=True, interval=0)
    p.advance()
    p.write("hello")
    assert "\r\x1b[Khello\nx  [############------------]  1/2 (50%)" in out.getvalue()
    p.close()


def test_default_interval_throttles_redraws() -> None:
    """Many quick advances draw few frames: drawing never dominates the work measured."""
    out = io.StringIO()
    with Progress(100_000, "n", stream=out, tty=False) as p:
        for _ in range(100_000):
            p.advance()
    assert out.getvalue().count("\n") <= 3
