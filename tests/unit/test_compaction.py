"""plan(): a batch run as planned has exactly the effect of applying its events one by one.

Two pure-Python models over a dict "database" (table -> key -> row):

* ``apply_event`` is the reference: the documented semantics of each conflict mode, one
  event at a time;
* ``apply_plan`` executes one step of a plan() the way the PostgreSQL sink does: truncate,
  then deletes, then one MERGE / REPLACE / INSERT statement per key.

The property test checks that, for any events and any split into batches, both agree.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdcsync.events import ChangeEvent, Op
from cdcsync.sinks.compaction import Kind, Mode, Statement, TablePlan, plan, statements
from cdcsync.sinks.tables import Column, TableInfo

KEY = "id"
COLUMNS = ("a", "b", "c")
# Defaults are values no event ever carries, so "took the default" is visible in the result.
DEFAULTS = {"a": "default-a", "b": "default-b", "c": None}
TABLES = ("users", "orders")

Row = dict[str, Any]
Database = dict[str, dict[Hashable, Row]]


def new_row(key: Hashable, cols: dict[str, Any]) -> Row:
    row = {KEY: key, **DEFAULTS}
    row.update(cols)
    return row


# --- the reference: one event at a time -----------------------------------------------------


def apply_event(db: Database, table: str, ev: ChangeEvent, mode: Mode) -> None:
    rows = db.setdefault(table, {})
    if ev.op is Op.TRUNCATE:
        rows.clear()
        return
    key = ev.data[KEY]
    if ev.op is Op.DELETE:
        rows.pop(key, None)
        return
    old = rows.get(key)
    if mode is Mode.UPSERT:
        if old is None:
            rows[key] = new_row(key, ev.data)
        else:
            old.update(ev.data)
    elif mode is Mode.REPLACE:
        row = new_row(key, ev.data)
        if old is not None:
            for col in ev.unavailable:
                row[col] = old[col]
        rows[key] = row
    else:  # IGNORE
        if ev.op is not Op.UPDATE and old is None:
            rows[key] = new_row(key, ev.data)


# --- the interpreter of a plan ----------------------------------------------------------------


def apply_plan(db: Database, plans: dict[Hashable, TablePlan]) -> None:
    for table, table_plan in plans.items():
        rows = db.setdefault(table, {})  # type: ignore[arg-type]
        if table_plan.truncate:
            rows.clear()
        for key, op in table_plan.ops.items():
            if op.kind is Kind.DELETE:
                rows.pop(key, None)
        for key, op in table_plan.ops.items():
            old = rows.get(key)
            if op.kind is Kind.DELETE:
                continue
            assert op.cols.get(KEY, key) == key, "a plan row must carry its own key"
            if op.kind is Kind.INSERT:
                if old is None:
                    rows[key] = new_row(key, op.cols)
            elif op.kind is Kind.MERGE:
                if old is None:
                    rows[key] = new_row(key, op.cols)
                else:
                    old.update(op.cols)
            elif op.kind is Kind.REPLACE:
                if old is None:
                    rows[key] = new_row(key, op.cols)
                else:
                    for col in COLUMNS:
                        if col in op.cols:
                            old[col] = op.cols[col]
                        elif col not in op.keep:
                            old[col] = DEFAULTS[col]
            else:  # pragma: no cover - a new Kind needs a new rule here
                raise AssertionError(op.kind)


def triples(events: Iterable[tuple[str, ChangeEvent]]) -> list[tuple[str, Any, ChangeEvent]]:
    """What the sink passes to plan(): (table, key, event); a truncate has no key."""
    return [(table, None if ev.op is Op.TRUNCATE else ev.data[KEY], ev) for table, ev in events]


def one_by_one(initial: Database, events: list[tuple[str, ChangeEvent]], mode: Mode) -> Database:
    db = copy_db(initial)
    for table, ev in events:
        apply_event(db, table, ev, mode)
    return db


def batched(
    initial: Database, batches: list[list[tuple[str, ChangeEvent]]], mode: Mode
) -> Database:
    db = copy_db(initial)
    for batch in batches:
        for step in plan(triples(batch), mode):
            apply_plan(db, step)
    return db


def copy_db(db: Database) -> Database:
    return {t: {k: dict(r) for k, r in rows.items()} for t, rows in db.items()}


def normal(db: Database) -> Database:
    """Tables that end up empty and tables never touched compare equal."""
    return {t: rows for t, rows in db.items() if rows}


def ev(
    op: Op, table: str = "users", unavailable: Iterable[str] = (), **data: Any
) -> tuple[str, ChangeEvent]:
    return table, ChangeEvent(table, op, data, frozenset(unavailable))


# --- examples --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("stored", [False, True], ids=["new-key", "stored-key"])
def test_insert_update_delete_insert_ends_as_last_insert(mode: Mode, stored: bool) -> None:
    """Insert, update of other columns, delete, insert again in one batch = the last insert."""
    initial: Database = {"users": {1: new_row(1, {"a": 0, "b": 0, "c": 0})}} if stored else {}
    events = [
        ev(Op.INSERT, id=1, a=1),
        ev(Op.UPDATE, id=1, b=2, c=3),
        ev(Op.DELETE, id=1),
        ev(Op.INSERT, id=1, a=4),
    ]
    expected = {"users": {1: {"id": 1, "a": 4, "b": "default-b", "c": None}}}
    assert one_by_one(initial, events, mode) == expected
    assert batched(initial, [events], mode) == expected


@pytest.mark.parametrize("mode", [Mode.UPSERT, Mode.REPLACE])
def test_update_then_delete_then_insert_across_two_batches(mode: Mode) -> None:
    """The same sequence split across batches gives the same final row."""
    initial: Database = {"users": {1: new_row(1, {"a": 0, "b": 0, "c": 0})}}
    events = [
        ev(Op.INSERT, id=1, a=1),
        ev(Op.UPDATE, id=1, b=2, c=3),
        ev(Op.DELETE, id=1),
        ev(Op.INSERT, id=1, a=4),
    ]
    for cut in range(len(events) + 1):
        got = batched(initial, [events[:cut], events[cut:]], mode)
        assert got == {"users": {1: {"id": 1, "a": 4, "b": "default-b", "c": None}}}, cut


def test_upsert_merges_present_columns_only() -> None:
    """In upsert mode an update touches only the columns it carries."""
    initial: Database = {"users": {1: new_row(1, {"a": 0, "b": 0, "c": 0})}}
    events = [ev(Op.UPDATE, id=1, a=1), ev(Op.UPDATE, id=1, c=3)]
    assert batched(initial, [events], Mode.UPSERT) == {
        "users": {1: {"id": 1, "a": 1, "b": 0, "c": 3}}
    }


def test_replace_keeps_unavailable_columns_of_stored_row() -> None:
    """In replace mode an unavailable column keeps its stored value; other absent ones reset."""
    initial: Database = {"users": {1: new_row(1, {"a": 0, "b": 0, "c": 0})}}
    events = [ev(Op.UPDATE, unavailable={"b"}, id=1, a=1)]
    assert batched(initial, [events], Mode.REPLACE) == {
        "users": {1: {"id": 1, "a": 1, "b": 0, "c": None}}
    }


def test_replace_unavailable_after_earlier_reset_in_same_batch() -> None:
    """A column reset to its default by one replace stays default when the next says unavailable.

    Event 1 replaces the row without column c (c -> default); event 2 marks c unavailable,
    which keeps the current value: the default, not the value stored before the batch.
    """
    initial: Database = {"users": {1: new_row(1, {"a": 0, "b": 0, "c": 0})}}
    events = [ev(Op.UPDATE, id=1, a=1), ev(Op.UPDATE, unavailable={"c"}, id=1, a=2)]
    expected = {"users": {1: {"id": 1, "a": 2, "b": "default-b", "c": None}}}
    assert one_by_one(initial, events, Mode.REPLACE) == expected
    assert batched(initial, [events], Mode.REPLACE) == expected


def test_ignore_never_changes_an_existing_row() -> None:
    """In ignore mode inserts of an existing key and all updates leave the row untouched."""
    initial: Database = {"users": {1: new_row(1, {"a": 0, "b": 0, "c": 0})}}
    events = [ev(Op.INSERT, id=1, a=1), ev(Op.UPDATE, id=1, b=2), ev(Op.UPSERT, id=2, a=5)]
    assert batched(initial, [events], Mode.IGNORE) == {
        "users": {1: new_row(1, {"a": 0, "b": 0, "c": 0}), 2: new_row(2, {"a": 5})}
    }


@pytest.mark.parametrize("mode", list(Mode))
def test_truncate_discards_earlier_events_of_its_table_only(mode: Mode) -> None:
    """A truncate empties its table (earlier events included) and leaves other tables alone."""
    initial: Database = {
        "users": {1: new_row(1, {"a": 0}), 2: new_row(2, {"a": 0})},
        "orders": {1: new_row(1, {"a": 0})},
    }
    events = [
        ev(Op.INSERT, id=3, a=3),
        ev(Op.UPDATE, "orders", id=1, a=9),
        ("users", ChangeEvent("users", Op.TRUNCATE, {})),
        ev(Op.UPDATE, id=2, a=2),
    ]
    expected = one_by_one(initial, events, mode)
    assert batched(initial, [events], mode) == expected
    assert set(expected["users"]) == ({2} if mode is not Mode.IGNORE else set())


# --- the property ----------------------------------------------------------------------------

VALUES = st.integers(min_value=0, max_value=3)
KEYS = st.integers(min_value=1, max_value=2)
ROW_OPS = st.sampled_from([Op.INSERT, Op.UPDATE, Op.UPSERT, Op.DELETE])


@st.composite
def events_st(draw: st.DrawFn) -> tuple[str, ChangeEvent]:
    table = TABLES[0] if draw(st.integers(0, 3)) else TABLES[1]  # mostly one table
    if draw(st.integers(0, 19)) == 0:
        return table, ChangeEvent(table, Op.TRUNCATE, {})
    op = draw(ROW_OPS)
    key = draw(KEYS)
    if op is Op.DELETE:
        return table, ChangeEvent(table, op, {KEY: key})
    present = draw(st.lists(st.sampled_from(COLUMNS), unique=True))
    data = {KEY: key, **{c: draw(VALUES) for c in present}}
    absent = [c for c in COLUMNS if c not in present]
    unavailable = draw(st.lists(st.sampled_from(absent), unique=True)) if absent else []
    return table, ChangeEvent(table, op, data, frozenset(unavailable))


@st.composite
def databases(draw: st.DrawFn) -> Database:
    db: Database = {}
    for table in TABLES:
        keys = draw(st.lists(KEYS, unique=True))
        db[table] = {k: new_row(k, {c: draw(VALUES) for c in COLUMNS}) for k in keys}
    return db


@st.composite
def splits(draw: st.DrawFn, events: list[Any]) -> list[list[Any]]:
    cuts = sorted(draw(st.sets(st.integers(0, len(events)), max_size=3)))
    bounds = [0, *cuts, len(events)]
    return [events[i:j] for i, j in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    mode=st.sampled_from(list(Mode)),
    initial=databases(),
    data=st.data(),
)
def test_batches_equal_one_by_one(mode: Mode, initial: Database, data: st.DataObject) -> None:
    """For any events, mode and split into consecutive batches, plan() = one by one."""
    # An explicit length: st.lists() favours very short lists, which rarely fold anything.
    count = data.draw(st.integers(0, 16), label="count")
    events = [data.draw(events_st(), label=f"event {i}") for i in range(count)]
    batches = data.draw(splits(events), label="batches")
    assert normal(batched(initial, batches, mode)) == normal(one_by_one(initial, events, mode))


# --- statements(): the planner the sinks use, held to plan() ------------------------------


def reference_statements(events: list[tuple[TableInfo, Any, ChangeEvent]], mode: Mode) -> list[Any]:
    """statements() as it was before its one-pass rewrite: plan()'s steps grouped per table,
    kind and column set (the property above proves plan() right)."""
    tables: dict[str, TableInfo] = {}
    for info, _key, _ev in events:
        tables.setdefault(info.name, info)
    out: list[Any] = []
    for step in plan(((info.name, key, ev) for info, key, ev in events), mode):
        names = [name for name in tables if name in step]
        out += [("truncate", n) for n in names if step[n].truncate]
        for n in reversed(names):
            keys = [
                {c: op.cols[c] for c in tables[n].key}
                for op in step[n].ops.values()
                if op.kind is Kind.DELETE
            ]
            if keys:
                out.append(("delete", n, keys))
        for n in names:
            groups: dict[Any, list[dict[str, Any]]] = {}
            for op in step[n].ops.values():
                if op.kind is not Kind.DELETE:
                    cols = tuple(c for c in tables[n].columns if c in op.cols)
                    groups.setdefault((op.kind, cols, op.keep), []).append(op.cols)
            out += [("write", n, *shape, rows) for shape, rows in groups.items()]
    return out


def shown(stmts: list[Statement]) -> list[Any]:
    out: list[Any] = []
    for s in stmts:
        if s.truncate:
            out.append(("truncate", s.table.name))
        elif s.kind is None:
            out.append(("delete", s.table.name, s.keys))
        else:
            out.append(("write", s.table.name, s.kind, s.cols, s.keep, s.rows))
    return out


INFOS = {
    t: TableInfo("s", t, {c: Column(c, "integer", False, False, False) for c in COLUMNS}, (KEY,))
    for t in TABLES
}


@settings(max_examples=300, deadline=None, derandomize=True)
@given(mode=st.sampled_from(list(Mode)), data=st.data())
def test_statements_are_plans_statements(mode: Mode, data: st.DataObject) -> None:
    """statements() gives, statement for statement, what plan() and its grouping gave, whether
    the resolver passes each event's column order or not."""
    count = data.draw(st.integers(0, 16), label="count")
    events = [data.draw(events_st(), label=f"event {i}") for i in range(count)]
    plain = [(INFOS[table], key, ev) for table, key, ev in triples(events)]
    expected = reference_statements(plain, mode)
    assert shown(statements(plain, mode)) == expected
    with_cols = [
        (info, key, ev, tuple(c for c in info.columns if c in ev.data)) for info, key, ev in plain
    ]
    assert shown(statements(with_cols, mode)) == expected
