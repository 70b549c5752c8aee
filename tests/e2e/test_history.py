"""GET /api/history: the last per-second snapshots of a running service, for the dashboard."""

from __future__ import annotations

from typing import Any

import httpx
import trio
from harness import Env, envelope, read_sse, wait_until

TABLE = "CREATE TABLE hist_users (id int PRIMARY KEY, name text);"


def row(i: int) -> bytes:
    return envelope("hist_users", "insert", {"id": i, "name": f"user {i}"})


async def history(client: httpx.AsyncClient) -> dict[str, Any]:
    resp = await client.get("/api/history")
    assert resp.status_code == 200
    return resp.json()


async def test_history_oldest_first_matches_postgres(env: Env, nursery: trio.Nursery) -> None:
    """After ~3 s the history holds >= 2 snapshots, oldest first; the newest
    one's written counter equals the rows in PostgreSQL; after a reset it restarts from zero."""
    await env.create_schema(TABLE)
    subject = env.subject() + ".hist_users"
    async with env.running(env.config(), nursery) as running:
        async with httpx.AsyncClient(base_url=running.binds[0]) as client:
            await env.publish(subject, [row(i) for i in range(25)])
            await wait_until(lambda: _count_is(env, 25), what="25 rows in PostgreSQL", timeout=20)
            await trio.sleep(3)  # at least two snapshots taken after the rows landed

            body = await history(client)
            assert body["interval_s"] == 1
            snaps = body["snapshots"]
            assert len(snaps) >= 4, snaps
            times = [s["ts"] for s in snaps]
            assert times == sorted(times) and len(set(times)) == len(times)
            [flow] = snaps[-1]["flows"]
            assert flow["name"] == "f"
            assert flow["written"] == await env.count("hist_users") == 25
            assert flow["dropped"] == 0
            assert [d["name"] for d in flow["destinations"]] == ["primary"]
            # Counters never go down between snapshots while nothing resets them.
            written = [s["flows"][0]["written"] for s in snaps]
            assert written == sorted(written)
            assert "cpu_percent" in snaps[-1]["system"]

            # The live stream sends the same snapshots: its first one is in the history.
            first = await first_streamed(running.binds[0])
            assert first["ts"] in {s["ts"] for s in (await history(client))["snapshots"]}
            assert first["flows"][0]["written"] == 25

            resp = await client.post("/api/stats/reset")
            assert resp.status_code == 200
            after = (await history(client))["snapshots"]
            assert len(after) <= 2, after
            assert all(s["flows"][0]["written"] == 0 for s in after), after
            assert all(s["ts"] > times[-1] for s in after)

            await env.publish(subject, [row(i) for i in range(25, 30)])
            await wait_until(lambda: _count_is(env, 30), what="30 rows", timeout=20)
            await trio.sleep(2)
            after = (await history(client))["snapshots"]
            assert after[-1]["flows"][0]["written"] == 5
            assert len(after) >= 2


async def first_streamed(base: str) -> dict[str, Any]:
    """The first snapshot of GET /api/stream."""
    with trio.fail_after(10):
        return (await read_sse(base, 1)).events[0]


async def _count_is(env: Env, n: int) -> bool:
    return await env.count("hist_users") == n
