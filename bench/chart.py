"""Draw cdcsync's throughput against batch size from an ``e2e.py`` results file.

    .venv/bin/pip install matplotlib
    .venv/bin/python bench/e2e.py --sweep 100,500,1000,2000,5000
    .venv/bin/python bench/chart.py bench/results/e2e-<timestamp>.json docs/perf-batch-size.png

The line is the sweep phase (one flow, the batch ``max_size`` on the x axis); the
dashed lines are the two servers' own limits from the same run, when it has them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", help="a bench/results/e2e-*.json file with a sweep")
    p.add_argument("png", help="where to write the chart")
    a = p.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "chart: matplotlib is not installed (.venv/bin/pip install matplotlib)", file=sys.stderr
        )
        return 2
    report = json.loads(Path(a.results).read_text())
    sweep = report["summary"].get("batch_size_sweep") or []
    if not sweep:
        print(
            f"chart: {a.results} has no batch-size sweep (run e2e.py --sweep ...)", file=sys.stderr
        )
        return 2
    sizes = [s["batch_size"] for s in sweep]
    eps = [s["events_per_s"] for s in sweep]
    events = report["args"]["sweep_events"]
    machine = report["machine"]

    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    ax.plot(sizes, eps, marker="o", color="#1f6feb", label="cdcsync, 1 flow")
    for x, y in zip(sizes, eps, strict=True):
        ax.annotate(
            f"{y / 1000:.1f}k",
            (x, y),
            textcoords="offset points",
            xytext=(0, 7),
            ha="center",
            fontsize=8,
        )
    styles = {"pg-limit": "#2da44e", "nats-limit": "#bf8700"}
    for name, color in styles.items():
        figure = report["summary"]["throughput"].get(name)
        if figure:
            ax.axhline(
                figure["events_per_s"],
                color=color,
                linestyle="--",
                linewidth=1,
                label=f"{name} ({figure['events_per_s'] / 1000:.0f}k, batch 2000)",
            )
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("batch max_size (events)")
    ax.set_ylabel("events/s")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:.0f}k"))
    ax.set_title(
        f"cdcsync throughput vs batch size: {events:,} events per point, "
        f"{machine['nproc']} cores (run {report['started']})",
        fontsize=9,
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(a.png)
    print(f"chart: {a.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
