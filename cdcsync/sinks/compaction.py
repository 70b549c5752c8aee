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
    # Statements of different steps (waves, truncate barriers) must run one after the
    # other: the later may touch rows the earlier wrote. One step's statements touch
    # distinct rows.
    step: int = 0
    # The write's argument as the dialect's optional ``encode`` worked it out ahead (while
    # the batch before was being written); None: the write works it out itself.
    encoded: Any = None


def statements(
    events: Iterable[tuple[TableInfo, Hashable, ChangeEvent]]
    | Iterable[tuple[TableInfo, Hashable, ChangeEvent, tuple[str, ...]]],
    mode: Mode,
) -> list[Statement]:
    """The statements for ``(table, key, event[, cols])`` in stream order, in the order to run.

    Waves as :func:`plan` makes them; per wave: deletes (tables in reverse order of first
    appearance, so that a unique value moved from one key to another within a wave does not
    collide), then the writes per table, kind and column set (columns in table order;
    ``cols``, when given, is that order for the event's columns, computed once per column set
    by the resolver). A truncate is a barrier. A delete carries the key as its own event
    spelt it: a dialect's canonical key may fold spellings that are different rows.

    One pass, no object per event beyond the rows' lists: it runs for every batch.
    """
    out: list[Statement] = []
    order: dict[str, int] = {}  # table -> first appearance in the batch
    waves: list[_Wave] = []
    seen: dict[tuple[str, Hashable], int] = {}
    upsert, replace = mode is Mode.UPSERT, mode is Mode.REPLACE
    for e in events:
        info, key, ev = e[0], e[1], e[2]
        name = info.name
        if name not in order:
            order[name] = len(order)
        op = ev.op
        if op is Op.TRUNCATE:
            _flush(waves, order, out)
            out.append(Statement(info, truncate=True, step=out[-1].step + 1 if out else 0))
            waves, seen = [], {}
            continue
        n = seen.get((name, key), 0)
        seen[(name, key)] = n + 1
        if n == len(waves):
            waves.append(_Wave())
        wave = waves[n]
        wave.tables.setdefault(name, info)
        if op is Op.DELETE:
            wave.deletes.setdefault(name, []).append({c: ev.data[c] for c in info.key})
            continue
        cols = e[3] if len(e) > 3 else _ordered(info, ev.data)
        if upsert:
            shape: _Shape = (Kind.MERGE, cols, _NO_KEEP)
        elif replace:
            keep = frozenset(c for c in ev.unavailable if c not in ev.data)
            shape = (Kind.REPLACE, cols, keep)
        elif op is Op.UPDATE:
            continue  # ignore: an update changes nothing
        else:
            shape = (Kind.INSERT, cols, _NO_KEEP)
        groups = wave.writes.get(name)
        if groups is None:
            groups = wave.writes[name] = {}
        rows = groups.get(shape)
        if rows is None:
            rows = groups[shape] = []
        rows.append(ev.data)
    _flush(waves, order, out)
    return out


@dataclass(slots=True)
class _Wave:
    tables: dict[str, TableInfo] = field(default_factory=dict)
    deletes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    writes: dict[str, dict[_Shape, list[dict[str, Any]]]] = field(default_factory=dict)


def _flush(waves: list[_Wave], order: dict[str, int], out: list[Statement]) -> None:
    for wave in waves:
        step = out[-1].step + 1 if out else 0
        names = sorted(wave.tables, key=order.__getitem__)
        for name in reversed(names):
            keys = wave.deletes.get(name)
            if keys:
                out.append(Statement(wave.tables[name], keys=keys, step=step))
        for name in names:
            for (kind, cols, keep), rows in wave.writes.get(name, {}).items():
                out.append(
                    Statement(
                        wave.tables[name], kind=kind, cols=cols, keep=keep, rows=rows, step=step
                    )
                )


def _ordered(info: TableInfo, data: dict[str, Any]) -> tuple[str, ...]:
    return tuple(c for c in info.columns if c in data)


_Shape = tuple[Kind, tuple[str, ...], frozenset[str]]
_NO_KEEP: frozenset[str] = frozenset()
