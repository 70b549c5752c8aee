"""The soak's world without I/O: tables, flows, the seeded workload and the model.

Everything here is pure and deterministic for a seed. The model applies one event at a
time with the semantics of docs/semantics.md (upsert: insert, or update only the present
columns, absent columns default on insert; replace: the row becomes exactly the event's
data, absent columns default; delete by key, no error when missing) to each destination
of a flow, in stream order; poison messages only add an expected dead letter.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

__all__ = [
    "ACK_WAIT_S",
    "DATABASES",
    "FLOWS",
    "POISON_KINDS",
    "STREAMS",
    "Expectation",
    "FlowSpec",
    "Model",
    "Msg",
    "Table",
    "config_yaml",
    "database_ddl",
    "expect",
    "make_workload",
    "norm",
]

POISON_KINDS = (
    "not_json",
    "unknown_table",
    "unknown_column",
    "bad_value",
    "unknown_operation",
    "missing_key",
)
POISON_RATE = 0.02
DUPLICATE_RATE = 0.03
ACK_WAIT_S = 10  # short, so that lost acks are redelivered (and skipped) within the run

# --------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class Col:
    name: str
    ddl: str
    kind: str = "text"  # int | bigint | text | short (varchar(16)) | bool | numeric
    default: Any = None  # what PostgreSQL stores when the column is absent (constants only)
    nullable: bool = True


@dataclass(frozen=True)
class Table:
    name: str  # the event's table
    key: tuple[Col, ...]
    cols: tuple[Col, ...]  # the other columns
    keyspace: int

    def ddl(self, target: str, mysql: bool = False) -> str:
        """PostgreSQL's DDL, or MySQL's: a key column cannot be TEXT there (no length)."""
        key = tuple(
            replace(c, ddl="varchar(64)") if mysql and c.ddl == "text" else c for c in self.key
        )
        cols = ", ".join(f"{c.name} {c.ddl}" for c in (*key, *self.cols))
        pk = ", ".join(c.name for c in self.key)
        return f"CREATE TABLE {target} ({cols}, PRIMARY KEY ({pk}));"

    def key_of(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[c.name] for c in self.key)

    def defaults(self) -> dict[str, Any]:
        return {c.name: c.default for c in self.cols}


USERS = Table(
    "users",
    (Col("id", "integer", "int"),),
    (
        Col("name", "text"),
        Col("email", "text"),
        Col("score", "integer DEFAULT 0", "int", 0),
        Col("status", "text NOT NULL DEFAULT 'new'", "text", "new", nullable=False),
        Col("active", "boolean DEFAULT true", "bool", True),
        Col("balance", "numeric(12,2) DEFAULT 0", "numeric", Decimal(0)),
    ),
    1_500,
)
PROFILES = Table(
    "profiles",
    (Col("user_id", "integer", "int"),),
    (
        Col("bio", "text"),
        Col("avatar", "text DEFAULT 'none'", "text", "none"),
        Col("visits", "integer NOT NULL DEFAULT 0", "int", 0, nullable=False),
    ),
    800,
)
ORDERS = Table(
    "orders",
    (Col("id", "bigint", "bigint"),),
    (
        Col("user_id", "integer", "int"),
        Col("amount", "numeric(12,2)", "numeric"),
        Col("status", "text NOT NULL DEFAULT 'open'", "text", "open", nullable=False),
        Col("note", "varchar(16)", "short"),
    ),
    1_500,
)
ORDER_ITEMS = Table(
    "order_items",
    (Col("order_id", "integer", "int"), Col("line", "smallint", "int")),
    (Col("sku", "text"), Col("qty", "integer NOT NULL DEFAULT 1", "int", 1, nullable=False)),
    1_600,
)
PRODUCTS = Table(
    "products",
    (Col("sku", "text", "text"),),
    (
        Col("title", "text"),
        Col("price", "integer", "int"),
        Col("stock", "integer NOT NULL DEFAULT 0", "int", 0, nullable=False),
        Col("tag", "text DEFAULT 'plain'", "text", "plain"),
    ),
    600,
)


@dataclass(frozen=True)
class Dest:
    name: str
    database: str
    mode: str  # upsert | replace
    tables: tuple[tuple[str, str], ...] = ()  # event table -> target table

    def target(self, table: str) -> str:
        return dict(self.tables).get(table, table)


@dataclass(frozen=True)
class FlowSpec:
    name: str
    stream: str
    tables: tuple[Table, ...]
    dests: tuple[Dest, ...]
    weight: float
    batch: str
    jetstream_extra: str = ""

    @property
    def subject(self) -> str:
        return f"soak.{self.name}.>"

    @property
    def durable(self) -> str:
        return f"soak-{self.name}"

    def table(self, name: str) -> Table:
        return next(t for t in self.tables if t.name == name)


DATABASES = ("soak_a", "soak_b")
FLOWS = (
    FlowSpec(
        "users",
        "SOAK_APP",
        (USERS, PROFILES),
        (Dest("a", "soak_a", "upsert"), Dest("b", "soak_b", "upsert")),
        0.45,
        "{max_size: 500, max_delay_ms: 20}",
    ),
    FlowSpec(
        "orders",
        "SOAK_APP",
        (ORDERS, ORDER_ITEMS),
        (Dest("a", "soak_a", "upsert"),),
        0.35,
        "{max_size: 1000, max_delay_ms: 50}",
        "max_ack_pending: 1000",
    ),
    FlowSpec(
        "catalog",
        "SOAK_CAT",
        (PRODUCTS,),
        (Dest("b", "soak_b", "replace", (("products", "catalog_products"),)),),
        0.20,
        "{max_size: 200, max_delay_ms: 10}",
    ),
)
STREAMS = {
    s: [f.subject for f in FLOWS if f.stream == s] for s in dict.fromkeys(f.stream for f in FLOWS)
}


def config_yaml(nats_url: str, url_for: Callable[[str], str], mysql: bool = False) -> str:
    """The cdcsync configuration of the soak: three flows, two databases, API on a free port;
    with ``mysql`` the databases are MySQL's (the URL names each, the state database is the
    server's ``cdcsync``)."""
    out = ["api:", "  bind: 127.0.0.1:0", "flows:"]
    for f in FLOWS:
        out += [
            f"  - name: {f.name}",
            "    source:",
            "      type: nats",
            f'      servers: ["{nats_url}"]',
            f'      subject: "{f.subject}"',
            "      jetstream:",
            f"        stream: {f.stream}",
            f"        durable: {f.durable}",
            f"        ack_wait_s: {ACK_WAIT_S}",
            *([f"        {f.jetstream_extra}"] if f.jetstream_extra else []),
            "      format: cdc",
            f"    batch: {f.batch}",
            "    destinations:",
        ]
        for d in f.dests:
            out += [
                f"      - name: {d.name}",
                f"        type: {'mysql' if mysql else 'postgres'}",
                f'        url: "{url_for(d.database)}"',
                *([] if mysql else ["        schema: public"]),
                f"        conflict_resolution: {d.mode}",
            ]
            if d.tables:
                out.append("        tables: {" + ", ".join(f"{k}: {v}" for k, v in d.tables) + "}")
    return "\n".join(out) + "\n"


