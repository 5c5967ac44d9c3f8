"""The Optuna backend: samplers, pruners, reference trials, workers, progress.

A search runs in stages: calibration (the noise floor, `calibrate.py`), the plan (trials
that fit a budget, `plan.py`), the trials (raced on paired seeds, `objective.py`), and the
confirmation of the best on fresh seeds (`confirm.py`). Every study starts with two
reference points: the uniform baseline (a trial whose value is
0 by definition, recorded from the cached per-seed baselines) and the paper's cosine
1.5 -> 0.5 on ffn (enqueued when the space can express it). Re-running the same command
loads the study, fails trials whose worker died, and runs only the trials still missing
from `n_trials` (complete, pruned and failed trials count; a trial whose worker died is
retried by a new one). `search.stop_after_failures` failures in a row stop the search
(`SearchStopped`): every candidate failing says the input or the machine is at fault.
Nothing is stored before `preflight.preflight` has checked the whole search.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
import time
import warnings
from dataclasses import dataclass

from autotaper.errors import InputError, SearchStopped
from autotaper.search.objective import StudyStore, TaperObjective, ensure_baselines, metric_key
from autotaper.search.space import PAPER_DEFAULT, BaseSpace
from autotaper.search.storage import default_location, fail_dead_trials, mask_url, open_storage

SPACE_ATTR = "autotaper/space"
CORPUS_ATTR = "autotaper/corpus"
# Where the data comes from may differ between workers (paths, --strict-data); what it is
# (CORPUS_ATTR) may not.
LOCAL_PROXY_FIELDS = ("data", "strict_data")
INTERRUPTED_REASONS = ("worker process", "lease expired")  # `storage.fail_dead_trials`: retried, not counted


def make_sampler(space: BaseSpace, *, worker: int = 0, workers: int = 1):
    """The space's sampler. Parallel workers each get their own seed (space seed + worker
    index: the same seed would propose the same candidates in every worker), and TPE lies
    about running trials (constant liar) so that workers spread out."""
    import optuna

    s = space.settings
    seed = None if s.seed is None else s.seed + worker
    if s.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(6, s.n_trials // 3)),
                                          constant_liar=workers > 1)
    if s.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=max(2, min(6, s.n_trials // 3)))
    if s.sampler == "cmaes":  # infeasible trials carry a penalty value, so CMA-ES need not read constraints
        warnings.filterwarnings("ignore", message="Constraints have been set, but CmaEsSampler")
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, s.n_trials // 2)))
    grid = space.grid()
    if grid is None:
        raise InputError(f"search.sampler: grid needs a space without ranges ({space.name})")
    return optuna.samplers.GridSampler(grid, seed=seed)


def make_pruner(space: BaseSpace):
    import optuna

    name = space.settings.pruner
    if space.settings.multi_objective or name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        # Paired running means are noisy early: wait for four finished trials (the uniform
        # reference and the paper's default among them) and half of the first seed.
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=space.proxy.steps // 2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=space.proxy.eval_interval(),
                                              max_resource=space.proxy.steps * space.proxy.seeds)
    return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)


def open_study(space: BaseSpace, *, storage: str | None, study_name: str | None, workers: int = 1,
               worker: int = 0):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = study_name or space.name
    url = storage or default_location(name, workers=workers)
    directions = ["minimize", "maximize"] if space.settings.multi_objective else ["minimize"]
    study = optuna.create_study(storage=open_storage(url), study_name=name,
                                sampler=make_sampler(space, worker=worker, workers=workers),
                                pruner=make_pruner(space), directions=directions, load_if_exists=True)
    identity = space.identity()
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        study.set_user_attr(SPACE_ATTR, identity)
    elif _comparable(_older(stored, identity)) != _comparable(identity):
        stored, identity = _comparable(_older(stored, identity)), _comparable(identity)
        raise InputError(f"study {name!r} in {mask_url(url)} was created from a different space or proxy "
                         f"({identity_diff(stored, identity)}); pick a new --study name")
    return study, url


def identity_diff(stored: dict, given: dict) -> str:
    """The fields in which two study identities differ, with the stored and the given value."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and v:
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(stored), flat(given)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))

    def short(v) -> str:
        text = repr(v)
        return text if len(text) <= 60 else text[:57] + "..."
    return "; ".join(f"{k}: stored {short(a.get(k))}, given {short(b.get(k))}" for k in keys[:6]) + \
        (f"; and {len(keys) - 6} more" if len(keys) > 6 else "")


