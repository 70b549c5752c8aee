"""The benchmark's workload: change events for one ``users`` table and the state they lead to.

Pure and deterministic (seeded): the same arguments give the same bytes, so every
contender in a run consumes exactly the same messages. Nothing here does I/O.

The table has eight columns of the usual types. Keys are drawn uniformly from
``keys`` distinct ids; an event for a key that does not exist is an insert of the
full row, otherwise mostly an update (70 % full row image, 30 % a few columns, the
way many producers send them) and sometimes a delete.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

__all__ = [
    "COLUMNS",
    "DDL",
    "LATENCY_DDL",
    "PUBLISHED_AT",
    "Workload",
    "canonical_db_row",
    "chunk_plans",
    "expected_canonical",
    "generate",
    "latency_payloads",
    "split_by_key",
    "state_after",
    "state_checksum",
]

COLUMNS = ("id", "name", "email", "score", "balance", "active", "updated_at", "payload")

DDL = """CREATE TABLE {table} (
    id int PRIMARY KEY,
    name text,
    email text,
    score int,
    balance numeric(14, 2),
    active bool,
    updated_at timestamptz,
    payload jsonb
)"""

# The latency phase's table: the same columns, plus when the event was published and when
# PostgreSQL wrote the row. clock_timestamp() is the time of the row's write inside the
# batch's transaction, a little before its commit; a DEFAULT applies only on insert,
# which is why that phase sends inserts of distinct keys.
LATENCY_DDL = """CREATE TABLE {table} (
    id int PRIMARY KEY,
    name text,
    email text,
    score int,
    balance numeric(14, 2),
    active bool,
    updated_at timestamptz,
    payload jsonb,
    published_at timestamptz,
    committed_at timestamptz DEFAULT clock_timestamp()
)"""

# Stands for the publish time in a latency payload until the moment it is sent.
PUBLISHED_AT = b"@@published_at@@"

_FIRST = ["Ada", "Grace", "Linus", "Margaret", "José", "Zoë", "Wei", "Amara", "Oskar", "Priya"]
_LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Müller", "Nakamura", "Okafor", "Silva"]
_PLANS = ["free", "pro", "team", "enterprise"]
_TAGS = ["beta", "vip", "churn-risk", "newsletter", "mobile", "eu", "us", "trial"]
_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_CENT = Decimal("0.01")

# (operation, key, data) with data exactly as sent in the envelope.
Op = tuple[str, int, dict[str, Any]]


@dataclass
class Workload:
    subject: str
    keys: int
    ops: list[Op]
    payloads: list[bytes]
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def bytes_total(self) -> int:
        return sum(len(p) for p in self.payloads)


def _ts(i: int) -> str:
    # One event every 3 ms of "producer time"; microseconds so rows differ in every column.
    t = _EPOCH + dt.timedelta(microseconds=i * 3000 + i % 997)
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _full_row(rng: random.Random, key: int, i: int) -> dict[str, Any]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return {
        "id": key,
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{key}@example.com",
        "score": rng.randint(0, 100_000),
        "balance": round(rng.uniform(-1_000, 250_000), 2),
        "active": rng.random() < 0.85,
        "updated_at": _ts(i),
        "payload": {
            "plan": rng.choice(_PLANS),
            "tags": rng.sample(_TAGS, rng.randint(0, 3)),
            "prefs": {"theme": rng.choice(["dark", "light"]), "lang": rng.choice(["en", "de"])},
            "logins": rng.randint(0, 5_000),
        },
    }


def _partial_row(rng: random.Random, key: int, i: int) -> dict[str, Any]:
    if rng.random() < 0.6:
        return {
            "id": key,
            "score": rng.randint(0, 100_000),
            "balance": round(rng.uniform(-1_000, 250_000), 2),
            "updated_at": _ts(i),
        }
    return {"id": key, "active": rng.random() < 0.5, "updated_at": _ts(i)}


def _envelope(i: int, op: str, data: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "id": f"00000000-0000-4000-8000-{i:012d}",
            "timestamp": _ts(i),
            "source": "bench",
            "table": "users",
            "operation": op,
            "data": data,
            "metadata": {"txid": 1_000_000 + i // 3, "lsn": f"0/{0x1000000 + i * 64:X}"},
        }
    )


def generate(events: int, keys: int, subject: str, seed: int = 42) -> Workload:
    """``events`` change events over ``keys`` ids, ~3 % of updates replaced by deletes."""
    rng = random.Random(seed)
    live: set[int] = set()
    ops: list[Op] = []
    payloads: list[bytes] = []
    counts: Counter[str] = Counter()
    for i in range(events):
        key = rng.randint(1, keys)
        if key not in live:
            op, data = "insert", _full_row(rng, key, i)
            live.add(key)
        elif rng.random() < 0.03:
            op, data = "delete", {"id": key}
            live.discard(key)
        elif rng.random() < 0.7:
            op, data = "update", _full_row(rng, key, i)
        else:
            op, data = "update", _partial_row(rng, key, i)
            counts["update_partial"] += 1
        counts[op] += 1
        ops.append((op, key, data))
        payloads.append(_envelope(i, op, data))
    return Workload(subject, keys, ops, payloads, counts)


def split_by_key(work: Workload, parts: int) -> list[list[bytes]]:
    """The payloads in ``parts`` groups by ``key % parts``, each in stream order.

    Every key's events stay together and in order, so the union of what the groups
    lead to is exactly :func:`state_after` of the whole workload.
    """
    out: list[list[bytes]] = [[] for _ in range(parts)]
    for (_, key, _), payload in zip(work.ops, work.payloads, strict=True):
        out[key % parts].append(payload)
    return out


def latency_payloads(count: int, seed: int = 7) -> list[bytes]:
    """``count`` inserts of distinct keys, with :data:`PUBLISHED_AT` where the time goes."""
    rng = random.Random(seed)
    placeholder = PUBLISHED_AT.decode()
    out = []
    for i in range(count):
        data = _full_row(rng, i + 1, i) | {"published_at": placeholder}
        out.append(_envelope(i, "insert", data))
    return out


def _apply(state: dict[int, dict[str, Any]], op: str, key: int, data: dict[str, Any]) -> None:
    # Upsert semantics: an insert or update merges its columns into the row (creating it).
    if op == "delete":
        state.pop(key, None)
        return
    row = state.get(key)
    if row is None:
        state[key] = dict.fromkeys(COLUMNS) | data
    else:
        row.update(data)


def state_after(ops: list[Op]) -> dict[int, dict[str, Any]]:
    """The rows the destination must hold after applying ``ops`` one by one."""
    state: dict[int, dict[str, Any]] = {}
    for op, key, data in ops:
        _apply(state, op, key, data)
    return state


def _typed(row: dict[str, Any]) -> tuple[Any, ...]:
    """A row with PostgreSQL-ready Python values (for asyncpg's binary codecs)."""
    balance = row["balance"]
    ts = row["updated_at"]
    payload = row["payload"]
    return (
        row["id"],
        row["name"],
        row["email"],
        row["score"],
        None if balance is None else Decimal(repr(balance)).quantize(_CENT),
        row["active"],
        None if ts is None else dt.datetime.fromisoformat(ts),
        None if payload is None else orjson.dumps(payload).decode(),
    )


def chunk_plans(ops: list[Op], size: int) -> list[tuple[list[int], list[tuple[Any, ...]]]]:
    """Per chunk of ``size`` events: (keys to delete, full typed rows to upsert) at its end.

    This is the least work any writer can do for the chunk: one statement per kind,
    one row per touched key, all values already typed.
    """
    state: dict[int, dict[str, Any]] = {}
    plans = []
    for start in range(0, len(ops), size):
        touched: dict[int, None] = {}
        for op, key, data in ops[start : start + size]:
            _apply(state, op, key, data)
            touched[key] = None
        deletes = [k for k in touched if k not in state]
        rows = [_typed(state[k]) for k in touched if k in state]
        plans.append((deletes, rows))
    return plans


def _canonical(values: tuple[Any, ...]) -> bytes:
    # One spelling per value whether it comes from the workload or back from PostgreSQL.
    (key, name, email, score, balance, active, ts, payload) = values
    parts = [
        str(key),
        "" if name is None else name,
        "" if email is None else email,
        "" if score is None else str(score),
        "" if balance is None else str(Decimal(balance).quantize(_CENT)),
        "" if active is None else str(bool(active)),
        "" if ts is None else ts.astimezone(dt.UTC).isoformat(),
        "" if payload is None else orjson.dumps(orjson.loads(payload), option=orjson.OPT_SORT_KEYS),
    ]
    return "\x1f".join(p if isinstance(p, str) else p.decode() for p in parts).encode()


def canonical_db_row(record: Any) -> tuple[int, bytes]:
    """(id, canonical bytes) of a row read back with asyncpg in ``COLUMNS`` order."""
    return record[0], _canonical(tuple(record))


def state_checksum(rows: dict[int, bytes]) -> str:
    """sha256 over canonical rows in key order."""
    h = hashlib.sha256()
    for key in sorted(rows):
        h.update(rows[key])
        h.update(b"\n")
    return h.hexdigest()


def expected_canonical(state: dict[int, dict[str, Any]]) -> dict[int, bytes]:
    """Canonical bytes per key of an expected state, comparable with :func:`canonical_db_row`."""
    return {k: _canonical(_typed(row)) for k, row in state.items()}
