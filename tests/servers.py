"""Real, throwaway NATS and PostgreSQL servers for the test suite.

The sync is judged against real servers, not mocks: the failures that matter
(a broker restart, a database that hangs, a killed postmaster) only show up
against the real thing. The servers themselves are ``cdcsync.embedded`` (the demo's);
this module adds what only tests need: freezing a server (``pause``/``resume``) and
finding or starting the servers the whole session shares.

Import it as ``servers`` (``tests/`` is put on ``sys.path`` by pytest because
``tests/conftest.py`` lives there and ``tests/`` is not a package).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import time
from pathlib import Path

from cdcsync import embedded
from cdcsync.embedded import (
    LOCALHOST,
    ServerError,
    children,
    free_port,
    nats_info,
    nats_server_binary,
    port_open,
    postgres_bin_dir,
    signal_all,
)

__all__ = [
    "NatsServer",
    "PostgresServer",
    "ServerError",
    "ensure_shared_services",
    "free_port",
    "nats_info",
    "nats_server_binary",
    "port_open",
    "postgres_bin_dir",
]

NATS_URL_ENV = "CDCSYNC_TEST_NATS_URL"
PG_URL_ENV = "CDCSYNC_TEST_PG_URL"
SYSTEM_NATS_PORT = 4222  # the machine's own services, tried before starting throwaway ones
SYSTEM_PG_PORT = 5432


class NatsServer(embedded.NatsServer):
    """A throwaway nats-server (see ``cdcsync.embedded.NatsServer``) that can be frozen."""

    _paused = False

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): sockets stay open but nothing answers."""
        if self._proc is not None and not self._paused:
            self._proc.send_signal(signal.SIGSTOP)
            _wait_stopped([self._proc.pid])
            self._paused = True

    def resume(self) -> None:
        """Undo ``pause()`` (SIGCONT)."""
        if self._proc is not None and self._paused:
            self._proc.send_signal(signal.SIGCONT)
        self._paused = False

    def start(self) -> None:
        self._paused = False
        super().start()

    def stop(self) -> None:
        self.resume()  # a stopped process would not act on SIGTERM
        super().stop()

    def kill(self) -> None:
        super().kill()
        self._paused = False


class PostgresServer(embedded.PostgresServer):
    """A throwaway PostgreSQL cluster (see ``cdcsync.embedded.PostgresServer``) that can be
    frozen."""

    _paused: list[int] = []  # replaced, never mutated

    def pause(self) -> None:
        """Freeze postmaster and backends (SIGSTOP): connections hang, nothing errors."""
        pid = self.postmaster_pid()
        if pid is None or self._paused:
            return
        self._paused = [pid, *children(pid)]
        signal_all(self._paused, signal.SIGSTOP)
        _wait_stopped(self._paused)

    def resume(self) -> None:
        """Undo ``pause()`` (SIGCONT)."""
        signal_all(self._paused, signal.SIGCONT)
        self._paused = []

    def stop(self) -> None:
        self.resume()
        super().stop()

    def kill(self) -> None:
        super().kill()
        self._paused = []


# --------------------------------------------------------------------------- shared services

_shared: tuple[str, str] | None = None


def _pg_usable(url: str) -> bool:
    """True if `url` accepts a real login; creates database `test` if only it is missing."""
    try:
        import asyncpg  # only needed here; keeps importing this module cheap
    except ImportError:
        return False

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=3)
        except asyncpg.InvalidCatalogNameError:
            admin = await asyncpg.connect(url.rsplit("/", 1)[0] + "/postgres", timeout=3)
            try:
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                    await admin.execute("CREATE DATABASE test")
            finally:
                await admin.close()
            conn = await asyncpg.connect(url, timeout=3)
        try:
            return await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()

    try:
        return asyncio.run(probe())
    except Exception:
        return False


def ensure_shared_services() -> tuple[str, str]:
    """(nats_url, postgres_url) of the servers the whole test session shares.

    Order: env vars CDCSYNC_TEST_NATS_URL / CDCSYNC_TEST_PG_URL; then the machine's
    own services on 127.0.0.1:4222 (with JetStream) and :5432 (database `test`), which
    this machine kind starts before each session and CI run; else
    throwaway servers started here and torn down at exit. The chosen URLs are put
    back into the env vars so subprocesses (and a second import of this module)
    use the same servers.
    """
    global _shared
    if _shared is not None:
        return _shared

    nats_url = os.environ.get(NATS_URL_ENV)
    if not nats_url:
        info = nats_info(SYSTEM_NATS_PORT)
        if info is not None and info.get("jetstream") is True:
            nats_url = f"nats://{LOCALHOST}:{SYSTEM_NATS_PORT}"
        else:
            nats = NatsServer()
            atexit.register(nats.close)
            nats.start()
            nats_url = nats.url

    pg_url = os.environ.get(PG_URL_ENV)
    if not pg_url:
        candidate = f"postgresql://postgres@{LOCALHOST}:{SYSTEM_PG_PORT}/test"
        if port_open(SYSTEM_PG_PORT) and _pg_usable(candidate):
            pg_url = candidate
        else:
            pg = PostgresServer()
            atexit.register(pg.close)
            pg.start()
            pg.create_database("test")
            pg_url = pg.url_for("test")

    os.environ[NATS_URL_ENV] = nats_url
    os.environ[PG_URL_ENV] = pg_url
    _shared = (nats_url, pg_url)
    return _shared


def _wait_stopped(pids: list[int], timeout: float = 5.0) -> None:
    """Return once every pid is in state T (stopped): SIGSTOP is delivered asynchronously."""
    deadline = time.monotonic() + timeout
    pending = list(pids)
    while pending and time.monotonic() < deadline:
        still = []
        for pid in pending:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue  # gone: nothing to wait for
            state = stat.rsplit(")", 1)[1].split()[0]
            if state not in ("T", "t"):
                still.append(pid)
        pending = still
        if pending:
            time.sleep(0.005)
