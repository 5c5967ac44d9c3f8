"""A ladder read from its JSON and plotted: each probe taper's effect against model size.

`autotaper ladder` writes ladder.json beside its HTML report (runs/ladder/NAME/ladder.json
unless --out says otherwise). This script needs only that file, json and matplotlib, so it
is a starting point for your own figures:

    python examples/plot_ladder.py runs/ladder/ladder/ladder.json --out ladder.png

Left: each taper of the shared probe set, its mean paired difference against uniform on the
rung's fresh seeds with the 95% interval, against the rung's parameter count. Right: the best
taper's effect per rung (±1.96 standard errors) and the trend's prediction at the target,
with and without a trend in size.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ladder_json", type=Path)
    parser.add_argument("--out", type=Path, default=Path("ladder.png"))
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(args.ladder_json.read_text())
    rungs, target = report["rungs"], report["target"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))

    for label in report["probe_set"][1:]:  # the first is uniform: 0 by definition
        points = [(r["params"], r["probe"][label]) for r in rungs if "mean" in r["probe"].get(label, {})]
        if not points:
            continue
        xs = [x for x, _ in points]
        means = [p["mean"] for _, p in points]
        lows = [m - (p["ci95"] or [m, m])[0] for m, (_, p) in zip(means, points)]
        highs = [(p["ci95"] or [m, m])[1] - m for m, (_, p) in zip(means, points)]
        left.errorbar(xs, means, yerr=[lows, highs], marker="o", capsize=3, label=label)
    left.axhline(0, color="black", lw=1)
    left.set_xscale("log")
    left.set_xlabel("parameters")
    left.set_ylabel("Δ vs uniform (95% CI, fresh seeds)")
    left.set_title("probe set per rung", fontsize=10)
    left.legend(fontsize=7)

    effect = report["trend"].get("effect")
    if effect:
        by_name = {r["name"]: r for r in rungs}
        per_rung = effect["per_rung"]
        right.errorbar([by_name[p["rung"]]["params"] for p in per_rung], [p["value"] for p in per_rung],
                       yerr=[1.96 * p["se"] for p in per_rung], fmt="o", capsize=3, label="best per rung")
        for key, color, shift in (("trend", "tab:red", 1.0), ("no_trend", "tab:gray", 1.2)):
            mean, lo, hi = effect["at_target"][key]
            right.errorbar([target["params"] * shift], [mean], yerr=[[mean - lo], [hi - mean]], fmt="D",
                           color=color, capsize=3, label=f"{target['name']}: {key.replace('_', ' ')}")
        right.axhline(0, color="black", lw=1)
        right.set_xscale("log")
        right.set_xlabel("parameters")
        right.set_title(f"trend to {target['name']}", fontsize=10)
        right.legend(fontsize=7)
    else:
        right.text(0.5, 0.5, "no trend fitted (one rung)", ha="center", va="center", transform=right.transAxes)
        right.set_axis_off()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)

    print(f"{'rung':<12} {'params':>13}  best taper")
    for r in rungs:
        best = min((label for label in r["probe"] if "mean" in r["probe"][label]),
                   key=lambda label: r["probe"][label]["mean"], default="-")
        print(f"{r['name']:<12} {r['params']:>13,}  {best}")
    print(f"recommendation at {target['name']}: {report['recommendation']['taper']}")
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
