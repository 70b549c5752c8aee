"""The one place where Trio meets asyncio.

nats-py and asyncpg are asyncio libraries; cdcsync runs on Trio. Everything
crosses here, and crossings are expensive (a future and a task hop each), so
callers hand over whole batches: one crossing per batch, never one per message.
asyncio callbacks run on the Trio thread under trio-asyncio, so a nats-py
message callback may call a Trio channel's ``send_nowait`` directly. The other direction,
asyncio code that must wait for Trio code (aiokafka awaits its rebalance listeners), goes
through :func:`call_trio`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import ParamSpec, TypeVar, cast

import trio_asyncio

__all__ = ["aio", "call_trio", "open_bridge"]

P = ParamSpec("P")
T = TypeVar("T")


@asynccontextmanager
async def open_bridge() -> AsyncIterator[None]:
    """Run an asyncio loop on top of Trio for the lifetime of the block.

    Re-entrant: inside a block that already has a loop (a test harness, an embedding
    application) the existing loop is used.
    """
    if trio_asyncio.current_loop.get() is not None:
        yield
        return
    async with trio_asyncio.open_loop():
        yield


async def aio(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Await an asyncio coroutine function from Trio; cancellation propagates both ways."""
    return cast(T, await trio_asyncio.aio_as_trio(fn)(*args, **kwargs))


async def call_trio(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Await a Trio async function from asyncio code (e.g. a callback that a library awaits).

    The Trio function runs as a task of the bridge's loop, not of the caller's nursery: a
    caller that must not outlive something wraps ``fn`` in its own cancel scope.
    """
    return cast(T, await trio_asyncio.trio_as_aio(fn)(*args, **kwargs))
