"""The API's HTTP server: hypercorn's Trio worker, with a bound on open connections and
connections that close when they should.

Two things hypercorn 0.18 + quart-trio 0.12 do not do, measured with raw sockets
(tests/e2e/test_api_connections.py):

* Quart-Trio cancels a request's task as soon as hypercorn reports the stream closed,
  and hypercorn reports it from inside the app's last ``send``; the work that follows in
  that call (closing a ``Connection: close`` or refused-upload connection, re-arming the
  keep-alive timer) was cancelled with it. Such connections stayed open, unread, forever.
  :class:`FinishResponses` lets that last ``send`` finish.
* hypercorn accepts connections without limit; each dashboard tab holds one for its live
  stream, so a few thousand clients could take every file descriptor the flows need.
  :func:`serve` accepts at most ``max_connections`` at once; others wait in the kernel's
  listen queue until one closes.

Everything else is hypercorn's own ``worker_serve`` (lifespan, graceful shutdown).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

import hypercorn.config
import trio
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app

__all__ = ["FinishResponses", "serve"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class FinishResponses:
    """ASGI middleware: the last message of an HTTP response is sent shielded from the
    app's own cancellation, so the server's bookkeeping after it (close or keep alive)
    always runs. hypercorn already shields the socket write inside it."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def finishing_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        await self.app(scope, receive, finishing_send)


class _Bounded(trio.abc.Listener[trio.SocketStream]):
    """A listener that accepts only while a slot is free; the connection's handler frees it."""

    def __init__(self, listener: trio.SocketListener, slots: trio.Semaphore) -> None:
        self._listener, self._slots = listener, slots

    async def accept(self) -> trio.SocketStream:
        await self._slots.acquire()
        try:
            return await self._listener.accept()
        except BaseException:
            self._slots.release()
            raise

    async def aclose(self) -> None:
        await self._listener.aclose()


async def serve(
    app: Any,
    config: hypercorn.config.Config,
    *,
    max_connections: int,
    shutdown_trigger: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``config.bind`` (plain HTTP) until ``shutdown_trigger`` returns.

    ``task_status.started`` gets the bound addresses as URLs (``http://127.0.0.1:8080``).
    """
    wrapped = wrap_app(cast(Any, FinishResponses(app)), config.wsgi_max_body_size, "asgi")
    state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, state)
    context = WorkerContext(None)
    slots = trio.Semaphore(max_connections)

    async def connection(stream: trio.SocketStream) -> None:
        # TCPServer's annotation names an SSLStream; it handles plain streams too.
        server = TCPServer(wrapped, config, context, ConnectionState(state.copy()), stream)  # type: ignore[arg-type]
        try:
            await server.run()
        finally:
            slots.release()

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            listeners: list[_Bounded] = []
            binds: list[str] = []
            for sock in config.create_sockets().insecure_sockets:
                sock.listen(config.backlog)
                raw = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                listeners.append(_Bounded(raw, slots))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            async with trio.open_nursery() as accepting:
                accepting.start_soon(
                    partial(
                        trio.serve_listeners, connection, listeners, handler_nursery=server_nursery
                    )
                )
                task_status.started(binds)
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
            await context.terminated.set()
            server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
