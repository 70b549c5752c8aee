"""Prometheus text exposition of the flow statistics (format version 0.0.4)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from cdcsync.flow.batch import Partition
from cdcsync.flow.pipeline import Flow

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

STATES = ("starting", "standby", "running", "paused", "degraded", "failed", "stopped")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def _lags(flow: Flow) -> Mapping[Partition, int]:
    """The source's lag per partition, for sources that offer it (optional: ``lag()``)."""
    lag = getattr(flow.source, "lag", None)
    return lag() if callable(lag) else {}


def render(flows: Sequence[Flow], uptime_s: float) -> str:
    """Every counter and gauge per flow and destination, and the batch latency histogram."""
    out: list[str] = []
    out += _family(
        "cdcsync_uptime_seconds",
        "gauge",
        "Seconds since the process started.",
        [f"cdcsync_uptime_seconds {uptime_s:.3f}"],
    )
    per_flow = [
        ("cdcsync_events_received_total", "counter", "Messages taken from the source.", "received"),
        (
            "cdcsync_events_acked_total",
            "counter",
            "Messages acknowledged after every destination committed them.",
            "acked",
        ),
        (
            "cdcsync_messages_dropped_total",
            "counter",
            "Core NATS messages shed because the flow could not keep up (at-most-once).",
            "dropped",
        ),
        (
            "cdcsync_flow_restarts_total",
            "counter",
            "Times the flow's pipeline was restarted after a failure.",
            "restarts",
        ),
    ]
    for name, kind, help_text, attr in per_flow:
        out += _family(
            name,
            kind,
            help_text,
            (f"{name}{_labels(flow=f.name)} {getattr(f.stats, attr)}" for f in flows),
        )
    # A partitioned flow's figures per partition it runs here (label ``partition``).
    held = [
        (f, str(k), p)
        for f in flows
        if f.partitioned is not None
        for k, p in f.partitioned.held().items()
    ]
    out += _family(
        "cdcsync_consumer_pending",
        "gauge",
        "JetStream messages not yet delivered plus delivered but unacknowledged.",
        [
            *(
                f"cdcsync_consumer_pending{_labels(flow=f.name)} {f.stats.pending}"
                for f in flows
                if f.stats.pending is not None and f.partitioned is None
            ),
            *(
                f"cdcsync_consumer_pending{_labels(flow=f.name, partition=k)} {p.pending}"
                for f, k, p in held
                if p.pending is not None
            ),
        ],
    )
    out += _family(
        "cdcsync_partition_owned",
        "gauge",
        "1 for each partition of a partitioned flow that this instance runs, 0 for the others.",
        (
            f"cdcsync_partition_owned{_labels(flow=f.name, partition=str(p['index']))} "
            f"{int(p['here'])}"
            for f in flows
            if f.partitioned is not None
            for p in f.partitioned.view()
        ),
    )
    out += _family(
        "cdcsync_partition_lag",
        "gauge",
        "Messages of each source partition this instance reads that are not yet "
        "acknowledged (Kafka: the partition's end minus the next offset to commit).",
        (
            f"cdcsync_partition_lag"
            f"{_labels(flow=f.name, stream=p.stream, partition=str(p.index))} {n}"
            for f in flows
            for p, n in sorted(_lags(f).items(), key=lambda pn: (pn[0].stream, pn[0].index))
        ),
    )
    out += _family(
        "cdcsync_flow_status",
        "gauge",
        "1 for the flow's current state, 0 for the others.",
        (
            f"cdcsync_flow_status{_labels(flow=f.name, status=s)} {int(f.stats.status == s)}"
            for f in flows
            for s in STATES
        ),
    )
    dests = [(f, d) for f in flows for d in f.stats.destinations.values()]
    per_dest = [
        (
            "cdcsync_events_written_total",
            "counter",
            "Events applied to the destination.",
            "written",
        ),
        (
            "cdcsync_events_dead_lettered_total",
            "counter",
            "Events stored as dead letters.",
            "dead_lettered",
        ),
        (
            "cdcsync_events_skipped_total",
            "counter",
            "Redeliveries at or below the checkpoint, tombstones, disabled truncates.",
            "skipped",
        ),
        ("cdcsync_batches_total", "counter", "Batches committed.", "batches"),
        (
            "cdcsync_batch_failures_total",
            "counter",
            "Batches whose first write attempt failed.",
            "failed_batches",
        ),
        (
            "cdcsync_write_retries_total",
            "counter",
            "Write attempts repeated after a retryable error.",
            "retries",
        ),
    ]
    for name, kind, help_text, attr in per_dest:
        out += _family(
            name,
            kind,
            help_text,
            (
                f"{name}{_labels(flow=f.name, destination=d.name)} {getattr(d, attr)}"
                for f, d in dests
            ),
        )
    out += _family(
        "cdcsync_checkpoint_sequence",
        "gauge",
        "Last stream sequence committed in the destination (per partition when partitioned).",
        [
            *(
                f"cdcsync_checkpoint_sequence{_labels(flow=f.name, destination=d.name)} "
                f"{d.checkpoint}"
                for f, d in dests
                if d.checkpoint is not None
            ),
            *(
                f"cdcsync_checkpoint_sequence"
                f"{_labels(flow=f.name, destination=d.name, partition=k)} {d.checkpoint}"
                for f, k, p in held
                for d in p.destinations.values()
                if d.checkpoint is not None
            ),
        ],
    )
    hist: list[str] = []
    for f, d in dests:
        h = d.latency
        for bound, count in zip(h.buckets, h.counts, strict=True):
            le = _labels(flow=f.name, destination=d.name, le=_num(bound))
            hist.append(f"cdcsync_batch_duration_seconds_bucket{le} {count}")
        inf = _labels(flow=f.name, destination=d.name, le="+Inf")
        hist.append(f"cdcsync_batch_duration_seconds_bucket{inf} {h.count}")
        base = _labels(flow=f.name, destination=d.name)
        hist.append(f"cdcsync_batch_duration_seconds_sum{base} {h.total:.6f}")
        hist.append(f"cdcsync_batch_duration_seconds_count{base} {h.count}")
    out += _family(
        "cdcsync_batch_duration_seconds", "histogram", "Time to write and commit one batch.", hist
    )
    return "\n".join(out) + "\n"
