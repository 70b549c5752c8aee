"""The phases of ``e2e.py``: where each one's data lives, how it runs, how it is checked.

:class:`Run` names everything one run creates (streams, schemas, a database) so
that :func:`cleanup` can remove it all. :class:`Phases` has one method per phase;
each prepares a fresh destination, runs its writer and verifies the result
against the expected state. The cdcsync phases run the service in a child
process (``runner.py``); the baselines run here, on plain asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import nats
import workload as wl
from baselines import run_naive, run_nats_limit, run_pg_limit
from cpu import CpuMeter
from mysql_phases import (
    create_database,
    drop_databases,
    run_mysql_limit,
    run_mysql_naive,
    verify_mysql,
    with_database,
)
from runner import publish_paced, run_child

from cdcsync.progress import Progress

__all__ = ["FLOWS", "MYSQL_PHASES", "PHASES", "Phases", "Run", "cleanup", "pg_execute", "prefill"]

PHASES = (
    "cdcsync",
    "kafka",
    "flows3",
    "fanout",
    "latency",
    "latency-half",
    "naive",
    "pg-limit",
    "nats-limit",
    "mysql",
    "mysql-limit",
    "mysql-naive",
    "scaling",
    "sweep",
)
MYSQL_PHASES = ("mysql", "mysql-limit", "mysql-naive")
FLOWS = 3
# The latency phases' streams: each run reads a fresh one (see Run.latency_stream).
_LATENCY_TAGS = {"latency": "LAT", "latency-half": "HALF"}


# --- run context ---------------------------------------------------------------------------


class Run:
    """Names and settings shared by the phases of one benchmark run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.uid = f"b{uuid.uuid4().hex[:8]}"
        self.stream = self.uid.upper()
        self.subject = f"{self.uid}.users"
        self.flow_streams = [
            (f"{self.stream}_F{k}", f"{self.uid}.f{k}.users") for k in range(FLOWS)
        ]
        self.fanout_db = f"{self.uid}_fanout"
        self.kafka_topic = f"{self.uid}.users"
        self.nats_url: str = args.nats_url
        self.pg_url: str = args.pg_url
        self.mysql_url: str = args.mysql_url
        self.pids: tuple[int | None, int | None] = (None, None)
        self.mysql_pid: int | None = None

    def schema(self, phase: str) -> str:
        return f"{self.uid}_{phase.replace('-', '_')}"

    def table(self, phase: str, name: str = "users") -> str:
        return f"{self.schema(phase)}.{name}"

    def db_url(self, database: str) -> str:
        parts = urlsplit(self.pg_url)
        return urlunsplit(parts._replace(path=f"/{database}"))

    def latency_stream(self, attempt: int, tag: str = "LAT") -> tuple[str, str]:
        """A fresh (stream, subject) per latency run: cdcsync must start caught up."""
        return f"{self.stream}_{tag}{attempt}", f"{self.uid}.{tag.lower()}{attempt}.users"

    def streams(self) -> list[str]:
        lat = [
            self.latency_stream(n, tag)[0]
            for n in range(max(1, self.args.repeat))
            for tag in _LATENCY_TAGS.values()
        ]
        return [self.stream, *lat, *(s for s, _ in self.flow_streams)]

    def spec(self, flows: list[dict[str, Any]], timeout: float, **over: Any) -> dict[str, Any]:
        """What ``cdcsync_child.py`` runs: ``flows`` with this run's batch settings."""
        a = self.args
        return {
            "nats_url": self.nats_url,
            "batch_size": a.batch_size,
            "max_delay_ms": a.max_delay_ms,
            "max_ack_pending": a.max_ack_pending,
            "timeout": timeout,
            "gc_threshold": a.child_gc_threshold,
            "pg_pid": self.pids[0],
            "nats_pid": self.pids[1],
            "flows": flows,
        } | over


def flow_spec(
    name: str,
    stream: str,
    subject: str,
    durable: str,
    last_seq: int | dict[int, int] | None,
    dests: list[Any],
) -> dict[str, Any]:
    return {
        "name": name,
        "stream": stream,
        "subject": subject,
        "durable": durable,
        "last_seq": last_seq,
        "destinations": dests,
    }


