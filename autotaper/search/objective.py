"""The search objective: a candidate taper, solved to the budget, trained on paired seeds.

For each trial:
1. the space proposes a taper (or a whole spec), solved to the uniform baseline's budget;
   an infeasible one is recorded through `trial.set_constraint` (violation 1.0) with a
   penalty value, never silently dropped; a feasible one records its budget error minus
   the tolerance (<= 0) as the same constraint;
2. it trains once per seed; the uniform baseline of each seed was trained once and cached
   in the study (`ensure_baselines`), with the same batches and initial weights;
3. the value is the mean paired difference in validation bits per byte, taper minus
   uniform (negative is better), stored with its standard error and 95% interval.
Intermediate values go to the pruner: for median and Hyperband the running paired mean at
each evaluation (one step axis across seeds: seed index * steps + step); for Wilcoxon the
per-seed final difference at step = seed index, which is the test's design.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import time
from typing import Any

from autotaper.cost import count
from autotaper.search.space import BaseSpace
from autotaper.solve import solve_report
from autotaper.spec import ModelSpec
from autotaper.stats import paired

INFEASIBLE_PENALTY = 1.0  # bits per byte: worse than any real taper, so samplers steer away
BASELINE_ATTR = "baseline/seed{seed}"


def train_config(space: BaseSpace, seed: int, overrides: dict[str, Any] | None = None):
    from autotaper.train import TrainConfig

    p = space.proxy
    return TrainConfig(steps=p.steps, batch_size=p.batch_size, lr=float((overrides or {}).get("lr", p.lr)),
                       seed=seed, eval_every=p.eval_interval(), precision=p.precision, schedule=p.schedule)


def metric_key(data) -> str:
    """Bits per byte when the data knows its bytes; loss per token for pre-tokenised data."""
    return "val_bpb" if data.token_bytes is not None else "val_loss"


def baseline_spec(space: BaseSpace, data) -> ModelSpec:
    overrides = {"vocab_size": data.vocab_size}
    if space.proxy.family:
        overrides["family"] = space.proxy.family
    return ModelSpec.from_name(space.proxy.preset, **overrides)


def ensure_baselines(study, space: BaseSpace, data, *, quiet: bool = True) -> dict[int, dict]:
    """Train the uniform baseline once per seed and cache it in the study's user attrs."""
    from autotaper.train import train

    key = metric_key(data)
    base = baseline_spec(space, data)
    out = {}
    for seed in range(space.proxy.seeds):
        attr = BASELINE_ATTR.format(seed=seed)
        cached = study.user_attrs.get(attr)
        if cached is None:
            r = train(base, data, train_config(space, seed), quiet=quiet)
            if r.status != "complete":
                raise ValueError(f"the uniform baseline did not train (seed {seed}): {r.status}, {r.reason}")
            cached = {"value": r.to_dict()[key], "curve": {str(h["step"]): h[key] for h in r.history},
                      "tokens_per_s": r.tokens_per_s, "train_time_s": r.train_time_s,
                      "fingerprint": r.data_fingerprint, "steps": r.steps}
            fresh = study.user_attrs.get(attr)  # another worker may have finished first: keep one
            if fresh is None:
                study.set_user_attr(attr, cached)
            else:
                cached = fresh
        out[seed] = cached
    return out


