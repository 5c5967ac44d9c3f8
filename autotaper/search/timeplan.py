"""A search planned from a measured run time, so a wall-clock promise is kept on any CPU.

Calibration measures the wall time of one proxy run on this machine (the CPU may or may not
have native bf16: a 2x difference, so nothing is assumed). A search then costs about
  confirmation: (candidates + 1 uniform) x confirm seeds runs, candidates = top_k + the
                paper default, + confirm seeds when the verdict is decomposed (its taper
                under the other parametrization);
  trials:       expected seeds per trial runs each, seeds.min + (seeds.max - seeds.min) / 3
                with racing (most challengers stop at seeds.min) and seeds otherwise.
With a budget, the trials are what gives: as many as fit in what remains after the time
already spent and the confirmation (at least the two references); the confirmation shrinks
(top_k, then seeds) only when even that does not fit. Without one, the plan still prints
its estimate. The search stage also gets the trial time as a timeout, so a slow trial can
overrun the plan by one trial at most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotaper.search.space import BaseSpace

REFERENCE_TRIALS = 2  # uniform (free) and the paper default (its first seeds come from calibration)


@dataclass
class Plan:
    run_s: float
    n_trials: int
    seeds_per_trial: float
    confirm_top_k: int
    confirm_seeds: int
    elapsed_s: float
    budget_s: float | None
    trials_timeout_s: float | None

    @property
    def confirm_runs(self) -> int:
        """Top k, the paper default, the probe's suggestion and uniform on every confirmation
        seed, plus the uniform run the probe reads."""
        if not self.confirm_top_k:
            return 0
        return (self.confirm_top_k + 2 + self.probe + self.decompose) * self.confirm_seeds + self.probe

    done: int = 0
    probe: bool = False  # search.suggest_from_probe
    decompose: bool = False  # search.confirm.decompose: the verdict's taper under the other parametrization
    confirm_scale: float = 1.0  # a confirmation run's steps over a search run's (confirm.steps)

    @property
    def estimate_s(self) -> float:
        trial_runs = max(0, self.n_trials - max(self.done, REFERENCE_TRIALS)) * self.seeds_per_trial
        return self.elapsed_s + (trial_runs + self.confirm_runs * self.confirm_scale) * self.run_s

    def text(self) -> str:
        budget = f" of a {self.budget_s / 60:.1f} min budget" if self.budget_s else ""
        probe = ", the probe's suggestion" if self.probe else ""
        other = ", the verdict's taper under the other parametrization" if self.decompose else ""
        conf = (f"confirmation of the top {self.confirm_top_k}, the paper default{probe} and uniform{other} on "
                f"{self.confirm_seeds} fresh seeds ({self.confirm_runs} runs"
                + (f", {self.confirm_scale:.3g}x a search run's steps each" if self.confirm_scale != 1 else "")
                + ")" if self.confirm_top_k
                else "no confirmation")
        return (f"plan: {self.run_s:.1f} s per proxy run measured here; {self.n_trials} trials "
                f"(~{self.seeds_per_trial:.1f} seeds each), {conf}; about {self.estimate_s / 60:.1f} min in all"
                f"{budget}, {self.elapsed_s / 60:.1f} min spent so far")


def expected_seeds(space: BaseSpace) -> float:
    p = space.proxy
    return p.seeds + (p.max_seeds - p.seeds) / 3 if p.racing else float(p.seeds)


def make_plan(space: BaseSpace, *, run_s: float, n_trials: int, elapsed_s: float,
              budget_s: float | None = None, confirm: bool = True, done: int = 0,
              confirm_scale: float = 1.0) -> Plan:
    """`n_trials` is the study's total (references included); `done` of them finished before
    this command, so a resumed search plans what its budget adds to them."""
    per_trial = expected_seeds(space)
    top_k = space.settings.confirm.top_k if confirm else 0
    seeds = space.settings.confirm.seeds
    probe = bool(space.settings.suggest_from_probe and top_k)
    decompose = bool(space.settings.confirm.decompose and top_k)
    if budget_s is None:
        return Plan(run_s, n_trials, per_trial, top_k, seeds, elapsed_s, None, None, done, probe, decompose,
                    confirm_scale)
    left = budget_s - elapsed_s

    def confirm_s(k, n):
        return Plan(run_s, 0, 0, k, n, 0, None, None, 0, probe, decompose).confirm_runs * run_s * confirm_scale

    # shrink the confirmation only when the references alone would not leave room for it
    while top_k > 1 and confirm_s(top_k, seeds) > left:
        top_k -= 1
    while seeds > 2 and confirm_s(top_k, seeds) > left:
        seeds -= 1
    trial_s = max(0.0, left - confirm_s(top_k, seeds))
    fit = max(done, REFERENCE_TRIALS) + int(math.floor(trial_s / (per_trial * run_s)))
    return Plan(run_s, max(REFERENCE_TRIALS, min(n_trials, fit)), per_trial, top_k, seeds, elapsed_s, budget_s,
                trial_s, done, probe, decompose, confirm_scale)