def _comparable(identity: dict) -> dict:
    proxy = identity.get("proxy")
    if not isinstance(proxy, dict):
        return identity
    return {**identity, "proxy": {k: v for k, v in proxy.items() if k not in LOCAL_PROXY_FIELDS}}


def corpus_identity(data) -> dict:
    """What a study's trials train on: the corpus's content hash and tokenizer, with what a
    person needs to find it again (its name, sizes, the Python and host that built it)."""
    import platform
    import socket

    m = data.manifest
    return {"corpus": data.name, "content_sha256": m["content_sha256"], "tokenizer": m["tokenizer"]["name"],
            "vocab_size": int(data.vocab_size), "train_tokens": int(len(data.train)),
            "val_tokens": int(len(data.val)), "python": m.get("python", platform.python_version()),
            "host": socket.gethostname(), "folder": str(data.root) if data.root else None}


def _describe(c: dict) -> str:
    return (f"{c['corpus']} (sha256 {c['content_sha256'][:12]}, {c['tokenizer']} tokenizer of {c['vocab_size']}, "
            f"{c['train_tokens']:,} train tokens, built by Python {c['python']} on {c['host']})")


def check_corpus(study, data) -> None:
    """One corpus per study: the first worker records its corpus; a worker whose data is
    not the same corpus is refused before it trains anything (both are named, with the
    `--data` that gives it the study's corpus)."""
    mine = corpus_identity(data)
    stored = study.user_attrs.get(CORPUS_ATTR)
    if stored is None:
        study.set_user_attr(CORPUS_ATTR, mine)
        return
    key = ("content_sha256", "tokenizer", "vocab_size")
    if all(stored.get(k) == mine[k] for k in key):
        return
    where = (f"copy {stored['host']}:{stored['folder']} here and pass --data with that folder" if stored.get("folder")
             else f"pass --data {stored['corpus']} (the same files or tokens)")
    raise InputError(f"study {study.study_name!r} trains on corpus {_describe(stored)}; this worker's data is "
                     f"{_describe(mine)}: {where}")


def _older(stored: dict, identity: dict) -> dict:
    """A stored identity with the proxy fields it predates filled with their defaults, so a
    study made before a field existed (seeds_max) still opens when the space leaves it unset."""
    import dataclasses

    from autotaper.search.space import Proxy

    proxy = stored.get("proxy")
    if not isinstance(proxy, dict):
        return stored
    defaults = {f.name: f.default for f in dataclasses.fields(Proxy)}
    filled = {**{k: v for k, v in defaults.items() if k not in proxy and identity.get("proxy", {}).get(k) == v},
              **proxy}
    return {**stored, "proxy": filled}


