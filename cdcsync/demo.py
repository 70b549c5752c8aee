"""``cdcsync demo``: a working system in one command, with nothing set up beforehand.

It uses the NATS and PostgreSQL servers it is given (``NATS_URL`` / ``DATABASE_URL``, the
options, or a config file) when they answer, and otherwise starts its own
(:mod:`cdcsync.embedded`) on free ports in a state directory: a temporary one removed at
exit, or ``--keep-data DIR``, kept and reused by the next run. Then it creates the demo's
tables, runs three flows (orders fanning out to two databases), publishes a shop's changes
(:mod:`cdcsync.demo_workload`) and serves the API and dashboard. SIGINT/SIGTERM stop
cdcsync (draining), the publisher, then the servers, and exit 0.

Servers are started and stopped from the main thread outside ``trio.run``: they are tied
to it (see ``embedded._die_with_parent``), so a killed demo leaves none behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import asyncpg
import trio

from cdcsync import config as config_mod
from cdcsync import embedded, logs
from cdcsync.demo_workload import BAD_EVERY, Shop, schema_sql
from cdcsync.errors import CdcSyncError
from cdcsync.progress import Progress
from cdcsync.sinks.postgres.sql import quote_ident

__all__ = ["DemoOptions", "run"]

EMBEDDED_DB = "shop"


@dataclass
class DemoOptions:
    rate: float = 50.0
    events: int = 0  # 0: publish until stopped
    keep_data: str | None = None
    port: int | None = None
    prefix: str = "demo"
    nats_url: str | None = None
    database_url: str | None = None
    config: str | None = None
    seed: int = 1
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)


@dataclass
class _Servers:
    nats_url: str
    shop_url: str
    analytics_url: str
    notes: list[str] = field(default_factory=list)
    psql: str = "psql"


class _Stop(Exception):
    """SIGTERM outside ``trio.run`` (Ctrl-C arrives as KeyboardInterrupt)."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def _nats_answers(url: str) -> bool:
    """True if the first server of ``url`` answers INFO with JetStream enabled."""
    first = url.split(",")[0].strip()
    parsed = urllib.parse.urlsplit(first if "://" in first else f"nats://{first}")
    info = embedded.nats_info(parsed.port or 4222, parsed.hostname or "127.0.0.1", timeout=2)
    return info is not None and info.get("jetstream") is True


async def _pg_answers(url: str) -> str | None:
    """None if ``url`` accepts a login (creating its database if only that is missing)."""
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except asyncpg.InvalidCatalogNameError:
        try:
            await _create_database(url, urllib.parse.urlsplit(url).path.lstrip("/"))
            conn = await asyncpg.connect(url, timeout=3)
        except Exception as exc:
            return str(exc)
    except Exception as exc:
        return str(exc) or type(exc).__name__
    await conn.close()
    return None


