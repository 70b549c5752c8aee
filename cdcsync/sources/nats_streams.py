"""How a partitioned JetStream stream is laid out, and what is wrong with one that exists.

Pure functions (no I/O): the subject transform cdcsync creates a stream with for
``partitions: N``, the subject a partition's consumer filters on, and the plain-words
problem (with its fix) when an existing stream does not match the flow. See
docs/semantics.md#partitioned-jetstream.
"""

from __future__ import annotations

import re

__all__ = [
    "MIN_SERVER",
    "covers",
    "partition_filter",
    "partition_problem",
    "stored_partitions",
    "transform_dest",
]

# Stream subject transforms (and the partition() function in them) came in nats-server 2.10.
MIN_SERVER = (2, 10)

_PARTITION = re.compile(r"^\{\{\s*partition\s*\(\s*(\d+)\s*(?:,[\d\s,]*)?\)\s*\}\}\.", re.I)

_MIGRATE = "docs/operations.md#several-instances-partitions"


def transform_dest(subject: str, partitions: int) -> str:
    """The transform's destination: the partition number, then the subject as published.

    Every ``*`` token of ``subject`` goes into the hash, in order; ``>`` stays ``>``.
    """
    out: list[str] = []
    wild = 0
    for token in subject.split("."):
        if token == "*":
            wild += 1
            out.append(f"{{{{wildcard({wild})}}}}")
        else:
            out.append(token)
    tokens = ",".join(str(i) for i in range(1, wild + 1))
    return f"{{{{partition({partitions},{tokens})}}}}." + ".".join(out)


def partition_filter(subject: str, index: int) -> str:
    """The stored subjects of partition ``index``: its number in front of the flow's subject."""
    return f"{index}.{subject}"


def stored_partitions(transform: tuple[str, str] | None, subject: str) -> int | None:
    """How many partitions an existing stream's transform makes of ``subject``, or None when
    the stream does not partition it."""
    if transform is None:
        return None
    src, dest = transform
    match = _PARTITION.match(dest or "")
    if match is None or src != subject:
        return None
    return int(match.group(1))


def partition_problem(
    stream: str,
    subjects: list[str],
    transform: tuple[str, str] | None,
    subject: str,
    partitions: int,
) -> str | None:
    """What stops the flow from reading ``stream`` with ``partitions``, with the fix; None
    when the stream is laid out as cdcsync would create it."""
    found = stored_partitions(transform, subject)
    if partitions == 1:
        if found is None:
            return None
        return (
            f"stream {stream!r} is split into {found} partitions (subject transform to "
            f"{transform[1] if transform else ''!r}); a flow with partitions: 1 would receive "
            f"nothing from it (fix: set partitions: {found})"
        )
    expected = transform_dest(subject, partitions)
    create = (
        f"subjects [{subject!r}] and subject_transform {{src: {subject!r}, dest: {expected!r}}}"
    )
    if found is None and transform is None:
        return (
            f"stream {stream!r} exists without partitions (no subject transform); cdcsync "
            f"does not re-partition a stream: drain the flow and delete the stream so that "
            f"cdcsync creates it with {partitions} partitions, or use a new stream name "
            f"(see {_MIGRATE}); a stream created by hand needs {create}"
        )
    if found is None:
        assert transform is not None
        return (
            f"stream {stream!r} has the subject transform {transform[0]!r} -> "
            f"{transform[1]!r}, not one that partitions {subject!r} (fix: a stream with "
            f"{create})"
        )
    if found != partitions:
        return (
            f"stream {stream!r} is split into {found} partitions, the flow says "
            f"partitions: {partitions}; cdcsync never changes the number of partitions of a "
            f"stream (its stored messages would stay where they are) (fix: set "
            f"partitions: {found}, or migrate to a new stream, see {_MIGRATE})"
        )
    assert transform is not None
    if transform[1] != expected:
        return (
            f"stream {stream!r} partitions {subject!r} with {transform[1]!r}, cdcsync expects "
            f"{expected!r} (the partition number first, then the subject as published) "
            f"(fix: a stream with {create})"
        )
    if subject not in subjects:
        return f"stream {stream!r} does not store {subject!r} (fix: a stream with {create})"
    return None


def covers(pattern: str, subject: str) -> bool:
    """True when every subject matching ``subject`` also matches ``pattern`` (NATS wildcards)."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if token == "*":
            if s[i] == ">":
                return False
            continue
        if token != s[i]:
            return False
    return len(p) == len(s)
