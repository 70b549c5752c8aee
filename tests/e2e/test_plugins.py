"""A destination registered by a third party through entry points runs like a built-in."""

from __future__ import annotations

import trio
from harness import Env, envelope, wait_until

from cdcsync import registry


async def test_entry_point_destination_receives_events(
    memory_plugin: None, env: Env, nursery: trio.Nursery
) -> None:
    """A `cdcsync.destinations` entry point is found by type name and fed by the engine."""
    assert "memory" in registry.destinations()
    assert "postgres" in registry.destinations()  # built-ins come through the same door
    import memory_sink

    flow = env.flow_yaml().replace("type: postgres", "type: memory\n        bucket: b1", 1)
    flow = "\n".join(
        line
        for line in flow.splitlines()
        if not line.strip().startswith(("url:", "schema:", "state_schema:", "conflict_resolution:"))
    )
    async with env.running(env.config(flow + "\n"), nursery):
        await env.publish(
            env.subject() + ".x", [envelope("t", "insert", {"id": i}) for i in range(10)]
        )

        async def arrived() -> bool:
            return len(memory_sink.RECEIVED.get("b1", [])) == 10

        await wait_until(arrived, what="10 events in the plugin destination")
    assert memory_sink.RECEIVED["b1"][0] == ("t", "insert", {"id": 0})
