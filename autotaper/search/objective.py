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
from dataclasses import dataclass, field
from typing import Any, Callable

from autotaper.cost import count
from autotaper.search.space import BaseSpace
from autotaper.budget import solve_report
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


def baseline_entry(space: BaseSpace, data, seed: int, *, quiet: bool = True) -> dict:
    """Train the uniform baseline on one seed; what the study caches for pairing."""
    from autotaper.train import train

    key = metric_key(data)
    r = train(baseline_spec(space, data), data, train_config(space, seed), quiet=quiet)
    if r.status != "complete":
        raise ValueError(f"the uniform baseline did not train (seed {seed}): {r.status}, {r.reason}")
    return {"value": r.to_dict()[key], "curve": {str(h["step"]): h[key] for h in r.history},
            "tokens_per_s": r.tokens_per_s, "train_time_s": r.train_time_s, "fingerprint": r.data_fingerprint,
            "steps": r.steps}


def ensure_baselines(study, space: BaseSpace, data, *, quiet: bool = True) -> dict[int, dict]:
    """Train the uniform baseline once per seed and cache it in the study's user attrs."""
    out = {}
    for seed in range(space.proxy.seeds):
        attr = BASELINE_ATTR.format(seed=seed)
        cached = study.user_attrs.get(attr)
        if cached is None:
            cached = baseline_entry(space, data, seed, quiet=quiet)
            fresh = study.user_attrs.get(attr)  # another worker may have finished first: keep one
            if fresh is None:
                study.set_user_attr(attr, cached)
            else:
                cached = fresh
        out[seed] = cached
    return out


@dataclass
class Prepared:
    """A trial's candidate after solving: what to train, or why not."""

    spec: ModelSpec | None = None
    train: dict = field(default_factory=dict)
    infeasible: str | None = None  # the solver's error
    cached: dict | None = None  # attrs of an identical spec already measured in this study


@dataclass
class Outcome:
    """What training a prepared candidate on the paired seeds produced."""

    status: str  # complete, pruned, failed
    reason: str | None = None
    deltas: list = field(default_factory=list)
    values: list = field(default_factory=list)
    speeds: list = field(default_factory=list)
    train_time_s: float = 0.0
    train_wall_s: float = 0.0
    steps_trained: int = 0

    def attrs(self, wall_time_s: float) -> dict[str, Any]:
        out = {"status": self.status, "seed_deltas": self.deltas, "seed_values": self.values,
               "train_time_s": self.train_time_s,  # optimizer steps only
               "train_wall_s": self.train_wall_s,  # inside train(): build, steps, evals
               "steps_trained": self.steps_trained, "wall_time_s": wall_time_s}
        if self.reason:
            out["reason"] = self.reason
        if self.speeds:
            out["tokens_per_s"] = sum(self.speeds) / len(self.speeds)
        if self.deltas:
            stats = paired(self.deltas)
            out.update(delta=stats.mean, se=stats.se, ci95=list(stats.ci95) if stats.ci95 else None)
        return out


