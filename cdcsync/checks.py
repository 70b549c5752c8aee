"""``cdcsync check``: what would stop a configuration from working, in plain words."""

from __future__ import annotations

from typing import Any

import trio

from cdcsync import registry
from cdcsync.bridge import open_bridge
from cdcsync.config import Config
from cdcsync.errors import CdcSyncError

__all__ = ["connect_problems", "warnings"]


def warnings(config: Config) -> list[str]:
    """Legal but risky choices, as ``file:line: warning: ...``."""
    out = []
    for flow in config.flows:
        opts = flow.source.options
        if getattr(opts, "jetstream", "absent") is None:
            out.append(
                f"{config.path}:{flow.source.line}: warning: flow {flow.name!r} reads core NATS: "
                f"at-most-once, events published while cdcsync is down are lost "
                f"(add a 'jetstream' block for durable, exactly-once delivery)"
            )
    if config.api.enabled and config.api.host not in ("127.0.0.1", "localhost", "::1"):
        if not config.api.token:
            out.append(
                f"{config.path}:1: warning: the API listens on {config.api.host} without a token"
            )
    return out


async def _source_problems(flow_name: str, source: Any) -> list[str]:
    try:
        with trio.move_on_after(10) as scope:
            await source.connect()
            await source.identity(create=False)
        if scope.cancelled_caught:
            return [f"flow {flow_name!r}: NATS did not answer within 10 s"]
    except CdcSyncError as exc:
        return [f"flow {flow_name!r}: {exc}"]
    finally:
        await source.close()
    return []


async def connect_problems(config: Config) -> list[str]:
    """Connect to every server and check every mapped table; returns problems with their line."""
    problems: list[str] = []
    async with open_bridge():
        for flow in config.flows:
            spec = registry.sources()[flow.source.type]
            source = spec.factory(flow.name, flow.source.options)
            for p in await _source_problems(flow.name, source):
                problems.append(f"{config.path}:{flow.source.line}: {p}")
            for dest in flow.destinations:
                dspec = registry.destinations()[dest.type]
                sink = dspec.factory(flow.name, dest.name, dest.options)
                with trio.move_on_after(15) as scope:
                    found = await sink.problems()
                if scope.cancelled_caught:
                    found = [f"destination {dest.name!r}: no answer within 15 s"]
                problems.extend(
                    f"{config.path}:{dest.line}: flow {flow.name!r}: {p}" for p in found
                )
    return problems
