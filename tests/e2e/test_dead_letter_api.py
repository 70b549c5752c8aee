"""`GET /api/dead-letters` a page at a time and `GET /api/dead-letters/reasons`: what the
dashboard's dead-letter card shows, against real NATS and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import trio
from harness import Env, envelope

TABLES = """
CREATE TABLE items (id int PRIMARY KEY, qty int CHECK (qty >= 0), code text UNIQUE);
"""


def item(i: int, **data: Any) -> bytes:
    return envelope("items", "insert", {"id": i, **data})


def bad_messages() -> list[bytes]:
    """Seven failures, each several times with a different value, position or name."""
    return [
        *(item(i, qty=f"x{i}") for i in range(100, 106)),  # 22P02 for each value
        *(item(i, qty=-i) for i in range(110, 113)),  # 23514 check, each row different
        *(f"[{10**i}, nope".encode() for i in range(3)),  # JSON error at column 3, 4, 5
        *(item(i, code="taken") for i in range(120, 122)),  # 23505 Key (code)=(taken)
        item(130, qty=2**40),  # 22003 value "1099511627776" out of range
        envelope("orderz", "insert", {"id": 1}),  # unknown table: the name stays
        envelope("other", "insert", {"id": 1}),
    ]


# Each reason as grouped, and how many of bad_messages() it holds.
REASONS = {
    '22P02: invalid input syntax for type integer: "…"': 6,
    '23514: new row for relation "items" violates check constraint "items_qty_check"\n'
    "DETAIL:  Failing row contains (…). (Failing row contains (…).)": 3,
    "not valid JSON: invalid literal, expected 'null': line … column … (char …)": 3,
    '23505: duplicate key value violates unique constraint "items_code_key"\n'
    "DETAIL:  Key (code)=(…) already exists. (Key (code)=(…) already exists.)": 2,
    '22003: value "…" is out of range for type integer': 1,
}


async def test_reasons_group_one_failure_across_values(env: Env, nursery: trio.Nursery) -> None:
    """Letters whose raw text differs only in a value, a number or a JSON position are one
    reason with their count (commonest first); table and constraint names stay apart;
    every destination's letters are counted, with a raw example of each reason."""
    await env.create_schema(TABLES)
    flow = env.flow_yaml(destinations=[("primary", env.pg_url), ("second", env.pg_url)])
    bad = bad_messages()
    async with env.running(env.config(flow), nursery) as running:
        await env.publish(env.subject() + ".x", [item(1, code="taken"), *bad])
        await env.applied(len(bad) + 1)
        await env.applied(len(bad) + 1, dest="second")
        async with httpx.AsyncClient(base_url=running.api) as client:
            body = (await client.get("/api/dead-letters/reasons", params={"flow": "f"})).json()
            top2 = (await client.get("/api/dead-letters/reasons", params={"limit": 2})).json()
            missing = await client.get("/api/dead-letters/reasons", params={"flow": "nope"})
            bad_limit = await client.get("/api/dead-letters/reasons", params={"limit": "x"})
    assert body["total"] == body["grouped"] == 2 * len(bad) and body["unavailable"] == []
    assert body["distinct"] == 7  # the five above and two unknown tables
    counts = {g["reason"]: g["count"] for g in body["reasons"]}
    assert counts == {r: 2 * n for r, n in REASONS.items()} | {  # two destinations
        f"unknown table 'orderz' in schema '{env.schema}'": 2,
        f"unknown table 'other' in schema '{env.schema}'": 2,
    }
    assert [g["count"] for g in body["reasons"]] == [12, 6, 6, 4, 2, 2, 2]
    json_group = next(g for g in body["reasons"] if "JSON" in g["reason"])
    assert json_group["example"].startswith(
        "not valid JSON: invalid literal, expected 'null': line 1"
    )
    assert json_group["table"] is None
    assert sorted((d["destination"], d["count"]) for d in json_group["destinations"]) == [
        ("primary", 3),
        ("second", 3),
    ]
    assert len(top2["reasons"]) == 2 and top2["distinct"] == 7
    assert missing.status_code == 404 and bad_limit.status_code == 400


async def test_dead_letters_page_by_offset_and_filter_by_reason(
    env: Env, nursery: trio.Nursery
) -> None:
    """Pages of `limit` after `offset` cover every letter once, the last to fail first; `reason`
    keeps one group's letters; a window past 1,000 or a bad number is a 400."""
    await env.create_schema(TABLES)
    bad = [item(i, qty=f"v{i}") for i in range(20)] + [b"{nope"] * 5
    async with env.running(env.config(), nursery) as running:
        await env.publish(env.subject() + ".x", bad)
        await env.applied(len(bad))
        async with httpx.AsyncClient(base_url=running.api) as client:

            async def page(**params: Any) -> Any:
                resp = await client.get("/api/dead-letters", params={"flow": "f", **params})
                return resp.json()["dead_letters"] if resp.status_code == 200 else resp

            pages = [await page(limit=10, offset=o) for o in (0, 10, 20)]
            reason = next(d["reason"] for p in pages for d in p if "JSON" in d["error"])
            filtered = await page(limit=50, reason=reason)
            rejected = [
                await page(offset=-1),
                await page(offset=995, limit=10),
                await page(offset="x"),
                await page(reason="r" * 5000),
            ]
    assert [len(p) for p in pages] == [10, 10, 5]
    assert sorted(d["stream_seq"] for p in pages for d in p) == list(range(1, len(bad) + 1))
    order = [(d["failed_at"], d["stream_seq"]) for p in pages for d in p]
    assert order == sorted(order, reverse=True)  # the last to fail first, then stream order
    assert (
        reason
        == "not valid JSON: unexpected character, expected a string key: line … column … (char …)"
    )
    assert sorted(d["stream_seq"] for d in filtered) == [21, 22, 23, 24, 25]
    assert all(r.status_code == 400 for r in rejected), [r.text for r in rejected]
    assert "1000" in rejected[1].json()["error"]
