"""``cdcsync dlq list | replay | purge``: dead letters of every matching destination."""

from __future__ import annotations

import argparse
import datetime as dt
from functools import partial

from cdcsync import registry
from cdcsync.bridge import open_bridge
from cdcsync.config import Config, redact_url
from cdcsync.errors import CdcSyncError
from cdcsync.flow.stages import decode_batch
from cdcsync.plugin import Destination

__all__ = ["run"]


def _sinks(config: Config, args: argparse.Namespace) -> list[tuple[Destination, str, int]]:
    """(destination, format, max_bytes) for each selected destination."""
    out = []
    for flow in config.flows:
        if args.flow and flow.name != args.flow:
            continue
        opts = flow.source.options
        for dest in flow.destinations:
            if args.destination and dest.name != args.destination:
                continue
            spec = registry.destinations()[dest.type]
            out.append(
                (
                    spec.factory(flow.name, dest.name, dest.options),
                    opts.format,
                    opts.max_message_bytes,
                )
            )
    if not out:
        raise CdcSyncError("no destination matches --flow/--destination")
    return out


def _preview(payload: bytes, whole: bool) -> str:
    text = payload.decode("utf-8", errors="replace").replace("\n", " ")
    return text if whole or len(text) <= 100 else text[:97] + "..."


def _before(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CdcSyncError(f"--before {text!r}: expected an ISO date like 2026-11-01") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


async def run(config: Config, args: argparse.Namespace) -> int:
    """Carry out one ``dlq`` action; prints a line per letter or per destination."""
    before = _before(args.before) if args.dlq_command == "purge" else None
    wanted: list[int] | None = None
    if args.dlq_command == "replay" and not args.all:
        wanted = sorted(set(args.id))
    found: set[int] = set()
    async with open_bridge():
        for sink, fmt, max_bytes in _sinks(config, args):
            url = getattr(getattr(sink, "options", None), "url", None)
            where = f"{sink.flow}/{sink.name}" + (f" ({redact_url(url)})" if url else "")
            try:
                if args.dlq_command == "list":
                    letters = await sink.dead_letters(limit=args.limit)
                    print(f"# {where}: {len(letters)} shown")
                    for dl in letters:
                        print(
                            f"{dl.id}\t{dl.failed_at.isoformat(timespec='seconds')}\t"
                            f"seq={dl.stream_seq}\t{dl.subject}\t{dl.error}\n"
                            f"\t{_preview(dl.payload, args.payload)}"
                        )
                elif args.dlq_command == "replay":
                    if wanted is not None:
                        here = await sink.dead_letters(limit=len(wanted), ids=wanted)
                        if not here:
                            continue  # not this destination's: say nothing of it
                        found.update(dl.id for dl in here)
                    decode = partial(decode_batch, fmt=fmt, max_bytes=max_bytes)
                    result = await sink.replay(decode, ids=wanted)
                    print(
                        f"{where}: applied {result.applied}, "
                        f"still failing {result.still_failing} (kept, with the new reason)"
                    )
                else:
                    assert before is not None
                    count = await sink.purge(before)
                    print(f"{where}: purged {count} dead letters older than {before.isoformat()}")
            except OSError as exc:
                raise CdcSyncError(f"{where}: {exc}") from exc
            finally:
                await sink.close()
    missing = [i for i in wanted or () if i not in found]
    if missing:
        ids = ", ".join(map(str, missing))
        raise CdcSyncError(
            f"no dead letter with id {ids} in the selected destinations "
            f"(`cdcsync dlq list` shows the ids; a replayed letter is gone)"
        )
    return 0
