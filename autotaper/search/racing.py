"""Racing: seeds go to the candidates whose comparison they can still decide.

A candidate trains on `seeds.min` seeds, then one more at a time up to `seeds.max`, and is
compared with the incumbent (the study's best so far, or uniform) on the seeds both ran,
paired by seed, as SMAC's intensification compares a challenger on the incumbent's
instances (Hutter et al. 2011; Lindauer et al. 2022, SMAC3):
- `worse`: its mean difference from the incumbent is >= 0: it does not look better on the
  seeds run so far, so it cannot win; it stops (SMAC rejects a challenger the same way);
- `better`: the 95% interval of the difference lies below 0: decided, it stops;
- `max_seeds`: it reached seeds.max still inside the incumbent's noise;
- otherwise (`continue`) it gets one more seed.
The decision looks only at numbers, so both backends race identically: the incumbent is a
snapshot taken when the trial is created (`incumbent`), and `decide` runs after each seed.
"""

from __future__ import annotations

from typing import Sequence

from autotaper.stats import paired_stats

CONTINUE, WORSE, BETTER, MAX_SEEDS = "continue", "worse", "better", "max_seeds"


def incumbent(trials) -> dict:
    """The best finished candidate of a study: the lowest mean paired delta below 0 among
    complete trials not raced out; uniform (values None) when none is below 0."""
    best = None
    for t in trials:
        a = t.user_attrs
        if a.get("status") != "complete" or a.get("race") == WORSE or not a.get("seed_values"):
            continue
        if a.get("delta") is None or a["delta"] >= 0:
            continue
        if best is None or a["delta"] < best["delta"]:
            best = {"trial": t.number, "taper": a.get("taper"), "delta": a["delta"], "values": list(a["seed_values"])}
    return best or {"trial": None, "taper": "uniform", "delta": 0.0, "values": None}


def differences(values: Sequence[float], baselines: Sequence[float], incumbent_values: Sequence[float] | None):
    """Per-seed candidate minus incumbent on the seeds both have (seed i at index i)."""
    if incumbent_values is None:  # uniform: the paired deltas themselves
        return [v - b for v, b in zip(values, baselines)]
    return [v - w for v, w in zip(values, incumbent_values)]


def decide(diffs: Sequence[float], n_done: int, *, n_min: int, n_max: int) -> str:
    """What racing does with a candidate that has run `n_done` seeds (see the module doc)."""
    if n_done < n_min:
        return CONTINUE
    if diffs:
        stats = paired_stats(diffs)
        if stats.mean >= 0:
            return WORSE
        if stats.ci95 is not None and stats.ci95[1] < 0:
            return BETTER
    return MAX_SEEDS if n_done >= n_max else CONTINUE
