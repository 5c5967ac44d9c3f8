"""How often does a search's verdict lie? Whole searches simulated under a measured noise model.

Each simulated search has `--trials` candidates whose per-seed paired deltas against
uniform are  true effect + N(0, sd)  (sd: the paired-delta SD that `autotaper calibrate`
measured, `--sd`, or read from a study with `--study`). Two pipelines judge them:
- today's: every candidate on seeds.min..seeds.max seeds with racing (autotaper.search.racing,
  the rule the search runs), then the top k and the paper default confirmed on fresh seeds,
  Holm over them; "beats uniform" only from the confirmation (autotaper.search.confirm);
- the old rule: every candidate on `--old-seeds` seeds, "beats uniform" when the best
  candidate whose 95% interval lies below 0 exists (the verdict before confirmation).
Scenarios: no candidate has an effect (the family-wise false-positive rate: any "beats
uniform" is false), and one candidate (not the paper default) has an effect of 2x the
confirmation's MDE (power: it is named the winner), and 1x for reference. Goals: FWER <= 5%,
power >= 80% at 2x MDE.

    python benchmarks/verdict_reliability.py --sd 0.031 --searches 2000
"""

from __future__ import annotations

import argparse

import numpy as np

from autotaper import stats
from autotaper.search import racing


def race_search(rng, effects, *, n_min, n_max, sd):
    """Per-candidate seed deltas after racing (candidate 0 first, as the paper default is)."""
    runs, inc = [], None  # inc: index of the incumbent (None: uniform)
    decisions = []
    for j, e in enumerate(effects):
        noise = rng.normal(0.0, sd, n_max)
        d = []
        decision = racing.CONTINUE
        for i in range(n_max):
            if i >= n_min:
                inc_vals = None if inc is None else runs[inc]
                diffs = racing.differences(d, [0.0] * len(d), inc_vals)
                decision = racing.decide(diffs, i, n_min=n_min, n_max=n_max)
                if decision != racing.CONTINUE:
                    break
            d.append(e + noise[i])
        else:
            inc_vals = None if inc is None else runs[inc]
            decision = racing.decide(racing.differences(d, [0.0] * len(d), inc_vals), len(d), n_min=n_min,
                                     n_max=n_max)
        runs.append(d)
        decisions.append(decision)
        mean = float(np.mean(d))
        if decision != racing.WORSE and mean < 0 and (inc is None or mean < float(np.mean(runs[inc]))):
            inc = j
    return runs, decisions


def confirmed(rng, effects, runs, decisions, *, top_k, seeds, sd):
    """Indices declared "beats uniform" by the confirmation (Holm over top_k + paper default),
    the top k picked as `autotaper.search.confirm.pick` does: racing's survivors first."""
    means = [float(np.mean(r)) for r in runs]
    order = sorted(range(1, len(runs)), key=lambda j: (decisions[j] == racing.WORSE, means[j]))
    picked = order[:top_k] + [0]  # + the paper default
    fresh = {j: effects[j] + rng.normal(0.0, sd, seeds) for j in picked}
    tests = {j: stats.paired_stats(fresh[j]) for j in picked}
    _, rejected = stats.holm([tests[j].p for j in picked])
    return [j for j, rej in zip(picked, rejected) if rej and tests[j].mean < 0]


def old_rule(rng, effects, *, seeds, sd):
    beating = []
    for j, e in enumerate(effects):
        s = stats.paired_stats(e + rng.normal(0.0, sd, seeds))
        if s.ci95[1] < 0:
            beating.append((s.mean, j))
    return [min(beating)[1]] if beating else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sd", type=float, default=None, help="paired-delta SD (default: from --study, else 0.031)")
    ap.add_argument("--study", help="read the SD from this study's calibration (default storage)")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--seeds-min", type=int, default=2)
    ap.add_argument("--seeds-max", type=int, default=4)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--confirm-seeds", type=int, default=4)
    ap.add_argument("--old-seeds", type=int, default=3)
    ap.add_argument("--searches", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sd = args.sd
    if sd is None and args.study:
        from autotaper.search.results import leaderboard

        sd = leaderboard(None, args.study)["noise"]["delta_sd"]
    sd = sd or 0.031
    m = args.top_k + 1
    mde = stats.mde(sd, args.confirm_seeds, alpha=stats.ALPHA / m)
    effect = -2 * mde
    print(f"paired-delta sd {sd:.4f}; {args.trials} candidates, racing {args.seeds_min}..{args.seeds_max} seeds; "
          f"confirm top {args.top_k} + paper default on {args.confirm_seeds} fresh seeds (MDE at 5%/{m}: {mde:.4f}); "
          f"old rule: {args.old_seeds} seeds each; {args.searches} searches per scenario")
    rng = np.random.default_rng(args.seed)
    rows = {}
    seeds_spent = []
    for scenario, size in (("null", 0.0), ("effect", effect), ("effect1x", effect / 2)):
        fp_new = fp_old = hit_new = hit_old = 0
        for _ in range(args.searches):
            effects = np.zeros(args.trials)
            target = None
            if scenario != "null":
                target = int(rng.integers(1, args.trials))
                effects[target] = size
            runs, decisions = race_search(rng, effects, n_min=args.seeds_min, n_max=args.seeds_max, sd=sd)
            seeds_spent.append(sum(len(r) for r in runs))
            new = confirmed(rng, effects, runs, decisions, top_k=args.top_k, seeds=args.confirm_seeds, sd=sd)
            old = old_rule(rng, effects, seeds=args.old_seeds, sd=sd)
            if scenario == "null":
                fp_new += bool(new)
                fp_old += bool(old)
            else:
                best_new = min(new, key=lambda j: effects[j]) if new else None
                hit_new += best_new == target
                hit_old += bool(old) and old[0] == target
        n = args.searches
        rows[scenario] = (fp_new / n, fp_old / n) if scenario == "null" else (hit_new / n, hit_old / n)

    def ci(p, n=args.searches):
        half = 1.96 * np.sqrt(p * (1 - p) / n)
        return f"{p:.3f} [{max(0, p - half):.3f}, {min(1, p + half):.3f}]"

    print(f"\n{'':<36}{'racing + confirmation':>26}{'old rule':>26}")
    print(f"{'false-positive rate (no effect)':<36}{ci(rows['null'][0]):>26}{ci(rows['null'][1]):>26}   goal <= 0.05")
    print(f"{'power (one effect of 2x MDE)':<36}{ci(rows['effect'][0]):>26}{ci(rows['effect'][1]):>26}   goal >= 0.80")
    print(f"{'power (one effect of 1x MDE)':<36}{ci(rows['effect1x'][0]):>26}{ci(rows['effect1x'][1]):>26}")
    print(f"\nseeds per search stage (racing): mean {np.mean(seeds_spent):.1f} of {args.trials * args.seeds_max} "
          f"at seeds.max for all; the old rule spends {args.trials * args.old_seeds}")


if __name__ == "__main__":
    main()
