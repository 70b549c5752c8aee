"""The kit for SQL destinations: the shared destination and what a dialect plugs into it.

A SQL database becomes a cdcsync destination by implementing :class:`Dialect` (connections,
statements for one wave of one table, catalog, locks, bookkeeping, error codes) and handing
it to :class:`SqlDestination`, which does everything else the same way for every database:
fences and checkpoints per partition, catalog resolution, waves, isolation of bad events,
dead letters. The built-in ``postgres`` and ``mysql`` destinations are built exactly so.
"""

from __future__ import annotations

from cdcsync.sinks.compaction import KeyOp, Kind, Mode, Statement, TablePlan, plan, statements
from cdcsync.sinks.resolve import MissingMappedTable, Resolution, Resolved, Resolver
from cdcsync.sinks.sqlsink import (
    CheckpointRow,
    Dialect,
    SqlDestination,
    SqlOptions,
    Transaction,
    fence_name,
)
from cdcsync.sinks.tables import RESERVED_PREFIX, Column, TableInfo, pick_key

__all__ = [
    "RESERVED_PREFIX",
    "CheckpointRow",
    "Column",
    "Dialect",
    "KeyOp",
    "Kind",
    "MissingMappedTable",
    "Mode",
    "Resolution",
    "Resolved",
    "Resolver",
    "SqlDestination",
    "SqlOptions",
    "Statement",
    "TableInfo",
    "TablePlan",
    "Transaction",
    "fence_name",
    "pick_key",
    "plan",
    "statements",
]
