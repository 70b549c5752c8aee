"""Partitioned flows under test: a NATS cluster, a keyed workload, a ledger, instances.

Shared by ``tests/faults/test_partitions.py`` and the long runs (``bench/partitions.py``,
``tests/soak/soak.py --partitioned``). Plain asyncio and subprocesses, like faultkit.

The workload is upserts of ``kv (id, version, v)`` over ``keys`` keys, each key's versions
1, 2, 3, ... in publish order, on subject ``<prefix>.kv.<id>`` (the key in the subject, so
a key stays in one partition). A row trigger appends every application of an event to
``ledger (n bigserial, id, version)``: an event applied twice shows as a repeated
(id, version), a lost one as a missing (id, version), order broken as a version going down
along ``n`` for one id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import psutil
from faultkit import CdcProcess, sql
from servers import NatsServer, free_port

__all__ = [
    "LEDGER_DDL",
    "KeyedWorkload",
    "NatsCluster",
    "Owners",
    "PartWorld",
    "ledger_problems",
]

LEDGER_DDL = """
CREATE TABLE kv (id int PRIMARY KEY, version int NOT NULL, v int);
CREATE TABLE ledger (n bigserial PRIMARY KEY, id int NOT NULL, version int NOT NULL);
CREATE FUNCTION log_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {schema}.ledger (id, version) VALUES (NEW.id, NEW.version);
  RETURN NULL;
END $$;
CREATE TRIGGER kv_applied AFTER INSERT OR UPDATE ON kv
  FOR EACH ROW EXECUTE FUNCTION log_apply();
"""


class NatsCluster:
    """Three nats-server processes with JetStream, clustered on loopback."""

    def __init__(self, size: int = 3) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cdcsync-cluster-"))
        routes = [free_port() for _ in range(size)]
        urls = ",".join(f"nats://127.0.0.1:{p}" for p in routes)
        self.nodes = [
            NatsServer(
                store_dir=self.root / f"n{i}",
                args=(
                    "--cluster_name",
                    "cdcsync",
                    "--cluster",
                    f"nats://127.0.0.1:{routes[i]}",
                    "--routes",
                    urls,
                ),
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until JetStream has a meta leader (an R3 stream can be created)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                nc = await nats.connect(self.urls, connect_timeout=2)
                try:
                    await nc.jetstream().account_info()
                    return
                finally:
                    await nc.close()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> NatsCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class KeyedWorkload:
    """``total`` upserts over ``keys`` keys in publish order; the final version per key."""

    events: list[tuple[int, int]]  # (id, version)
    last: dict[int, int]

    @classmethod
    def make(cls, total: int, keys: int, seed: int = 5) -> KeyedWorkload:
        rng = random.Random(seed)
        version: dict[int, int] = {}
        events = []
        for _ in range(total):
            k = rng.randint(1, keys)
            version[k] = version.get(k, 0) + 1
            events.append((k, version[k]))
        return cls(events, version)

    @staticmethod
    def body(key: int, version: int) -> bytes:
        return json.dumps(
            {
                "table": "kv",
                "operation": "upsert",
                "data": {"id": key, "version": version, "v": key * 1000 + version},
            }
        ).encode()


@dataclass(frozen=True)
class PartWorld:
    """One partitioned scenario: flow ``f`` over ``<name>.*.*`` into schema ``<name>``."""

    urls: tuple[str, ...]
    pg_url: str
    name: str
    partitions: int
    replicas: int = 1

    @property
    def stream(self) -> str:
        return self.name.upper()

    @property
    def durable(self) -> str:
        return f"{self.name}-f"

    @property
    def subject(self) -> str:
        return f"{self.name}.*.*"

    def config(self, directory: Path, *, partitions: int | None = None) -> Path:
        servers = ", ".join(json.dumps(u) for u in self.urls)
        path = directory / "cdcsync.yaml"
        path.write_text(f"""\
api:
  bind: 127.0.0.1:0
