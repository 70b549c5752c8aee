"""Sessions on a real MariaDB for tests: asyncmy on plain asyncio, the dialect's settings.

Used by the MySQL spike tests (tests/integration/test_mysql_spike*.py) through the
``mysql_db`` fixture of tests/integration/conftest.py. Import it as ``mysqlkit``
(``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncmy
import pytest

__all__ = ["STRICT", "Db", "Session", "database", "quote", "run"]

STRICT = (
    "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION"
)


def quote(name: str) -> str:
    """MySQL identifier quoting: backticks, a backtick inside doubled."""
    return "`" + name.replace("`", "``") + "`"


class Session:
    """One autocommit connection with the dialect's session settings (strict unless told)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def rows(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        async with self.conn.cursor() as cur:
            await cur.execute(sql, args)
            return list(await cur.fetchall())

    async def one(self, sql: str, args: Any = None) -> Any:
        return (await self.rows(sql, args))[0][0]

    async def fails(self, sql: str, args: Any = None) -> tuple[int, str]:
        """(error code, message) of a statement that must fail."""
        with pytest.raises(asyncmy.errors.Error) as caught:
            await self.rows(sql, args)
        code, message = caught.value.args
        return code, message

    async def warnings(self) -> list[int]:
        return [r[1] for r in await self.rows("SHOW WARNINGS")]

    async def id(self) -> int:
        return int(await self.one("SELECT CONNECTION_ID()"))

    def close(self) -> None:
        self.conn.close()


@dataclass
class Db:
    host: str
    port: int
    name: str
    opened: list[Session] = field(default_factory=list)

    async def session(self, *, strict: bool = True, database: str | None = None) -> Session:
        conn = await asyncmy.connect(
            host=self.host,
            port=self.port,
            user="root",
            database=database or self.name,
            autocommit=True,
            connect_timeout=5,
        )
        s = Session(conn)
        self.opened.append(s)
        # lock_wait_timeout bounds metadata-lock waits (DDL behind an open transaction).
        await s.rows(
            "SET SESSION sql_mode = %s, time_zone = '+00:00', lock_wait_timeout = 10",
            (STRICT if strict else "",),
        )
        return s


def run(db: Db, scenario: Callable[[Db], Awaitable[None]]) -> None:
    """Run a scenario; its sessions are closed whatever happens (open transactions would
    hold metadata locks that stop the database from being dropped)."""

    async def body() -> None:
        try:
            await scenario(db)
        finally:
            for s in db.opened:
                s.close()
            db.opened.clear()

    asyncio.run(body())


@contextmanager
def database(url: str, name: str) -> Iterator[Db]:
    """A database (MySQL's schema) ``name`` created on the server of ``url``, dropped after."""
    u = urlsplit(url)
    world = Db(u.hostname or "127.0.0.1", u.port or 3306, name)

    async def admin(sql: str) -> None:
        s = await Db(world.host, world.port, u.path.lstrip("/")).session()
        try:
            await s.rows(sql)
        finally:
            s.close()

    asyncio.run(admin(f"CREATE DATABASE {quote(name)}"))
    try:
        yield world
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {quote(name)}"))