def add_references(study, space: BaseSpace, baselines: dict[int, dict], metric: str) -> None:
    """The uniform reference trial (value 0 by definition) and the paper default, once each."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    if not any(t.user_attrs.get("status") == "reference" for t in trials):
        speeds = [b["tokens_per_s"] for b in baselines.values()]
        values = [0.0, sum(speeds) / len(speeds)] if space.settings.multi_objective else [0.0]
        # Wilcoxon compares a trial's per-seed differences (steps 0, 1, ...) with the best
        # trial's; uniform, often the best, needs its own (0 on every seed) or nothing prunes.
        steps = {i: 0.0 for i in range(space.proxy.max_seeds)} if space.settings.pruner == "wilcoxon" else None
        study.add_trial(optuna.trial.create_trial(
            values=values, intermediate_values=steps, user_attrs={
                "taper": "uniform", "status": "reference", "delta": 0.0, "se": 0.0, "ci95": [0.0, 0.0],
                "seed_deltas": [0.0] * len(baselines), "seed_values": [b["value"] for b in baselines.values()],
                "params_delta": 0, "flops_delta": 0.0, "tokens_per_s": values[-1] if len(values) > 1 else
                sum(speeds) / len(speeds), "metric": metric},
            constraints={"budget": 0.0}))
    params = space.reference_params() if space.settings.sampler != "grid" else None  # a grid holds it already
    if params is not None and not any(t.user_attrs.get("enqueued") == PAPER_DEFAULT for t in trials):
        study.enqueue_trial(params, user_attrs={"enqueued": PAPER_DEFAULT}, skip_if_exists=True)


def failed_by_error(trial) -> bool:
    """A trial that failed on its own: its candidate or its training raised. Trials that only
    yielded to a running twin, or whose worker died (retried by a new trial), are not."""
    from optuna.trial import TrialState

    a = trial.user_attrs
    return (trial.state == TrialState.FAIL and a.get("status") == "failed"
            and not str(a.get("reason", "")).startswith(INTERRUPTED_REASONS))


def finished(study) -> int:
    """Trials that count towards n_trials: complete, pruned, and failed by an error (a failing
    candidate counts, so a search of candidates that all fail ends)."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or failed_by_error(t))


def failure_streak(study) -> tuple[int, str | None]:
    """How many of the last finished trials failed by an error in a row, and their most
    common reason."""
    from collections import Counter

    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False)
            if t.state.is_finished() and t.user_attrs.get("status") not in ("reference", "duplicate")
            and (t.state != TrialState.FAIL or failed_by_error(t))]
    done.sort(key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number))
    streak = []
    for t in reversed(done):
        if not failed_by_error(t):
            break
        streak.append(str(t.user_attrs.get("reason") or "no reason recorded"))
    if not streak:
        return 0, None
    reason, _ = Counter(streak).most_common(1)[0]
    return len(streak), reason


def check_failures(study, space: BaseSpace) -> None:
    """Raise SearchStopped when the last `search.stop_after_failures` trials all failed."""
    limit = space.settings.stop_after_failures
    n, reason = failure_streak(study)
    if limit and n >= limit:
        raise SearchStopped(f"search stopped: the last {n} trials of study {study.study_name!r} failed "
                            f"(search.stop_after_failures is {limit}); most common reason: {reason}")


class StopRule:
    """An Optuna callback: stop once `n_trials` count (`finished`) or the last
    `stop_after_failures` trials failed."""

    def __init__(self, n_trials: int, stop_after_failures: int):
        self.n_trials, self.limit = n_trials, stop_after_failures

    def __call__(self, study, trial) -> None:
        if finished(study) >= self.n_trials or (self.limit and failure_streak(study)[0] >= self.limit):
            study.stop()


@dataclass
class SearchSummary:
    study: str
    storage: str
    trials: int
    elapsed_s: float
    calibration: dict | None = None
    plan: str | None = None
    confirmation: dict | None = None


def prepare_search(study, space: BaseSpace, data, *, n_trials: int, started: float, budget_s: float | None,
                   confirm: bool, say) -> tuple:
    """The stages before the trials, shared by both backends: calibration, then the plan."""
    from autotaper.search.calibrate import measure_noise
    from autotaper.search.plan import make_plan

    cal = measure_noise(study, space, data, say=say)  # read from the study when it holds one
    p = space.proxy
    in_use = {"search": p.seeds} | ({"racing up to": p.max_seeds} if p.racing else {})
    if confirm and space.settings.confirm.enabled:
        in_use["confirmation"] = (space.settings.confirm.seeds, space.settings.confirm.top_k + 1)
    for line in cal.lines(in_use):
        say(line)
    from autotaper.cost import count
    from autotaper.search.objective import baseline_spec

    base = baseline_spec(space, data)
    scale = space.settings.confirm.run_steps(space.proxy, count(base).params, base.context_length) / space.proxy.steps
    plan = make_plan(space, run_s=cal.run_wall_s, n_trials=n_trials, elapsed_s=time.time() - started,
                     budget_s=budget_s, confirm=confirm and space.settings.confirm.enabled, done=finished(study),
                     confirm_scale=scale)
    say(plan.text())
    return cal, plan


