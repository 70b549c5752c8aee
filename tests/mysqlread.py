"""Reading and preparing a MySQL / MariaDB database from tests, in asyncpg's shape.

Plain asyncio (asyncmy), one connection per call, so a helper works whatever the server
went through in between (restarts, kills). Queries may be written once for both databases:
``$1, $2`` placeholders become ``%s`` and the session runs with ``ANSI_QUOTES``, so
``"Odd Table"`` is an identifier here as in PostgreSQL. Rows are :class:`Row`: indexable by
position and by column name, ``dict(row)`` and ``tuple(row)`` work as with asyncpg's Record.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncmy
from asyncmy.constants import CLIENT

__all__ = ["Row", "execute", "fetch", "with_database"]

_PLACEHOLDER = re.compile(r"\$\d+")
SQL_MODE = (
    "ANSI_QUOTES,STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION"
)


class Row(tuple[Any, ...]):
    """A result row: ``row[0]``, ``row["name"]``, ``dict(row)``, ``tuple(row)``."""

    _names: tuple[str, ...]

    def __new__(cls, values: tuple[Any, ...], names: tuple[str, ...]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names.index(key))
        return tuple.__getitem__(self, key)

    def keys(self) -> tuple[str, ...]:
        return self._names


def with_database(url: str, database: str) -> str:
    """``url`` with another database."""
    u = urlsplit(url)
    return u._replace(path=f"/{database}").geturl()


async def _connect(url: str) -> Any:
    u = urlsplit(url)
    conn = await asyncmy.connect(
        host=u.hostname or "127.0.0.1",
        port=u.port or 3306,
        user=unquote(u.username or "root"),
        password=unquote(u.password or ""),
        database=unquote(u.path.lstrip("/")) or None,
        autocommit=True,
        connect_timeout=5,
        client_flag=CLIENT.MULTI_STATEMENTS,
    )
    async with conn.cursor() as cur:
        await cur.execute(f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00'")
    return conn


async def fetch(url: str, query: str, *args: Any) -> list[Row]:
    """The rows of one statement (``$n`` placeholders, in order)."""
    text = _PLACEHOLDER.sub("%s", query.replace("%", "%%")) if args else query
    conn = await _connect(url)
    try:
        async with conn.cursor() as cur:
            await cur.execute(text, args or None)
            names = tuple(d[0] for d in cur.description or ())
            return [Row(tuple(r), names) for r in await cur.fetchall() or ()]
    finally:
        conn.close()


async def execute(url: str, script: str) -> None:
    """Run a script of one or more statements separated by ';'."""
    conn = await _connect(url)
    try:
        async with conn.cursor() as cur:
            await cur.execute(script)
            while await cur.nextset():
                pass
    finally:
        conn.close()
