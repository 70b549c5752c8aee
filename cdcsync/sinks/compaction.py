"""Batch compaction: many events for one key -> at most one statement per key.

Pure logic, no I/O. Events for a key are folded in stream order under the
destination's conflict mode, so a batch has the same effect as applying its
events one by one (``docs/semantics.md`` has the table; the unit and property
tests hold this to the one-by-one model).
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cdcsync.events import ChangeEvent, Op

__all__ = ["KeyOp", "Kind", "Mode", "TablePlan", "compact"]


class Mode(enum.Enum):
    UPSERT = "upsert"
    REPLACE = "replace"
    IGNORE = "ignore"


class Kind(enum.Enum):
    """What the one statement for a key does."""

    MERGE = "merge"  # insert, or update the given columns of an existing row
    REPLACE = "replace"  # the row becomes exactly cols (others default), except ``keep``
    INSERT = "insert"  # insert if absent, leave an existing row untouched
    DELETE = "delete"


# Per-key fold state: what we know about the row after the events seen so far.
_UNKNOWN = 0  # no event changed it, or only merges on top of what is stored
_FRESH = 1  # the stored row was deleted in this batch; cols is its full new content
_DELETED = 2


@dataclass(slots=True)
class _State:
    base: int = _UNKNOWN
    cols: dict[str, Any] | None = None
    keep: set[str] = field(default_factory=set)
    replaced: bool = False  # a replace-mode write happened on top of the stored row


@dataclass(slots=True)
class KeyOp:
    kind: Kind
    cols: dict[str, Any]
    keep: frozenset[str] = frozenset()


@dataclass(slots=True)
class TablePlan:
    """The statements for one table: optional truncate first, then deletes, then writes."""

    truncate: bool = False
    ops: dict[Hashable, KeyOp] = field(default_factory=dict)


def _fold(state: _State, ev: ChangeEvent, mode: Mode) -> None:
    op = ev.op
    if op is Op.DELETE:
        state.base, state.cols, state.keep, state.replaced = _DELETED, None, set(), False
        return
    if mode is Mode.IGNORE:
        if op is Op.UPDATE:
            return  # ignore mode never changes an existing row, and skips a missing one
        if state.base == _DELETED:
            state.base, state.cols = _FRESH, dict(ev.data)
        elif state.cols is None and state.base == _UNKNOWN:
            state.cols = dict(ev.data)
        return  # otherwise the row exists (stored, or inserted earlier in the batch)
    if mode is Mode.REPLACE:
        cols = dict(ev.data)
        keep: set[str] = set()
        if state.base != _DELETED:
            for col in ev.unavailable:
                if state.cols is not None and col in state.cols:
                    cols[col] = state.cols[col]
                elif col not in cols and (state.cols is None or col in state.keep):
                    # Keep the stored value, unless an earlier replace in this batch
                    # already reset the column to its default.
                    keep.add(col)
        if state.base == _DELETED or state.base == _FRESH:
            state.base = _FRESH
            keep = set()
        else:
            state.replaced = True
        state.cols, state.keep = cols, keep
        return
    # UPSERT: merge present columns; after a delete the row starts from defaults.
    if state.base == _DELETED:
        state.base, state.cols = _FRESH, dict(ev.data)
    elif state.cols is None:
        state.cols = dict(ev.data)
    else:
        state.cols.update(ev.data)


def _result(state: _State, mode: Mode) -> KeyOp | None:
    if state.base == _DELETED:
        return KeyOp(Kind.DELETE, {})
    if state.cols is None:
        return None
    if state.base == _FRESH:
        return KeyOp(Kind.REPLACE, state.cols)
    if mode is Mode.IGNORE:
        return KeyOp(Kind.INSERT, state.cols)
    if state.replaced:
        return KeyOp(Kind.REPLACE, state.cols, frozenset(state.keep))
    return KeyOp(Kind.MERGE, state.cols)


def _single(ev: ChangeEvent, mode: Mode) -> KeyOp | None:
    """The result of folding one event into an untouched key: the common case, made cheap."""
    op = ev.op
    if op is Op.DELETE:
        return KeyOp(Kind.DELETE, {})
    if mode is Mode.UPSERT:
        return KeyOp(Kind.MERGE, ev.data)
    if mode is Mode.REPLACE:
        keep = frozenset(c for c in ev.unavailable if c not in ev.data)
        return KeyOp(Kind.REPLACE, ev.data, keep)
    return None if op is Op.UPDATE else KeyOp(Kind.INSERT, ev.data)


def compact(
    events: Iterable[tuple[Hashable, Hashable, ChangeEvent]], mode: Mode
) -> dict[Hashable, TablePlan]:
    """Fold ``(table, key, event)`` triples, in stream order, into one plan per table.

    A truncate discards everything before it for its table (the rows it would
    have touched are gone) and is executed first. A key seen once keeps its event
    as is (no fold state); only keys that repeat in the batch are folded.
    """
    states: dict[Hashable, dict[Hashable, _State | ChangeEvent]] = {}
    truncated: set[Hashable] = set()
    for table, key, ev in events:
        per_table = states.get(table)
        if per_table is None:
            per_table = states[table] = {}
        if ev.op is Op.TRUNCATE:
            per_table.clear()
            truncated.add(table)
            continue
        state = per_table.get(key)
        if state is None:
            if table not in truncated:
                per_table[key] = ev
                continue
            state = per_table[key] = _State(base=_DELETED)  # the table was emptied in this batch
        elif isinstance(state, ChangeEvent):
            first, state = state, _State()
            per_table[key] = state
            _fold(state, first, mode)
        _fold(state, ev, mode)
    plans: dict[Hashable, TablePlan] = {}
    for table, per_table in states.items():
        plan = TablePlan(truncate=table in truncated)
        for key, state in per_table.items():
            result = (
                _single(state, mode) if isinstance(state, ChangeEvent) else _result(state, mode)
            )
            if result is not None:
                plan.ops[key] = result
        plans[table] = plan
    return plans
