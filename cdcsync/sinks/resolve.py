"""From decoded items to rows of known tables: catalog resolution, shared by destinations.

Pure logic, no I/O. Every event is named a target table (the mapping, or the event's own
table name when unmapped tables are allowed), checked against what the catalog says about
that table (columns, key, which columns take nested JSON) and given its canonical key, or
it gets the reason it cannot be applied (a dead letter). Names from events are only ever
compared with catalog names; cdcsync's own tables are never a target.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cdcsync.events import ChangeEvent, Op
from cdcsync.flow.batch import Item
from cdcsync.sinks.tables import RESERVED_PREFIX, TableInfo

__all__ = ["MissingMappedTable", "Resolution", "Resolved", "Resolver"]

_NESTED = (dict, list)


class MissingMappedTable(Exception):
    """A table named in the destination's ``tables`` mapping is gone from the catalog.

    The operator declared it: its events wait (the flow retries) rather than become
    dead letters by the thousand while someone recreates it.
    """


@dataclass(slots=True)
class Resolved:
    item: Item
    table: TableInfo
    key: Hashable
    event: ChangeEvent
    # The event's columns in table order (shared by the events of one column set): the
    # planner groups rows by it without building a set per event.
    cols: tuple[str, ...] = ()


@dataclass(slots=True)
class Resolution:
    resolved: list[Resolved] = field(default_factory=list)
    dead: list[tuple[Item, str]] = field(default_factory=list)
    skipped: int = 0
    # Targets that were unknown or lacked a column: re-read them from the catalog (a
    # migration may have just added them) before giving their events up.
    suspects: set[str] = field(default_factory=set)
    missing_mapped: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Shape:
    unknown: list[str]
    generated: bool
    scalar: tuple[str, ...]  # present columns that do not take a JSON array or object
    ordered: tuple[str, ...]  # present, writable columns in table order


class Resolver:
    """Resolves a destination's events against its catalog cache (``tables``)."""

    def __init__(
        self,
        *,
        schema: str,
        mapping: Mapping[str, str],
        truncate: bool,
        unmapped: str,
        canonical_key: Callable[[Any, str], Any],
        nested_columns: str = "json, jsonb, array and composite columns",
    ) -> None:
        self.schema = schema
        self.mapping = dict(mapping)
        self.truncate = truncate
        self.unmapped_allowed = unmapped == "apply"
        self.canonical_key = canonical_key
        self.nested_columns = nested_columns  # which columns take arrays and objects, in words
        self._mapped = frozenset(self.mapping.values())

    def target(self, table: str) -> str | None:
        """The table an event of ``table`` goes to, or None when it may not go anywhere."""
        target = self.mapping.get(table)
        if target is None:
            if not self.unmapped_allowed:
                return None
            target = table
        return target

    def refusal(self, table: str) -> str | None:
        """Why an event of ``table`` is refused before any catalog lookup, or None."""
        target = self.mapping.get(table)
        if target is None and not self.unmapped_allowed:
            return (
                f"table {table!r} is not in the destination's 'tables' mapping "
                f"(unmapped_tables: dead_letter)"
            )
        name = target or table
        if name.lower().startswith(RESERVED_PREFIX):
            return (
                f"table {name!r} is reserved: names starting with {RESERVED_PREFIX!r} belong to "
                f"cdcsync's own bookkeeping and are never written by events"
            )
        return None

    def targets(self, items: list[Item]) -> list[str]:
        """The catalog names a batch needs (for one lookup before resolving)."""
        tables = {item.event.table for item in items if item.event is not None}
        return sorted({self.mapping.get(t, t) for t in tables if self.refusal(t) is None})

    def resolve(self, items: list[Item], tables: Mapping[str, TableInfo | None]) -> Resolution:
        """Name every event's table and key from the catalog, or say why it cannot be applied."""
        out = Resolution()
        resolved, dead = out.resolved, out.dead
        schema = self.schema
        shapes: dict[tuple[str, tuple[str, ...]], _Shape] = {}
        refused: dict[str, str | None] = {}
        for item in items:
            if item.error is not None:
                dead.append((item, item.error))
                continue
            ev = item.event
            if ev is None:
                out.skipped += 1
                continue
            refusal = refused.get(ev.table, "")
            if refusal == "":
                refusal = refused[ev.table] = self.refusal(ev.table)
            if refusal is not None:
                dead.append((item, refusal))
                continue
            target = self.mapping.get(ev.table, ev.table)
            info = tables.get(target)
            if info is None:
                if target in self._mapped:
                    out.missing_mapped.add(target)
                out.suspects.add(target)
                shown = f"{ev.table!r}" + (f" (mapped to {target!r})" if target != ev.table else "")
                dead.append((item, f"unknown table {shown} in schema {schema!r}"))
                continue
            if info.refusal:
                dead.append((item, f"table {schema}.{target} {info.refusal}"))
                continue
            if not info.key:
                dead.append(
                    (item, f"table {schema}.{target} has no primary key or usable unique index")
                )
                continue
            if ev.op is Op.TRUNCATE:
                if self.truncate:
                    resolved.append(Resolved(item, info, None, ev))
                else:
                    out.skipped += 1
                continue
            cols = info.columns
            data = ev.data
            # Events of one table mostly share a few column sets: check each set once.
            shape_key = (target, tuple(data))
            shape = shapes.get(shape_key)
            if shape is None:
                shape = shapes[shape_key] = _Shape(
                    [c for c in data if c not in cols],
                    any(cols[c].generated for c in data if c in cols),
                    tuple(
                        c for c in data if c in cols and not (cols[c].nested or cols[c].generated)
                    ),
                    tuple(c for c in cols if c in data and not cols[c].generated),
                )
            if shape.unknown:
                out.suspects.add(target)
                shown_cols = ", ".join(repr(c) for c in shape.unknown[:5])
                dead.append((item, f"unknown column(s) {shown_cols} in table {schema}.{target}"))
                continue
            if shape.generated:
                data = {c: v for c, v in data.items() if not cols[c].generated}
                ev = ChangeEvent(ev.table, ev.op, data, ev.unavailable)
            canonical = self.canonical_key
            try:
                if len(info.key) == 1:  # most keys: one value, no tuple to build or hash
                    k = info.key[0]
                    key = canonical(data[k], cols[k].type)
                    hash(key)
                    null_key = key is None
                else:
                    key = tuple(canonical(data[c], cols[c].type) for c in info.key)
                    hash(key)
                    null_key = None in key
            except KeyError:
                missing = [c for c in info.key if c not in data]
                dead.append(
                    (item, f"missing primary key column(s) {missing} for {schema}.{target}")
                )
                continue
            except (TypeError, ArithmeticError, ValueError):
                dead.append((item, f"primary key of {schema}.{target} must be scalar values"))
                continue
            if null_key:
                dead.append((item, f"primary key of {schema}.{target} contains null"))
                continue
            nested = _nested_into_scalar(data, shape.scalar)
            if nested is not None:
                kind = "an object" if isinstance(data[nested], dict) else "an array"
                dead.append(
                    (
                        item,
                        f"column {nested!r} of {schema}.{target} is {cols[nested].type}: "
                        f"{kind} cannot be stored there (only {self.nested_columns} "
                        f"take JSON arrays and objects)",
                    )
                )
                continue
            resolved.append(Resolved(item, info, key, ev, shape.ordered))
        return out


def _nested_into_scalar(data: dict[str, Any], scalar: tuple[str, ...]) -> str | None:
    """The first column of ``scalar`` whose value is a JSON array or object, if any."""
    for c in scalar:
        if isinstance(data[c], _NESTED):
            return c
    return None
