"""Model-checked chaos soak: cdcsync under random faults, held row by row to a Python model.

    .venv/bin/python tests/soak/soak.py --seed 1 --events 20000 --max-seconds 120

A run owns everything it touches: a throwaway NATS (JetStream) server and a throwaway
PostgreSQL cluster (``--target mysql``: a throwaway MariaDB server) with two databases, both
on free ports, and ``cdcsync serve`` as a subprocess. A seeded generator publishes a paced
workload to three flows (``users`` fans out to both databases, ``catalog`` writes in
``replace`` mode through a table mapping): inserts, partial updates, upserts, deletes and
re-inserts over a few thousand keys,
sprinkled with exact duplicates and poison messages. Meanwhile a seeded injector
``kill -9``s and SIGTERMs cdcsync, kills or stops NATS and the database, and freezes one or
the other for a moment. At the end the streams are read back, the one-event-at-a-time
model of docs/semantics.md says what every table of every destination must hold, the run
waits until every checkpoint reaches its flow's last stream sequence, and then every row
and every dead letter is compared. Nothing is trusted that the streams and the database do
not show: the model is built from the messages as the stream holds them, in stream order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TESTS = Path(__file__).resolve().parents[1]
for _p in (_TESTS, _TESTS / "faults"):  # run as a script, or imported by pytest
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import mysqlread  # noqa: E402
import nats  # noqa: E402
from faultkit import DB_ERRORS, CdcProcess, Fleet, consumer_info, sql  # noqa: E402
from nats.js import api as js_api  # noqa: E402
from servers import MariaDBServer, NatsServer, PostgresServer  # noqa: E402
from soak_workload import (  # noqa: E402
    ACK_WAIT_S,
    DATABASES,
    FLOWS,
    POISON_KINDS,
    STREAMS,
    Expectation,
    FlowSpec,
    Msg,
    Table,
    config_yaml,
    database_ddl,
    expect,
    make_workload,
    norm,
)

__all__ = ["FAULT_KINDS", "POISON_KINDS", "TARGETS", "Fault", "SoakReport", "main", "run_soak"]

FAULT_KINDS = ("kill9", "sigterm", "nats_restart", "db_restart", "db_stall", "nats_stall")
TARGETS = ("postgres", "mysql")
PUBLISH_ACK_TIMEOUT_S = 5.0
SIGTERM_EXIT_TIMEOUT_S = 30.0  # drain_timeout_s (15 s) + the API's grace, with room

# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class Fault:
    at: float  # seconds since the run started
    kind: str
    detail: str


@dataclass
class SoakReport:
    seed: int
    target: str = "postgres"
    events: int = 0  # messages in the streams (what cdcsync had to apply)
    intended: int = 0  # messages the generator made
    duplicates: int = 0  # messages whose exact bytes were in the stream before
    republished: int = 0  # sends repeated by the publisher after an ack timed out
    poison: dict[str, int] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    rows_compared: int = 0
    lost: int = 0  # rows missing or different
    extra: int = 0  # rows that should not be there
    duplicated: int = 0  # dead letters present more than once
    letters_missing: int = 0  # poison messages without their dead letter
    good_dead: int = 0  # good events found in the dead letters
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    workdir: str = ""

    @property
    def faults_by_kind(self) -> dict[str, int]:
        return {k: sum(1 for f in self.faults if f.kind == k) for k in FAULT_KINDS}

    @property
    def verdict(self) -> str:
        return "FAIL" if self.problems else "PASS"

    def summary(self) -> str:
        lines = [
            f"seed {self.seed} ({self.target}): {self.verdict} in {self.seconds:.1f} s "
            f"(workdir {self.workdir})",
            f"  events published: {self.events} (generated {self.intended}, "
            f"republished after ack timeouts {self.republished})",
            f"  exact duplicates: {self.duplicates}",
            f"  poison messages: {sum(self.poison.values())} {dict(sorted(self.poison.items()))}",
            f"  faults injected: {len(self.faults)} {self.faults_by_kind}",
            f"  rows compared: {self.rows_compared}",
            f"  lost: {self.lost}  extra: {self.extra}  duplicated: {self.duplicated}  "
            f"dead letters missing: {self.letters_missing}  good events dead-lettered: "
            f"{self.good_dead}",
        ]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)


# --------------------------------------------------------------------------- the run


async def _quiet(*_args: Any) -> None:
    pass


def _log_digest(proc: CdcProcess, lines: int = 30) -> str:
    """How often each warning came, then the log's last lines without the routine ones."""
    entries = proc.logs()
    counts = Counter(
        f"{e.get('level')} {e.get('event')!r} {str(e.get('error') or '')[:80]}"
        for e in entries
        if e.get("level") != "info"
    )
    routine = {"events dead-lettered"}  # the poison messages: expected, and many
    tail = [json.dumps(e) for e in entries if e.get("event") not in routine][-lines:]
    out = [f"--- {proc.log_path} ---", *(f"{n} x {k}" for k, n in counts.most_common(15))]
    out += ["--- last lines, dead-letter notices left out ---", *tail]
    return "\n".join(out)


