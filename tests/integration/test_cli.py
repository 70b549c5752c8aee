"""The command line as a user runs it: exit codes and `file:line: message` output."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import trio

from cdcsync.bridge import aio, open_bridge


def cdcsync(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdcsync", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def test_generated_config_passes_check(tmp_path: Path) -> None:
    """`generate-config PATH` writes a file that `check` accepts with exit code 0."""
    path = tmp_path / "cdcsync.yaml"
    assert cdcsync("generate-config", str(path)).returncode == 0
    result = cdcsync("check", str(path))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    again = cdcsync("generate-config", str(path))
    assert again.returncode == 1 and "exists" in again.stderr


def test_check_reports_the_line_of_a_broken_config(tmp_path: Path) -> None:
    """A wrong value and an unknown key are reported as file:line: message, exit code 1."""
    path = tmp_path / "broken.yaml"
    path.write_text(
        "flows:\n"
        "  - name: users\n"
        "    source:\n"
        "      type: nats\n"
        "      servers: [nats://127.0.0.1:4222]\n"
        "      subject: cdc.users\n"
        "      format: avro\n"
        "    destinations:\n"
        "      - name: primary\n"
        "        type: postgres\n"
        "        url: postgresql://postgres:hunter2@127.0.0.1:5432/test\n"
        "        colour: blue\n"
    )
    result = cdcsync("check", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith(f"{path}:7:") and "avro" in line for line in lines), lines
    assert "hunter2" not in result.stderr + result.stdout


def test_check_warns_about_core_nats(tmp_path: Path) -> None:
    """A flow without JetStream passes but is flagged as at-most-once, with its line."""
    path = tmp_path / "core.yaml"
    path.write_text(
        "nats: {servers: ['nats://localhost:4222'], subject: 'cdc.events'}\n"
        "postgres: {url: 'postgresql://postgres:postgres@localhost:5432/cdc'}\n"
    )
    result = cdcsync("check", str(path))
    assert result.returncode == 0
    assert f"{path}:1: warning:" in result.stderr and "at-most-once" in result.stderr


async def _sql(url: str, script: str) -> None:
    async with open_bridge():
        conn = await aio(asyncpg.connect, url)
        try:
            await aio(conn.execute, script)
        finally:
            await aio(conn.close)


def _keyless_config(tmp_path: Path, nats_url: str, pg_url: str, unique: str) -> Path:
    path = tmp_path / "keyless.yaml"
    path.write_text(
        f"""
api: {{bind: "127.0.0.1:0"}}
flows:
  - name: f
    source:
      type: nats
      servers: ["{nats_url}"]
      subject: "{unique}.>"
      jetstream: {{stream: {unique.upper()}, durable: {unique}}}
    destinations:
      - name: primary
        type: postgres
        url: "{pg_url}"
        schema: {unique}
        tables: {{events: keyless, users: missing_table}}
"""
    )
    return path


def test_keyless_and_missing_tables_are_refused(
    tmp_path: Path, nats_url: str, pg_url: str, unique: str
) -> None:
    """`check --connect` and `serve` refuse a mapped table without a key, and say the fix."""
    trio.run(
        _sql, pg_url, f"CREATE SCHEMA {unique}; CREATE TABLE {unique}.keyless (a int, b text);"
    )
    try:
        path = _keyless_config(tmp_path, nats_url, pg_url, unique)
        result = cdcsync("check", "--connect", str(path))
        assert result.returncode == 1
        assert "keyless has no primary key" in result.stderr
        assert "ADD PRIMARY KEY" in result.stderr
        assert "missing_table does not exist" in result.stderr
        served = cdcsync("serve", str(path), "--log-format", "json", timeout=30)
        assert served.returncode == 2
        assert "ADD PRIMARY KEY" in served.stderr
    finally:
        trio.run(_sql, pg_url, f"DROP SCHEMA IF EXISTS {unique} CASCADE")


def test_check_connect_explains_unreachable_servers_with_the_fix(
    tmp_path: Path, nats_url: str, pg_url: str, unique: str
) -> None:
    """`check --connect` says in plain words why each server cannot be used and what to do:
    nothing listening (NATS, PostgreSQL), NATS without JetStream, a missing database, and a
    missing stream that cdcsync may not create. Each line names its file:line."""
    from servers import free_port, nats_info, nats_server_binary

    closed = free_port()
    core_port = free_port()
    core = subprocess.Popen(
        [nats_server_binary(), "-a", "127.0.0.1", "-p", str(core_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while nats_info(core_port) is None:
            assert time.monotonic() < deadline, "core nats-server did not start"
            time.sleep(0.05)
        base = pg_url.rsplit("/", 1)[0]  # the suite's PostgreSQL, another database

        def flow(name: str, nats: str, pg: str, js: str) -> str:
            return f"""
  - name: {name}
    source:
      type: nats
      servers: ["{nats}"]
      subject: "{unique}.{name}.>"
      jetstream: {{{js}}}
    destinations:
      - name: primary
        type: postgres
        url: "{pg}"
"""

        js = f"stream: {unique.upper()}_X, durable: {unique}"
        down = f"postgresql://postgres@127.0.0.1:{closed}/test"
        path = tmp_path / "servers.yaml"
        path.write_text(
            "flows:"
            + flow("down", f"nats://127.0.0.1:{closed}", down, js)
            + flow("corenats", f"nats://127.0.0.1:{core_port}", f"{base}/{unique}_nodb", js)
            + flow("nostream", nats_url, pg_url, js + ", create_stream: false")
        )  # fmt: skip
        result = cdcsync("check", "--connect", str(path))
    finally:
        core.kill()
        core.wait()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    text = "\n".join(lines)

    def line_of(*needles: str) -> str:
        found = [line for line in lines if all(n in line for n in needles)]
        assert found, f"no line with {needles}:\n{text}"
        return found[0]

    assert line_of("'down'", "NATS", "nothing accepts connections there", "nats-server -js")
    assert line_of("'down'", "postgresql://", "nothing accepts connections", "start PostgreSQL")
    assert line_of("'corenats'", "has no JetStream", "start it with -js")
    nodb = line_of("'corenats'", f"{unique}_nodb")
    assert "no such database" in nodb and f"createdb {unique}_nodb" in nodb
    nostream = line_of("'nostream'", f"{unique.upper()}_X")
    assert "does not exist" in nostream and "create_stream: true" in nostream
    assert all(re.match(rf"{re.escape(str(path))}:\d+: flow '", line) for line in lines), text
