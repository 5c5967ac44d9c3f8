"""The search objective: a candidate taper, solved to the budget, raced on paired seeds.

For each trial:
1. the space proposes a taper (or a whole spec), solved to the uniform baseline's budget;
   an infeasible one is recorded through `trial.set_constraint` (violation 1.0) with a
   penalty value, never silently dropped; a feasible one records its budget error minus
   the tolerance (<= 0) as the same constraint;
2. it trains seed by seed through the study's `PairedEvaluator` (`autotaper.paired`): the
   uniform baseline of each seed is trained once per study, lazily, when a seed is first
   needed, with the same batches and initial weights; a (spec, seed) run already in the
   study is reused, never retrained;
3. after `seeds.min` seeds, racing (`autotaper.search.racing`) decides whether more seeds,
   up to `seeds.max`, can still change the comparison with the incumbent;
4. the value is the mean paired difference in validation bits per byte, taper minus
   uniform (negative is better), stored with its standard error and 95% interval.
Intermediate values go to the pruner: for median and Hyperband the running paired mean at
each evaluation (one step axis across seeds: seed index * steps + step); for Wilcoxon the
per-seed final difference at step = seed index, which is the test's design.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Callable

from autotaper.budget import solve_report
from autotaper.cost import count
from autotaper.paired import RUN_KEY, PairedEvaluator, metric_key, spec_key
from autotaper.search import racing, records
from autotaper.search.records import TrialRecord
from autotaper.search.space import BaseSpace
from autotaper.spec import ModelSpec
from autotaper.stats import paired_stats

INFEASIBLE_PENALTY = 1.0  # bits per byte: worse than any real taper, so samplers steer away


def one_line(error: BaseException) -> str:
    """An exception as one line for a trial's `reason`: its type and first line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__


class DuplicateCandidate(RuntimeError):
    """A trial proposed the spec another running trial is evaluating: it ends FAIL (samplers
    ignore failed trials, and they do not count towards n_trials), so its worker samples again."""


class _QuietYields(logging.Filter):
    """Optuna logs each failed trial as a warning with its traceback; a yielded duplicate is
    not a failure, and a failure's reason is already in the trial."""

    def filter(self, record: logging.LogRecord) -> bool:
        # A failed trial's reason is stored in it and printed once, on one line, by the search's
        # progress (`progress.Progress`): Optuna's two warnings and its traceback would repeat it.
        return not re.match(r"Trial (\d+) failed", record.getMessage())


logging.getLogger("optuna.study._optimize").addFilter(_QuietYields())


def running_twin(trial, key: str, among: set[int] | None = None) -> int | None:
    """The lowest-numbered other running trial of the study evaluating the spec `key` from
    before this one, or None. Each trial writes its spec_key before it asks, so of two trials
    that ask at once the later-numbered one yields; a rare interleaving lets both start, and
    the later one yields at its next seed (`TaperObjective.run`), having trained one seed.
    A RUNNING trial whose worker on this host is gone is no twin; `among` limits the twins to
    these trial numbers (the Ray driver's trials in flight)."""
    from optuna.trial import TrialState

    from autotaper.search.storage import worker_gone

    twins = [t.number for t in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
             if t.number < trial.number and TrialRecord.from_trial(t).spec_key == key
             and (among is None or t.number in among) and not worker_gone(t)]
    return min(twins) if twins else None


def train_config(space: BaseSpace, seed: int, overrides: dict[str, Any] | None = None):
    from autotaper.train import TrainConfig

    p = space.proxy
    o = overrides or {}
    steps = int(o.get("steps", p.steps))  # a confirmation may train longer than the search
    eval_every = p.eval_interval() if steps == p.steps else max(1, steps // max(1, p.steps // p.eval_interval()))
    return TrainConfig(steps=steps, batch_size=p.batch_size, lr=float(o.get("lr", p.lr)),
                       seed=seed, eval_every=eval_every, precision=p.precision, schedule=p.schedule,
                       compile=p.compile)


def baseline_spec(space: BaseSpace, data) -> ModelSpec:
    overrides = {"vocab_size": data.vocab_size, **space.proxy.spec_fields()}
    if space.proxy.family:
        overrides["family"] = space.proxy.family
    return ModelSpec.from_name(space.proxy.preset, **(space.proxy.shape or {}), **overrides)


class StudyStore(MutableMapping):
    """A study's user attributes as the evaluator's run store: baselines and per-seed runs
    shared by every worker, every command and every backend that opens the study."""

    def __init__(self, study):
        self.study = study

    def __getitem__(self, key: str):
        value = self.study.user_attrs.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value) -> None:
        self.study.set_user_attr(key, value)

    def __delitem__(self, key: str) -> None:
        raise TypeError("study attributes are never deleted")

    def __iter__(self):
        return iter(self.study.user_attrs)

    def __len__(self) -> int:
        return len(self.study.user_attrs)

    def setdefault(self, key: str, value):
        current = self.study.user_attrs.get(key)  # one read: another worker may have stored it first
        if current is not None:
            return current
        self.study.set_user_attr(key, value)
        return value


