"""The soak's partitioned mode: several instances share each flow, split into partitions.

    .venv/bin/python tests/soak/soak.py --partitioned --seed 1 --events 20000

The same workload, faults and row-by-row comparison as ``soak.py``, with three changes:
each flow has a stream of its own, created with ``partitions`` partitions (a partitioned
stream serves one subject pattern), and subjects ``soak.<flow>.<table>.<key>`` (the key
decides the partition, so a row's events stay in order); ``instances`` cdcsync processes
run the same configuration, and each ``kill -9`` or SIGTERM hits one of them at random; the
checkpoints must reach, per partition, the partition's last stream sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections import defaultdict
from typing import Any

import nats
from faultkit import CdcProcess, consumer_info, sql
from nats.js import api as js_api
from soak import SIGTERM_EXIT_TIMEOUT_S, Soak, _log_digest
from soak_workload import ACK_WAIT_S, FLOWS, FlowSpec, Msg, config_yaml

from cdcsync.sources.nats_streams import transform_dest

__all__ = ["PartitionedSoak", "keyed"]


def keyed(msg: Msg) -> Msg:
    """``msg`` with its row's key as the subject's last token (``x`` when it has none)."""
    token = "x"
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError, StopIteration):
        event = json.loads(msg.payload)
        flow = next(f for f in FLOWS if f.name == msg.flow)
        table = flow.table(event["table"])
        token = "_".join(str(v) for v in table.key_of(event["data"])) or "x"
        token = "".join(c if c.isalnum() or c in "-_" else "_" for c in token)
    return Msg(msg.flow, f"{msg.subject}.{token}", msg.payload, msg.poison, msg.duplicate)


class PartitionedSoak(Soak):
    """A :class:`Soak` with ``instances`` processes and ``partitions`` per flow."""

    def __init__(self, *args: Any, instances: int = 2, partitions: int = 4, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.instances, self.partitions = instances, partitions
        self.procs: list[CdcProcess] = []
        self.partition_last: dict[tuple[str, int], int] = {}

    @staticmethod
    def stream_of(f: FlowSpec) -> str:
        return f"SOAKP_{f.name.upper()}"

    @staticmethod
    def subject_of(f: FlowSpec) -> str:
        return f"soak.{f.name}.*.*"

    def workload(self, work: list[Msg]) -> list[Msg]:
        return [keyed(m) for m in work]

    async def setup(self) -> None:
        await super().setup()  # servers, databases, and the plain mode's streams
        nc = await nats.connect(self.nats.url, connect_timeout=3, max_reconnect_attempts=3)
        try:
            for stream in {f.stream for f in FLOWS}:  # their subjects would overlap ours
                await nc.jetstream().delete_stream(stream)
            for f in FLOWS:
                subject = self.subject_of(f)
                await nc.jetstream().add_stream(
                    js_api.StreamConfig(
                        name=self.stream_of(f),
                        subjects=[subject],
                        subject_transform=js_api.SubjectTransform(
                            src=subject, dest=transform_dest(subject, self.partitions)
                        ),
                    )
                )
        finally:
            await nc.close()
        text = config_yaml(self.nats.url, self.db.url_for)
        for f in FLOWS:
            text = text.replace(f'subject: "{f.subject}"', f'subject: "{self.subject_of(f)}"')
            text = text.replace(
                f"stream: {f.stream}\n        durable: {f.durable}",
                f"stream: {self.stream_of(f)}\n        durable: {f.durable}\n"
                f"        partitions: {self.partitions}",
            )
        self.config.write_text(text)
        self.say(f"{self.instances} instances, {self.partitions} partitions per flow")

    def start_instances(self) -> None:
        for _ in range(self.instances):
            self.spawn()

    def spawn(self) -> CdcProcess:
        proc = super().spawn()
        self.procs = [p for p in self.procs if p.returncode is None] + [proc]
        return proc

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            for p in list(self.procs):
                if not self.expect_exit and p.returncode is not None:
                    self.procs.remove(p)
                    self.crashes += 1
                    self.problem(
                        f"cdcsync ({p.log_path.name}) exited by itself with code "
                        f"{p.returncode}:\n" + p.tail(40)
                    )
                    if self.crashes < 5:
                        self.spawn()

    def _victim(self) -> CdcProcess:
        live = [p for p in self.procs if p.returncode is None]
        self.proc = self.rng.choice(live)
        return self.proc

    async def fault_kill9(self) -> str:
        self._victim()
        return await super().fault_kill9()

    async def fault_sigterm(self) -> str:
        self._victim()
        return await super().fault_sigterm()

    async def read_back(self) -> dict[str, list[tuple[int, bytes]]]:
        nc = await nats.connect(self.nats.url, connect_timeout=3, max_reconnect_attempts=3)
        out: dict[str, list[tuple[int, bytes]]] = {}
        try:
            js = nc.jetstream()
            for f in FLOWS:
                config = js_api.ConsumerConfig(
                    ack_policy=js_api.AckPolicy.NONE, inactive_threshold=30.0
                )
                sub = await js.pull_subscribe(
                    f"*.{self.subject_of(f)}", stream=self.stream_of(f), config=config
                )
                total = int((await sub.consumer_info()).num_pending or 0)
                got: list[tuple[int, bytes]] = []
                while len(got) < total:
                    for m in await sub.fetch(min(1_000, total - len(got)), timeout=5):
                        seq = m.metadata.sequence.stream
                        got.append((seq, m.data))
                        k = int(m.subject.split(".", 1)[0])
                        last = self.partition_last.get((f.name, k), 0)
                        self.partition_last[(f.name, k)] = max(last, seq)
                await sub.unsubscribe()
                out[f.name] = sorted(got)
        finally:
            await nc.close()
        return out

    async def last_sequences(self) -> dict[str, int]:
        await self.read_back()  # also the last sequence of each partition
        last: dict[str, int] = {}
        for (flow, _), seq in self.partition_last.items():
            last[flow] = max(last.get(flow, 0), seq)
        return last

    async def partition_checkpoints(self) -> dict[tuple[str, str, int], int]:
        out: dict[tuple[str, str, int], int] = {}
        for f in FLOWS:
            for d in f.dests:
                with contextlib.suppress(Exception):
                    rows = await sql(
                        self.url(d.database),
                        "SELECT partition, last_seq FROM cdcsync.checkpoints "
                        "WHERE flow = $1 AND destination = $2",
                        f.name,
                        d.name,
                    )
                    for k, seq in rows:
                        out[(f.name, d.name, int(k))] = int(seq)
        return out

    async def checkpoints(self) -> dict[tuple[str, str], int | None]:
        """Per flow and destination the highest partition checkpoint (for the progress line)."""
        out: dict[tuple[str, str], int | None] = {}
        for (flow, dest, _), seq in (await self.partition_checkpoints()).items():
            out[(flow, dest)] = max(out.get((flow, dest)) or 0, seq)
        return out

    def _behind(self, cps: dict[tuple[str, str, int], int]) -> list[str]:
        return [
            f"{flow}/{d.name}[{k}]: {cps.get((flow, d.name, k))} of {seq}"
            for (flow, k), seq in sorted(self.partition_last.items())
            for d in next(f for f in FLOWS if f.name == flow).dests
            if cps.get((flow, d.name, k)) != seq
        ]

    async def converge(self, last_seq: dict[str, int]) -> bool:
        while self.left() > 0:
            if not self._behind(await self.partition_checkpoints()):
                return True
            await asyncio.sleep(0.2)
        return False

    async def diagnose(self, last_seq: dict[str, int] | None) -> str:
        lines = ["behind: " + ", ".join(self._behind(await self.partition_checkpoints()))]
        lines += [_log_digest(p) for p in self.procs]
        return "\n".join(lines)

    def _check_stream(self, exp: Any, stream: dict[str, list[tuple[int, bytes]]]) -> None:
        held = {(self.stream_of(f), seq, p) for f in FLOWS for seq, p in stream[f.name]}
        lost = [(s, seq) for s, seq, p in self.acked if (s, seq, p) not in held]
        if lost:
            self.problem(f"NATS lost {len(lost)} acknowledged publishes, e.g. {lost[:5]}")
        if exp.unknown:
            self.problem(f"the streams hold messages nobody published: {exp.unknown[:5]}")

    async def all_acked(self) -> None:
        nc = await nats.connect(self.nats.url, connect_timeout=3, max_reconnect_attempts=3)
        end = asyncio.get_running_loop().time() + ACK_WAIT_S + 10
        try:
            todo = defaultdict(list)
            for flow, k in self.partition_last:
                todo[flow].append(k)
            for f in FLOWS:
                for k in sorted(todo[f.name]):
                    durable = f"{f.durable}-p{k}"
                    while True:
                        info = await consumer_info(nc, self.stream_of(f), durable)
                        if info is not None and (info.num_pending, info.num_ack_pending) == (0, 0):
                            break
                        if asyncio.get_running_loop().time() > end:
                            self.problem(f"consumer {durable}: messages still unacknowledged")
                            break
                        await asyncio.sleep(0.2)
        finally:
            await nc.close()

    async def stop_cleanly(self) -> None:
        self.expect_exit = True
        live = [p for p in self.procs if p.returncode is None]
        for p in live:
            p.sigterm()
        for p in live:
            try:
                code = await asyncio.to_thread(p.wait, SIGTERM_EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.problem(f"the final SIGTERM did not stop cdcsync:\n{p.tail(40)}")
                continue
            if code != 0:
                self.problem(f"the final SIGTERM: cdcsync exited {code}:\n{p.tail(40)}")
