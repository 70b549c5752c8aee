"""The demo's change events: a small shop whose users, orders and stock keep changing.

Pure and deterministic (a seeded ``random.Random``), so a test can count what it sent.
The generator keeps the shop's state, so that updates and deletes name rows that exist,
orders name existing users and products, and stock never goes below zero: every dead
letter in the demo comes from one of the deliberately bad messages, one in ~40, each
showing a different reason (not JSON, a value that does not fit its column, an unknown
column, a CHECK constraint, a missing key).

Users and orders are sent as cdcsync's own envelope, inventory as Debezium events, so
the demo shows ``format: auto`` at work.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

__all__ = ["BAD_EVERY", "Message", "Shop", "schema_sql"]

BAD_EVERY = 40  # one deliberately bad message in this many

_FIRST = ["Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Alan"]
_LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen"]
_CITIES = ["Lisbon", "Oslo", "Kyoto", "Austin", "Nairobi", "Lyon", "Quito", "Perth", "Tartu"]
_PRODUCTS = [
    ("KB-01", "Mechanical keyboard", "89.00"),
    ("MS-02", "Wireless mouse", "24.50"),
    ("MN-27", "27-inch monitor", "279.00"),
    ("HD-05", "USB-C hub", "39.90"),
    ("CB-10", "Cable organizer", "9.99"),
    ("LP-14", "Laptop stand", "45.00"),
    ("HS-30", "Headset", "59.00"),
    ("WC-08", "Webcam", "69.00"),
    ("SD-64", "SD card 64 GB", "14.00"),
    ("DK-90", "Standing desk", "499.00"),
    ("CH-11", "Office chair", "229.00"),
    ("LM-03", "Desk lamp", "32.00"),
]
_STATUS_NEXT = {"new": "paid", "paid": "shipped", "shipped": "delivered"}


def schema_sql(schema: str) -> str:
    """The demo's tables in ``schema`` (idempotent; cdcsync never creates tables itself)."""
    return f"""
CREATE SCHEMA IF NOT EXISTS "{schema}";
CREATE TABLE IF NOT EXISTS "{schema}".users (
    id         bigint PRIMARY KEY,
    name       text NOT NULL,
    email      text,
    city       text,
    updated_at timestamptz
);
CREATE TABLE IF NOT EXISTS "{schema}".orders (
    id         bigint PRIMARY KEY,
    user_id    bigint NOT NULL,
    sku        text NOT NULL,
    quantity   integer NOT NULL,
    total      numeric(12, 2) NOT NULL,
    status     text NOT NULL,
    updated_at timestamptz
);
CREATE TABLE IF NOT EXISTS "{schema}".inventory (
    sku        text PRIMARY KEY,
    name       text NOT NULL,
    price      numeric(10, 2),
    stock      integer NOT NULL CHECK (stock >= 0),
    updated_at timestamptz
);
"""