flows:
  - name: f
    source:
      type: nats
      servers: [{servers}]
      subject: "{self.subject}"
      jetstream:
        stream: {self.stream}
        durable: {self.durable}
        partitions: {partitions or self.partitions}
        ack_wait_s: 30
      format: cdc
    batch: {{max_size: 1000, max_delay_ms: 20}}
    destinations:
      - name: primary
        type: postgres
        url: "{self.pg_url}"
        schema: {self.name}
        state_schema: {self.name}_state
""")
        return path

    async def prepare(self) -> Any:
        """Schema with the ledger; the stream created as cdcsync would (R``replicas``)."""
        conn = await asyncpg.connect(self.pg_url, timeout=5)
        try:
            await conn.execute(
                f"DROP SCHEMA IF EXISTS {self.name} CASCADE;"
                f"DROP SCHEMA IF EXISTS {self.name}_state CASCADE;"
                f"CREATE SCHEMA {self.name}; SET search_path = {self.name};"
                + LEDGER_DDL.format(schema=self.name)
            )
        finally:
            await conn.close()
        from nats.js import api

        from cdcsync.sources.nats_streams import transform_dest

        nc = await nats.connect(list(self.urls), connect_timeout=3, max_reconnect_attempts=-1)
        config = api.StreamConfig(
            name=self.stream,
            subjects=[self.subject],
            num_replicas=self.replicas,
            subject_transform=api.SubjectTransform(
                src=self.subject, dest=transform_dest(self.subject, self.partitions)
            ),
        )
        await nc.jetstream().add_stream(config)
        return nc

    async def drop(self) -> None:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            await sql(self.pg_url, f"DROP SCHEMA IF EXISTS {self.name} CASCADE")
            await sql(self.pg_url, f"DROP SCHEMA IF EXISTS {self.name}_state CASCADE")

    async def publish(
        self,
        nc: Any,
        events: list[tuple[int, int]],
        chunk: int = 1_000,
        pause: float = 0.0,
    ) -> None:
        """Publish in order; each acknowledged by the stream before the next chunk."""
        js = nc.jetstream()
        prefix = f"{self.name}.kv"
        for start in range(0, len(events), chunk):
            part = events[start : start + chunk]
            for attempt in range(60):
                try:
                    futures = [
                        await js.publish_async(
                            f"{prefix}.{k}",
                            KeyedWorkload.body(k, v),
                            headers={"Nats-Msg-Id": f"{k}:{v}"},
                        )
                        for k, v in part
                    ]
                    await asyncio.gather(*futures)
                    break
                except Exception:
                    # A node went away mid-chunk: publish the chunk again. The stream drops
                    # a message it already stored (same Nats-Msg-Id within 2 minutes).
                    if attempt == 59:
                        raise
                    await asyncio.sleep(0.5)
            if pause:
                await asyncio.sleep(pause)

    async def done(self, work: KeyedWorkload) -> bool:
        try:
            rows = await sql(
                self.pg_url, f"SELECT count(*), coalesce(sum(version), 0) FROM {self.name}.kv"
            )
        except (OSError, asyncpg.PostgresError):
            return False
        return (rows[0][0], rows[0][1]) == (len(work.last), sum(work.last.values()))


async def ledger_problems(world: PartWorld, work: KeyedWorkload) -> list[str]:
    """Every way the ledger and the table differ from exactly-once, in-order application."""
    problems = []
    schema = world.name
    twice = await sql(
        world.pg_url,
        f"SELECT id, version, count(*) AS n FROM {schema}.ledger GROUP BY id, version "
        f"HAVING count(*) > 1 ORDER BY id, version LIMIT 10",
    )
    if twice:
        problems.append(f"events applied more than once: {[tuple(r) for r in twice]}")
    counts = await sql(
        world.pg_url, f"SELECT count(*), count(DISTINCT (id, version)) FROM {schema}.ledger"
    )
    applied, distinct = counts[0]
    if distinct != len(work.events):
        problems.append(
            f"{distinct} distinct events applied ({applied} applications), "
            f"{len(work.events)} published"
        )
    back = await sql(
        world.pg_url,
        f"SELECT id, version, prev FROM (SELECT id, version, lag(version) OVER "
        f"(PARTITION BY id ORDER BY n) AS prev FROM {schema}.ledger) s "
        f"WHERE prev IS NOT NULL AND version <= prev LIMIT 10",
    )
    if back:
        problems.append(f"versions going backwards or repeated (id, version, before): {back}")
    rows = {
        r["id"]: r["version"]
        for r in await sql(world.pg_url, f"SELECT id, version FROM {schema}.kv")
    }
    if rows != work.last:
        wrong = [k for k in work.last if rows.get(k) != work.last[k]][:5]
        problems.append(
            f"table differs from the model: {len(rows)} rows, {len(work.last)} expected; "
            + ", ".join(f"id {k}: {rows.get(k)} != {work.last[k]}" for k in wrong)
        )
    dead = await sql(world.pg_url, f"SELECT error FROM {schema}_state.dead_letters LIMIT 3")
    if dead:
        problems.append(f"dead letters: {[r[0] for r in dead]}")
    return problems


async def api_of(proc: CdcProcess, timeout: float = 20.0) -> str:
    return await proc.api(timeout)


async def partitions_of(client: httpx.AsyncClient, api: str) -> list[dict[str, Any]] | None:
    """The instance's view of the flow's partitions, or None when it does not answer."""
    try:
        resp = await client.get(f"{api}/api/flows/f", timeout=1.0)
        resp.raise_for_status()
        found: list[dict[str, Any]] = resp.json()["partitions"]
        return found
    except (httpx.HTTPError, ValueError, KeyError):
        return None


@dataclass
class Owners:
    """Samples who runs each partition, from the instances' APIs and from PostgreSQL's locks.

    ``api``: each live instance's partitions with ``here`` and status ``running``. ``locks``:
    which process's connection holds each partition's writer fence (the truth).
    """

    world: PartWorld
    procs: dict[str, CdcProcess]  # name -> process
    apis: dict[str, str] = field(default_factory=dict)
    samples: int = 0
    doubles: list[str] = field(default_factory=list)  # a partition run by two at once
    wrote: set[str] = field(default_factory=set)

    def fence_names(self) -> list[str]:
        w = self.world
        return [f"cdcsync:{w.name}_state:f:primary:{w.stream}:{k}" for k in range(w.partitions)]

    async def locks(self) -> dict[int, str | None]:
        """Partition -> the name of the instance whose connection holds its fence."""
        rows = await sql(
            self.world.pg_url,
            "SELECT f.k, a.client_port FROM unnest($1::text[]) WITH ORDINALITY AS f(name, k) "
            "JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND "
            "((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(f.name, 0) "
            "JOIN pg_stat_activity a ON a.pid = l.pid",
            self.fence_names(),
        )
        ports: dict[int, str] = {}
        for name, proc in self.procs.items():
            if proc.returncode is not None:
                continue
            with contextlib.suppress(psutil.Error):
                for c in psutil.Process(proc.pid).net_connections(kind="tcp"):
                    ports[c.laddr.port] = name
        out: dict[int, str | None] = {k: None for k in range(self.world.partitions)}
        for k, port in rows:
            out[int(k) - 1] = ports.get(port, f"port {port}")
        return out

    async def sample(
        self, client: httpx.AsyncClient, *, steady: bool = False
    ) -> dict[int, list[str]]:
        """One sample; a partition running on two instances is recorded in ``doubles``, and
        with ``steady`` a partition running on none or without its fence too."""
        seen: dict[int, list[str]] = {k: [] for k in range(self.world.partitions)}
        for name, api in list(self.apis.items()):
            if self.procs[name].returncode is not None:
                continue
            parts = await partitions_of(client, api)
            for p in parts or []:
                if p["here"] and p["status"] == "running":
                    seen[p["index"]].append(name)
        self.samples += 1
        for k, names in seen.items():
            if len(names) > 1:
                self.doubles.append(f"sample {self.samples}: partition {k} running on {names}")
        if steady:
            locks = await self.locks()
            for k, names in seen.items():
                if len(names) != 1 or locks[k] != names[0]:
                    self.doubles.append(
                        f"sample {self.samples} (steady): partition {k} running on {names}, "
                        f"fence held by {locks[k]}"
                    )
        return seen


def tail_all(procs: dict[str, CdcProcess], lines: int = 60) -> str:
    return "\n".join(p.tail(lines) for p in procs.values())