class TaperObjective:
    """The objective shared by both backends (see the module docstring): `prepare` runs where
    trials are created (it needs the Optuna trial), `run` wherever training happens."""

    def __init__(self, space: BaseSpace, data, baselines: dict[int, dict]):
        self.space, self.data, self.baselines = space, data, baselines
        self.base = baseline_spec(space, data)
        self.base_cost = count(self.base)
        self.key = metric_key(data)
        self.multi = space.settings.multi_objective
        self.pruning = space.settings.pruner != "none" and not self.multi

    def value(self, delta: float, tokens_per_s: float):
        return (delta, tokens_per_s) if self.multi else delta

    def prepare(self, trial) -> Prepared:
        """Suggest, solve to the budget, set the constraint and the trial's static attrs."""
        cand = self.space.suggest(trial)
        p = self.space.proxy
        try:
            if cand.spec is not None:
                spec = dataclasses.replace(cand.spec, vocab_size=self.data.vocab_size)
                cost = count(spec)
            else:
                sol = solve_report(self.base, cand.taper, constraint=p.constraint, tolerance=p.tolerance)
                spec, cost = sol.spec, sol.cost
        except ValueError as e:
            trial.set_user_attr("taper", str(cand.taper))
            trial.set_user_attr("status", "infeasible")
            trial.set_user_attr("reason", str(e))
            trial.set_constraint("budget", 1.0)
            return Prepared(infeasible=str(e))
        rel_p = abs(cost.params - self.base_cost.params) / self.base_cost.params
        rel_f = abs(cost.flops_per_token - self.base_cost.flops_per_token) / self.base_cost.flops_per_token
        error = {"params": rel_p, "flops": rel_f, "both": max(rel_p, rel_f)}[p.constraint]
        trial.set_constraint("budget", error - p.tolerance)
        # Many knob settings round to the same widths on a small proxy; training is
        # deterministic, so a spec already measured in this study is not trained again.
        key = hashlib.sha256(json.dumps([spec.to_dict() | {"taper": ""}, cand.train], sort_keys=True)
                             .encode()).hexdigest()[:16]
        attrs = {"taper": spec.taper, "params_delta": cost.params - self.base_cost.params,
                 "flops_delta": cost.flops_per_token - self.base_cost.flops_per_token, "spec_key": key,
                 "layers": {"ffn": list(spec.layer_ffn), "heads": list(spec.layer_heads),
                            "d_model": list(spec.layer_d_model)}}
        if cand.train:
            attrs["train"] = cand.train
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        cached = None
        for prior in trial.study.get_trials(deepcopy=False):
            a = prior.user_attrs
            if a.get("spec_key") == key and a.get("status") == "complete" and prior.number != trial.number:
                cached = {k: a.get(k) for k in ("seed_deltas", "seed_values", "tokens_per_s", "delta", "se", "ci95")}
                cached.update(cached_from=prior.number, status="complete", train_time_s=0.0, train_wall_s=0.0,
                              steps_trained=0)
                break
        return Prepared(spec=spec, train=dict(cand.train), cached=cached)

    def run(self, prep: Prepared, report: Callable[[float, int], bool]) -> Outcome:
        """Train on every paired seed. `report(value, step)` receives the running paired mean at
        each evaluation (or, for Wilcoxon, each seed's difference at step = seed index) and
        returns True to stop the trial."""
        from autotaper.train import train

        p = self.space.proxy
        out = Outcome("complete")
        wilcoxon = self.space.settings.pruner == "wilcoxon"
        for i in range(p.seeds):
            base = self.baselines[i]
            stopped = []

            def on_eval(step, metrics, i=i, base=base, stopped=stopped):
                ref = base["curve"].get(str(step))
                if not self.pruning or wilcoxon or step >= p.steps or ref is None or metrics[self.key] is None:
                    return None
                running = (sum(out.deltas) + metrics[self.key] - ref) / (len(out.deltas) + 1)
                if report(running, i * p.steps + step):
                    stopped.append(step)
                    return True
                return None

            t0 = time.perf_counter()
            r = train(prep.spec, self.data, train_config(self.space, i, prep.train), callbacks=[on_eval], quiet=True)
            out.train_wall_s += time.perf_counter() - t0
            out.steps_trained += r.steps
            out.train_time_s += r.train_time_s
            if r.status == "diverged":
                out.status, out.reason = "failed", f"diverged on seed {i}: {r.reason}"
                return out
            if stopped:
                out.status, out.reason = "pruned", f"pruned at seed {i} step {stopped[0]}"
                return out
            if r.data_fingerprint != base["fingerprint"]:
                raise RuntimeError(f"seed {i}: data fingerprint differs from the baseline's; the pairing is broken")
            out.deltas.append(r.to_dict()[self.key] - base["value"])
            out.values.append(r.to_dict()[self.key])
            out.speeds.append(r.tokens_per_s)
            if self.pruning and i < p.seeds - 1:
                value, step = (out.deltas[-1], i) if wilcoxon else (sum(out.deltas) / len(out.deltas), (i + 1) * p.steps)
                if report(value, step):
                    out.status, out.reason = "pruned", f"pruned after seed {i}"
                    return out
        return out

    def __call__(self, trial):
        """The Optuna backend's objective."""
        import optuna

        started = time.perf_counter()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        prep = self.prepare(trial)
        if prep.infeasible:
            return self.value(INFEASIBLE_PENALTY, 0.0)
        if prep.cached:
            for k, v in {**prep.cached, "wall_time_s": time.perf_counter() - started}.items():
                trial.set_user_attr(k, v)
            return self.value(prep.cached["delta"], prep.cached.get("tokens_per_s") or 0.0)

        def report(value: float, step: int) -> bool:
            trial.report(value, step=step)
            return trial.should_prune()

        out = self.run(prep, report)
        for k, v in out.attrs(time.perf_counter() - started).items():
            trial.set_user_attr(k, v)
        if out.status == "failed":
            raise RuntimeError(out.reason)
        if out.status == "pruned":
            raise optuna.TrialPruned(out.reason)
        return self.value(sum(out.deltas) / len(out.deltas), sum(out.speeds) / len(out.speeds))
