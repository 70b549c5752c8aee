"""A slow destination slows only its own flow."""

from __future__ import annotations

import asyncpg
import trio
from harness import Env, envelope, wait_until

from cdcsync.bridge import aio


async def test_blocked_destination_never_stalls_another_flow(
    env: Env, nursery: trio.Nursery
) -> None:
    """While one flow's table is locked, the other flow keeps landing rows; then both finish."""
    await env.create_schema(
        "CREATE TABLE slow (id int PRIMARY KEY, v int);"
        "CREATE TABLE fast (id int PRIMARY KEY, v int);"
    )
    config = env.config(env.flow_yaml("a"), env.flow_yaml("b"))
    blocker = await aio(asyncpg.connect, env.pg_url)
    try:
        async with env.running(config, nursery) as running:
            tx = blocker.transaction()
            await aio(tx.start)
            await aio(blocker.execute, f"LOCK TABLE {env.schema}.slow IN ACCESS EXCLUSIVE MODE")
            await env.publish(
                env.subject("a") + ".x",
                [envelope("slow", "insert", {"id": i, "v": i}) for i in range(100)],
            )
            await env.publish(
                env.subject("b") + ".x",
                [envelope("fast", "insert", {"id": i, "v": i}) for i in range(500)],
            )

            async def fast_done() -> bool:
                return await env.count("fast") == 500

            await wait_until(fast_done, what="the unblocked flow to land all rows")
            flow_a = running.service.flows[0]
            assert flow_a.stats.destinations["primary"].written == 0
            await aio(tx.rollback)

            async def slow_done() -> bool:
                return await env.count("slow") == 100

            await wait_until(slow_done, what="the blocked flow to catch up")
    finally:
        await aio(blocker.close)
