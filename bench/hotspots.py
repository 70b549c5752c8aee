"""Summarise a py-spy ``--format raw`` profile: where the samples are, by function and line.

    .venv/bin/py-spy record -r 200 --format raw -o /tmp/p.txt --subprocesses -- \\
        .venv/bin/python bench/e2e.py --only cdcsync
    .venv/bin/python bench/hotspots.py /tmp/p.txt [--match cdcsync] [--top 25]

"self" counts samples whose innermost frame is the line; "total" counts samples
whose stack contains the function anywhere (once per sample).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def _parse(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    return stack.split(";"), int(count)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("profile", type=Path)
    p.add_argument("--match", default="", help="only samples with a frame containing this text")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()

    total = 0
    self_line: Counter[str] = Counter()
    incl_func: Counter[str] = Counter()
    for raw in args.profile.read_text().splitlines():
        if not raw.strip():
            continue
        frames, count = _parse(raw)
        if args.match and not any(args.match in f for f in frames):
            continue
        total += count
        self_line[frames[-1]] += count
        seen = set()
        for f in frames:
            m = _FRAME.match(f)
            key = f"{m['func']} ({m['file']})" if m else f
            if key not in seen:
                seen.add(key)
                incl_func[key] += count
    print(f"{total} samples" + (f" with a frame matching {args.match!r}" if args.match else ""))
    print("\nself (innermost frame):")
    for frame, n in self_line.most_common(args.top):
        print(f"  {n / total:6.1%}  {frame}")
    print("\ntotal (function anywhere on the stack):")
    for frame, n in incl_func.most_common(args.top):
        print(f"  {n / total:6.1%}  {frame}")


if __name__ == "__main__":
    main()
