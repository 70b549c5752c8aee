"""`check --connect` and `serve` with a MySQL destination: every problem in plain words with
its fix, and the driver's own log lines in cdcsync's format."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import mysqlread
from mysqlkit import Db
from servers import free_port
from structlog.testing import capture_logs
from test_cli import cdcsync

from cdcsync.sinks.mysql.options import MysqlOptions
from cdcsync.sinks.mysql.session import open_session, route_driver_logs


def test_check_connect_explains_every_mysql_problem_with_its_fix(
    tmp_path: Path, mysql_url: str, mysql_db: Db, unique: str
) -> None:
    """Unreachable server, refused login, missing database, missing table, a table without a
    key, a MyISAM table: one line each, at the destination's file:line, with the fix; `serve`
    refuses to start (exit 2) on the tables."""
    here = mysqlread.with_database(mysql_url, mysql_db.name)
    asyncio.run(
        mysqlread.execute(
            here,
            "CREATE TABLE keyless (a int, b text);"
            "CREATE TABLE nullable_unique (a int NULL, UNIQUE KEY (a));"
            "CREATE TABLE prefix_unique (a varchar(100) NOT NULL, UNIQUE KEY (a(10)));"
            "CREATE TABLE plain (id int PRIMARY KEY) ENGINE=MyISAM;",
        )
    )
    host = mysql_url.split("@", 1)[1].split("/", 1)[0]

    def flow(name: str, url: str, tables: str = "") -> str:
        return f"""
  - name: {name}
    source: {{type: nats, servers: ["nats://127.0.0.1:4222"], subject: "{unique}.{name}.>"}}
    destinations:
      - name: primary
        type: mysql
        url: "{url}"
        state_schema: {unique}_state{tables}
"""

    tables = (
        "\n        tables: {a: missing, b: keyless, c: nullable_unique, d: prefix_unique, e: plain}"
    )
    path = tmp_path / "mysql.yaml"
    path.write_text(
        "api: {enabled: false}\nflows:"
        + flow("down", f"mysql://root@127.0.0.1:{free_port()}/test")
        + flow("login", f"mysql://nobody:wrong@{host}/test")
        + flow("nodb", f"mysql://root@{host}/{unique}_nodb")
        + flow("tables", here, tables)
    )
    result = cdcsync("check", "--connect", str(path))
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if ": warning: " not in line]
    text = "\n".join(lines)

    def line_of(*needles: str) -> str:
        found = [line for line in lines if all(n in line for n in needles)]
        assert found, f"no line with {needles}:\n{text}"
        return found[0]

    assert line_of("'down'", "2003", "nothing accepts connections there", "start MySQL")
    assert line_of("'login'", "the server refused the login", "user name or password")
    assert "wrong" not in text  # the password never shows
    assert line_of("'nodb'", "1049", "no such database", f"CREATE DATABASE `{unique}_nodb`")
    assert line_of("missing does not exist", "create it")
    for table in ("keyless", "nullable_unique", "prefix_unique"):
        assert line_of(f"{table} has no primary key", "ADD PRIMARY KEY")
    assert line_of("plain uses the MyISAM engine", f"ALTER TABLE `{unique}`.`plain` ENGINE=InnoDB")
    assert all(re.match(rf"{re.escape(str(path))}:\d+: flow '", line) for line in lines), text
    assert "postgres" not in text.lower()  # no PostgreSQL advice for a MySQL destination

    only_tables = tmp_path / "tables.yaml"
    only_tables.write_text("api: {enabled: false}\nflows:" + flow("tables", here, tables))
    served = cdcsync("serve", str(only_tables), "--log-format", "json", timeout=30)
    assert served.returncode == 2, served.stderr
    assert "ENGINE=InnoDB" in served.stderr and "ADD PRIMARY KEY" in served.stderr


def test_driver_warnings_are_cdcsync_log_lines(mysql_url: str, capsys: object) -> None:
    """A server warning that asyncmy logs on the stdlib logger comes out as a structlog line
    (level warning, logger asyncmy), not as stray text on stderr."""
    route_driver_logs()
    options = MysqlOptions(url=mysql_url)

    async def warn() -> None:
        session = await open_session(options, "test")
        try:
            await session.rows("SELECT CAST('12abc' AS SIGNED)")  # warning 1292
        finally:
            session.terminate()

    with capture_logs() as logs:
        asyncio.run(warn())
    found = [e for e in logs if e.get("message", "").startswith("Truncated incorrect")]
    assert found and found[0]["log_level"] == "warning", logs
    assert not logging.getLogger("asyncmy").propagate


def test_a_user_with_the_documented_rights_can_sync(mysql_url: str, mysql_db: Db) -> None:
    """The rights docs/operations.md lists for the MySQL user are enough: the state database
    is created by cdcsync itself (CREATE on it), the conformance suite passes, and the user
    can write nothing else."""
    import trio

    from cdcsync.bridge import open_bridge
    from cdcsync.conformance import check_destination
    from cdcsync.sinks.mysql import MysqlSink

    user, state = f"{mysql_db.name}_u", f"{mysql_db.name}_state"
    admin = mysqlread.with_database(mysql_url, mysql_db.name)
    asyncio.run(
        mysqlread.execute(
            admin,
            "CREATE TABLE items (id int PRIMARY KEY, name text);"
            "CREATE TABLE secret (id int PRIMARY KEY);"
            f"CREATE USER '{user}'@'%' IDENTIFIED BY 'change-me';"
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON {mysql_db.name}.items TO '{user}'@'%';"
            f"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON {state}.* TO '{user}'@'%';",
        )
    )
    try:
        where = admin.replace("mysql://root@", f"mysql://{user}:change-me@")
        options = MysqlOptions(url=where, state_schema=state)

        async def conform() -> None:
            async with open_bridge():
                await check_destination(lambda: MysqlSink("c", "d", options), table="items")

        trio.run(conform)
        rows = asyncio.run(mysqlread.fetch(admin, "SELECT COUNT(*) FROM items"))
        assert rows[0][0] == 29
    finally:
        asyncio.run(
            mysqlread.execute(
                admin, f"DROP USER IF EXISTS '{user}'@'%'; DROP DATABASE IF EXISTS {state}"
            )
        )
