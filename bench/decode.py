"""The decoder's cost per message, the figure behind ``events._loads`` (docs/performance.md).

    .venv/bin/python bench/decode.py            # this checkout
    .venv/bin/python bench/decode.py --against REV   # and REV's cdcsync/events.py, interleaved

Timed in CPU time of this process (``time.process_time``), best of many rounds, so that
other processes on a shared machine change the figures less; ``--against`` alternates the
two versions round by round for the same reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import workload  # noqa: E402
from cdcsync import events  # noqa: E402


def load_revision(rev: str, into: Path) -> ModuleType:
    """``cdcsync/events.py`` of git revision ``rev`` as a module (it imports today's cdcsync)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:cdcsync/events.py"],
        check=True,
        capture_output=True,
    ).stdout
    path = into / "events_at_rev.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location(f"events@{rev}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def best_us(fn: Any, number: int, rounds: int) -> float:
    timer = timeit.Timer(fn, timer=time.process_time)
    return min(timer.repeat(repeat=rounds, number=number)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="REV", help="also time this git revision")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    fixtures = ROOT / "tests" / "fixtures"
    cases = {
        "envelope, 197 B": (fixtures / "cdc-envelope-insert.json").read_bytes().strip(),
        "debezium create, 725 B": (fixtures / "debezium-postgres-create.json").read_bytes(),
    }
    mix = workload.generate(2000, 500, "bench").payloads
    with tempfile.TemporaryDirectory() as tmp:
        versions = {"this checkout": events}
        if args.against:
            versions[args.against] = load_revision(args.against, Path(tmp))
        results: dict[tuple[str, str], float] = {}
        for _ in range(args.rounds):
            for label, mod in versions.items():
                for case, data in cases.items():
                    for what, fn in (
                        ("_loads", lambda m=mod, d=data: m._loads(d)),
                        ("decode", lambda m=mod, d=data: m.decode(d, "auto")),
                    ):
                        key = (label, f"{case}: {what}")
                        results[key] = min(results.get(key, 1e9), best_us(fn, 2000, 1))
                key = (label, f"bench workload mix, {sum(map(len, mix)) // len(mix)} B: decode")
                per = best_us(lambda m=mod: [m.decode(p, "auto") for p in mix], 1, 1) / len(mix)
                results[key] = min(results.get(key, 1e9), per)
    names = list(dict.fromkeys(name for _, name in results))
    print(f"{'µs per message (CPU)':44s}" + "".join(f"{label:>16s}" for label in versions))
    for name in names:
        print(f"{name:44s}" + "".join(f"{results[(label, name)]:16.2f}" for label in versions))


if __name__ == "__main__":
    main()