def dest_spec(
    name: str, url: str, schema: str, tables: dict[str, str] | None = None, kind: str = "postgres"
) -> Any:
    return {"name": name, "type": kind, "url": url, "schema": schema, "tables": tables or {}}


async def pg_execute(url: str, script: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(script)
    finally:
        await conn.close()


async def fetchval(url: str, query: str) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def create_tables(url: str, schema: str, ddl: list[str]) -> None:
    """A fresh schema with ``ddl``; CHECKPOINT so no writer inherits dirty pages."""
    await pg_execute(
        url,
        f"DROP SCHEMA IF EXISTS {schema} CASCADE; DROP SCHEMA IF EXISTS {schema}_state CASCADE; "
        f"CREATE SCHEMA {schema}",
    )
    await pg_execute(url, "; ".join(ddl))
    await pg_execute(url, "CHECKPOINT")


async def verify(url: str, tables: list[str], expected: dict[int, bytes]) -> dict[str, Any]:
    """Compare the union of ``tables`` with the expected state: count, checksum, differences."""
    conn = await asyncpg.connect(url)
    records = []
    try:
        for t in tables:
            records += await conn.fetch(f"SELECT {', '.join(wl.COLUMNS)} FROM {t}")
    finally:
        await conn.close()
    got = dict(wl.canonical_db_row(r) for r in records)
    want_sum, got_sum = wl.state_checksum(expected), wl.state_checksum(got)
    diff = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
    return {
        "ok": want_sum == got_sum and len(records) == len(got),
        "rows": len(records),
        "expected_rows": len(expected),
        "checksum": got_sum[:16],
        "expected_checksum": want_sum[:16],
        "differing_keys": diff[:5],
        "differing_count": len(diff),
    }


# --- setup / teardown (asyncio) ------------------------------------------------------------


async def prefill(nats_url: str, streams: list[tuple[str, str, list[bytes]]]) -> dict[str, Any]:
    """Create each (stream, subject) and publish its payloads; the last sequence of each.

    Plain NATS publishes with a flush (a PING/PONG) every 10,000 messages rather than
    JetStream publishes that wait for an ack each: ten times faster, and the stored
    count is checked afterwards instead.
    """
    nc = await nats.connect(nats_url, pending_size=64 * 1024 * 1024)
    bar = Progress(sum(len(p) for _, _, p in streams), "prefill")
    try:
        js = nc.jetstream()
        started = time.perf_counter()
        last = {}
        for stream, subject, payloads in streams:
            await js.add_stream(name=stream, subjects=[subject])
            for i in range(0, len(payloads), 10_000):
                for payload in payloads[i : i + 10_000]:
                    await nc.publish(subject, payload)
                await nc.flush(timeout=30)
                bar.advance(len(payloads[i : i + 10_000]))
            deadline = time.monotonic() + 30
            while (info := await js.stream_info(stream)).state.messages < len(payloads):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            if info.state.messages != len(payloads):
                raise RuntimeError(f"{stream} holds {info.state.messages} of {len(payloads)}")
            last[stream] = info.state.last_seq
        seconds = time.perf_counter() - started
        events = sum(len(p) for _, _, p in streams)
        return {
            "events": events,
            "seconds": round(seconds, 3),
            "events_per_s": round(events / seconds, 1) if events else None,
            "last_seq": last,
            "nats_server": str(nc.connected_server_version),
        }
    finally:
        bar.close()
        await nc.close()


async def add_stream(nats_url: str, stream: str, subject: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().add_stream(name=stream, subjects=[subject])
    finally:
        await nc.close()


async def cleanup(run: Run) -> None:
    try:
        nc = await nats.connect(run.nats_url)
        try:
            js = nc.jetstream()
            for stream in run.streams():
                try:
                    await js.delete_stream(stream)
                except nats.js.errors.NotFoundError:
                    pass
        finally:
            await nc.close()
    except Exception as exc:
        print(f"cleanup: cannot delete streams {run.streams()}: {exc!r}", file=sys.stderr)
    drops = "; ".join(
        f"DROP SCHEMA IF EXISTS {run.schema(p)} CASCADE; "
        f"DROP SCHEMA IF EXISTS {run.schema(p)}_state CASCADE"
        for p in PHASES
    )
    await pg_execute(run.pg_url, drops)
    await pg_execute(run.pg_url, f"DROP DATABASE IF EXISTS {run.fanout_db} WITH (FORCE)")
    if set(run.args.phases) & set(MYSQL_PHASES):
        try:
            dbs = [run.schema(p) for p in MYSQL_PHASES]
            await drop_databases(run.mysql_url, dbs + [f"{d}_state" for d in dbs])
        except Exception as exc:
            print(f"cleanup: cannot drop the MySQL databases: {exc!r}", file=sys.stderr)


# --- latency -------------------------------------------------------------------------------

_LATENCY_SQL = """
WITH l AS (SELECT published_at,
                  extract(epoch FROM committed_at - published_at) * 1000 AS ms FROM {table}),
     s AS (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
           FROM l GROUP BY date_trunc('second', published_at))
SELECT count(*) AS n,
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ms) AS p,
       max(ms) AS max, min(ms) AS min, avg(ms) AS mean,
       (SELECT max(p99) FROM s) AS worst_second_p99
FROM l
"""


_LATENCY_SECONDS_SQL = """
WITH l AS (SELECT published_at,
                  extract(epoch FROM committed_at - published_at) * 1000 AS ms FROM {table}),
     t0 AS (SELECT min(published_at) AS t FROM l)
SELECT floor(extract(epoch FROM published_at - t0.t))::int AS s, count(*) AS n,
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY ms) AS p, max(ms) AS max
FROM l, t0 GROUP BY 1 ORDER BY 1
"""


async def latency_figures(url: str, table: str) -> dict[str, Any]:
    """Percentiles of committed_at - published_at over the rows, overall and per second."""
    conn = await asyncpg.connect(url)
    try:
        r = await conn.fetchrow(_LATENCY_SQL.format(table=table))
        seconds = await conn.fetch(_LATENCY_SECONDS_SQL.format(table=table))
    finally:
        await conn.close()
    p50, p95, p99 = (round(float(x), 2) for x in r["p"])
    return {
        "rows": r["n"],
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "max_ms": round(float(r["max"]), 2),
        "min_ms": round(float(r["min"]), 2),
        "mean_ms": round(float(r["mean"]), 2),
        "worst_second_p99_ms": round(float(r["worst_second_p99"]), 2),
        "per_second": [
            {
                "second": x["s"],
                "events": x["n"],
                "p50_ms": round(float(x["p"][0]), 2),
                "p99_ms": round(float(x["p"][1]), 2),
                "max_ms": round(float(x["max"]), 2),
            }
            for x in seconds
        ],
    }


# --- phases --------------------------------------------------------------------------------


def child_result(name: str, events: int, r: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A phase result from the child's output line."""
    cpu = r["cpu"]
    broken = [f for f, s in r["status"].items() if s == "failed"]
    return {
        "name": name,
        "events": events,
        "seconds": round(r["seconds"], 4),
        "events_per_s": round(events / r["seconds"], 1) if r["seconds"] > 0 else None,
        **cpu,
        "subscribed_s": r["subscribed_s"],
        "first_commit_s": r["first_commit_s"],
        "launched_to_start_s": r["launched_to_start_s"],
        "flow_seconds": r["flow_seconds"],
        "timed_out": r["timed_out"],
        "status": r["status"],
        "failed": bool(broken) or r["timed_out"],
        "last_error": r["last_error"],
        "acked": r["acked"],
        "memory": r["memory"],
        "gc": r["gc"],
        "gc_threshold": r["gc_threshold"],
        "stats": r["stats"],
        **extra,
    }


def result(
    name: str, events: int, seconds: float, cpu: dict[str, float], **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "events": events,
        "seconds": round(seconds, 4),
        "events_per_s": round(events / seconds, 1) if seconds > 0 else None,
        **cpu,
        **extra,
    }


class Phases:
    """One method per phase; each returns its result (a dict with ``name``)."""

    def __init__(self, run: Run, work: wl.Workload, fill: dict[str, Any]) -> None:
        self.run = run
        self.a = run.args
        self.work = work
        self.fill = fill
        self.expected = wl.expected_canonical(wl.state_after(work.ops))
        self.naive_count = min(self.a.events, self.a.naive_events)
        self.expected_naive = wl.expected_canonical(wl.state_after(work.ops[: self.naive_count]))
        self.plans = wl.chunk_plans(work.ops, self.a.batch_size)
        self.timeout = max(60.0, self.a.events / 2000)
        # The best events/s of the cdcsync phase so far: latency-half paces at half of it.
        self.one_flow_eps: float | None = None

    def _ddl(self, phase: str, names: tuple[str, ...] = ("users",), ddl: str = wl.DDL) -> list[str]:
        return [ddl.format(table=self.run.table(phase, n)) for n in names]

    def cdcsync(self, attempt: int) -> dict[str, Any]:
        run = self.run
        asyncio.run(create_tables(run.pg_url, run.schema("cdcsync"), self._ddl("cdcsync")))
        last = self.fill["last_seq"][run.stream]
        dest = dest_spec("pg", run.pg_url, run.schema("cdcsync"))
        flow = flow_spec("bench", run.stream, run.subject, f"{run.uid}-one-{attempt}", last, [dest])
        r = run_child(run.spec([flow], self.timeout))
        first = r["first_commit_s"] or 0.0
        check = asyncio.run(verify(run.pg_url, [run.table("cdcsync")], self.expected))
        out = child_result(
            "cdcsync",
            self.a.events,
            r,
            steady_events_per_s=round(self.a.events / (r["seconds"] - first), 1),
            verify=check,
        )
        if not out["failed"] and out["events_per_s"]:
            self.one_flow_eps = max(self.one_flow_eps or 0.0, out["events_per_s"])
        return out

    def kafka(self, attempt: int) -> dict[str, Any]:
        """The ``cdcsync`` phase with the Kafka source: the same events and destination, read
        from a topic (keyed by row, ``--kafka-partitions`` partitions) by a new group."""
        run = self.run
        asyncio.run(create_tables(run.pg_url, run.schema("kafka"), self._ddl("kafka")))
        k = self.fill["kafka"]
        dest = dest_spec("pg", run.pg_url, run.schema("kafka"))
        flow = flow_spec("bench", "", "", "", k["last_offsets"], [dest])
        flow["kafka"] = {
            "bootstrap": k["bootstrap"],
            "topic": run.kafka_topic,
            "group": f"{run.uid}-kafka-{attempt}",
        }
        r = run_child(run.spec([flow], self.timeout, nats_pid=k["broker_pid"]))
        first = r["first_commit_s"] or 0.0
        check = asyncio.run(verify(run.pg_url, [run.table("kafka")], self.expected))
        out = child_result(
            "kafka",
            self.a.events,
            r,
            partitions=k["partitions"],
            steady_events_per_s=round(self.a.events / (r["seconds"] - first), 1),
            verify=check,
        )
        # Timed from the first assignment: joining a new group waits on the broker (tansu
        # holds a JoinGroup for half the session timeout; Kafka delays a new group's first
        # rebalance by group.initial.rebalance.delay.ms), which is no cost of the source.
        joined = r["subscribed_s"] or 0.0
        out["join_s"] = round(joined, 3)
        out["seconds"] = round(r["seconds"] - joined, 4)
        out["events_per_s"] = round(self.a.events / out["seconds"], 1)
        return out

    def flows3(self, attempt: int) -> dict[str, Any]:
        run = self.run
        schema = run.schema("flows3")
        names = tuple(f"users_{k}" for k in range(FLOWS))
        asyncio.run(create_tables(run.pg_url, schema, self._ddl("flows3", names)))
        flows = []
        for k, (stream, subject) in enumerate(run.flow_streams):
            dest = dest_spec("pg", run.pg_url, schema, {"users": names[k]})
            durable = f"{run.uid}-f{k}-{attempt}"
            last = self.fill["last_seq"][stream]
            flows.append(flow_spec(f"flow{k}", stream, subject, durable, last, [dest]))
        r = run_child(run.spec(flows, self.timeout))
        tables = [run.table("flows3", n) for n in names]
        check = asyncio.run(verify(run.pg_url, tables, self.expected))
        return child_result("flows3", self.a.events, r, verify=check)

    def fanout(self, attempt: int) -> dict[str, Any]:
        run = self.run
        schema = run.schema("fanout")
        urls = [run.pg_url, run.db_url(run.fanout_db)]
        for url in urls:
            asyncio.run(create_tables(url, schema, self._ddl("fanout")))
        last = self.fill["last_seq"][run.stream]
        dests = [dest_spec(f"pg{n}", url, schema) for n, url in enumerate(urls, 1)]
        durable = f"{run.uid}-fanout-{attempt}"
        flow = flow_spec("bench", run.stream, run.subject, durable, last, dests)
        r = run_child(run.spec([flow], self.timeout))
        checks = [
            asyncio.run(verify(url, [run.table("fanout")], self.expected))
            | {"where": f"database {urlsplit(url).path.lstrip('/')}"}
            for url in urls
        ]
        ok = all(c["ok"] for c in checks)
        return child_result(
            "fanout", self.a.events, r, verify=checks[0] | {"ok": ok}, verify_all=checks
        )

    def latency(self, attempt: int) -> dict[str, Any]:
        """Publish-to-row latency at ``--latency-rate`` (the issue's 10,000 events/s)."""
        return self._latency("latency", attempt, self.a.latency_rate)

    def latency_half(self, attempt: int) -> dict[str, Any]:
        """The same at half of this run's best cdcsync events/s (to the nearest 100): a slow
        machine is judged at a load that is the same share of what it can do."""
        if not self.one_flow_eps:
            raise RuntimeError("latency-half needs a cdcsync run of this run that succeeded")
        rate = max(100.0, round(self.one_flow_eps / 2, -2))
        return self._latency("latency-half", attempt, rate)

    def _latency(self, phase: str, attempt: int, rate: float) -> dict[str, Any]:
        run, a = self.run, self.a
        count = int(rate * a.latency_seconds)
        payloads = wl.latency_payloads(count)
        table = run.table(phase)
        asyncio.run(
            create_tables(run.pg_url, run.schema(phase), self._ddl(phase, ddl=wl.LATENCY_DDL))
        )
        stream, subject = run.latency_stream(attempt, _LATENCY_TAGS[phase])
        asyncio.run(add_stream(run.nats_url, stream, subject))
        dest = dest_spec("pg", run.pg_url, run.schema(phase))
        durable = f"{run.uid}-{_LATENCY_TAGS[phase].lower()}-{attempt}"
        flow = flow_spec("latency", stream, subject, durable, None, [dest])
        published: dict[str, Any] = {}

        def publish(ready: dict[str, Any]) -> dict[str, int]:
            time.sleep(a.latency_settle)  # running, caught up (the stream is empty), idle
            published.update(
                asyncio.run(publish_paced(run.nats_url, stream, subject, payloads, rate))
            )
            return {"latency": published["last_seq"]}

        r = run_child(run.spec([flow], a.latency_seconds + 120), on_ready=publish)
        figures = asyncio.run(latency_figures(run.pg_url, table))
        ok = figures["rows"] == count
        return child_result(
            phase,
            count,
            r,
            publisher=published,
            latency=figures,
            verify={
                "ok": ok,
                "rows": figures["rows"],
                "expected_rows": count,
                "checksum": "n/a (count only)",
                "expected_checksum": "n/a",
                "differing_count": abs(count - figures["rows"]),
                "differing_keys": [],
            },
        )

    def sweep(self, size: int) -> dict[str, Any]:
        """The single flow at batch ``size``, over the first ``--sweep-events`` of the stream."""
        run = self.run
        phase = "sweep"
        asyncio.run(create_tables(run.pg_url, run.schema(phase), self._ddl(phase)))
        last = min(self.a.sweep_events, self.fill["last_seq"][run.stream])
        dest = dest_spec("pg", run.pg_url, run.schema(phase))
        flow = flow_spec("bench", run.stream, run.subject, f"{run.uid}-sweep-{size}", last, [dest])
        r = run_child(run.spec([flow], self.timeout, batch_size=size))
        # The last batch may reach past `last`: count what the checkpoint said was applied
        # when the timing stopped. The graceful stop then commits what was in flight, so
        # the table is checked against the checkpoint it was left with.
        applied = r["stats"]["bench"]["destinations"][0]["checkpoint"] or last
        left = asyncio.run(
            fetchval(run.pg_url, f"SELECT max(last_seq) FROM {run.schema(phase)}_state.checkpoints")
        )
        expected = wl.expected_canonical(wl.state_after(self.work.ops[:left]))
        check = asyncio.run(verify(run.pg_url, [run.table(phase)], expected))
        return child_result(f"batch {size}", applied, r, batch_size=size, verify=check)

    def naive(self, attempt: int) -> dict[str, Any]:
        run = self.run
        asyncio.run(create_tables(run.pg_url, run.schema("naive"), self._ddl("naive")))
        durable = f"{run.uid}-naive-{attempt}"
        with CpuMeter(*run.pids) as cpu:
            seconds = asyncio.run(
                run_naive(
                    run.nats_url,
                    run.pg_url,
                    run.stream,
                    run.subject,
                    durable,
                    run.table("naive"),
                    self.naive_count,
                )
            )
        check = asyncio.run(verify(run.pg_url, [run.table("naive")], self.expected_naive))
        return result("naive", self.naive_count, seconds, cpu.as_dict(), verify=check)

    def pg_limit(self, attempt: int) -> dict[str, Any]:
        run = self.run
        asyncio.run(create_tables(run.pg_url, run.schema("pg-limit"), self._ddl("pg-limit")))
        with CpuMeter(*run.pids) as cpu:
            seconds = asyncio.run(run_pg_limit(run.pg_url, run.table("pg-limit"), self.plans))
        check = asyncio.run(verify(run.pg_url, [run.table("pg-limit")], self.expected))
        return result("pg-limit", self.a.events, seconds, cpu.as_dict(), verify=check)

    def mysql(self, attempt: int) -> dict[str, Any]:
        """cdcsync draining the backlog into MySQL, as ``cdcsync`` does into PostgreSQL."""
        run = self.run
        db = run.schema("mysql")
        asyncio.run(create_database(run.mysql_url, db))
        last = self.fill["last_seq"][run.stream]
        dest = dest_spec("my", with_database(run.mysql_url, db), db, kind="mysql")
        durable = f"{run.uid}-mysql-{attempt}"
        flow = flow_spec("bench", run.stream, run.subject, durable, last, [dest])
        r = run_child(run.spec([flow], self.timeout, pg_pid=run.mysql_pid))
        check = asyncio.run(verify_mysql(run.mysql_url, f"{db}.users", self.expected))
        return child_result("mysql", self.a.events, r, verify=check)

    def mysql_limit(self, attempt: int) -> dict[str, Any]:
        run = self.run
        db = run.schema("mysql-limit")
        asyncio.run(create_database(run.mysql_url, db))
        with CpuMeter(run.mysql_pid, run.pids[1]) as cpu:
            seconds, loop = asyncio.run(run_mysql_limit(run.mysql_url, f"{db}.users", self.plans))
        check = asyncio.run(verify_mysql(run.mysql_url, f"{db}.users", self.expected))
        return result("mysql-limit", self.a.events, seconds, cpu.as_dict(), loop=loop, verify=check)

    def mysql_naive(self, attempt: int) -> dict[str, Any]:
        run = self.run
        db = run.schema("mysql-naive")
        asyncio.run(create_database(run.mysql_url, db))
        durable = f"{run.uid}-mysql-naive-{attempt}"
        with CpuMeter(run.mysql_pid, run.pids[1]) as cpu:
            seconds = asyncio.run(
                run_mysql_naive(
                    run.nats_url,
                    run.mysql_url,
                    run.stream,
                    run.subject,
                    durable,
                    f"{db}.users",
                    self.naive_count,
                )
            )
        check = asyncio.run(verify_mysql(run.mysql_url, f"{db}.users", self.expected_naive))
        return result("mysql-naive", self.naive_count, seconds, cpu.as_dict(), verify=check)

    def nats_limit(self, attempt: int) -> dict[str, Any]:
        run = self.run
        durable = f"{run.uid}-nats-{attempt}"
        with CpuMeter(*run.pids) as cpu:
            seconds = asyncio.run(
                run_nats_limit(
                    run.nats_url,
                    run.stream,
                    run.subject,
                    durable,
                    self.a.events,
                    self.a.max_ack_pending,
                )
            )
        return result("nats-limit", self.a.events, seconds, cpu.as_dict())