def _with_database(url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


async def _create_database(url: str, name: str) -> None:
    admin = await asyncpg.connect(_with_database(url, "postgres"), timeout=5)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await admin.execute(f"CREATE DATABASE {quote_ident(name)}")
    finally:
        await admin.close()


def _given_servers(opts: DemoOptions) -> tuple[str | None, str | None]:
    """The NATS and PostgreSQL URLs the user named: options, then config file, then env."""
    nats_url, db_url = opts.nats_url, opts.database_url
    if opts.config:
        cfg = config_mod.load(opts.config)
        for flow in cfg.flows:
            servers = getattr(flow.source.options, "servers", None)
            if nats_url is None and servers:
                nats_url = ",".join(servers)
            for dest in flow.destinations:
                if db_url is None and dest.type == "postgres":
                    db_url = dest.options.url
    return nats_url or os.environ.get("NATS_URL"), db_url or os.environ.get("DATABASE_URL")


def _start_servers(opts: DemoOptions, state: Path, stack: contextlib.ExitStack) -> _Servers:
    """Use the given servers that answer; start embedded ones for the rest."""
    given_nats, given_db = _given_servers(opts)
    notes: list[str] = []
    if given_nats and _nats_answers(given_nats):
        nats_url = given_nats
        notes.append(f"NATS        {config_mod.redact_url(nats_url)}  (yours)")
    else:
        if given_nats:
            print(f"demo: NATS at {config_mod.redact_url(given_nats)} does not answer "
                  f"(or has no JetStream): starting an embedded one", file=opts.err)  # fmt: skip
        nats = stack.enter_context(embedded.NatsServer(store_dir=state / "nats", tied=True))
        nats_url = nats.url
        notes.append(f"NATS        {nats_url}  (embedded nats-server {nats.binary}, JetStream)")

    problem = asyncio.run(_pg_answers(given_db)) if given_db else "not given"
    psql = shutil.which("psql") or "psql"
    if given_db and problem is None:
        shop_url = given_db
        analytics_url = _with_database(given_db, f"{opts.prefix}_analytics")
        notes.append(f"PostgreSQL  {config_mod.redact_url(shop_url)}  (yours)")
    else:
        if given_db:
            print(f"demo: PostgreSQL at {config_mod.redact_url(given_db)} does not answer "
                  f"({problem}): starting an embedded one", file=opts.err)  # fmt: skip
        pg = embedded.PostgresServer(base_dir=state / "postgres", tied=True)
        stack.enter_context(pg)
        shop_url, analytics_url = pg.url_for(EMBEDDED_DB), pg.url_for("analytics")
        notes.append(f"PostgreSQL  {shop_url}  (embedded, binaries in {pg.bin_dir})")
        if not shutil.which("psql") and (pg.bin_dir / "psql").is_file():
            psql = str(pg.bin_dir / "psql")
    return _Servers(nats_url, shop_url, analytics_url, notes, psql)


async def _prepare_databases(servers: _Servers, schema: str) -> int:
    """Create the analytics database and both schemas' tables; returns the next free id."""
    for url in (servers.shop_url, servers.analytics_url):
        name = urllib.parse.urlsplit(url).path.lstrip("/")
        try:
            conn = await asyncpg.connect(url, timeout=5)
        except asyncpg.InvalidCatalogNameError:
            try:
                await _create_database(url, name)
            except asyncpg.PostgresError as exc:
                raise CdcSyncError(
                    f"cannot create database {name!r} for the demo ({exc}): give the user "
                    f"CREATEDB, or leave DATABASE_URL unset to use an embedded PostgreSQL"
                ) from exc
            conn = await asyncpg.connect(url, timeout=5)
        try:
            await conn.execute(schema_sql(schema))
            if url == servers.shop_url:
                top = await conn.fetchval(
                    f'SELECT greatest((SELECT max(id) FROM "{schema}".users),'
                    f' (SELECT max(id) FROM "{schema}".orders))'
                )
        finally:
            await conn.close()
    return int(top or 0) + 1


def _config_text(servers: _Servers, prefix: str, port: int) -> str:
    def source(kind: str) -> str:
        return (
            f"    source:\n"
            f"      type: nats\n"
            f'      servers: ["{servers.nats_url}"]\n'
            f'      subject: "{prefix}.{kind}.>"\n'
            f"      jetstream: {{stream: {prefix.upper()}_{kind.upper()}, "
            f"durable: {prefix}-{kind}}}\n"
            f"      format: auto\n"
            f"    batch: {{max_size: 500, max_delay_ms: 50}}\n"
        )

    def dest(name: str, url: str) -> str:
        return (
            f"      - name: {name}\n"
            f"        type: postgres\n"
            f'        url: "{url}"\n'
            f"        schema: {prefix}\n"
            f"        state_schema: {prefix}_state\n"
        )

    shop = dest("shop", servers.shop_url)
    return (
        f"# Written by `cdcsync demo`: three flows; orders fan out to two databases.\n"
        f"api:\n  bind: 127.0.0.1:{port}\n"
        f"flows:\n"
        f"  - name: users\n{source('users')}    destinations:\n{shop}"
        f"  - name: orders\n{source('orders')}    destinations:\n{shop}"
        f"{dest('analytics', servers.analytics_url)}"
        f"  - name: inventory\n{source('inventory')}    destinations:\n{shop}"
    )


def _api_port(wanted: int | None) -> int:
    """``wanted``, else 8080 or the next free port up to 8099, else any free port."""
    if wanted is not None:
        return wanted
    for port in range(8080, 8100):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return embedded.free_port()


async def _publish(
    nats_url: str, shop: Shop, opts: DemoOptions, progress: Progress, flows: list[Any]
) -> None:
    """Send the shop's changes at ``opts.rate`` per second; NATS trouble is retried."""
    from cdcsync.bridge import aio
    from cdcsync.tools import connect

    # The flows create their streams as they start: publish once every flow reads.
    with trio.move_on_after(30):
        while any(f.stats.status != "running" for f in flows):  # noqa: ASYNC110 (a plain attribute, no event)
            await trio.sleep(0.05)
    nc = await connect(nats_url)
    js = nc.jetstream()
    interval = 1.0 / opts.rate if opts.rate > 0 else 0.0
    try:
        async with trio.open_nursery() as nursery:

            async def keep_note() -> None:
                while True:
                    stats = [f.stats.snapshot() for f in flows]
                    written = sum(s["written"] for s in stats)
                    dead = sum(s["dead_lettered"] for s in stats)
                    # Logs go to a file; a flow in trouble shows here instead.
                    trouble = [
                        f"flow {s['name']} {s['status']}: {s['last_error']}"
                        for s in stats
                        if s["status"] in ("degraded", "failed", "standby")
                    ]
                    progress.note(
                        "  ".join([f"written {written:,}  dead letters {dead:,}", *trouble])
                    )
                    await trio.sleep(0.5)

            nursery.start_soon(keep_note)
            next_at = trio.current_time()
            while not opts.events or shop.sent < opts.events:
                msg = next(shop)
                while True:
                    try:
                        await aio(js.publish, msg.subject, msg.body)
                        break
                    except Exception as exc:
                        progress.write(f"demo: publishing failed ({exc!r}); retrying in 1 s")
                        await trio.sleep(1)
                progress.advance()
                if interval:
                    next_at = max(next_at + interval, trio.current_time() - 1)
                    await trio.sleep_until(next_at)
            progress.close()
            progress.write(
                f"demo: published {shop.sent:,} events; cdcsync keeps running (Ctrl-C stops)"
            )
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await aio(nc.close)


async def _serve(cfg: config_mod.Config, servers: _Servers, shop: Shop, opts: DemoOptions,
                 banner: list[str]) -> dict[str, int]:  # fmt: skip
    """Run cdcsync and the publisher until a signal; returns the final counters."""
    from cdcsync.app import Service
    from cdcsync.bridge import open_bridge

    service = Service(cfg)
    shutdown = trio.Event()
    progress = Progress(opts.events or None, "events", stream=opts.err,
                        interval=None if opts.err.isatty() else 5.0)  # fmt: skip
    # Signals before cdcsync listens for them, or after it stopped, end up here.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_bridge(), trio.open_nursery() as nursery:

            async def on_signal() -> None:
                async for _ in signals:
                    shutdown.set()
                    nursery.cancel_scope.deadline = trio.current_time() + 20

            async def run_service(task_status: trio.TaskStatus[list[str]]) -> None:
                await service.run(shutdown=shutdown, task_status=task_status)
                nursery.cancel_scope.cancel()  # cdcsync drained: stop publishing

            nursery.start_soon(on_signal)
            binds = await nursery.start(run_service)
            url = f"http://{binds[0].split('://')[-1]}/" if binds else "(API disabled)"
            print("\n".join(line.replace("{url}", url) for line in banner), file=opts.out)
            opts.out.flush()
            nursery.start_soon(_publish, servers.nats_url, shop, opts, progress, service.flows)
    progress.close()
    stats = [f.stats.snapshot() for f in service.flows]
    return {
        "published": progress.count,
        "written": sum(s["written"] for s in stats),
        "dead_lettered": sum(s["dead_lettered"] for s in stats),
    }


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def run(opts: DemoOptions) -> int:
    """The demo, start to clean stop; exit code 0 after Ctrl-C or SIGTERM."""
    if opts.keep_data:
        state = Path(opts.keep_data).absolute()
        state.mkdir(parents=True, exist_ok=True)
    else:
        state = Path(tempfile.mkdtemp(prefix="cdcsync-demo-"))
        if os.geteuid() == 0:
            state.chmod(0o711)  # PostgreSQL runs as another user and must reach its dir
    log_file = open(state / "cdcsync.log", "a", encoding="utf-8")  # closed in finally
    logs.configure("json", "info", stream=log_file)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    totals: dict[str, int] = {}
    try:
        with contextlib.ExitStack() as stack:
            servers = _start_servers(opts, state, stack)
            start_id = asyncio.run(_prepare_databases(servers, opts.prefix))
            port = _api_port(opts.port)
            text = _config_text(servers, opts.prefix, port)
            config_path = state / "cdcsync-demo.yaml"
            config_path.write_text(text, encoding="utf-8")
            config_path.chmod(0o600)  # it holds the servers' URLs, passwords included
            cfg = config_mod.loads(text, str(config_path))
            shop = Shop(opts.prefix, seed=opts.seed, start_id=start_id)
            db = urllib.parse.urlsplit(servers.shop_url).path.lstrip("/")
            banner = [
                "cdcsync demo is running",
                *(f"  {n}" for n in servers.notes),
                "  flows       users -> shop; orders -> shop + analytics; inventory -> shop",
                "  dashboard   {url}",
                f"  rows        {servers.psql} {servers.shop_url} -c "
                f"'select * from {opts.prefix}.orders order by id desc limit 10'",
                f"  config      {config_path}  (cdcsync dlq list -c {config_path})",
                f"  logs        {state / 'cdcsync.log'}",
                f"  data        {state}"
                + (
                    "  (kept)"
                    if opts.keep_data
                    else "  (removed at exit; --keep-data DIR keeps it)"
                ),
                f"Publishing {opts.rate:g} events/s into database {db!r}, schema {opts.prefix!r} "
                f"(1 in {BAD_EVERY} deliberately bad: see the dead letters). Ctrl-C stops.",
            ]
            totals = trio.run(partial(_serve, cfg, servers, shop, opts, banner))
    except (KeyboardInterrupt, _Stop):
        pass
    except embedded.ServerError as exc:
        print(f"cdcsync demo: cannot start a server: {exc}", file=opts.err)
        return 1
    except (asyncpg.PostgresError, OSError) as exc:
        print(f"cdcsync demo: cannot set up the demo's tables: {exc}", file=opts.err)
        return 1
    except BaseExceptionGroup as group:  # from trio.run: e.g. the API port is taken
        leaves = _leaves(group)
        if not all(isinstance(e, (OSError, CdcSyncError)) for e in leaves):
            raise
        for leaf in leaves:
            print(f"cdcsync demo: cannot start cdcsync: {leaf}", file=opts.err)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        log_file.close()
        if not opts.keep_data:
            shutil.rmtree(state, ignore_errors=True)
    published = totals.get("published", 0)
    sent = f"published {published:,} events (~1 in {BAD_EVERY} bad)"
    wrote = f"; cdcsync wrote {totals['written']:,} rows" if totals else ""
    dead = f", {totals['dead_lettered']:,} dead letters" if totals else ""
    kept = f"; data kept in {state}" if opts.keep_data else "; servers stopped, data removed"
    print(f"cdcsync demo stopped: {sent}{wrote}{dead}{kept}", file=opts.out)
    return 0
