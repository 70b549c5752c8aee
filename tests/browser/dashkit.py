"""Helpers for the dashboard's browser tests: `cdcsync serve` as a real subprocess, a
test's NATS/PostgreSQL world (plain asyncio clients, as the tests are sync Playwright
tests), and page readers.

Import as ``dashkit`` (pytest puts tests/browser on sys.path).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import nats
import nats.errors
import nats.js.errors
from cdcproc import CdcProcess
from harness import envelope

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "DASHBOARD",
    "REPO",
    "DrainWatch",
    "Serve",
    "World",
    "number",
    "screenshot",
]

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS_KEPT = REPO / "docs" / "img"
T = TypeVar("T")


def screenshot(page: Any, shots: Path, name: str, keep: bool = True) -> Path:
    """Full-page PNG into the test's tmp dir; with CDCSYNC_UPDATE_SCREENSHOTS=1 and ``keep``,
    also a copy in docs/img/ (only on request, so a test run leaves the checkout clean)."""
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if keep and os.environ.get("CDCSYNC_UPDATE_SCREENSHOTS") == "1" and SCREENSHOTS_KEPT.is_dir():
        shutil.copyfile(path, SCREENSHOTS_KEPT / path.name)
    return path


class Serve(CdcProcess):
    """A ``cdcsync serve`` child process, with the browser tests' wait for its flows."""

    def wait_started(self, timeout: float = 30.0) -> str:
        """Wait for every flow to run (its stream and consumer exist: a publish before that
        finds no stream); returns the API's base URL."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"cdcsync exited with {self.proc.returncode}\n{self.tail()}")
            events = self.logs()
            binds = [b for e in events if e.get("event") == "api listening" for b in e["binds"]]
            flows = [f for e in events if e.get("event") == "cdcsync started" for f in e["flows"]]
            running = {e.get("flow") for e in events if e.get("event") == "flow running"}
            if binds and flows and running.issuperset(flows):
                return str(binds[0])
            time.sleep(0.1)
        raise AssertionError(f"cdcsync did not start within {timeout} s\n{self.tail()}")

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (a graceful drain), SIGKILL after ``grace`` seconds."""
        super().stop(grace)


def number(page: Any, test_id: str) -> int:
    """The integer a counter shows ("1,234" -> 1234)."""
    return int(page.get_by_test_id(test_id).inner_text().replace(",", "").strip())


def run_async(fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(fn())`` in a fresh thread.

    Playwright's sync API leaves its event loop marked as running in the test's thread,
    where ``asyncio.run`` would refuse to start.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(fn())).result()


TABLES = {
    "users": "CREATE TABLE users (id int PRIMARY KEY, name text)",
    "orders": "CREATE TABLE orders (id int PRIMARY KEY, total numeric(12, 2))",
}


def event(flow: str, i: int) -> bytes:
    if flow == "users":
        return envelope("users", "insert", {"id": i, "name": f"user {i}"})
    return envelope("orders", "insert", {"id": i, "total": f"{i}.50"})


@dataclass
class DrainWatch:
    """When :meth:`World.watch_drain` saw the consumer drained."""

    at: float | None = None
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float) -> float:
        assert self.done.wait(timeout), f"the consumer did not drain within {timeout} s"
        if self.error is not None:
            raise self.error
        assert self.at is not None
        return self.at