def _pacing(total: int, seconds: float, rng: random.Random) -> list[tuple[float, int, int]]:
    """(offset in seconds, start, end) of each chunk: a chunk every 0.1 s, at a rate that
    changes every 2 s between a trickle and bursts, so faults meet both idle and busy sinks.
    """
    segments = max(1, round(seconds / 2))
    weights = [rng.choice((0.2, 0.5, 1, 1, 2, 5)) for _ in range(segments)]
    ticks = 20 * segments
    cumulative, acc = [], 0.0
    for i in range(ticks):
        acc += weights[i // 20]
        cumulative.append(acc)
    out, pos = [], 0
    for i in range(ticks):
        end = round(total * cumulative[i] / acc)
        if end > pos:
            out.append((i * seconds / ticks, pos, end))
            pos = end
    return out


class Soak:
    """One soak run: servers, cdcsync, publisher, injector and the final comparison."""

    def __init__(
        self,
        seed: int,
        events: int,
        max_seconds: float,
        workdir: Path,
        publish_seconds: float | None,
        faults: bool,
        poison: tuple[str, ...],
        say: Callable[[str], None],
        target: str = "postgres",
    ) -> None:
        self.seed, self.events, self.workdir = seed, events, workdir
        self.max_seconds = max_seconds
        self.publish_seconds = publish_seconds if publish_seconds is not None else 0.4 * max_seconds
        self.inject = faults
        self.poison = poison
        self._say = say
        self.t0 = time.monotonic()
        self.deadline = self.t0 + max_seconds
        self.rng = random.Random(seed * 7_919 + 1)  # the injector's; independent of the workload
        self.rng_publish = random.Random(seed * 7_919 + 2)
        self.report = SoakReport(seed, target, workdir=str(workdir))
        self.nats = NatsServer()
        self.mysql = target == "mysql"
        self.db: MariaDBServer | PostgresServer = (
            MariaDBServer() if self.mysql else PostgresServer()
        )
        self.db_label = "MariaDB" if self.mysql else "PostgreSQL"
        self.fleet = Fleet(workdir)
        self.config = workdir / "cdcsync.yaml"
        self.proc: CdcProcess | None = None
        self.runs = 0
        self.expect_exit = False
        self.crashes = 0
        self.nats_ok = asyncio.Event()
        self.publishing_done = asyncio.Event()
        self.acked: list[tuple[str, int, bytes]] = []  # (stream, seq, payload) acked to us
        self.stream: dict[str, list[tuple[int, bytes]]] = {}  # flow -> messages, read back

    def say(self, text: str) -> None:
        self._say(f"[{time.monotonic() - self.t0:6.1f}s] {text}")

    def problem(self, text: str) -> None:
        self.report.problems.append(text)
        self.say(f"PROBLEM: {text.splitlines()[0]}")

    def url(self, database: str) -> str:
        return self.db.url_for(database)

    def table(self, database: str, name: str) -> str:
        """A target table as a query names it (MySQL: a database is the schema)."""
        return f"{database}.{name}" if self.mysql else f"public.{name}"

    # --- set-up --------------------------------------------------------------------------

    async def setup(self) -> None:
        await asyncio.to_thread(self.nats.start)
        await asyncio.to_thread(self.db.start)
        for db in DATABASES:
            await asyncio.to_thread(self.db.create_database, db)
            if self.mysql:
                await mysqlread.execute(self.url(db), database_ddl(db, mysql=True))
                continue
            conn = await asyncpg.connect(self.url(db), timeout=5)
            try:
                await conn.execute(database_ddl(db))
            finally:
                await conn.close()
        nc = await nats.connect(self.nats.url, connect_timeout=3, max_reconnect_attempts=3)
        try:
            for stream, subjects in STREAMS.items():
                await nc.jetstream().add_stream(name=stream, subjects=subjects)
        finally:
            await nc.close()
        self.config.write_text(config_yaml(self.nats.url, self.db.url_for, self.mysql))
        self.nats_ok.set()
        self.say(f"NATS {self.nats.url}, {self.db_label} {self.db.url} (databases {DATABASES})")

    def workload(self, work: list[Msg]) -> list[Msg]:
        """The messages as this mode publishes them (the partitioned mode keys subjects)."""
        return work

    def start_instances(self) -> None:
        self.spawn()

    def spawn(self) -> CdcProcess:
        self.runs += 1
        self.proc = self.fleet.spawn(self.config, f"cdcsync-{self.runs}")
        return self.proc

    # --- publishing ----------------------------------------------------------------------

    async def publish(self, work: list[Msg]) -> None:
        """Publish ``work`` in order, paced over ``publish_seconds``, each message acked once."""
        nc = await nats.connect(
            self.nats.url,
            connect_timeout=3,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            error_cb=_quiet,  # the faults are ours: no tracebacks on stderr for them
            disconnected_cb=_quiet,
        )
        try:
            js = nc.jetstream()
            start = time.monotonic()
            for at, lo, hi in _pacing(len(work), self.publish_seconds, self.rng_publish):
                await asyncio.sleep(max(0.0, start + at - time.monotonic()))
                await self._publish_chunk(js, work[lo:hi])
        finally:
            await nc.close()
            self.publishing_done.set()
        self.say(f"published {len(work)} messages ({self.report.republished} sent again)")

    async def _publish_chunk(self, js: Any, chunk: list[Msg]) -> None:
        todo = chunk
        while todo:
            await self.nats_ok.wait()
            futures: list[asyncio.Future[Any]] = []
            with contextlib.suppress(Exception):  # a dying connection: retry what was not acked
                for m in todo:
                    futures.append(await js.publish_async(m.subject, m.payload))
            if futures:
                await asyncio.wait(futures, timeout=PUBLISH_ACK_TIMEOUT_S)
            rest = []
            for i, m in enumerate(todo):
                fut = futures[i] if i < len(futures) else None
                if fut is not None and fut.done() and not fut.cancelled() and not fut.exception():
                    ack = fut.result()
                    self.acked.append((ack.stream, ack.seq, m.payload))
                else:
                    if fut is not None:
                        fut.cancel()
                    rest.append(m)
            if rest:
                self.report.republished += len(rest)
                await asyncio.sleep(0.2)
            todo = rest

    # --- faults --------------------------------------------------------------------------

    async def watch(self) -> None:
        """cdcsync exiting when nobody stopped it is a crash: record it and start it again."""
        while True:
            await asyncio.sleep(0.2)
            p = self.proc
            if p is not None and not self.expect_exit and p.returncode is not None:
                self.crashes += 1
                self.problem(
                    f"cdcsync ({p.log_path.name}) exited by itself with code {p.returncode}:\n"
                    + p.tail(40)
                )
                if self.crashes < 5:  # beyond that, restarting only hides the cause
                    self.spawn()

    async def _started(self, proc: CdcProcess, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and proc.returncode is None:
            if proc.logged("cdcsync started"):
                return True
            await asyncio.sleep(0.1)
        return False

    async def fault_kill9(self) -> str:
        old = self.proc
        assert old is not None
        self.expect_exit = True
        await asyncio.to_thread(old.kill9)
        new = self.spawn()
        self.expect_exit = False
        return f"SIGKILL pid {old.pid}; restarted as pid {new.pid}"

    async def fault_sigterm(self) -> str:
        old = self.proc
        assert old is not None
        if not await self._started(old):
            self.problem(f"cdcsync ({old.log_path.name}) did not log 'cdcsync started' in 30 s")
        self.expect_exit = True
        t = time.monotonic()
        old.sigterm()
        try:
            code: int | None = await asyncio.to_thread(old.wait, SIGTERM_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
            self.problem(
                f"cdcsync ({old.log_path.name}) still running {SIGTERM_EXIT_TIMEOUT_S} s after "
                f"SIGTERM:\n{old.tail(40)}"
            )
            await asyncio.to_thread(old.kill9)
        if code not in (0, None):
            self.problem(f"SIGTERM: cdcsync ({old.log_path.name}) exited {code}:\n{old.tail(40)}")
        new = self.spawn()
        self.expect_exit = False
        return (
            f"SIGTERM pid {old.pid}: exit {code} after {time.monotonic() - t:.1f} s; "
            f"restarted as pid {new.pid}"
        )

    async def fault_nats_restart(self) -> str:
        how, down = self.rng.choice(("kill", "stop")), self.rng.uniform(0.2, 2.0)
        self.nats_ok.clear()
        try:
            await asyncio.to_thread(self.nats.kill if how == "kill" else self.nats.stop)
            await asyncio.sleep(down)
            await asyncio.to_thread(self.nats.start)
        finally:
            self.nats_ok.set()
        return f"NATS {how}, down {down:.1f} s, started again"

    async def fault_db_restart(self) -> str:
        how, down = self.rng.choice(("kill", "stop")), self.rng.uniform(0.2, 2.0)
        await asyncio.to_thread(self.db.kill if how == "kill" else self.db.stop)
        await asyncio.sleep(down)
        await asyncio.to_thread(self.db.start)
        return f"{self.db_label} {how}, down {down:.1f} s, started again"

    async def fault_db_stall(self) -> str:
        length = self.rng.uniform(1.0, 3.0)
        await asyncio.to_thread(self.db.pause)
        try:
            await asyncio.sleep(length)
        finally:
            self.db.resume()
        return f"{self.db_label} frozen (SIGSTOP) for {length:.1f} s"

    async def fault_nats_stall(self) -> str:
        length = self.rng.uniform(1.0, 3.0)
        self.nats_ok.clear()
        try:
            await asyncio.to_thread(self.nats.pause)
            await asyncio.sleep(length)
        finally:
            self.nats.resume()
            self.nats_ok.set()
        return f"NATS frozen (SIGSTOP) for {length:.1f} s"

    async def injector(self) -> None:
        """Faults at seeded moments until publishing ends; every kind comes once early on."""
        kinds = list(FAULT_KINDS)
        self.rng.shuffle(kinds)
        while True:
            gap = self.rng.uniform(0.5, 3.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.publishing_done.wait(), gap)
            if self.publishing_done.is_set():
                return
            kind = kinds.pop(0) if kinds else self.rng.choice(FAULT_KINDS)
            at = time.monotonic() - self.t0
            detail = await getattr(self, f"fault_{kind}")()
            self.report.faults.append(Fault(at, kind, detail))
            self.say(f"fault {kind}: {detail}")

    # --- the end -------------------------------------------------------------------------

    async def read_back(self) -> dict[str, list[tuple[int, bytes]]]:
        """Every message of every flow as the stream holds it, in stream order."""
        nc = await nats.connect(self.nats.url, connect_timeout=3, max_reconnect_attempts=3)
        out: dict[str, list[tuple[int, bytes]]] = {}
        try:
            js = nc.jetstream()
            for f in FLOWS:
                config = js_api.ConsumerConfig(
                    ack_policy=js_api.AckPolicy.NONE, inactive_threshold=30.0
                )
                sub = await js.pull_subscribe(f.subject, stream=f.stream, config=config)
                info = await sub.consumer_info()
                total = int(info.num_pending or 0)
                got: list[tuple[int, bytes]] = []
                while len(got) < total:
                    for m in await sub.fetch(min(1_000, total - len(got)), timeout=5):
                        got.append((m.metadata.sequence.stream, m.data))
                await sub.unsubscribe()
                out[f.name] = sorted(got)
        finally:
            await nc.close()
        return out

    async def last_sequences(self) -> dict[str, int]:
        """Flow -> the stream sequence of its last message, as NATS reports it."""
        nc = await nats.connect(self.nats.url, connect_timeout=3, max_reconnect_attempts=3)
        try:
            js = nc.jetstream()
            return {f.name: (await js.get_last_msg(f.stream, f.subject)).seq for f in FLOWS}
        finally:
            await nc.close()

    async def checkpoints(self) -> dict[tuple[str, str], int | None]:
        out: dict[tuple[str, str], int | None] = {}
        for f in FLOWS:
            for d in f.dests:
                try:
                    rows = await sql(
                        self.url(d.database),
                        "SELECT last_seq FROM cdcsync.checkpoints "
                        "WHERE flow = $1 AND destination = $2",
                        f.name,
                        d.name,
                    )
                    out[(f.name, d.name)] = int(rows[0][0]) if rows else None
                except DB_ERRORS:
                    out[(f.name, d.name)] = None
        return out

    async def converge(self, last_seq: dict[str, int]) -> bool:
        """Wait until every destination's checkpoint equals its flow's last sequence."""
        while time.monotonic() < self.deadline:
            cps = await self.checkpoints()
            if all(cps[(f, d)] == last_seq.get(f) for f, d in cps):
                return True
            await asyncio.sleep(0.2)
        return False

    async def diagnose(self, last_seq: dict[str, int] | None) -> str:
        """Which checkpoint is behind, what the consumers and the API say, the log tail."""
        lines = []
        cps = await self.checkpoints()
        for (f, d), cp in cps.items():
            want = (last_seq or {}).get(f)
            mark = "" if want is not None and cp == want else "   <-- behind"
            lines.append(f"checkpoint {f}/{d}: {cp} (last stream sequence {want}){mark}")
        with contextlib.suppress(Exception):
            nc = await nats.connect(self.nats.url, connect_timeout=2, max_reconnect_attempts=1)
            try:
                for f in FLOWS:
                    info = await consumer_info(nc, f.stream, f.durable)
                    if info is None:
                        lines.append(f"consumer {f.durable}: none")
                    else:
                        lines.append(
                            f"consumer {f.durable}: pending {info.num_pending}, ack pending "
                            f"{info.num_ack_pending}, ack floor {info.ack_floor.stream_seq}, "
                            f"delivered {info.delivered.stream_seq}"
                        )
            finally:
                await nc.close()
        proc = self.proc
        if proc is not None:
            with contextlib.suppress(Exception):
                api = await proc.api(timeout=2)
                async with httpx.AsyncClient(timeout=2) as client:
                    stats = (await client.get(f"{api}/api/stats")).json()
                for fl in stats["flows"]:
                    lines.append(
                        f"api flow {fl['name']}: status {fl['status']}, restarts "
                        f"{fl.get('restarts')}, last_error {fl.get('last_error')!r}"
                    )
            lines.append(_log_digest(proc))
        return "\n".join(lines)

    async def compare(self, exp: Expectation) -> None:
        """Every table of every destination against its model, row by row; then dead letters."""
        r = self.report
        examples: list[str] = []
        shown = 15  # each example looks through the stream for its key's events: a few only
        for f in FLOWS:
            for d in f.dests:
                model = exp.models[(f.name, d.name)]
                for t in f.tables:
                    target = d.target(t.name)
                    rows = await sql(
                        self.url(d.database), f"SELECT * FROM {self.table(d.database, target)}"
                    )
                    cols = {c.name: c for c in t.cols}
                    actual = {
                        t.key_of(row): {c: norm(cols[c], row[c]) for c in cols}
                        for row in map(dict, rows)
                    }
                    wanted = {
                        k: {c: norm(cols[c], v.get(c)) for c in cols}
                        for k, v in model.rows[t.name].items()
                    }
                    for key in wanted.keys() | actual.keys():
                        r.rows_compared += 1
                        found, want = actual.get(key), wanted.get(key)
                        if found == want:
                            continue
                        if found is None:
                            r.lost += 1
                            what = f"missing, expected {want}"
                        elif want is None:
                            r.extra += 1
                            what = f"extra {found}"
                        else:
                            r.lost += 1
                            diff = {c: (found[c], want[c]) for c in cols if found[c] != want[c]}
                            what = f"different: (found, expected) {diff}"
                        if len(examples) < shown:
                            examples.append(
                                f"{d.database}.{target} ({f.name}/{d.name}) key {key} {what}; "
                                f"{self._history(f, t, key)}"
                            )
                letters = await sql(
                    self.url(d.database),
                    "SELECT stream_seq, payload FROM cdcsync.dead_letters "
                    "WHERE flow = $1 AND destination = $2",
                    f.name,
                    d.name,
                )
                got = Counter((int(x[0]), bytes(x[1])) for x in letters)
                expected = exp.letters[(f.name, d.name)]
                where = f"{f.name}/{d.name}"
                for letter in got.keys() | expected.keys():
                    n, m = got[letter], expected[letter]
                    if n == m:
                        continue
                    if m == 0:
                        r.good_dead += n
                        what = f"good event dead-lettered in {where}: {letter}"
                    elif n > m:
                        r.duplicated += n - m
                        what = f"dead letter {n} times in {where}: {letter}"
                    else:
                        r.letters_missing += m - n
                        what = f"no dead letter in {where} for {letter}"
                        if len(examples) < shown:
                            what += "; " + self._history_of(f, letter)
                    if len(examples) < shown:
                        examples.append(what)
        if r.lost or r.extra or r.duplicated or r.letters_missing or r.good_dead:
            self.problem(
                f"the destinations differ from the model ({r.lost} lost, {r.extra} extra, "
                f"{r.duplicated} duplicated, {r.letters_missing} dead letters missing, "
                f"{r.good_dead} good events dead-lettered); first ones:\n" + "\n".join(examples)
            )

    def _events_of(self, f: FlowSpec, t: Table, key: tuple[Any, ...]) -> list[str]:
        """The stream's events for one row, as ``seq operation columns``."""
        out = []
        for seq, payload in self.stream.get(f.name, []):
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                ev = json.loads(payload)
                if ev["table"] == t.name and t.key_of(ev["data"]) == key:
                    out.append(f"{seq} {ev['operation']} {sorted(ev['data'])}")
        return out

    def _history(self, f: FlowSpec, t: Table, key: tuple[Any, ...]) -> str:
        return f"last events of the key: {self._events_of(f, t, key)[-4:]}"

    def _history_of(self, f: FlowSpec, letter: tuple[int, bytes]) -> str:
        """For a poison event that has a row key: the events of that key around it."""
        seq = letter[0]
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError, StopIteration):
            ev = json.loads(letter[1])
            t = f.table(ev["table"])
            events = self._events_of(f, t, t.key_of(ev["data"]))
            at = next(i for i, e in enumerate(events) if e.startswith(f"{seq} "))
            return f"events of its key: {events[max(0, at - 1) : at + 3]}"
        return "no row key"

    async def all_acked(self) -> None:
        """Once everything is committed, every message gets acknowledged.

        An ack sent just as NATS goes down is lost with it; the server then redelivers
        the message after ``ack_wait`` and cdcsync, finding it at or below its checkpoint,
        skips and acks it. So wait up to ``ack_wait`` and then some.
        """
        nc = await nats.connect(self.nats.url, connect_timeout=3, max_reconnect_attempts=3)
        end = time.monotonic() + ACK_WAIT_S + 10
        try:
            for f in FLOWS:
                while True:
                    info = await consumer_info(nc, f.stream, f.durable)
                    if info is not None and (info.num_pending, info.num_ack_pending) == (0, 0):
                        break
                    if time.monotonic() > end:
                        shown = info and (
                            f"pending {info.num_pending}, ack pending {info.num_ack_pending}, "
                            f"ack floor {info.ack_floor.stream_seq}, delivered "
                            f"{info.delivered.stream_seq}, redelivered {info.num_redelivered}"
                        )
                        self.problem(
                            f"consumer {f.durable}: messages still unacknowledged "
                            f"{ACK_WAIT_S + 10} s after the last checkpoint: {shown}"
                        )
                        break
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    async def run(self) -> SoakReport:
        r = self.report
        work = self.workload(make_workload(self.seed, self.events, self.poison))
        meaning = {m.payload: m for m in work}
        r.intended = len(work)
        await self.setup()
        self.start_instances()
        watcher = asyncio.create_task(self.watch())
        try:
            injector = asyncio.create_task(self.injector() if self.inject else asyncio.sleep(0))
            self.say(f"publishing {len(work)} messages over {self.publish_seconds:.0f} s")
            try:
                async with asyncio.timeout_at(asyncio.get_running_loop().time() + self.left()):
                    await self.publish(work)
                    await injector
            except TimeoutError:
                injector.cancel()
                self.problem(
                    f"publishing did not finish within {self.max_seconds} s:\n"
                    + await self.diagnose(None)
                )
                return r
            t = time.monotonic()
            last_seq = await self.last_sequences()
            behind = await self.checkpoints()
            self.say(
                f"last stream sequences {last_seq}; checkpoints now "
                f"{ {f'{f}/{d}': cp for (f, d), cp in behind.items()} }; waiting for them"
            )
            converged = await self.converge(last_seq)
            if converged:
                self.say(f"all checkpoints reached {time.monotonic() - t:.1f} s after publishing")
            else:
                self.problem(
                    f"timed out after {self.max_seconds} s: checkpoints behind\n"
                    + await self.diagnose(last_seq)
                )
            t = time.monotonic()
            stream = self.stream = await self.read_back()
            exp = expect(stream, meaning)
            r.events, r.duplicates, r.poison = exp.events, exp.duplicates, dict(exp.poison)
            self._check_stream(exp, stream)
            if exp.last_seq != last_seq:
                self.problem(f"read back {exp.last_seq} as last sequences, NATS said {last_seq}")
            self.say(
                f"streams hold {exp.events} messages (read back in {time.monotonic() - t:.1f} s)"
            )
            await self.compare(exp)
            if converged:
                await self.all_acked()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await self.stop_cleanly()
        return r

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def _check_stream(self, exp: Expectation, stream: dict[str, list[tuple[int, bytes]]]) -> None:
        """The stream holds every acked publish; only the publisher's retries add copies."""
        held = {(f.stream, seq, p) for f in FLOWS for seq, p in stream[f.name]}
        lost = [(s, seq) for s, seq, p in self.acked if (s, seq, p) not in held]
        if lost:
            self.problem(f"NATS lost {len(lost)} acknowledged publishes, e.g. {lost[:5]}")
        if exp.unknown:
            self.problem(f"the streams hold messages nobody published: {exp.unknown[:5]}")

    async def stop_cleanly(self) -> None:
        """The last instance gets SIGTERM too, and must exit 0."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        self.expect_exit = True
        proc.sigterm()
        try:
            code = await asyncio.to_thread(proc.wait, SIGTERM_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.problem(f"the final SIGTERM did not stop cdcsync:\n{proc.tail(40)}")
            return
        if code != 0:
            self.problem(f"the final SIGTERM: cdcsync exited {code}:\n{proc.tail(40)}")

    def close(self) -> None:
        """Stop every process of the run, whatever state it is in."""
        with contextlib.suppress(Exception):
            self.fleet.__exit__(None, None, None)
        for server in (self.nats, self.db):
            with contextlib.suppress(Exception):
                server.resume()
            try:
                server.close()
            except Exception:
                with contextlib.suppress(Exception):
                    server.kill()


def run_soak(
    seed: int,
    events: int,
    max_seconds: float,
    workdir: Path | str,
    *,
    publish_seconds: float | None = None,
    faults: bool = True,
    poison: tuple[str, ...] = POISON_KINDS,
    say: Callable[[str], None] = print,
    target: str = "postgres",
    partitioned: bool = False,
    instances: int = 2,
    partitions: int = 4,
) -> SoakReport:
    """Run one soak and return its report; servers and processes are gone when it returns.

    ``publish_seconds`` (default 40 % of ``max_seconds``) spreads publishing so that the
    faults hit while events flow; waiting for the checkpoints ends at ``max_seconds``.
    ``partitioned``: ``instances`` processes share every flow, split into ``partitions``
    (tests/soak/soak_parts.py).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.glob("cdcsync-*.log"):  # a reused workdir: logs are appended to
        old.unlink()
    args = (seed, events, max_seconds, workdir, publish_seconds, faults, poison, say)
    if partitioned:
        from soak_parts import PartitionedSoak

        if target != "postgres":
            raise ValueError("the partitioned soak writes PostgreSQL only")
        soak: Soak = PartitionedSoak(*args, instances=instances, partitions=partitions)
    else:
        soak = Soak(*args, target)
    try:
        report = asyncio.run(soak.run())
    finally:
        soak.close()
    report.seconds = time.monotonic() - soak.t0
    say(report.summary())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, nargs="+", default=[1])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="per seed")
    parser.add_argument("--publish-seconds", type=float, default=None)
    parser.add_argument("--no-faults", action="store_true", help="check the model alone")
    parser.add_argument(
        "--poison",
        nargs="*",
        choices=POISON_KINDS,
        default=list(POISON_KINDS),
        help="poison kinds to publish (default: all); to bisect a failure",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new tmp dir")
    parser.add_argument(
        "--target", choices=TARGETS, default="postgres", help="the destinations' database"
    )
    parser.add_argument(
        "--partitioned",
        action="store_true",
        help="every flow split into --partitions, shared by --instances processes",
    )
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args(argv)
    reports = []
    for seed in args.seed:
        workdir = (
            args.workdir / f"seed{seed}"
            if args.workdir
            else Path(tempfile.mkdtemp(prefix=f"cdcsync-soak-{seed}-"))
        )
        mode = f", {args.instances} instances x {args.partitions} partitions" * args.partitioned
        print(
            f"=== soak seed {seed} into {args.target}: {args.events} events, "
            f"at most {args.max_seconds} s{mode}"
        )
        reports.append(
            run_soak(
                seed,
                args.events,
                args.max_seconds,
                workdir,
                publish_seconds=args.publish_seconds,
                faults=not args.no_faults,
                poison=tuple(args.poison),
                say=lambda s: print(s, flush=True),
                target=args.target,
                partitioned=args.partitioned,
                instances=args.instances,
                partitions=args.partitions,
            )
        )
    if len(reports) > 1:
        print("=== " + ", ".join(f"seed {r.seed}: {r.verdict}" for r in reports))
    return 0 if all(r.verdict == "PASS" for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
