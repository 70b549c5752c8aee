"""Partitioned JetStream, the pure parts: stream layout and its checks, the fair share, the
statistics that add up into the flow's, ``publish --key``, and the configuration."""

from __future__ import annotations

import itertools
import re

import pytest

from cdcsync import config as cfg
from cdcsync.errors import CdcSyncError, ConfigError
from cdcsync.sources.nats_members import fair_share, group_key
from cdcsync.sources.nats_streams import (
    partition_filter,
    partition_problem,
    stored_partitions,
    transform_dest,
)
from cdcsync.stats import FlowStats, PartitionStats
from cdcsync.tools import keyed_subject


def test_transform_puts_the_partition_first_and_hashes_every_star_token() -> None:
    """The destination keeps the subject as published behind the partition number."""
    assert transform_dest("cdc.*.*", 8) == (
        "{{partition(8,1,2)}}.cdc.{{wildcard(1)}}.{{wildcard(2)}}"
    )
    assert transform_dest("x.*.>", 3) == "{{partition(3,1)}}.x.{{wildcard(1)}}.>"
    assert partition_filter("cdc.*.*", 5) == "5.cdc.*.*"
    assert stored_partitions(("cdc.*.*", transform_dest("cdc.*.*", 8)), "cdc.*.*") == 8
    assert stored_partitions(("cdc.*.*", transform_dest("cdc.*.*", 8)), "other.*") is None
    assert stored_partitions(None, "cdc.*.*") is None


def test_a_stream_laid_out_as_cdcsync_creates_it_has_no_problem() -> None:
    tr = ("cdc.*.*", transform_dest("cdc.*.*", 8))
    assert partition_problem("CDC", ["cdc.*.*"], tr, "cdc.*.*", 8) is None
    assert partition_problem("CDC", ["cdc.>"], None, "cdc.*.*", 1) is None


def test_changing_the_partition_count_is_refused_with_how_to_migrate() -> None:
    """An existing stream is never re-partitioned: the message says both counts and the way."""
    tr = ("cdc.*.*", transform_dest("cdc.*.*", 8))
    problem = partition_problem("CDC", ["cdc.*.*"], tr, "cdc.*.*", 4)
    assert problem is not None
    assert "split into 8 partitions, the flow says partitions: 4" in problem
    assert "set partitions: 8" in problem and "operations.md#several-instances" in problem


def test_a_stream_without_partitions_is_refused_for_a_partitioned_flow() -> None:
    problem = partition_problem("CDC", ["cdc.*.*"], None, "cdc.*.*", 8)
    assert problem is not None
    assert "exists without partitions" in problem
    assert "{{partition(8,1,2)}}.cdc.{{wildcard(1)}}.{{wildcard(2)}}" in problem


def test_a_partitioned_stream_is_refused_for_a_single_partition_flow() -> None:
    """partitions: 1 on a partitioned stream would filter on subjects that are never stored."""
    tr = ("cdc.*.*", transform_dest("cdc.*.*", 8))
    problem = partition_problem("CDC", ["cdc.*.*"], tr, "cdc.*.*", 1)
    assert problem is not None and "receive nothing" in problem and "partitions: 8" in problem


def test_a_foreign_transform_is_refused_with_the_expected_one() -> None:
    odd = ("cdc.*.*", "cdc.{{wildcard(1)}}.{{wildcard(2)}}.{{partition(8,1,2)}}")
    problem = partition_problem("CDC", ["cdc.*.*"], odd, "cdc.*.*", 8)
    assert problem is not None and "not one that partitions" in problem
    other = ("cdc.*.*", "{{partition(8,2)}}.cdc.{{wildcard(1)}}.{{wildcard(2)}}")
    problem = partition_problem("CDC", ["cdc.*.*"], other, "cdc.*.*", 8)
    assert problem is not None and "cdcsync expects" in problem


MEMBERS = ["a-1", "b-2", "c-3", "d-4", "e-5"]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 8, 16, 64])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_fair_share_is_balanced_and_gives_every_partition_one_owner(count: int, m: int) -> None:
    members = MEMBERS[:m]
    owner = fair_share(count, members)
    assert sorted(owner) == list(range(count))
    loads = [list(owner.values()).count(x) for x in members]
    assert max(loads) - min(loads) <= 1