@dataclass(frozen=True)
class Message:
    """One NATS message: ``kind`` is users/orders/inventory; ``bad`` says it should fail."""

    kind: str
    subject: str
    body: bytes
    bad: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Shop:
    """An endless, consistent stream of shop changes; ``next()`` gives the next message.

    ``prefix`` starts every subject (``<prefix>.users.insert``); ``start_id`` keeps the ids
    of a second run on kept data clear of the first run's.
    """

    def __init__(self, prefix: str, *, seed: int = 1, start_id: int = 1) -> None:
        self.prefix = prefix
        self.rng = random.Random(seed)
        self._ids = itertools.count(start_id)
        self.users: dict[int, dict[str, object]] = {}
        self.orders: dict[int, dict[str, object]] = {}
        self.stock: dict[str, int] = {}
        self.sent = 0
        self.bad_sent = 0
        self._bad_kinds = itertools.cycle(
            [self._bad_not_json, self._bad_value, self._bad_column, self._bad_stock, self._bad_key]
        )
        self._pending: list[Message] = [self._snapshot(sku) for sku, _, _ in _PRODUCTS]

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        self.sent += 1
        if self._pending:
            return self._pending.pop(0)
        if self.sent % BAD_EVERY == 0:
            self.bad_sent += 1
            return next(self._bad_kinds)()
        roll = self.rng.random()
        if roll < 0.25 or len(self.users) < 5:
            return self._user_change()
        if roll < 0.75:
            return self._order_change()
        return self._stock_change()

    # -- cdc envelopes (users, orders) -----------------------------------------------------

    def _envelope(self, kind: str, op: str, data: dict[str, object]) -> Message:
        body = {
            "id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "timestamp": _now(),
            "source": "demo-shop",
            "table": kind,
            "operation": op,
            "data": data,
        }
        return Message(kind, f"{self.prefix}.{kind}.{op}", orjson.dumps(body))

    def _user_change(self) -> Message:
        rng = self.rng
        if not self.users or (len(self.users) < 200 and rng.random() < 0.5):
            uid = next(self._ids)
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            row: dict[str, object] = {
                "id": uid,
                "name": f"{first} {last}",
                "email": f"{first.lower()}.{last.lower()}{uid}@example.com",
                "city": rng.choice(_CITIES),
                "updated_at": _now(),
            }
            self.users[uid] = row
            return self._envelope("users", "insert", row)
        uid = rng.choice(list(self.users))
        if rng.random() < 0.1 and len(self.users) > 20:
            del self.users[uid]
            return self._envelope("users", "delete", {"id": uid})
        # A change event carries the whole new row, as CDC does (an upsert needs it).
        self.users[uid].update(city=rng.choice(_CITIES), updated_at=_now())
        return self._envelope("users", "update", dict(self.users[uid]))

    def _order_change(self) -> Message:
        rng = self.rng
        open_orders = [oid for oid, o in self.orders.items() if o["status"] in _STATUS_NEXT]
        if not open_orders or rng.random() < 0.45:
            oid = next(self._ids)
            sku, _, price = rng.choice(_PRODUCTS)
            qty = rng.randint(1, 3)
            row: dict[str, object] = {
                "id": oid,
                "user_id": rng.choice(list(self.users)),
                "sku": sku,
                "quantity": qty,
                "total": f"{float(price) * qty:.2f}",
                "status": "new",
                "updated_at": _now(),
            }
            self.orders[oid] = row
            if len(self.orders) > 500:  # forget the oldest: the generator's memory stays small
                self.orders.pop(next(iter(self.orders)))
            return self._envelope("orders", "insert", row)
        oid = rng.choice(open_orders)
        if rng.random() < 0.08:
            del self.orders[oid]
            return self._envelope("orders", "delete", {"id": oid})
        status = _STATUS_NEXT[str(self.orders[oid]["status"])]
        self.orders[oid].update(status=status, updated_at=_now())
        return self._envelope("orders", "update", dict(self.orders[oid]))

    # -- Debezium events (inventory) -------------------------------------------------------

    def _debezium(self, op: str, before: object, after: object) -> Message:
        body = {
            "before": before,
            "after": after,
            "source": {"connector": "postgresql", "db": "shop", "schema": "public",
                       "table": "inventory"},
            "op": op,
            "ts_ms": int(datetime.now(UTC).timestamp() * 1000),
        }  # fmt: skip
        return Message("inventory", f"{self.prefix}.inventory.{op}", orjson.dumps(body))

    def _row(self, sku: str, stock: int) -> dict[str, object]:
        name, price = next((n, p) for s, n, p in _PRODUCTS if s == sku)
        return {"sku": sku, "name": name, "price": price, "stock": stock, "updated_at": _now()}

    def _snapshot(self, sku: str) -> Message:
        stock = self.rng.randint(20, 200)
        self.stock[sku] = stock
        return self._debezium("r", None, self._row(sku, stock))

    def _stock_change(self) -> Message:
        rng = self.rng
        sku = rng.choice(list(self.stock))
        old = self.stock[sku]
        new = (
            old + rng.randint(10, 60) if old < 10 or rng.random() < 0.3 else old - rng.randint(1, 5)
        )
        new = max(new, 0)
        self.stock[sku] = new
        return self._debezium("u", self._row(sku, old), self._row(sku, new))

    # -- deliberately bad messages ---------------------------------------------------------

    def _bad_not_json(self) -> Message:
        body = b'{"table": "orders", "operation": "insert", "data": {"id": 1, "total": '
        return Message("orders", f"{self.prefix}.orders.insert", body, bad="not JSON")

    def _bad_value(self) -> Message:
        msg = self._envelope(
            "orders",
            "insert",
            {"id": next(self._ids), "user_id": 1, "sku": "KB-01", "quantity": 1,
             "total": "twelve euros", "status": "new"},
        )  # fmt: skip
        return Message(msg.kind, msg.subject, msg.body, bad="value does not fit its column")

    def _bad_column(self) -> Message:
        uid = next(self._ids)
        msg = self._envelope("users", "insert", {"id": uid, "name": "Bad Row", "nickname": "oops"})
        return Message(msg.kind, msg.subject, msg.body, bad="unknown column")

    def _bad_stock(self) -> Message:
        sku = self.rng.choice(list(self.stock))
        old = self.stock[sku]
        msg = self._debezium("u", self._row(sku, old), self._row(sku, -5))
        return Message(msg.kind, msg.subject, msg.body, bad="CHECK constraint (stock >= 0)")

    def _bad_key(self) -> Message:
        msg = self._envelope("users", "update", {"name": "No Id", "city": "Nowhere"})
        return Message(msg.kind, msg.subject, msg.body, bad="missing key")
