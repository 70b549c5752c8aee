"""Where the CPU went during a benchmark phase: us, PostgreSQL, nats-server, everything else.

The servers are found by the local port they listen on. "rest" is whatever else
ran on the machine (other people's test runs, the OS): a large value means the
figures of that phase were disturbed. :func:`wait_quiet` holds a phase back
until the machine is idle, up to a limit.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import psutil

__all__ = ["CpuMeter", "background_load", "local_server_pid", "wait_quiet"]


def _busy(t: Any) -> float:
    # guest time is already part of user time on Linux
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


def local_server_pid(url: str, default_port: int) -> int | None:
    """The local process serving ``url``, or None (remote host, or not visible to us)."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    port = parts.port or default_port
    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid:
                return int(c.pid)
    except (psutil.AccessDenied, OSError):
        pass
    return None


def _tree_cpu(pid: int | None) -> float:
    """CPU seconds of a server and its children, including children that already exited.

    PostgreSQL backends end with their connection; the postmaster reaps them, which
    adds their time to its ``children_*`` counters, so the sum below only grows.
    """
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        t = root.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in root.children():
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except psutil.NoSuchProcess:
                pass
        return float(total)
    except psutil.Error:
        return 0.0


class CpuMeter:
    """CPU seconds used over a ``with`` block, split by who used them."""

    def __init__(self, pg_pid: int | None, nats_pid: int | None) -> None:
        self.pg_pid, self.nats_pid = pg_pid, nats_pid
        self.own = self.pg = self.nats = self.rest = self.util = 0.0

    def __enter__(self) -> CpuMeter:
        self._own = time.process_time()
        self._pg = _tree_cpu(self.pg_pid)
        self._nats = _tree_cpu(self.nats_pid)
        self._sys = psutil.cpu_times()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._wall
        busy = _busy(psutil.cpu_times()) - _busy(self._sys)
        self.own = time.process_time() - self._own
        # A backend whose connection just closed counts nowhere until the postmaster
        # reaps it (then in children_*): give it a moment.
        time.sleep(0.2)
        self.pg = _tree_cpu(self.pg_pid) - self._pg
        self.nats = _tree_cpu(self.nats_pid) - self._nats
        self.rest = max(0.0, busy - self.own - self.pg - self.nats)
        self.util = busy / wall / (psutil.cpu_count() or 1) if wall > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "cpu_own_s": round(self.own, 3),
            "cpu_postgres_s": round(self.pg, 3),
            "cpu_nats_s": round(self.nats, 3),
            "cpu_rest_s": round(self.rest, 3),
            "machine_util": round(self.util, 3),
        }


def background_load(seconds: float = 1.0) -> float:
    """Share of the machine's CPU that is busy while we do nothing for ``seconds``."""
    before = psutil.cpu_times()
    time.sleep(seconds)
    after = psutil.cpu_times()
    total = sum(after) - sum(before) - (after.guest - before.guest)
    return (_busy(after) - _busy(before)) / total if total > 0 else 0.0


def wait_quiet(threshold: float, max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) until other work leaves the machine; return its load."""
    deadline = time.monotonic() + max_wait
    while True:
        util = background_load(1.0)
        if util <= threshold or time.monotonic() >= deadline:
            if util > threshold:
                print(f"  warning: machine still {util:.0%} busy with other work; measuring anyway")
            return util
