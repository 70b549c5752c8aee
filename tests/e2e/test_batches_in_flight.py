"""A batch prepared while the one before it was being written meets the table as it is when
its own write runs (docs/semantics.md, "Batches in flight")."""

from __future__ import annotations

import asyncpg
import trio
from harness import Env, envelope, wait_until

from cdcsync.bridge import aio


async def test_a_prepared_batch_is_judged_on_the_table_as_it_is_at_its_write(
    env: Env, nursery: trio.Nursery
) -> None:
    """Batch N waits at a table lock; N+1 is prepared behind it against the cached catalog,
    which still has the column ``extra``; the lock holder drops ``extra`` and commits. N+1's
    plan is stale: its write finds out, reads the catalog again and dead-letters the event
    that wrote ``extra`` (the column is gone), while the other event of N+1 lands."""
    await env.create_schema("CREATE TABLE items (id int PRIMARY KEY, name text, extra int);")
    subject = env.subject() + ".items"
    blocker = await aio(asyncpg.connect, env.pg_url)
    try:
        async with env.running(env.config(), nursery) as running:
            stats = running.service.flows[0].stats
            await env.publish(subject, [envelope("items", "insert", {"id": 0, "extra": 0})])
            await env.applied(1)  # the catalog of items, with extra, is cached now
            await aio(blocker.execute, "BEGIN")
            await aio(blocker.execute, f"LOCK TABLE {env.schema}.items IN EXCLUSIVE MODE")

            await env.publish(subject, [envelope("items", "insert", {"id": 1, "name": "n"})])

            async def writer_waits_at_the_lock() -> bool:
                rows = await env.sql(
                    "SELECT count(*) AS n FROM pg_stat_activity "
                    "WHERE application_name = $1 AND wait_event_type = 'Lock'",
                    "cdcsync:f:primary",
                )
                return bool(rows[0]["n"])

            await wait_until(writer_waits_at_the_lock, 15, what="batch N waiting at the lock")
            later = [
                envelope("items", "insert", {"id": 2, "name": "gone", "extra": 2}),
                envelope("items", "insert", {"id": 3, "name": "stays"}),
            ]
            await env.publish(subject, later)

            async def next_batch_taken() -> bool:
                return stats.received == 4

            await wait_until(next_batch_taken, 15, what="batch N+1 handed to the destination")
            await trio.sleep(0.3)  # the preparer plans it at once: no I/O in between
            assert stats.acked == 1, "batch N went through the lock"
            await aio(blocker.execute, f"ALTER TABLE {env.schema}.items DROP COLUMN extra")
            await aio(blocker.execute, "COMMIT")
            await env.applied(4)
        assert await env.rows("items") == [
            {"id": 0, "name": None},
            {"id": 1, "name": "n"},
            {"id": 3, "name": "stays"},
        ]
        letters = await env.dead_letters()
        assert [d["payload"] for d in letters] == [later[0]]
        error = letters[0]["error"]
        assert "unknown column" in error and "extra" in error, error
    finally:
        await aio(blocker.close)