class TaperObjective:
    """Callable objective for `study.optimize`; see the module docstring."""

    def __init__(self, space: BaseSpace, data, baselines: dict[int, dict]):
        self.space, self.data, self.baselines = space, data, baselines
        self.base = baseline_spec(space, data)
        self.base_cost = count(self.base)
        self.key = metric_key(data)
        self.multi = space.settings.multi_objective
        self.pruning = space.settings.pruner != "none" and not self.multi

    def _result(self, value: float, tokens_per_s: float):
        return (value, tokens_per_s) if self.multi else value

    def __call__(self, trial):
        import optuna

        from autotaper.train import train

        started = time.perf_counter()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        cand = self.space.suggest(trial)
        p = self.space.proxy
        try:
            if cand.spec is not None:
                spec = dataclasses.replace(cand.spec, vocab_size=self.data.vocab_size)
                sol_cost = count(spec)
                taper_text = spec.taper
            else:
                sol = solve_report(self.base, cand.taper, constraint=p.constraint, tolerance=p.tolerance)
                spec, sol_cost, taper_text = sol.spec, sol.cost, sol.spec.taper
        except ValueError as e:
            trial.set_user_attr("taper", str(cand.taper))
            trial.set_user_attr("status", "infeasible")
            trial.set_user_attr("reason", str(e))
            trial.set_constraint("budget", 1.0)
            return self._result(INFEASIBLE_PENALTY, 0.0)
        rel_p = abs(sol_cost.params - self.base_cost.params) / self.base_cost.params
        rel_f = abs(sol_cost.flops_per_token - self.base_cost.flops_per_token) / self.base_cost.flops_per_token
        error = {"params": rel_p, "flops": rel_f, "both": max(rel_p, rel_f)}[p.constraint]
        trial.set_constraint("budget", error - p.tolerance)
        trial.set_user_attr("taper", taper_text)
        trial.set_user_attr("layers", {"ffn": list(spec.layer_ffn), "heads": list(spec.layer_heads),
                                       "d_model": list(spec.layer_d_model)})
        trial.set_user_attr("params_delta", sol_cost.params - self.base_cost.params)
        trial.set_user_attr("flops_delta", sol_cost.flops_per_token - self.base_cost.flops_per_token)
        if cand.train:
            trial.set_user_attr("train", cand.train)
        # Many knob settings round to the same widths on a small proxy; training is
        # deterministic, so a spec already measured in this study is not trained again.
        key = hashlib.sha256(json.dumps([spec.to_dict() | {"taper": ""}, cand.train], sort_keys=True)
                             .encode()).hexdigest()[:16]
        trial.set_user_attr("spec_key", key)
        for prior in trial.study.get_trials(deepcopy=False):
            a = prior.user_attrs
            if a.get("spec_key") == key and a.get("status") == "complete" and prior.number != trial.number:
                trial.set_user_attr("cached_from", prior.number)
                for attr in ("seed_deltas", "seed_values", "tokens_per_s", "delta", "se", "ci95"):
                    trial.set_user_attr(attr, a.get(attr))
                trial.set_user_attr("status", "complete")
                trial.set_user_attr("train_time_s", 0.0)
                trial.set_user_attr("wall_time_s", time.perf_counter() - started)
                return self._result(a["delta"], a.get("tokens_per_s") or 0.0)

        deltas, values, speeds, train_time = [], [], [], 0.0
        for i in range(p.seeds):
            base = self.baselines[i]
            pruned = []

            def on_eval(step, metrics, i=i, base=base, pruned=pruned):
                if not self.pruning or self.space.settings.pruner == "wilcoxon":
                    return None
                ref = base["curve"].get(str(step))
                if ref is None or metrics[self.key] is None:
                    return None
                running = (sum(deltas) + metrics[self.key] - ref) / (len(deltas) + 1)
                trial.report(running, step=i * p.steps + step)
                if trial.should_prune():
                    pruned.append(step)
                    return True
                return None

            r = train(spec, self.data, train_config(self.space, i, cand.train), callbacks=[on_eval], quiet=True)
            train_time += r.train_time_s
            if r.status == "diverged":
                self._record(trial, deltas, values, speeds, train_time, started, "failed", r.reason)
                raise RuntimeError(f"trial diverged on seed {i}: {r.reason}")
            if r.data_fingerprint != base["fingerprint"] and r.status == "complete":
                raise RuntimeError(f"seed {i}: data fingerprint differs from the baseline's; the pairing is broken")
            if pruned:
                self._record(trial, deltas, values, speeds, train_time, started, "pruned",
                             f"pruned at seed {i} step {pruned[0]}")
                raise optuna.TrialPruned(f"pruned at seed {i} step {pruned[0]}")
            value = r.to_dict()[self.key]
            deltas.append(value - base["value"])
            values.append(value)
            speeds.append(r.tokens_per_s)
            if self.pruning and self.space.settings.pruner == "wilcoxon":
                trial.report(deltas[-1], step=i)
                if trial.should_prune():
                    self._record(trial, deltas, values, speeds, train_time, started, "pruned",
                                 f"pruned by Wilcoxon after seed {i}")
                    raise optuna.TrialPruned(f"pruned by Wilcoxon after seed {i}")
        stats = self._record(trial, deltas, values, speeds, train_time, started, "complete", None)
        return self._result(stats.mean, sum(speeds) / len(speeds))

    def _record(self, trial, deltas, values, speeds, train_time, started, status, reason):
        trial.set_user_attr("status", status)
        if reason:
            trial.set_user_attr("reason", reason)
        trial.set_user_attr("seed_deltas", deltas)
        trial.set_user_attr("seed_values", values)
        trial.set_user_attr("train_time_s", train_time)
        trial.set_user_attr("wall_time_s", time.perf_counter() - started)
        if speeds:
            trial.set_user_attr("tokens_per_s", sum(speeds) / len(speeds))
        stats = paired(deltas) if deltas else None
        if stats is not None:
            trial.set_user_attr("delta", stats.mean)
            trial.set_user_attr("se", stats.se)
            trial.set_user_attr("ci95", list(stats.ci95) if stats.ci95 else None)
        return stats
