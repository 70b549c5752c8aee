"""The fault-injection helpers in tests/servers.py do what the fault tests rely on.

Plain sync tests: clients run under `asyncio.run`, independent of trio, so a failure
here points at the helpers, not at cdcsync.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncmy
import asyncpg
import nats
import pytest
from servers import (
    MariaDBServer,
    NatsServer,
    PostgresServer,
    mysql_greeting,
    mysql_usable,
    nats_info,
    pid_alive,
    port_open,
)


async def _nats_connect(url: str) -> nats.NATS:
    return await nats.connect(url, connect_timeout=2, allow_reconnect=False)


def test_nats_server_starts_with_jetstream_on_loopback(nats_server: NatsServer) -> None:
    """A started NatsServer answers INFO with JetStream on its 127.0.0.1 URL; stop frees it."""
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    info = nats_info(nats_server.port)
    assert info is not None
    assert info["jetstream"] is True
    nats_server.stop()
    assert not port_open(nats_server.port)


def test_jetstream_message_survives_kill_and_restart(nats_server: NatsServer, unique: str) -> None:
    """A JetStream-acked message is still in its stream after SIGKILL + restart (same URL)."""
    stream = unique.upper()

    async def publish() -> int:
        nc = await _nats_connect(nats_server.url)
        try:
            js = nc.jetstream()
            await js.add_stream(name=stream, subjects=[f"{unique}.>"])
            ack = await js.publish(f"{unique}.x", b"survivor")
            return ack.seq
        finally:
            await nc.close()

    async def read(seq: int) -> bytes | None:
        nc = await _nats_connect(nats_server.url)
        try:
            return (await nc.jetstream().get_msg(stream, seq)).data
        finally:
            await nc.close()

    seq = asyncio.run(publish())
    nats_server.kill()
    assert not nats_server.running
    nats_server.restart()
    assert asyncio.run(read(seq)) == b"survivor"


def test_nats_pause_stalls_and_resume_recovers(nats_server: NatsServer) -> None:
    """A paused NatsServer accepts TCP (kernel backlog) but sends nothing; resume restores it."""
    nats_server.pause()
    try:
        with socket.create_connection(("127.0.0.1", nats_server.port), timeout=1) as s:
            s.settimeout(0.3)
            with pytest.raises(TimeoutError):
                s.recv(1)
    finally:
        nats_server.resume()
    assert nats_info(nats_server.port) is not None


def test_postgres_row_survives_kill_and_restart(pg_server: PostgresServer) -> None:
    """A committed row is still there after SIGKILL of postmaster + backends and a restart."""

    async def write() -> None:
        conn = await asyncpg.connect(pg_server.url, timeout=5)
        try:
            await conn.execute("CREATE TABLE t (v text)")
            await conn.execute("INSERT INTO t VALUES ('survivor')")
        finally:
            await conn.close()

    async def read() -> list[str]:
        conn = await asyncpg.connect(pg_server.url, timeout=5)
        try:
            return [r["v"] for r in await conn.fetch("SELECT v FROM t")]
        finally:
            await conn.close()

    asyncio.run(write())
    pg_server.kill()
    assert not pg_server.running
    assert not port_open(pg_server.port)
    pg_server.restart()
    assert asyncio.run(read()) == ["survivor"]


def test_postgres_pause_stalls_and_resume_recovers(pg_server: PostgresServer) -> None:
    """Queries on an open connection hang (no error) while paused and complete after resume."""

    async def scenario() -> int:
        conn = await asyncpg.connect(pg_server.url, timeout=5)
        try:
            pg_server.pause()
            try:
                with pytest.raises(TimeoutError):
                    await conn.fetchval("SELECT 1", timeout=0.3)
            finally:
                pg_server.resume()
            # the timed-out query was cancelled; the connection itself must still work
            return await conn.fetchval("SELECT 2", timeout=5)
        finally:
            await conn.close()

    assert asyncio.run(scenario()) == 2


def test_shared_services_are_usable(nats_url: str, pg_url: str) -> None:
    """The session's shared NATS has JetStream and its PostgreSQL `test` database accepts SQL."""

    async def check() -> tuple[bool, str]:
        nc = await _nats_connect(nats_url)
        try:
            account = await nc.jetstream().account_info()
        finally:
            await nc.close()
        conn = await asyncpg.connect(pg_url, timeout=5)
        try:
            db = await conn.fetchval("SELECT current_database()")
        finally:
            await conn.close()
        return account is not None, db

    assert asyncio.run(check()) == (True, "test")


async def _mysql(url: str, *statements: str) -> list[tuple[object, ...]]:
    """Run statements on a new autocommit connection; the last one's rows."""
    u = urlsplit(url)
    conn = await asyncmy.connect(
        host=u.hostname,
        port=u.port,
        user=u.username,
        database=u.path.lstrip("/"),
        autocommit=True,
        connect_timeout=5,
    )
    rows: list[tuple[object, ...]] = []
    try:
        async with conn.cursor() as cur:
            for statement in statements:
                await cur.execute(statement)
                rows = list(await cur.fetchall())
    finally:
        conn.close()
    return rows


