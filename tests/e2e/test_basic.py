"""The core promise end to end: events published on NATS land in PostgreSQL."""

from __future__ import annotations

import trio
from harness import Env, envelope, wait_until

USERS = "CREATE TABLE users (id int PRIMARY KEY, name text, email text, score int DEFAULT 7);"


async def test_jetstream_events_land_in_order(env: Env, nursery: trio.Nursery) -> None:
    """Inserts, updates and deletes published on JetStream end as the final rows in PostgreSQL."""
    await env.create_schema(USERS)
    subject = env.subject("f") + ".users"
    events = [envelope("users", "insert", {"id": i, "name": f"u{i}"}) for i in range(1, 201)]
    events += [envelope("users", "update", {"id": i, "email": f"{i}@x"}) for i in range(1, 51)]
    events += [envelope("users", "delete", {"id": i}) for i in range(151, 201)]
    async with env.running(env.config(), nursery):
        await env.publish(subject, events)

        async def done() -> bool:
            return await env.count("users") == 150 and bool(
                await env.sql(f"SELECT 1 FROM {env.schema}.users WHERE id=50 AND email='50@x'")
            )

        await wait_until(done, what="150 rows with updates applied")
    rows = await env.rows("users")
    assert [r["id"] for r in rows] == list(range(1, 151))
    assert rows[0] == {"id": 1, "name": "u1", "email": "1@x", "score": 7}
    assert rows[60] == {"id": 61, "name": "u61", "email": None, "score": 7}
    cp = await env.sql(
        f"SELECT last_seq FROM {env.state}.checkpoints WHERE flow='f' AND destination='primary'"
    )
    assert cp[0]["last_seq"] == 300