@dataclass
class World:
    """One test's names on the servers: stream, subjects, durables and schema from ``unique``."""

    nats_url: str
    pg_url: str
    unique: str

    def config(
        self,
        flows: tuple[str, ...] = ("users", "orders"),
        *,
        pg_url: str | None = None,
        bind: str = "127.0.0.1:0",
        token: str | None = None,
    ) -> str:
        api = f"api:\n  bind: {bind}\n" + (f"  token: {token}\n" if token else "")
        out = api + "flows:\n"
        for flow in flows:
            out += f"""\
  - name: {flow}
    source:
      type: nats
      servers: ["{self.nats_url}"]
      subject: "{self.unique}.{flow}.>"
      jetstream:
        stream: {self.unique.upper()}_{flow.upper()}
        durable: {self.unique}-{flow}
    batch: {{max_size: 500, max_delay_ms: 20}}
    destinations:
      - name: primary
        type: postgres
        url: "{pg_url or self.pg_url}"
        schema: {self.unique}
        state_schema: {self.unique}_state
        conflict_resolution: upsert
"""
        return out

    def sql(self, query: str, url: str | None = None) -> list[asyncpg.Record]:
        async def go() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(url or self.pg_url, timeout=5)
            try:
                return await conn.fetch(query)
            finally:
                await conn.close()

        return run_async(go)

    def execute(self, script: str, url: str | None = None) -> None:
        async def go() -> None:
            conn = await asyncpg.connect(url or self.pg_url, timeout=5)
            try:
                await conn.execute(script)
            finally:
                await conn.close()

        run_async(go)

    def create_schema(self, url: str | None = None) -> None:
        ddl = ";".join(TABLES.values())
        self.execute(
            f"DROP SCHEMA IF EXISTS {self.unique} CASCADE; CREATE SCHEMA {self.unique};"
            f"SET search_path = {self.unique}; {ddl}",
            url,
        )

    def drop_schema(self, url: str | None = None) -> None:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            self.execute(
                f"DROP SCHEMA IF EXISTS {self.unique} CASCADE; "
                f"DROP SCHEMA IF EXISTS {self.unique}_state CASCADE",
                url,
            )

    def delete_streams(self, flows: tuple[str, ...] = ("users", "orders")) -> None:
        """Remove this test's JetStream streams from the shared server."""

        async def go() -> None:
            nc = await nats.connect(self.nats_url, connect_timeout=3, max_reconnect_attempts=1)
            try:
                js = nc.jetstream()
                for flow in flows:
                    with contextlib.suppress(nats.js.errors.NotFoundError):
                        await js.delete_stream(f"{self.unique.upper()}_{flow.upper()}")
            finally:
                await nc.close()

        run_async(go)

    def ids(self, table: str, url: str | None = None) -> list[int]:
        rows = self.sql(f"SELECT id FROM {self.unique}.{table} ORDER BY id", url)
        return [r["id"] for r in rows]

    def publish(self, flow: str, payloads: list[bytes]) -> None:
        """Publish to the flow's stream; returns once JetStream acknowledged every message."""

        async def go() -> None:
            nc = await nats.connect(self.nats_url, connect_timeout=3, max_reconnect_attempts=1)
            try:
                js = nc.jetstream()
                futures = [await js.publish_async(f"{self.unique}.{flow}.x", p) for p in payloads]
                for f in futures:
                    await f
            finally:
                await nc.close()

        run_async(go)

    @contextlib.contextmanager
    def watch_drain(self, flow: str, delivered: int) -> Iterator[DrainWatch]:
        """Watch the flow's consumer on the server (every 20 ms) while inside.

        It has drained once at least ``delivered`` messages were delivered, every one is
        acknowledged and nothing is left to deliver: ``DrainWatch.wait`` returns when that was
        first seen (``time.monotonic()``).
        """
        watch = DrainWatch()

        async def go() -> None:
            nc = await nats.connect(self.nats_url, connect_timeout=3, max_reconnect_attempts=1)
            try:
                js = nc.jetstream()
                stream, durable = f"{self.unique.upper()}_{flow.upper()}", f"{self.unique}-{flow}"
                while not watch.stop.is_set():
                    try:
                        ci = await js.consumer_info(stream, durable)
                    except nats.errors.Error:
                        ci = None  # the consumer is being recreated (resume, restart)
                    if ci is not None:
                        acked, sent = ci.ack_floor.consumer_seq, ci.delivered.consumer_seq
                        if ci.num_pending == 0 and sent >= delivered and acked == sent:
                            watch.at = time.monotonic()
                            return
                    await asyncio.sleep(0.02)
            finally:
                await nc.close()

        def run() -> None:
            try:
                asyncio.run(go())
            except BaseException as exc:  # surfaced by wait()
                watch.error = exc
            watch.done.set()

        thread = threading.Thread(target=run, name="watch-drain", daemon=True)
        thread.start()
        try:
            yield watch
        finally:
            watch.stop.set()
            thread.join(10)

    def events(self, flow: str, ids: range) -> list[bytes]:
        return [event(flow, i) for i in ids]

    @contextlib.contextmanager
    def trickle(self, rates: dict[str, int], first_id: int = 100_000) -> Iterator[None]:
        """Publish ``rates[flow]`` events per second to each flow in a thread, while inside.

        Gives the charts a few seconds of live traffic for the screenshots.
        """
        stop = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            n = first_id
            try:
                while not stop.is_set():
                    for flow, per_second in rates.items():
                        jitter = (n // 7) % 5 - 2  # a little variation, deterministic
                        count = max(1, per_second + jitter * per_second // 10)
                        self.publish(flow, self.events(flow, range(n, n + count)))
                        n += count
                    stop.wait(1.0)
            except BaseException as exc:  # surfaced in the test below
                errors.append(exc)

        thread = threading.Thread(target=run, name="trickle", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(10)
        if errors:
            raise errors[0]
