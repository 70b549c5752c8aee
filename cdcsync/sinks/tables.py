"""Target tables as a database's catalog describes them: the same shape for every dialect."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RESERVED_PREFIX", "Column", "TableInfo", "pick_key"]

# Table names starting with this belong to cdcsync's bookkeeping, in any schema and any
# letter case: events never write them (docs/semantics.md).
RESERVED_PREFIX = "cdcsync_"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # the database's own spelling, e.g. "integer", "character varying(10)"
    not_null: bool
    has_default: bool
    generated: bool
    nested: bool = False  # takes a JSON array or object (json, jsonb, array, composite)


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A target table: its columns in table order and the key that identifies a row."""

    schema: str
    name: str
    columns: dict[str, Column]
    key: tuple[str, ...]
    # Why no event may write this table although it exists, with the fix (e.g. a MySQL
    # table whose engine cannot roll back): its events are dead letters, a mapped one is
    # refused at start. Empty: writable.
    refusal: str = ""

    @property
    def writable(self) -> frozenset[str]:
        return frozenset(c for c, info in self.columns.items() if not info.generated)


def pick_key(rows: list[tuple[bool, list[str], bool]]) -> tuple[str, ...] | None:
    """The primary key, else the narrowest unique index whose columns are all NOT NULL.

    ``rows`` are (is primary, columns, all columns NOT NULL), narrowest first.
    """
    for primary, cols, all_not_null in rows:
        if primary or all_not_null:
            return tuple(cols)
    return None
