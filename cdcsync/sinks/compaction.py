"""Batch planning: a batch of events -> a few set-based statements with one-by-one effect.

Pure logic, no I/O. Events are grouped into *waves*: wave ``k`` holds the ``k``-th
event of every key in the batch, so no statement touches a key twice and every
event reaches PostgreSQL with its own values. That is what makes a batch equal
to applying its events one by one, including the failures: a bad value or a
constraint violation in an event is reported for that event (and dead-lettered)
even when a later event of the same key would have hidden it in a folded row.
Most batches have one wave; a key updated ``n`` times in a batch costs ``n``.

A truncate is a barrier: what came before it is applied (and then truncated),
what comes after starts new waves.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cdcsync.events import ChangeEvent, Op

__all__ = ["KeyOp", "Kind", "Mode", "TablePlan", "plan"]


class Mode(enum.Enum):
    UPSERT = "upsert"
    REPLACE = "replace"
    IGNORE = "ignore"


class Kind(enum.Enum):
    """What the statement for a key does."""

    MERGE = "merge"  # insert, or update the given columns of an existing row
    REPLACE = "replace"  # the row becomes exactly cols (others default), except ``keep``
    INSERT = "insert"  # insert if absent, leave an existing row untouched
    DELETE = "delete"


@dataclass(slots=True)
class KeyOp:
    kind: Kind
    cols: dict[str, Any]
    keep: frozenset[str] = frozenset()


@dataclass(slots=True)
class TablePlan:
    """One step for one table: optional truncate first, then deletes, then writes."""

    truncate: bool = False
    ops: dict[Hashable, KeyOp] = field(default_factory=dict)


def key_op(ev: ChangeEvent, mode: Mode) -> KeyOp | None:
    """The statement for one event under the destination's conflict mode (None: no-op)."""
    op = ev.op
    if op is Op.DELETE:
        return KeyOp(Kind.DELETE, {})
    if mode is Mode.UPSERT:
        return KeyOp(Kind.MERGE, ev.data)
    if mode is Mode.REPLACE:
        keep = frozenset(c for c in ev.unavailable if c not in ev.data)
        return KeyOp(Kind.REPLACE, ev.data, keep)
    # IGNORE: insert when new, never touch an existing row; an update changes nothing.
    return None if op is Op.UPDATE else KeyOp(Kind.INSERT, ev.data)


def plan(
    events: Iterable[tuple[Hashable, Hashable, ChangeEvent]], mode: Mode
) -> list[dict[Hashable, TablePlan]]:
    """Steps to run in order for ``(table, key, event)`` triples given in stream order.

    Each step maps a table to its plan; within a step no key appears twice.
    """
    steps: list[dict[Hashable, TablePlan]] = []
    waves: list[dict[Hashable, TablePlan]] = []
    seen: dict[tuple[Hashable, Hashable], int] = {}
    for table, key, ev in events:
        if ev.op is Op.TRUNCATE:
            steps.extend(waves)
            steps.append({table: TablePlan(truncate=True)})
            waves, seen = [], {}
            continue
        n = seen.get((table, key), 0)
        seen[(table, key)] = n + 1
        if n == len(waves):
            waves.append({})
        wave = waves[n]
        table_plan = wave.get(table)
        if table_plan is None:
            table_plan = wave[table] = TablePlan()
        op = key_op(ev, mode)
        if op is not None:
            table_plan.ops[key] = op
    steps.extend(waves)
    return steps
