"""The Ray Tune backend: the same space, objective and study storage as the Optuna backend,
with trials spread over every CPU, GPU and node of a Ray cluster.

- Trials are proposed by Ray's `OptunaSearch` over the same define-by-run space; the
  define-by-run function is `TaperObjective.prepare`, so the budget is solved and the
  constraint recorded with `trial.set_constraint` exactly as locally, in the same study.
- Each trial trains on the paired seeds in a Tune function (`ray.tune.report`; Ray 2.60
  raises on `ray.train.report` there), reporting the running paired mean at every
  evaluation against the global step, so ASHA (or HyperBand) can stop it early.
- Known traps, handled here: (1) `OptunaSearch` tells Optuna COMPLETE with whatever value
  an ASHA-stopped trial reported last; `_StudySearch` tells PRUNED instead and marks the
  trial `early_stopped`, so neither TPE nor the leaderboard takes an early value as final.
  (2) `ResultGrid.get_best_result()` ignores constraints: results are read from the study.
  (3) Ray 2.60 turns token auth on for new local clusters: a local instance is started by
  `ray.init` in this process, which owns the token; attach to other clusters with
  `--address` (and RAY_AUTH_TOKEN where the cluster uses auth).
- Racing and confirmation have the same semantics as locally: a trial races against the
  incumbent snapshot taken when it was created, with the study's stored runs of its spec
  and the baselines as a snapshot (`MemoryStore`); baselines or runs it trains for new
  seeds are reported back and written into the study by the driver. Calibration, the plan
  and the confirmation run on the driver (`prepare_search`, `finish_search`), after the
  uniform baselines of the calibration seeds have trained as parallel Ray tasks.
- Resume: the Tune experiment lives under `tune_storage` (default ~/ray_results/autotaper); running again restores it
  (`Tuner.restore`, unfinished and errored trials resumed) and the study keeps its trials.
- Data: the driver loads the corpus once and its token arrays reach every trial and
  baseline task through Ray's object store, so nodes whose Python (and so embedded corpus)
  or files differ train on the same tokens.
- Faults: a Python exception in a trial's training ends the trial FAIL at once, with the
  exception's type and first line as the reason (a retry would raise it again); a trial
  whose worker process dies is retried (`FailureConfig(max_failures=2)`), and one that
  keeps failing ends FAIL in the study with Tune's error as the reason.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from pathlib import Path

from autotaper.cluster import check_versions, connect
from autotaper.errors import InputError
from autotaper.search.backends._base import Backend
from autotaper.search.backends._tune import (
    MAX_FAILURES,
    METRIC,
    _Define,
    _paths_callback,
    _study_search_class,
    _trainable,
)
from autotaper.search.objective import (
    TaperObjective,
    make_evaluator,
)
from autotaper.search.records import EXPERIMENT_ATTR
from autotaper.search.result import SearchResult
from autotaper.search.space import BaseSpace
from autotaper.search.study import check_failures, n_finished

MAX_ROUNDS = 5  # Tune experiments per search (see the duplicates note in run_ray_search)


class RayBackend(Backend):
    """Trials as Ray Tune trials over every CPU, GPU and node of a Ray cluster (see the module
    docstring); resources default to the space's `search` section."""

    name = "ray"

    def __init__(self, space: BaseSpace, *, address: str | None = None, cpus_per_trial: float | None = None,
                 gpus_per_trial: float | str | None = None, max_concurrent: int | None = None,
                 tune_storage: str | None = None):
        s = space.settings
        self.address = address
        self.cpus = s.cpus_per_trial if cpus_per_trial is None else cpus_per_trial
        self.gpus = s.gpus_per_trial if gpus_per_trial is None else gpus_per_trial
        self.max_concurrent = s.max_concurrent if max_concurrent is None else max_concurrent
        if self.gpus != "auto" and (self.gpus < 0 or self.cpus <= 0):
            raise InputError(f"--cpus-per-trial must be > 0 and --gpus-per-trial >= 0, got "
                             f"{self.cpus} and {self.gpus}")
        # Ray's own default place, outside any job working directory (which Ray may clean up
        # while a `ray job submit` driver still runs).
        self.root = Path(tune_storage).resolve() if tune_storage else Path.home() / "ray_results" / "autotaper"

    @contextlib.contextmanager
    def session(self, study, space: BaseSpace, data, say):
        import ray

        # Run from Tune's own folder: under `ray job submit` the unpacked working directory can
        # disappear while the driver runs, and Tune resolves paths against the cwd.
        try:
            previous = os.getcwd()
        except FileNotFoundError:
            previous = None
        self.root.mkdir(parents=True, exist_ok=True)
        os.chdir(self.root)
        ours = False
        try:
            ours = connect(self.address)
            if self.address or len([n for n in ray.nodes() if n.get("Alive")]) > 1:
                check_versions(modules=("ray.tune",))  # before any trial: a node with other versions, in one line
            # Tune asks Optuna for trials outside Study.optimize, so RDB storages warn that their
            # heartbeat is unused; Tune watches its own workers, and a trial without heartbeats is
            # never failed as stale, so the warning says nothing the user can act on.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
                from autotaper.search.calibrate import calibration_seeds

                if self.gpus == "auto":
                    self.gpus = auto_gpu_share(space)
                    say(f"gpus_per_trial auto: {self.gpus:.4g}"
                        + (f" ({round(1 / self.gpus)} proxy trials per GPU)" if self.gpus else " (no GPU)"))
                self.shipped = ray.put(portable(data))  # every node trains on the driver's tokens
                _baselines_on_cluster(study, space, self.shipped, self.cpus, self.gpus, calibration_seeds(space))
                yield
        finally:
            if ours:
                ray.shutdown()
            if previous is not None and os.path.isdir(previous):
                os.chdir(previous)

    def run_trials(self, study, space: BaseSpace, data, *, url: str, n_trials: int, timeout: float | None,
                   quiet: bool, say) -> None:
        from ray import tune

        objective = TaperObjective(space, data)
        multi = space.settings.multi_objective
        metric = [METRIC, "tokens_per_s"] if multi else METRIC
        mode = ["min", "max"] if multi else "min"
        paths: dict[str, str] = {}
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, space=space, cpus=self.cpus, data=self.shipped),
            {"cpu": self.cpus, "gpu": self.gpus})
        # An interrupted experiment is restored first (its unfinished trials resume in the same
        # study trials); trials still missing after that run in a new experiment.
        last = study.user_attrs.get(EXPERIMENT_ATTR)
        if last and tune.Tuner.can_restore(last):
            say(f"restoring the Ray Tune experiment in {last}")
            tune.Tuner.restore(last, trainable=trainable, resume_errored=True).fit()
        # A proposal of a spec that a running trial trains ends as a duplicate and uses up one
        # of Tune's samples: the samples still missing run in another experiment, while the
        # rounds make progress.
        deadline = time.time() + timeout if timeout else None
        for round_ in range(MAX_ROUNDS):
            remaining = max(0, n_trials - n_finished(study))
            left = None if deadline is None else deadline - time.time()
            if not remaining or (left is not None and left < 1):
                break
            before = n_finished(study)
            define = _Define(space, objective)
            searcher = _study_search_class()(space=define, metric=metric, mode=mode,
                                             sampler=study.sampler, study_name=study.study_name,
                                             storage=study._storage, paths=paths)
            define.live = searcher.in_flight  # a RUNNING trial of an interrupted experiment is no twin
            name = f"{study.study_name}-{time.strftime('%Y%m%d-%H%M%S')}" + (f"-{round_}" if round_ else "")
            study.set_user_attr(EXPERIMENT_ATTR, str(self.root / name))
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=_scheduler(space), num_samples=remaining,
                                            max_concurrent_trials=self.max_concurrent, time_budget_s=left,
                                            reuse_actors=space.settings.reuse_actors,
                                            **({} if multi else {"metric": METRIC, "mode": "min"})),
                run_config=tune.RunConfig(name=name, storage_path=str(self.root),
                                          failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
                                          callbacks=[_paths_callback(paths)], verbose=0 if quiet else 1))
            tuner.fit()  # the leaderboard reads the study, not the ResultGrid (constraints, early stops)
            if searcher.in_flight() or n_finished(study) == before:  # interrupted, or no progress
                break
            check_failures(study, space)


