"""Dead-letter reasons: the error text with what varies per event masked, and grouping.

The same failure for 44 different values is one reason, so an operator sees what to fix
(the names of tables, columns, constraints and types stay) rather than 44 lines. Pure
functions, shared by every destination: the grouping runs on the newest ``WINDOW`` letters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

__all__ = ["WINDOW", "ReasonGroup", "Reasons", "group", "mask"]

WINDOW = 10_000  # reasons are grouped among this many newest letters of a destination

# What varies from one event to the next in an ``error`` text, masked with "…" (in this
# order): values and numbers go, the names that say what to fix stay.
_MASKS = (
    (re.compile(r"=\([^)]*\)"), "=(…)"),  # a key's values: Key (email)=(…) already exists
    (re.compile(r"Failing row contains \(.*?\)\."), "Failing row contains (…)."),
    (re.compile(r'(: |value )"[^"]*"'), r'\1"…"'),  # a quoted value: for type integer: "…"
    # MySQL quotes values with single quotes: Incorrect integer value: '…', Duplicate entry '…'
    (re.compile(r"(: |entry )'[^']*'"), r"\1'…'"),
    (re.compile(r"(\W)(-?\d+(\.\d+)?|0x[0-9a-fA-F]+)\b"), r"\1…"),  # numbers, bytes, positions
)


def mask(error: str) -> str:
    """``error`` with the values and numbers that differ between events replaced by "…"."""
    for pattern, replacement in _MASKS:
        error = pattern.sub(replacement, error)
    return error


@dataclass(frozen=True)
class ReasonGroup:
    reason: str
    count: int
    example: str  # the newest letter's ``error``, unmasked
    table_name: str | None  # the newest letter's table
    last_failed_at: datetime


@dataclass(frozen=True)
class Reasons:
    total: int  # dead letters of the (flow, destination)
    grouped: int  # the newest of them that were grouped (at most WINDOW)
    distinct: int  # distinct reasons among those, of which ``groups`` holds the commonest
    groups: list[ReasonGroup]


def group(
    total: int, newest: Iterable[tuple[int, str, str | None, datetime]], limit: int
) -> Reasons:
    """Group letters given newest first as (id, error, table, failed_at), commonest first."""
    counts: dict[str, int] = {}
    first: dict[str, tuple[str, str | None, datetime]] = {}
    n = 0
    for _id, error, table, failed_at in newest:
        n += 1
        reason = mask(error)
        counts[reason] = counts.get(reason, 0) + 1
        if reason not in first:
            first[reason] = (error, table, failed_at)
    ranked = sorted(counts, key=lambda r: (-counts[r], r))
    groups = [ReasonGroup(r, counts[r], *first[r]) for r in ranked[:limit]]
    return Reasons(total, n, len(counts), groups)
