"""cdcsync.embedded, the servers `cdcsync demo` starts: the pgserver fallback, kept data on a
new port, and no server outliving a killed parent."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from cdcsync import embedded


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A directory the unprivileged PostgreSQL user can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="cdcsync-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _sql(url: str, query: str) -> object:
    async def go() -> object:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return await conn.fetchval(query)
        finally:
            await conn.close()

    return asyncio.run(go())


needs_pgserver_wheel = pytest.mark.skipif(
    not (sys.platform == "linux" and os.uname().machine == "x86_64" and sys.version_info < (3, 13)),
    reason="pgserver ships wheels for Linux x86_64 (and macOS) only",
)


@needs_pgserver_wheel
def test_pgserver_wheel_binaries_run_a_cluster() -> None:
    """The pgserver wheel (a runtime dependency) gives working binaries; as root the server
    runs as an unprivileged user, as PostgreSQL demands."""
    bin_dir = embedded.pgserver_bin_dir()
    assert bin_dir is not None, "pgserver is a dependency: pip install -e ."
    with embedded.PostgresServer(bin_dir=bin_dir) as pg:
        assert str(_sql(pg.url, "SELECT version()")).startswith("PostgreSQL 16")
        user = _sql(pg.url, "SELECT current_setting('data_directory')")
        owner = Path(str(user)).stat().st_uid
        assert owner != 0 or os.geteuid() != 0
    assert not pg.base_dir.exists()


def test_kept_cluster_is_reused_on_another_port(state_dir: Path) -> None:
    """A cluster in a given base_dir survives close() and serves its rows again on a new port."""
    base = state_dir / "pg"
    with embedded.PostgresServer(base_dir=base) as pg:
        _sql(pg.url, "CREATE TABLE kept AS SELECT 42 AS v")
    assert (base / "data" / "PG_VERSION").is_file()
    with embedded.PostgresServer(base_dir=base) as again:
        assert _sql(again.url, "SELECT v FROM kept") == 42
    assert base.exists()


_PARENT = """
import sys, time
from pathlib import Path
from cdcsync import embedded
nats = embedded.NatsServer(tied=True); nats.start()
pg = embedded.PostgresServer(base_dir=Path(sys.argv[1]), tied=True); pg.start()
print(nats.pid, pg.postmaster_pid(), flush=True)
time.sleep(600)
"""


def test_tied_servers_do_not_outlive_a_killed_parent(state_dir: Path) -> None:
    """SIGKILL of the process that started tied servers stops both (the parent-death signal);
    each has its own process group, so a terminal's Ctrl-C reaches only the parent."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(state_dir / "pg")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        nats_pid, pg_pid = (int(x) for x in parent.stdout.readline().split())
        assert os.getpgid(nats_pid) == nats_pid and os.getpgid(pg_pid) == pg_pid
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 15
        while embedded.pid_alive(nats_pid) or embedded.pid_alive(pg_pid):
            assert time.monotonic() < deadline, "a tied server outlived its parent"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


@needs_pgserver_wheel
def test_unreachable_pgserver_binaries_run_from_a_copy(state_dir: Path) -> None:
    """As root, binaries in a directory the server's user cannot enter (a venv under /root)
    are copied next to the cluster with their libraries, and the server starts."""
    bin_dir = embedded.pgserver_bin_dir()
    assert bin_dir is not None
    site = bin_dir.parent.parent.parent
    private = Path(tempfile.mkdtemp(prefix="cdcsync-private-"))  # 0700, root's
    try:
        for name in ("pgserver", "pgserver.libs"):
            shutil.copytree(site / name, private / name, symlinks=True)
        pg = embedded.PostgresServer(
            base_dir=state_dir / "pg", bin_dir=private / "pgserver" / "pginstall" / "bin"
        )
        with pg:
            assert str(_sql(pg.url, "SELECT version()")).startswith("PostgreSQL 16")
            if os.geteuid() == 0:
                assert pg.bin_dir.is_relative_to(state_dir)
    finally:
        shutil.rmtree(private, ignore_errors=True)