def test_mariadb_server_answers_on_loopback_and_stops_gracefully(
    mariadb_server: MariaDBServer,
) -> None:
    """A started MariaDBServer greets on its 127.0.0.1 port, takes root without a password
    into database `test`; stop() is a clean shutdown that frees the port and the socket."""
    assert mariadb_server.url == f"mysql://root@127.0.0.1:{mariadb_server.port}/test"
    assert "MariaDB" in (mysql_greeting(mariadb_server.port) or "")
    assert mariadb_server.socket_path.is_socket()
    who = "SELECT DATABASE(), SUBSTRING_INDEX(CURRENT_USER(), '@', 1)"
    assert asyncio.run(_mysql(mariadb_server.url, who)) == [("test", "root")]
    mariadb_server.stop()
    assert not port_open(mariadb_server.port)
    assert not mariadb_server.socket_path.exists()
    assert "Shutdown complete" in mariadb_server.log_path.read_text()


def test_mariadb_row_survives_kill_and_restart(mariadb_server: MariaDBServer) -> None:
    """A committed InnoDB row is still there after SIGKILL of mariadbd and a restart on the
    same port; the uncommitted one is not."""

    async def write() -> None:
        conn = await asyncmy.connect(
            host="127.0.0.1", port=mariadb_server.port, user="root", database="test"
        )
        async with conn.cursor() as cur:
            await cur.execute("CREATE TABLE t (v varchar(20)) ENGINE=InnoDB")
            await cur.execute("INSERT INTO t VALUES ('survivor')")
            await conn.commit()
            await cur.execute("INSERT INTO t VALUES ('uncommitted')")
        mariadb_server.kill()  # with the second transaction open
        conn.close()

    asyncio.run(write())
    assert not mariadb_server.running
    assert not port_open(mariadb_server.port)
    mariadb_server.restart()
    assert asyncio.run(_mysql(mariadb_server.url, "SELECT v FROM t")) == [("survivor",)]


def test_mariadb_pause_stalls_and_resume_recovers(mariadb_server: MariaDBServer) -> None:
    """A paused server accepts TCP (kernel backlog) but sends no greeting; resume restores it."""
    mariadb_server.pause()
    try:
        assert mysql_greeting(mariadb_server.port, timeout=0.3) is None
    finally:
        mariadb_server.resume()
    assert asyncio.run(_mysql(mariadb_server.url, "SELECT 1")) == [(1,)]


def _python_with_servers(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a new interpreter that can import tests/servers.py."""
    tests_dir = Path(__file__).resolve().parent.parent
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**env, "PYTHONPATH": str(tests_dir)},
    )


def test_mariadb_server_is_gone_after_its_process_fails(tmp_path: Path) -> None:
    """A process that started a MariaDBServer and then dies of an exception leaves neither
    a running mariadbd nor its directory behind (atexit closes every server)."""
    script = (
        "from servers import MariaDBServer\n"
        "s = MariaDBServer()\n"
        "s.start()\n"
        "print(s.pid, s.base_dir, flush=True)\n"
        "raise SystemExit('a test failed')\n"
    )
    proc = _python_with_servers(script, dict(os.environ))
    assert proc.returncode == 1, proc.stderr
    pid, base_dir = proc.stdout.split()
    assert not pid_alive(int(pid))
    assert not Path(base_dir).exists()


def test_shared_mariadb_falls_back_to_a_throwaway_server() -> None:
    """Without the machine's MariaDB (here: nothing on the port it is looked for on) and
    without CDCSYNC_TEST_MYSQL_URL, the session gets a throwaway server with database
    `test`, gone when the session's process exits."""
    script = (
        "import servers\n"
        "servers.SYSTEM_MYSQL_PORT = servers.free_port()\n"
        "url = servers.ensure_shared_mariadb()\n"
        "print(url, servers.mysql_usable(url), flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CDCSYNC_TEST_MYSQL_URL"}
    proc = _python_with_servers(script, env)
    assert proc.returncode == 0, proc.stderr
    url, usable = proc.stdout.split()
    port = urlsplit(url).port
    assert url == f"mysql://root@127.0.0.1:{port}/test"
    assert port != 3306
    assert usable == "True"
    assert port is not None and not port_open(port)


def test_shared_mariadb_is_usable(mysql_url: str) -> None:
    """The session's shared MariaDB accepts root into database `test`, with InnoDB; it is
    the machine's own on 3306 when that one answers (as it does on this machine kind)."""
    if mysql_greeting(3306) is not None:
        assert mysql_usable("mysql://root@127.0.0.1:3306/test")
    assert asyncio.run(_mysql(mysql_url, "SELECT DATABASE(), @@default_storage_engine")) == [
        ("test", "InnoDB")
    ]
