"""One MySQL session of the destination (asyncmy, on asyncio): settings, statements,
transactions and the keepalive that lets a standby take over when a writer's host vanishes.

Every round trip goes through :class:`Session`, one at a time (an asyncio lock), so the
keepalive's ping never interleaves with a statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import Any

import asyncmy
import structlog

from cdcsync.sinks.mysql.options import MysqlOptions, server

__all__ = ["STRICT", "Session", "Transaction", "open_session", "route_driver_logs"]

# Strict for every table (STRICT_TRANS_TABLES would let a bad value in the second row of a
# multi-row insert into a non-transactional table through with a warning); no ANSI_QUOTES
# or NO_BACKSLASH_ESCAPES: the driver's escaping and our backticks assume neither.
STRICT = (
    "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION"
)
# Prepared statements kept per session (the server caps them server-wide at
# max_prepared_stmt_count, 16,382 by default).
_PREPARED = 256
# Headroom under max_allowed_packet for the statement around the parameters.
_PACKET_SLACK = 64 * 1024

log = structlog.get_logger("cdcsync.sinks.mysql")


class _ToStructlog(logging.Handler):
    """asyncmy logs the server's warnings (SHOW WARNINGS after a statement) on the stdlib
    logger ``asyncmy``: as structlog lines like every other line cdcsync writes."""

    def emit(self, record: logging.LogRecord) -> None:
        driver = structlog.get_logger("asyncmy")
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            driver.warning("MySQL warning", message=text)
        else:
            driver.debug("MySQL driver", message=text)


def route_driver_logs() -> None:
    logger = logging.getLogger("asyncmy")
    if not any(isinstance(h, _ToStructlog) for h in logger.handlers):
        logger.addHandler(_ToStructlog())
        logger.propagate = False


class Session:
    """An asyncmy connection with the dialect's settings and facts about its server."""

    def __init__(self, raw: Any, options: MysqlOptions) -> None:
        self.raw = raw
        self.depth = 0  # open transaction levels (1: a transaction, more: savepoints)
        self.mariadb = False
        self.fold_names = False  # lower_case_table_names is not 0
        self.max_packet = 16 * 1024 * 1024
        self._lock = asyncio.Lock()
        self._prepared: OrderedDict[str, Any] = OrderedDict()
        self._used = time.monotonic()
        self._closed = False
        self._keepalive: asyncio.Task[None] | None = None
        self._idle_s = max(1.0, options.session_timeout_s / 3)

    @property
    def budget(self) -> int:
        """The largest parameter a statement may carry (under max_allowed_packet)."""
        return max(1024, self.max_packet - _PACKET_SLACK)

    @property
    def closed(self) -> bool:
        return self._closed or not self.raw.connected

    async def rows(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        """A text-protocol statement (``%s`` parameters escaped by the driver)."""
        async with self._lock:
            try:
                async with self.raw.cursor() as cur:
                    await cur.execute(sql, args)
                    return list(await cur.fetchall() or ())
            finally:
                self._used = time.monotonic()

    async def execute(self, sql: str, args: Any = None) -> int:
        """A text-protocol statement; the rows it affected."""
        async with self._lock:
            try:
                async with self.raw.cursor() as cur:
                    return int(await cur.execute(sql, args) or 0)
            finally:
                self._used = time.monotonic()

    async def prepared(self, sql: str, args: tuple[Any, ...]) -> int:
        """A prepared statement (binary protocol, ``?`` parameters), prepared once per session."""
        async with self._lock:
            try:
                stmt = self._prepared.get(sql)
                if stmt is None:
                    stmt = await self.raw.prepare(sql)
                    self._prepared[sql] = stmt
                    if len(self._prepared) > _PREPARED:
                        _, old = self._prepared.popitem(last=False)
                        await old.close()
                else:
                    self._prepared.move_to_end(sql)
                result = await stmt.execute(args)
                return int(result.affected_rows or 0)
            finally:
                self._used = time.monotonic()

    def start_keepalive(self) -> None:
        self._keepalive = asyncio.get_running_loop().create_task(self._ping())

    async def _ping(self) -> None:
        """Ping while idle, so that the short wait_timeout only ends a session whose client
        is gone (a vanished host sends no FIN: without it the server would keep the session,
        and the writer's fence, for hours)."""
        try:
            while not self.closed:
                await asyncio.sleep(self._idle_s)
                if self.closed or self._lock.locked():
                    continue
                if time.monotonic() - self._used < self._idle_s:
                    continue
                async with self._lock:
                    await self.raw.ping(False)
                    self._used = time.monotonic()
        except Exception as exc:  # the connection is gone: the next statement says so
            log.debug("keepalive stopped", error=f"{type(exc).__name__}: {exc}")

    def _stop(self) -> None:
        self._closed = True
        task, self._keepalive = self._keepalive, None
        if task is not None and not task.done():
            task.cancel()

    async def close(self) -> None:
        self._stop()
        await self.raw.ensure_closed()

    def terminate(self) -> None:
        self._stop()
        with contextlib.suppress(Exception):
            self.raw.close()


async def open_session(options: MysqlOptions, program: str) -> Session:
    """Connect, set the session up and read what the dialect needs to know of the server."""
    where = server(options.url)
    raw = await asyncmy.connect(
        host=where.host,
        port=where.port,
        user=where.user,
        password=where.password,
        database=where.database,
        autocommit=True,
        charset="utf8mb4",
        connect_timeout=max(1, round(options.connect_timeout_s)),
        program_name=program[:64],
    )
    session = Session(raw, options)
    try:
        await session.execute(
            "SET SESSION sql_mode = %s, time_zone = '+00:00', wait_timeout = %s, "
            "lock_wait_timeout = 60",
            (STRICT, int(options.session_timeout_s)),
        )
        [(version, packet, lower)] = await session.rows(
            "SELECT VERSION(), @@max_allowed_packet, @@lower_case_table_names"
        )
    except BaseException:
        session.terminate()
        raise
    session.mariadb = "mariadb" in str(version).lower()
    session.max_packet = int(packet)
    session.fold_names = int(lower) != 0
    session.start_keepalive()
    return session


class Transaction:
    """A transaction, or a savepoint inside the open one (asyncpg's Transaction's shape)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.level = -1

    async def start(self) -> None:
        s = self.session
        self.level = s.depth
        if s.depth == 0:
            await s.execute("START TRANSACTION")
        else:
            await s.execute(f"SAVEPOINT cdcsync_{s.depth}")
        s.depth += 1

    async def commit(self) -> None:
        s = self.session
        s.depth = self.level
        if self.level == 0:
            await s.execute("COMMIT")
        else:
            await s.execute(f"RELEASE SAVEPOINT cdcsync_{self.level}")

    async def rollback(self) -> None:
        s = self.session
        s.depth = self.level
        if self.level == 0:
            await s.execute("ROLLBACK")
        else:
            await s.execute(f"ROLLBACK TO SAVEPOINT cdcsync_{self.level}")

    async def __aenter__(self) -> Transaction:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, *_: object) -> bool:
        if et is None:
            await self.commit()
            return False
        try:
            await self.rollback()
        except Exception:  # the session is broken: the first error is the one that matters
            self.session.depth = self.level
        return False
