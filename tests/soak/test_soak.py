"""The CI-sized chaos soak, and the smallest reproduction of what soaking has found.

The soak (tests/soak/soak.py) starts its own NATS and PostgreSQL (or MariaDB); `just soak`
runs the long version with several seeds (`just soak target=mysql` against MySQL).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from harness import Env, envelope
from soak import FAULT_KINDS, TARGETS, run_soak

USERS = "CREATE TABLE users (id int PRIMARY KEY, name text, score int DEFAULT 0);"
ONE_BATCH = "{max_size: 1000, max_delay_ms: 200}"


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_chaos_soak_loses_nothing(tmp_path: Path, target: str) -> None:
    """Under every kind of fault each table equals the model and each poison message is one
    dead letter, into PostgreSQL and into MySQL."""
    report = run_soak(seed=1, events=20_000, max_seconds=120, workdir=tmp_path, target=target)
    assert report.verdict == "PASS", report.summary()
    assert (report.lost, report.extra, report.duplicated) == (0, 0, 0), report.summary()
    missing = [kind for kind, n in report.faults_by_kind.items() if n == 0]
    assert not missing, f"fault kinds never injected: {missing}\n{report.summary()}"
    assert set(report.faults_by_kind) == set(FAULT_KINDS)


@pytest.mark.slow
def test_partitioned_chaos_soak_loses_nothing(tmp_path: Path) -> None:
    """Two instances sharing every flow in 4 partitions, under every kind of fault (a kill -9
    or SIGTERM hits one instance): each table equals the model, each poison message is one
    dead letter, every partition's checkpoint reaches its last message."""
    report = run_soak(
        seed=2, events=10_000, max_seconds=90, workdir=tmp_path, partitioned=True, instances=2
    )
    assert report.verdict == "PASS", report.summary()
    assert (report.lost, report.extra, report.duplicated) == (0, 0, 0), report.summary()
    assert report.faults_by_kind["kill9"] + report.faults_by_kind["sigterm"] > 0


async def test_bad_value_folded_with_a_later_event_of_its_key_is_dead_lettered(
    env: Env, nursery: trio.Nursery
) -> None:
    """A bad value is dead-lettered and has no effect even when a later event of the same
    key in the same batch overwrites its bad column."""
    await env.create_schema(USERS)
    subject = env.subject() + ".users"
    bad = envelope("users", "upsert", {"id": 1, "name": "poisoned", "score": "abc"})
    messages = [
        envelope("users", "insert", {"id": 1, "name": "first"}),
        bad,  # 22P02 for column score: the whole event must be refused
        envelope("users", "update", {"id": 1, "score": 5}),
    ]
    await env.ensure_stream([f"{env.subject()}.>"])
    await env.publish(subject, messages)  # all waiting before the service starts: one batch
    async with env.running(env.config(env.flow_yaml(batch=ONE_BATCH)), nursery):
        await env.applied(len(messages))
    letters = [(d["stream_seq"], d["payload"]) for d in await env.dead_letters()]
    rows = await env.rows("users")
    # Applied one by one (docs/semantics.md: a batch has the same result), event 2 is
    # dead-lettered and the row never sees its name.
    assert (rows, letters) == ([{"id": 1, "name": "first", "score": 5}], [(2, bad)])