class MemoryStore(dict):
    """A snapshot of a study's runs for a worker without the study (Ray trials); what it
    adds is reported back (`added`) and written to the study by the driver."""

    def __init__(self, initial: dict | None = None):
        super().__init__(initial or {})
        self.added: dict = {}

    def setdefault(self, key, value):
        if key not in self:
            self.added[key] = value
        return super().setdefault(key, value)


def make_evaluator(space: BaseSpace, data, store: MutableMapping, *, quiet: bool = True,
                   train: dict | None = None, population: int | str | None = None) -> PairedEvaluator:
    """The search's paired evaluator; `population` (default the space's search.population, "auto"
    sized by `population.auto_size`) is how many runs it trains at once."""
    ev = PairedEvaluator(baseline_spec(space, data), data, lambda seed, o: train_config(space, seed, o),
                         store=store, quiet=quiet, train=train)
    ev.population = space.settings.population if population is None else population
    if ev.population == "auto":
        from autotaper.train.population import auto_size

        ev.population = auto_size(ev.base, space.proxy.batch_size, precision=space.proxy.precision)
    return ev


def ensure_baselines(study, space: BaseSpace, data, *, quiet: bool = True, seeds=None) -> dict[int, dict]:
    """The uniform baseline on each of `seeds` (default the first `seeds.min`), trained once per study."""
    ev = make_evaluator(space, data, StudyStore(study), quiet=quiet)
    seeds = list(range(space.proxy.seeds) if seeds is None else seeds)
    if ev.population > 1:
        ev.prefetch([], seeds)  # every missing baseline in one population
    return {seed: ev.baseline(seed) for seed in seeds}


@dataclass
class Prepared:
    """A trial's candidate after solving: what to train, or why not."""

    spec: ModelSpec | None = None
    train: dict = field(default_factory=dict)
    infeasible: str | None = None  # the solver's error
    incumbent: dict = field(default_factory=lambda: racing.incumbent([]))  # snapshot for racing
    known: dict = field(default_factory=dict)  # stored runs of this spec and the baselines (Ray trials)


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
    race: str | None = None  # racing's last decision (None without racing)
    twin: int | None = None  # status "duplicate": the running trial evaluating the same spec
    reused: int = 0  # seeds whose run the study already held
    steps_unstored: int = 0  # steps of runs stopped by the pruner: trained, but never stored

    def record(self, wall_time_s: float) -> TrialRecord:
        s = paired_stats(self.deltas) if self.deltas else None
        return TrialRecord(status=self.status, seed_deltas=self.deltas, seed_values=self.values,
                           train_time_s=self.train_time_s, train_wall_s=self.train_wall_s,
                           steps_trained=self.steps_trained, steps_unstored=self.steps_unstored,
                           wall_time_s=wall_time_s, seeds_reused=self.reused, race=self.race or None,
                           reason=self.reason or None,
                           tokens_per_s=sum(self.speeds) / len(self.speeds) if self.speeds else None,
                           delta=s.mean if s else None, se=s.se if s else None,
                           ci95=list(s.ci95) if s and s.ci95 else None)

    def attrs(self, wall_time_s: float) -> dict[str, Any]:
        return self.record(wall_time_s).to_attrs()