def run_ray_search(space: BaseSpace, *, storage: str | None = None, study_name: str | None = None,
                   n_trials: int | None = None, timeout: float | None = None, address: str | None = None,
                   cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
                   max_concurrent: int | None = None, tune_storage: str | None = None,
                   budget_s: float | None = None, confirm: bool = True, quiet: bool = False) -> SearchResult:
    """Run (or resume) a search through Ray Tune (`RayBackend`); returns a `SearchResult`."""
    from autotaper.search import pipeline

    backend = RayBackend(space, address=address, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                         max_concurrent=max_concurrent, tune_storage=tune_storage)
    return pipeline.run(space, backend, storage=storage, study_name=study_name, n_trials=n_trials,
                        timeout=timeout, budget_s=budget_s, confirm=confirm, quiet=quiet)


def _scheduler(space: BaseSpace):
    """The Tune scheduler standing in for the space's Optuna pruner."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler

    p = space.proxy
    if space.settings.multi_objective or space.settings.pruner == "none":
        return FIFOScheduler()
    if space.settings.pruner == "hyperband":
        return HyperBandScheduler(time_attr="step", max_t=p.steps * p.max_seeds)
    # median and wilcoxon map to ASHA, Tune's asynchronous early stopping
    return ASHAScheduler(time_attr="step", max_t=p.steps * p.max_seeds,
                         grace_period=max(p.eval_interval(), p.steps // 2), reduction_factor=3)


def _gpu_memory() -> int:  # cuda only
    import torch

    return torch.cuda.get_device_properties(0).total_memory


def auto_gpu_share(space: BaseSpace) -> float:
    """`gpus_per_trial: auto`: 0 on a cluster without GPUs; else 1 / the proxies that fit the
    memory of a cluster GPU, measured by a one-GPU task (`search.workers.gpu_share`)."""
    import ray

    from autotaper.search.workers import gpu_share

    if not ray.cluster_resources().get("GPU", 0):
        return 0.0
    memory = ray.get(ray.remote(num_gpus=1, num_cpus=0)(_gpu_memory).remote())
    return gpu_share(space, memory)


def portable(data):
    """`data` with its token arrays in memory rather than memory-mapped from this host's
    cache, to travel through Ray's object store to nodes that lack the cache."""
    import dataclasses

    import numpy as np

    return dataclasses.replace(data, train=np.array(data.train), val=np.array(data.val), root=None)


def _baselines_on_cluster(study, space: BaseSpace, data_ref, cpus: float, gpus: float, seeds) -> None:
    """Missing per-seed baselines train as Ray tasks in parallel (on the driver's token
    arrays, `data_ref`), then are cached in the study."""
    import ray

    from autotaper.paired import BASELINE_KEY

    missing = [s for s in seeds if BASELINE_KEY.format(seed=s) not in study.user_attrs]
    if missing:
        task = ray.remote(num_cpus=cpus, num_gpus=gpus)(_baseline_task)
        try:
            results = ray.get([task.remote(space, s, data_ref) for s in missing])
        except ray.exceptions.RayTaskError as e:  # the task's own error, not Ray's wrapping of its traceback
            raise e.cause from None
        for seed, entry in zip(missing, results):
            if BASELINE_KEY.format(seed=seed) not in study.user_attrs:
                study.set_user_attr(BASELINE_KEY.format(seed=seed), entry)


def _baseline_task(space: BaseSpace, seed: int, data) -> dict:

    return make_evaluator(space, data, {}).baseline(seed)
