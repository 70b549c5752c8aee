"""The composition root: bridge, root nursery, signals, API and flows.

Everything long-lived hangs off one nursery. SIGINT/SIGTERM stops every flow's
source, lets in-flight batches commit and be acknowledged (bounded by
``drain_timeout_s``), then stops the API; a second signal cancels at once.
"""

from __future__ import annotations

import gc
import logging
import signal
from functools import partial

import hypercorn.config
import structlog
import trio

from cdcsync import logs
from cdcsync.api import server
from cdcsync.api.app import create_app
from cdcsync.bridge import open_bridge
from cdcsync.config import Config
from cdcsync.flow.pipeline import Flow

__all__ = ["Service", "serve"]

log = structlog.get_logger("cdcsync")


async def _serve_api(
    flows: list[Flow],
    config: Config,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    hconfig = hypercorn.config.Config()
    hconfig.bind = [f"{config.api.host}:{config.api.port}"]
    hconfig.accesslog = None
    # Hypercorn's own "Running on" banner is replaced by our structured "api listening".
    hconfig.errorlog = logging.getLogger("hypercorn.error")
    hconfig.graceful_timeout = 2
    # Idle connections (before a request and between keep-alive requests) close after this.
    hconfig.keep_alive_timeout = config.api.keep_alive_s
    app = create_app(
        flows,
        token=config.api.token,
        cors_origins=config.api.cors_origins,
        secrets=config.secrets(),
    )
    await server.serve(
        app,
        hconfig,
        max_connections=config.api.max_connections,
        shutdown_trigger=stop.wait,
        task_status=task_status,
    )


def _tune_gc() -> None:
    """Keep the cyclic GC from walking every in-flight message on each collection.

    Up to ``2 * max_ack_pending`` deliveries are alive at once; with the default
    thresholds full collections over them took a third of the CPU (docs/performance.md).
    Start-up objects are frozen out of collection; young collections run less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def serve(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    drain_timeout_s: float = 15.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run every flow of ``config`` and the API (see :meth:`Service.run`)."""
    await Service(config).run(
        shutdown=shutdown, drain_timeout_s=drain_timeout_s, task_status=task_status
    )


class Service:
    """The flows of one configuration and the API over them."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.flows = [Flow(fc) for fc in config.flows]

    async def run(
        self,
        *,
        shutdown: trio.Event | None = None,
        drain_timeout_s: float = 15.0,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until SIGINT/SIGTERM (or ``shutdown`` is set); started() gives the API binds."""
        await _run(self.config, self.flows, shutdown, drain_timeout_s, task_status)


async def _run(
    config: Config,
    flows: list[Flow],
    shutdown: trio.Event | None,
    drain_timeout_s: float,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    logs.hide(config.secrets())
    api_stop = trio.Event()
    stop = trio.Event()
    hard_stop = trio.Event()

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if not stop.is_set():
                    log.info("stopping: draining in-flight batches", signal=name)
                    stop.set()
                else:
                    log.warning("second signal: stopping without draining", signal=name)
                    hard_stop.set()

    async def watch_shutdown(event: trio.Event) -> None:
        await event.wait()
        stop.set()

    async with open_bridge(), trio.open_nursery() as root:
        root.start_soon(watch_signals)
        if shutdown is not None:
            root.start_soon(watch_shutdown, shutdown)
        binds: list[str] = []
        if config.api.enabled:
            binds = await root.start(_serve_api, flows, config, api_stop)
            log.info("api listening", binds=binds)
        for flow in flows:
            await root.start(flow.run, name=f"flow={flow.name}")
        _tune_gc()
        log.info("cdcsync started", flows=[f.name for f in flows])
        task_status.started(binds)
        await stop.wait()
        for flow in flows:
            flow.stop()
        with trio.move_on_after(drain_timeout_s) as drain:
            async with trio.open_nursery() as waiters:

                async def all_stopped() -> None:
                    for flow in flows:
                        await flow.stopped.wait()
                    waiters.cancel_scope.cancel()

                waiters.start_soon(all_stopped)
                await hard_stop.wait()
                drain.cancel()
        if drain.cancelled_caught:
            log.warning("stopped before draining; unacknowledged events will be redelivered")
        api_stop.set()
        root.cancel_scope.deadline = trio.current_time() + 3
        # The signal watcher never ends by itself.
        with trio.move_on_after(2.5):
            for flow in flows:
                await flow.stopped.wait()
        root.cancel_scope.cancel()
    log.info("cdcsync stopped")


def run(config: Config) -> None:
    trio.run(partial(serve, config))
