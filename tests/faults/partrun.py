"""The partitioned-flow scenario on a 3-node NATS cluster, at any size.

``run_cluster(...)`` is the whole story of issue 14's acceptance: three cdcsync instances
share an 8-partition flow of an R3 stream while keyed events flow; ownership is sampled from
the instances' APIs and from PostgreSQL's locks; optionally chaos (kill -9 of an instance,
SIGTERM and restart of another, kill and restart of a NATS node) and kill -9 takeover
trials; at the end the ledger must show every event applied once, in order per key.

``tests/faults/test_partitions.py`` runs it small in CI; ``bench/partitions.py`` runs it at
200,000 events with 10 takeover trials and prints the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from faultkit import CdcProcess, Fleet, wait_for
from partkit import KeyedWorkload, NatsCluster, Owners, PartWorld, ledger_problems, partitions_of

__all__ = ["run_cluster"]


class _Run:
    def __init__(self, world: PartWorld, fleet: Fleet, config: Path, report: dict[str, Any]):
        self.world, self.fleet, self.config, self.report = world, fleet, config, report
        self.procs: dict[str, CdcProcess] = {}
        self.owners = Owners(world, self.procs)
        self.written: dict[str, int] = {}
        self.client = httpx.AsyncClient()
        self.generation = 0

    async def spawn(self, name: str) -> None:
        self.generation += 1
        proc = self.fleet.spawn(self.config, f"{name}-{self.generation}")
        self.procs[name] = proc
        self.owners.apis[name] = await proc.api(30)

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.returncode is None]

    async def note_written(self) -> None:
        for name in self.alive():
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                resp = await self.client.get(f"{self.owners.apis[name]}/api/flows/f", timeout=1)
                written = resp.json()["state"]["written"]
                self.written[self.procs[name].log_path.stem] = written

    async def balanced(self) -> bool:
        """Every partition running on exactly one live instance, each live one running some."""
        seen = await self.owners.sample(self.client)
        runners = [names for names in seen.values()]
        if any(len(r) != 1 for r in runners):
            return False
        busy = {r[0] for r in runners}
        return busy == set(self.alive())

    async def wait_balanced(self, what: str, timeout: float = 60) -> float:
        return await wait_for(self.balanced, timeout, what, interval=0.1)

    async def held_by(self, name: str) -> list[int]:
        parts = await partitions_of(self.client, self.owners.apis[name]) or []
        return [p["index"] for p in parts if p["here"] and p["status"] == "running"]

    async def takeover(self, victim: str, timeout: float = 30) -> float:
        """kill -9 ``victim``; seconds until each of its partitions runs on another instance."""
        lost = await self.held_by(victim)
        assert lost, f"{victim} runs no partition"
        await self.note_written()
        self.procs[victim].kill9()
        t = time.monotonic()
        deadline = t + timeout
        while time.monotonic() < deadline:
            seen = await self.owners.sample(self.client)
            if all(len(seen[k]) == 1 for k in lost):
                return time.monotonic() - t
            await asyncio.sleep(0.05)
        raise AssertionError(f"partitions {lost} of {victim} not taken over within {timeout} s")

    async def sample_for(self, seconds: float, *, steady: bool) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await self.owners.sample(self.client, steady=steady)
            await asyncio.sleep(0.2)


async def run_cluster(
    pg_url: str,
    name: str,
    directory: Path,
    *,
    events: int,
    keys: int,
    partitions: int = 8,
    chaos: bool = True,
    trials: int = 0,
    rate: float = 4_000.0,
) -> dict[str, Any]:
    """The scenario; returns the figures and raises AssertionError on any broken guarantee."""
    report: dict[str, Any] = {"events": events, "keys": keys, "partitions": partitions}
    work = KeyedWorkload.make(events, keys)
    started = time.monotonic()
    with NatsCluster() as cluster:
        await cluster.ready()
        world = PartWorld(tuple(cluster.urls), pg_url, name, partitions, replicas=3)
        config = world.config(directory)
        nc = await world.prepare()
        first = events // 4
        chunk = 500
        pause = chunk / rate
        try:
            await world.publish(nc, work.events[:first])
            with Fleet(directory) as fleet:
                run = _Run(world, fleet, config, report)
                try:
                    for n in ("a", "b", "c"):
                        await run.spawn(n)
                    report["balanced_s"] = round(await run.wait_balanced("3 instances"), 2)
                    rest = asyncio.create_task(
                        world.publish(nc, work.events[first:], chunk=chunk, pause=pause)
                    )
                    await run.sample_for(3, steady=True)
                    await run.note_written()
                    if chaos:
                        report["chaos"] = await _chaos(run, cluster)
                    for trial in range(trials):
                        victim = sorted(run.alive())[trial % 3]
                        seconds = await run.takeover(victim)
                        report.setdefault("takeover_s", []).append(round(seconds, 2))
                        await run.spawn(victim)
                        await run.wait_balanced(f"{victim} back after trial {trial + 1}")
                    await rest
                    report["published_s"] = round(time.monotonic() - started, 1)

                    async def finished() -> bool:
                        await run.owners.sample(run.client)
                        return await world.done(work)

                    await wait_for(finished, 300, "every event applied", interval=0.5)
                    await run.note_written()
                    await run.sample_for(1, steady=True)
                    report["done_s"] = round(time.monotonic() - started, 1)
                    report["samples"] = run.owners.samples
                    report["written_by_instance"] = run.written
                    problems = await ledger_problems(world, work)
                    problems += run.owners.doubles[:10]
                    wrote = {k.split("-")[0] for k, v in run.written.items() if v > 0}
                    if wrote != {"a", "b", "c"}:
                        problems.append(f"only {sorted(wrote)} wrote: {run.written}")
                    assert not problems, "\n".join(problems)
                finally:
                    await run.client.aclose()
        finally:
            await nc.close()
            await world.drop()
    times = report.get("takeover_s")
    if times:
        report["takeover_min_median_max_s"] = (
            min(times),
            round(statistics.median(times), 2),
            max(times),
        )
    return report


async def _chaos(run: _Run, cluster: NatsCluster) -> dict[str, Any]:
    """kill -9 one instance, SIGTERM and restart another, kill and restart a NATS node."""
    out: dict[str, Any] = {}
    out["kill9_takeover_s"] = round(await run.takeover("a"), 2)
    await run.sample_for(1, steady=False)
    b = run.procs["b"]
    lost = await run.held_by("b")
    await run.note_written()
    b.sigterm()
    t = time.monotonic()
    assert b.wait(20) == 0, b.tail()
    out["sigterm_exit_s"] = round(time.monotonic() - t, 2)

    async def moved() -> bool:
        seen = await run.owners.sample(run.client)
        return all(len(seen[k]) == 1 for k in lost)

    out["sigterm_handoff_s"] = round(
        time.monotonic() - t + await wait_for(moved, 30, "b's partitions to move"), 2
    )
    await run.spawn("b")
    await run.spawn("a")
    out["rejoin_balanced_s"] = round(await run.wait_balanced("a and b back"), 2)
    node = cluster.nodes[1]
    node.kill()
    await run.sample_for(3, steady=False)
    node.start()
    out["nats_node_back_balanced_s"] = round(
        await run.wait_balanced("balanced after the NATS node came back", 90), 2
    )
    await run.sample_for(2, steady=True)
    return out