def test_fair_share_depends_only_on_the_member_set() -> None:
    """Every instance computes the same answer from the same members, in any order."""
    first = fair_share(8, MEMBERS[:3])
    for order in itertools.permutations(MEMBERS[:3]):
        assert fair_share(8, list(order)) == first


def test_fair_share_moves_few_partitions_when_a_member_joins() -> None:
    before = fair_share(64, MEMBERS[:3])
    after = fair_share(64, MEMBERS[:4])
    moved = sum(before[k] != after[k] for k in range(64))
    assert moved <= 64 // 4 + 8  # about the newcomer's share, not a reshuffle


def test_group_keys_are_kv_safe_and_keep_distinct_names_apart() -> None:
    assert group_key("CDC", "cdcsync-orders") == "CDC.cdcsync-orders"
    a, b = group_key("CDC", "o:r"), group_key("CDC", "o;r")
    assert a != b and re.fullmatch(r"[A-Za-z0-9_=.-]+", a)


def test_partition_counters_add_up_into_the_flow() -> None:
    """What a partition's pipeline counts shows in the flow's totals as it happens."""
    flow = FlowStats("f")
    changes: list[int] = []
    parts = [
        PartitionStats("f", parent=flow, index=k, on_change=lambda: changes.append(1))
        for k in range(2)
    ]
    for k, p in enumerate(parts):
        p.received += 10 * (k + 1)
        d = p.destination("db")
        d.written += 5 * (k + 1)
        d.rate.add(5)
        d.latency.observe(0.002)
        d.checkpoint = 100 + k
    assert flow.received == 30
    assert flow.destination("db").written == 15
    assert flow.destination("db").latency.count == 2
    assert flow.destination("db").checkpoint is None  # one per partition, not per flow
    assert [p.position for p in parts] == [100, 101]
    assert changes  # the flow's status is recomputed when a partition's changes
    assert flow.destination("db").round_trips is None  # not counted (yet)
    for p in parts:
        d = p.destination("db")
        d.round_trips = (d.round_trips or 0) + 3  # as the writer stage adds a batch's
    assert flow.destination("db").round_trips == 6
    flow.reset()
    parts[0].received += 1
    assert flow.received == 1


def test_publish_key_puts_the_rows_key_into_the_subject() -> None:
    cdc = b'{"table": "users", "operation": "insert", "data": {"id": 42}}'
    assert keyed_subject("cdc.users.{key}", "id", cdc, 1) == "cdc.users.42"
    debezium = b'{"payload": {"op": "d", "before": {"id": "a.b c"}, "after": null}}'
    assert keyed_subject("cdc.users.{key}", "id", debezium, 1) == "cdc.users.a_b_c"
    with pytest.raises(CdcSyncError, match="message 3 has no field 'id'"):
        keyed_subject("cdc.{key}", "id", b'{"data": {}}', 3)
    with pytest.raises(CdcSyncError, match="message 1 is not JSON"):
        keyed_subject("cdc.{key}", "id", b"nope", 1)


def _config(subject: str, extra: str) -> str:
    return f"""\
flows:
  - name: f
    source:
      type: nats
      servers: ["nats://127.0.0.1:4222"]
      subject: "{subject}"
      jetstream: {{stream: S, durable: d{extra}}}
    destinations:
      - {{name: p, type: postgres, url: "postgresql://u@h/db"}}
"""


def test_partitions_default_to_one_and_need_a_star_in_the_subject() -> None:
    js = cfg.loads(_config("cdc.>", ""), path="c.yaml").flows[0].source.options.jetstream
    assert js.partitions == 1
    js = cfg.loads(_config("cdc.*.*", ", partitions: 8"), path="c.yaml").flows[0]
    assert js.source.options.jetstream.partitions == 8
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: .*partitions: 4 needs a '\*' wildcard"):
        cfg.loads(_config("cdc.users.>", ", partitions: 4"), path="c.yaml")
    with pytest.raises(ConfigError, match=r"c.yaml:7: .*integer >= 1"):
        cfg.loads(_config("cdc.*", ", partitions: 0"), path="c.yaml")