START_WAIT_S = 120.0  # how long a worker waits for the others to be ready before it starts alone


def _worker(space: BaseSpace, url: str, study_name: str, n_trials: int, timeout: float | None,
            threads: int, index: int, workers: int, ready=None) -> None:
    """Worker `index` of `workers`: load the study, run trials until the study holds n_trials.
    `ready` (a barrier shared by the workers) holds each one until all have loaded torch, the
    study and the data, so that a worker slower to start does not find the trials all taken."""
    import threading

    import torch

    torch.set_num_threads(threads)
    study, _ = open_study(space, storage=url, study_name=study_name, workers=workers, worker=index)
    data = space.proxy.load_data()
    check_corpus(study, data)
    objective = TaperObjective(space, data, StudyStore(study))
    stop = StopRule(n_trials, space.settings.stop_after_failures)
    if ready is not None:
        try:
            ready.wait(timeout=START_WAIT_S)
        except threading.BrokenBarrierError:  # another worker failed to start or is slow: go on alone
            pass
    if finished(study) >= n_trials:  # (a rerun after a run of failures tries again: the callback judges)
        return
    study.optimize(objective, timeout=timeout, catch=(Exception,), callbacks=[stop])  # no gc: see run_search


def run_search(space: BaseSpace, *, storage: str | None = None, study_name: str | None = None,
               n_trials: int | None = None, timeout: float | None = None, workers: int | str = 1,
               budget_s: float | None = None, confirm: bool = True, quiet: bool = False) -> SearchSummary:
    """Run (or resume) a search: calibrate, plan (to `budget_s`, default the space's
    search.budget), race the trials, confirm the best on fresh seeds (the space's
    search.confirm; `confirm=False` skips it). `workers="auto"` sizes the worker pool from
    the device (`autotaper.search.workers`). Returns where the results are."""

    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if workers == "auto":
        from autotaper.search.workers import auto_workers

        choice = auto_workers(space)
        workers = choice.workers
        say(f"workers: {choice.text()}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be >= 1 or 'auto', got {workers!r}")
    if timeout is not None and timeout <= 0:
        raise InputError(f"timeout must be > 0 seconds, got {timeout}")
    n_trials = n_trials or space.settings.n_trials
    if n_trials < 1:
        raise InputError(f"n_trials must be >= 1, got {n_trials}")
    started = time.time()
    from autotaper.search.preflight import preflight

    ready = preflight(space, storage=storage, study_name=study_name, workers=workers)  # before anything is stored
    study, url = open_study(space, storage=ready.url, study_name=ready.name, workers=workers)
    dead = fail_dead_trials(study)
    if dead:
        say(f"marked {len(dead)} interrupted trial(s) failed: {dead}")
    data = ready.data
    check_corpus(study, data)
    p = space.proxy
    seeds = f"{p.seeds}..{p.max_seeds} seeds (racing)" if p.racing else f"{p.seeds} seeds"
    say(f"study {study.study_name} in {mask_url(url)}: {finished(study)} of {n_trials} trials done; "
        f"proxy {p.preset}, {p.steps} steps x {seeds}, corpus {data.name} "
        f"({len(data.train):,} train / {len(data.val):,} val tokens)")
    if data.note():
        say(data.note())
    budget_s = space.settings.budget_s if budget_s is None else budget_s
    cal, plan = prepare_search(study, space, data, n_trials=n_trials, started=started, budget_s=budget_s,
                               confirm=confirm, say=say)
    n_trials = plan.n_trials
    if plan.trials_timeout_s is not None:
        timeout = min(timeout or math.inf, max(1.0, plan.trials_timeout_s))
    baselines = ensure_baselines(study, space, data, quiet=quiet)
    if workers > 1 and p.racing:  # every seed racing may add, trained once here, not by racing workers
        ensure_baselines(study, space, data, quiet=quiet, seeds=range(p.max_seeds))
    add_references(study, space, baselines, metric_key(data))
    from autotaper.search.progress import Progress

    progress = Progress(study, n_trials, quiet=quiet)
    cores = os.cpu_count() or 1
    if workers == 1:

        objective = TaperObjective(space, data, StudyStore(study))
        stop = StopRule(n_trials, space.settings.stop_after_failures)
        if finished(study) < n_trials:
            # No full gc.collect() after each trial (Optuna's gc_after_trial, ~0.25 s a trial with
            # torch loaded): a trial's models and tensors are freed by reference counting, never
            # left in a cycle (tests/test_search.py checks every way a trial can end).
            study.optimize(objective, timeout=timeout, catch=(Exception,), callbacks=[stop, progress.on_trial])
    else:
        ctx = mp.get_context("spawn")
        threads = max(1, cores // workers)
        ready = ctx.Barrier(workers)
        procs = [ctx.Process(target=_worker, args=(space, url, study.study_name, n_trials, timeout, threads,
                                                   i, workers, ready))
                 for i in range(workers)]
        for p in procs:
            p.start()
        try:
            while any(p.is_alive() for p in procs):
                if any(p.exitcode for p in procs):  # one failed before its first trial: free the others
                    ready.abort()
                progress.poll()
                time.sleep(1.0)
        except KeyboardInterrupt:
            for p in procs:
                p.terminate()
            raise
        for p in procs:
            p.join()
        progress.poll()
        bad = [p.exitcode for p in procs if p.exitcode]
        if bad:
            raise RuntimeError(f"{len(bad)} search worker(s) exited with status {bad}")
    progress.close()
    check_failures(study, space)
    confirmation = finish_search(study, space, data, confirm=confirm, say=say, quiet=quiet, plan=plan)
    return SearchSummary(study.study_name, url, len(study.get_trials(deepcopy=False)), time.time() - started,
                         calibration=cal.to_dict(), plan=plan.text(), confirmation=confirmation)


PROBE_ATTR = "probe"


def probe_suggestion(study, space: BaseSpace, data, say) -> str:
    """`search.suggest_from_probe`: the uniform proxy trained on seed 0 and probed, and the
    taper that follows its per-layer angles (`autotaper.probe.suggest`); kept in the study, so
    a resumed search and the report read it instead of training again."""
    from autotaper.probe import probe_spec, suggest
    from autotaper.search.objective import baseline_spec, train_config

    found = study.user_attrs.get(PROBE_ATTR)
    if found is None:
        found = probe_spec(baseline_spec(space, data), data, train_config(space, 0))
        found["suggestion"] = suggest(found)
        study.set_user_attr(PROBE_ATTR, found)
    cos = " ".join(f"{r['cos']:.3f}" for r in found["layers"])
    say(f"probe of uniform (seed 0): cos per layer {cos}; its suggestion joins the confirmation: "
        f"{found['suggestion']}")
    return found["suggestion"]


def finish_search(study, space: BaseSpace, data, *, confirm: bool, say, quiet: bool, plan=None) -> dict | None:
    """The stage after the trials, shared by both backends: confirmation on fresh seeds, with
    the top k and the seeds of the `plan` (which may have cut them to fit the budget)."""
    from autotaper.search.confirm import confirm_study

    c = space.settings.confirm
    if not (confirm and c.enabled):
        return None
    top_k, seeds = (plan.confirm_top_k, plan.confirm_seeds) if plan is not None and plan.confirm_top_k \
        else (c.top_k, c.seeds)
    extra = [probe_suggestion(study, space, data, say)] if space.settings.suggest_from_probe else []
    try:
        out = confirm_study(study, space, data, top_k=top_k, seeds=seeds, quiet=quiet, extra=extra,
                            decompose=c.decompose, steps=c.steps, tokens_per_param=c.tokens_per_param)
    except ValueError as e:  # nothing complete to confirm: the leaderboard says why
        say(f"no confirmation: {e}")
        return None
    say("confirmed: " + out["text"])
    return out