def database_ddl(database: str, mysql: bool = False) -> str:
    stmts = []
    for f in FLOWS:
        for d in f.dests:
            if d.database == database:
                stmts += [t.ddl(d.target(t.name), mysql) for t in f.tables]
    return "\n".join(stmts)


# --------------------------------------------------------------------------- the workload


@dataclass(frozen=True)
class Msg:
    flow: str
    subject: str
    payload: bytes
    poison: str | None = None  # the poison kind; None for a good event
    duplicate: bool = False


def _envelope(n: int, seed: int, table: str, op: str, data: dict[str, Any]) -> bytes:
    body = {
        "id": f"soak-{seed}-{n}",
        "timestamp": "2026-01-01T00:00:00Z",
        "source": "soak",
        "table": table,
        "operation": op,
        "data": data,
        "metadata": {"n": n},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _key(rng: random.Random, t: Table) -> dict[str, Any]:
    k = rng.randint(1, t.keyspace)
    if t is ORDER_ITEMS:
        return {"order_id": (k - 1) // 4 + 1, "line": (k - 1) % 4 + 1}
    if t is ORDERS:
        return {"id": 10_000_000_000 + k}  # beyond int4: the column is bigint
    if t is PRODUCTS:
        return {"sku": f"SKU-{k:05d}"}
    return {t.key[0].name: k}


def _value(rng: random.Random, c: Col, n: int) -> Any:
    if c.nullable and rng.random() < 0.08:
        return None
    if c.kind in ("int", "bigint"):
        return rng.randint(-1_000_000, 1_000_000)
    if c.kind == "bool":
        return rng.random() < 0.5
    if c.kind == "numeric":
        return rng.randint(-10_000_000, 10_000_000) / 100  # two decimals, exact in repr
    if c.kind == "short":
        return f"n{n % 1_000_000}-{rng.randint(0, 99)}"  # fits varchar(16)
    return f"{c.name}-{n}-{rng.randint(0, 9_999)}" + "é" * rng.randint(0, 1)


def _good(rng: random.Random, seed: int, n: int, f: FlowSpec, live: set[Any]) -> Msg:
    t = rng.choice(f.tables)
    key = _key(rng, t)
    ident = (t.name, tuple(key.values()))
    ops = (
        [
            ("update", 35),
            ("upsert", 15),
            ("insert", 8),
            ("snapshot", 7),
            ("delete", 20),
            ("null", 15),
        ]
        if ident in live
        else [("insert", 65), ("upsert", 10), ("snapshot", 5), ("update", 12), ("delete", 8)]
    )
    op = rng.choices([o for o, _ in ops], [w for _, w in ops])[0]
    data = dict(key)
    if op == "delete":
        live.discard(ident)
    else:
        if op in ("insert", "snapshot") or (op == "upsert" and rng.random() < 0.5):
            cols = [c for c in t.cols if rng.random() < 0.85] or [t.cols[0]]
        else:  # a partial change: a few columns
            cols = rng.sample(list(t.cols), rng.randint(1, min(2, len(t.cols))))
        if op == "null":  # an update that clears nullable columns
            nullable = [c for c in t.cols if c.nullable]
            picked = rng.sample(nullable, rng.randint(1, min(2, len(nullable))))
            data.update({c.name: None for c in picked})
            op = "update"
        else:
            data.update({c.name: _value(rng, c, n) for c in cols})
        live.add(ident)
    subject = f"soak.{f.name}.{t.name}"
    return Msg(f.name, subject, _envelope(n, seed, t.name, op, data))


def _poison(rng: random.Random, seed: int, n: int, f: FlowSpec, kinds: tuple[str, ...]) -> Msg:
    kind = rng.choice(kinds)
    t = rng.choice(f.tables)
    key = _key(rng, t)
    subject = f"soak.{f.name}.{t.name}"
    if kind == "not_json":
        payload = f"not json #{seed}-{n} {{oops".encode()
    elif kind == "unknown_table":
        subject = f"soak.{f.name}.ghosts"
        payload = _envelope(n, seed, "ghosts", "insert", {"id": n, "name": f"boo{n}"})
    elif kind == "unknown_column":
        payload = _envelope(n, seed, t.name, "upsert", {**key, "nmae": f"typo{n}"})
    elif kind == "bad_value":
        # A bad integer beside a good text value: refused whole, the text must not land.
        col = next(c for c in t.cols if c.kind == "int")  # every table has one
        text = next(c for c in t.cols if c.kind == "text")
        data = {**key, col.name: f"abc{n}", text.name: f"poison-{n}"}
        payload = _envelope(n, seed, t.name, "upsert", data)
    elif kind == "unknown_operation":
        payload = _envelope(n, seed, t.name, "merge", {**key, t.cols[0].name: f"m{n}"})
    else:  # missing_key: the row cannot be found without it
        payload = _envelope(n, seed, t.name, "update", {t.cols[0].name: f"k{n}"})
    return Msg(f.name, subject, payload, poison=kind)


def make_workload(seed: int, events: int, poison: tuple[str, ...] = POISON_KINDS) -> list[Msg]:
    """``events`` messages in publish order: good events, exact duplicates and poison."""
    rng = random.Random(seed)
    live: set[Any] = set()  # the generator's idea of which keys exist, to pick sensible ops
    history: dict[str, list[Msg]] = {f.name: [] for f in FLOWS}
    out: list[Msg] = []
    while len(out) < events:
        n = len(out)
        f = rng.choices(FLOWS, [x.weight for x in FLOWS])[0]
        r = rng.random()
        if r < POISON_RATE and poison:
            out.append(_poison(rng, seed, n, f, poison))
        elif r < POISON_RATE + DUPLICATE_RATE and history[f.name]:
            recent = history[f.name][-200:]
            again = recent[-1] if rng.random() < 0.5 else rng.choice(recent)
            out.append(replace(again, duplicate=True))
        else:
            msg = _good(rng, seed, n, f, live)
            history[f.name].append(msg)
            out.append(msg)
    return out


# --------------------------------------------------------------------------- the model


def norm(col: Col, value: Any) -> Any:
    if value is None:
        return None
    if col.kind == "numeric":
        return Decimal(str(value))
    return value


class Model:
    """One destination's tables after applying events one at a time (docs/semantics.md)."""

    def __init__(self, flow: FlowSpec, mode: str) -> None:
        self.flow = flow
        self.mode = mode
        self.rows: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {
            t.name: {} for t in flow.tables
        }

    def apply(self, event: dict[str, Any]) -> None:
        t = self.flow.table(event["table"])
        data = event["data"]
        key = t.key_of(data)
        rows = self.rows[t.name]
        if event["operation"] == "delete":
            rows.pop(key, None)  # no error when missing
            return
        values = {c: v for c, v in data.items() if c not in {k.name for k in t.key}}
        if self.mode == "replace" or key not in rows:
            rows[key] = {**t.defaults(), **values}  # absent columns get their default
        else:
            rows[key].update(values)  # upsert: only the present columns change


@dataclass
class Expectation:
    """What the streams hold, and what every destination must therefore show."""

    models: dict[tuple[str, str], Model]  # (flow, destination) -> model
    letters: dict[tuple[str, str], Counter[tuple[int, bytes]]]  # expected dead letters
    last_seq: dict[str, int]  # flow -> last stream sequence of its messages
    events: int = 0
    poison: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    unknown: list[tuple[str, int]] = field(default_factory=list)


def expect(stream: dict[str, list[tuple[int, bytes]]], meaning: dict[bytes, Msg]) -> Expectation:
    """Apply each flow's messages in stream order to one model per destination."""
    exp = Expectation({}, {}, {})
    for f in FLOWS:
        models = {d.name: Model(f, d.mode) for d in f.dests}
        for d in f.dests:
            exp.models[(f.name, d.name)] = models[d.name]
            exp.letters[(f.name, d.name)] = Counter()
        seen: set[bytes] = set()
        for seq, payload in stream[f.name]:
            exp.events += 1
            exp.last_seq[f.name] = max(exp.last_seq.get(f.name, 0), seq)
            msg = meaning.get(payload)
            if msg is None:
                exp.unknown.append((f.name, seq))
                continue
            exp.duplicates += payload in seen
            seen.add(payload)
            if msg.poison is not None:
                exp.poison[msg.poison] += 1
                for d in f.dests:
                    exp.letters[(f.name, d.name)][(seq, payload)] += 1
                continue
            event = json.loads(payload)
            for model in models.values():
                model.apply(event)
    return exp