class TaperObjective:
    """The objective shared by both backends (see the module docstring): `prepare` runs where
    trials are created (it needs the Optuna trial), `run` wherever training happens, with the
    run store it is given (the study itself, or a snapshot in a Ray trial)."""

    def __init__(self, space: BaseSpace, data, store: MutableMapping | None = None):
        self.space, self.data = space, data
        self.store = store if store is not None else MemoryStore()
        self.base = baseline_spec(space, data)
        self.base_cost = count(self.base)
        self.key = metric_key(data)
        self.multi = space.settings.multi_objective
        self.pruning = space.settings.pruner != "none" and not self.multi
        self._yields = 0  # successive duplicate yields of this worker (back-off)

    def value(self, delta: float, tokens_per_s: float):
        return (delta, tokens_per_s) if self.multi else delta

    def prepare(self, trial) -> Prepared:
        """Suggest, solve to the budget, set the constraint and the trial's static attrs."""
        cand = self.space.suggest(trial)
        p = self.space.proxy
        finer: dict[str, int] = {}  # dims rounded finer than their default multiple to meet the budget
        try:
            if cand.spec is not None:
                spec = dataclasses.replace(cand.spec, vocab_size=self.data.vocab_size)
                cost = count(spec)
            else:
                sol = solve_report(self.base, cand.taper, constraint=p.constraint, tolerance=p.tolerance)
                spec, cost = sol.spec, sol.cost
                finer = sol.finer
        except ValueError as e:
            records.write(trial, taper=str(cand.taper), status=records.INFEASIBLE, reason=str(e))
            trial.set_constraint("budget", 1.0)
            return Prepared(infeasible=str(e))
        rel_p = abs(cost.params - self.base_cost.params) / self.base_cost.params
        rel_f = abs(cost.flops_per_token - self.base_cost.flops_per_token) / self.base_cost.flops_per_token
        error = {"params": rel_p, "flops": rel_f, "both": max(rel_p, rel_f)}[p.constraint]
        trial.set_constraint("budget", error - p.tolerance)
        # Many knob settings round to the same widths on a small proxy; training is
        # deterministic, so a (spec, seed) run already in this study is not trained again.
        key = spec_key(spec, cand.train)
        attrs = {"taper": spec.taper, "params_delta": cost.params - self.base_cost.params,
                 "flops_delta": cost.flops_per_token - self.base_cost.flops_per_token, "spec_key": key,
                 "spec": spec.to_dict(),
                 "layers": {"ffn": list(spec.layer_ffn), "heads": list(spec.layer_heads),
                            "d_model": list(spec.layer_d_model)}}
        if cand.train:
            attrs["train"] = cand.train
        if finer:
            attrs["multiples"] = sol.multiples
        records.write(trial, **attrs)
        stored = trial.study.user_attrs
        known = {k: v for k, v in stored.items()
                 if k.startswith(records.BASELINE_PREFIX) or k.startswith(RUN_KEY.format(key=key, seed=""))}
        inc = racing.incumbent(t for t in trial.study.get_trials(deepcopy=False) if t.number != trial.number)
        records.write(trial, incumbent=inc["taper"] if inc["trial"] is None else inc["trial"])
        return Prepared(spec=spec, train=dict(cand.train), incumbent=inc, known=known)

    def run(self, prep: Prepared, report: Callable[[float, int], bool],
            twin: Callable[[], int | None] | None = None) -> Outcome:
        """Train seed by seed, racing after seeds.min. `report(value, step)` receives the
        running paired mean at each evaluation (or, for Wilcoxon, each seed's difference at
        step = seed index) and returns True to stop the trial. `twin()`, asked before every
        seed after the first, names a running trial of the same spec to yield to."""
        p = self.space.proxy
        ev = make_evaluator(self.space, self.data, self.store)
        out = Outcome("complete")
        wilcoxon = self.space.settings.pruner == "wilcoxon"
        if ev.population > 1 and not self.pruning:  # no pruning: the first seeds.min seeds train as one population
            ev.prefetch([prep.spec], range(p.seeds), train=prep.train)
        baselines: list[float] = []
        for i in range(p.max_seeds):
            if p.racing:
                diffs = racing.differences(out.values, baselines, prep.incumbent["values"])
                out.race = racing.decide(diffs, i, n_min=p.seeds, n_max=p.max_seeds)
                if out.race != racing.CONTINUE:
                    break
            if i and twin is not None and (other := twin()) is not None:
                out.status, out.twin = "duplicate", other
                return out
            base = ev.baseline(i)
            stopped = []

            def on_eval(step, metrics, base=base, stopped=stopped, i=i):
                ref = base["curve"].get(str(step))
                if not self.pruning or wilcoxon or step >= p.steps or ref is None or metrics[self.key] is None:
                    return None
                running = (sum(out.deltas) + metrics[self.key] - ref) / (len(out.deltas) + 1)
                if report(running, i * p.steps + step):
                    stopped.append(step)
                    return True
                return None

            r = ev.run(prep.spec, i, train=prep.train, callbacks=[on_eval])
            out.reused += r.cached
            if not r.cached:
                out.train_wall_s += r.entry.get("train_wall_s", 0.0)
                out.steps_trained += r.entry.get("steps", 0)
                out.train_time_s += r.entry.get("train_time_s", 0.0)
            if r.status == "diverged":
                out.status, out.reason = "failed", f"diverged on seed {i}: {r.reason}"
                return out
            if r.status != "complete":
                out.steps_unstored += r.entry.get("steps", 0)
                out.status, out.reason = "pruned", f"pruned at seed {i} step {stopped[0] if stopped else '?'}"
                return out
            out.deltas.append(r.delta)
            out.values.append(r.value)
            baselines.append(r.baseline)
            out.speeds.append(r.entry.get("tokens_per_s") or 0.0)
            if self.pruning and i < p.seeds - 1:  # between the first seeds; racing decides after
                value, step = (out.deltas[-1], i) if wilcoxon else (sum(out.deltas) / len(out.deltas), (i + 1) * p.steps)
                if report(value, step):
                    out.status, out.reason = "pruned", f"pruned after seed {i}"
                    return out
        if p.racing and out.race == racing.CONTINUE:  # the last seed's outcome, as the next check would see it
            diffs = racing.differences(out.values, baselines, prep.incumbent["values"])
            out.race = racing.decide(diffs, len(out.values), n_min=p.seeds, n_max=p.max_seeds)
        return out

    def _lease(self, trial):
        """A journal storage has no heartbeat: the trial holds a lease while it trains."""
        import contextlib

        from autotaper.search.storage import Lease, is_journal

        storage = trial.study._storage
        return Lease(storage, trial._trial_id) if is_journal(storage) else contextlib.nullcontext()

    def __call__(self, trial):
        """The Optuna backend's objective."""
        import optuna

        from autotaper.search.storage import fail_expired_leases, is_journal

        if is_journal(trial.study._storage):  # any worker fails trials whose worker vanished, on any host
            fail_expired_leases(trial.study)
        started = time.perf_counter()
        records.write(trial, host=socket.gethostname(), pid=os.getpid())
        try:
            prep = self.prepare(trial)
        except Exception as e:  # a candidate the space could not build: FAIL with the reason
            records.write(trial, status=records.FAILED, reason=one_line(e))
            raise
        if prep.infeasible:
            return self.value(INFEASIBLE_PENALTY, 0.0)
        key = TrialRecord.from_trial(trial).spec_key
        if (other := running_twin(trial, key)) is not None:
            self._yield(trial, other)

        def report(value: float, step: int) -> bool:
            trial.report(value, step=step)
            return trial.should_prune()

        try:
            with self._lease(trial):
                out = self.run(prep, report, twin=lambda: running_twin(trial, key))
        except Exception as e:  # a bug or a fault in training: FAIL with the reason; the search goes on
            records.write(trial, status=records.FAILED, reason=one_line(e))
            raise
        records.write(trial, **out.attrs(time.perf_counter() - started))
        if out.status == "duplicate":
            self._yield(trial, out.twin)
        self._yields = 0
        if out.status == "failed":
            raise RuntimeError(out.reason)
        if out.status == "pruned":
            raise optuna.TrialPruned(out.reason)
        return self.value(sum(out.deltas) / len(out.deltas), sum(out.speeds) / len(out.speeds))

    def _yield(self, trial, other: int) -> None:
        """End `trial` as a duplicate of the running trial `other` (see DuplicateCandidate).
        Successive yields of one worker back off (0.2 s doubling to 5 s), so a worker whose
        space is exhausted waits for the running trials instead of spinning."""
        records.write(trial, status=records.DUPLICATE, duplicate_of=other)
        self._yields += 1
        time.sleep(min(5.0, 0.1 * 2 ** self._yields))
        raise DuplicateCandidate(f"trial {trial.number} proposed the spec trial {other} is evaluating")
