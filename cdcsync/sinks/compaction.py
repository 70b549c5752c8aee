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
from cdcsync.sinks.tables import TableInfo

__all__ = ["KeyOp", "Kind", "Mode", "Statement", "TablePlan", "plan", "statements"]


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
    if op is Op.DELETE:  # its key as the event spelt it, for the delete statement
        return KeyOp(Kind.DELETE, ev.data)
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


@dataclass(slots=True)
class Statement:
    """One set-based statement for a table: a truncate, a delete of ``keys``, or a write of
    ``rows`` (each holding ``cols``) of one kind."""

    table: TableInfo
    truncate: bool = False
    keys: list[dict[str, Any]] = field(default_factory=list)
    kind: Kind | None = None
    cols: tuple[str, ...] = ()
    keep: frozenset[str] = frozenset()
    rows: list[dict[str, Any]] = field(default_factory=list)


def statements(
    events: Iterable[tuple[TableInfo, Hashable, ChangeEvent]], mode: Mode
) -> list[Statement]:
    """The statements for ``(table, key, event)`` triples in stream order, in the order to run.

    Per step: truncates, then deletes (tables in reverse order of first appearance, so that
    a unique value moved from one key to another within a step does not collide), then the
    writes per table, kind and column set (columns in table order). A delete carries the
    key as its own event spelt it: a dialect's canonical key may fold spellings that are
    different rows (it only has to keep one row's events in order).
    """
    events = list(events)
    tables: dict[str, TableInfo] = {}
    for info, _key, _ev in events:
        tables.setdefault(info.name, info)
    out: list[Statement] = []
    for step in plan(((info.name, key, ev) for info, key, ev in events), mode):
        order = [name for name in tables if name in step]
        for name in order:
            if step[name].truncate:
                out.append(Statement(tables[name], truncate=True))
        for name in reversed(order):
            key = tables[name].key
            ops = step[name].ops.values()
            keys = [{c: op.cols[c] for c in key} for op in ops if op.kind is Kind.DELETE]
            if keys:
                out.append(Statement(tables[name], keys=keys))
        for name in order:
            info = tables[name]
            groups: dict[_Shape, list[dict[str, Any]]] = {}
            ordered: dict[frozenset[str], tuple[str, ...]] = {}  # column set -> table order
            for op in step[name].ops.values():
                if op.kind is Kind.DELETE:
                    continue
                shape = frozenset(op.cols)
                cols = ordered.get(shape)
                if cols is None:
                    cols = ordered[shape] = tuple(c for c in info.columns if c in shape)
                groups.setdefault((op.kind, cols, op.keep), []).append(op.cols)
            for (kind, cols, keep), rows in groups.items():
                out.append(Statement(info, kind=kind, cols=cols, keep=keep, rows=rows))
    return out


_Shape = tuple[Kind, tuple[str, ...], frozenset[str]]
