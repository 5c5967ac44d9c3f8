"""The Optuna backend: trials on this machine, in this process or in `workers` spawned
processes that share the study (`Study.optimize` in each)."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Callable

from autotaper.errors import InputError, SearchStopped
from autotaper.search.backends._base import Backend
from autotaper.search.objective import StudyStore, TaperObjective, ensure_baselines
from autotaper.search.space import BaseSpace
from autotaper.search.storage import fail_dead_trials, mask_url
from autotaper.search.study import StopRule, check_corpus, n_finished, open_study

START_WAIT_S = 120.0  # how long a worker waits for the others to be ready before it starts alone


class OptunaBackend(Backend):
    """Trials by `Study.optimize`, in `workers` processes (1: this one)."""

    name = "optuna"

    def __init__(self, workers: int = 1):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InputError(f"workers must be >= 1 or 'auto', got {workers!r}")
        self.workers = workers

    def opened(self, study, space: BaseSpace, data, say: Callable[[str], None]) -> None:
        dead = fail_dead_trials(study)
        if dead:
            say(f"marked {len(dead)} interrupted trial(s) failed: {dead}")

    def announce(self, study, space: BaseSpace, data, url: str, n_trials: int, say) -> None:
        p = space.proxy
        seeds = f"{p.seeds}..{p.max_seeds} seeds (racing)" if p.racing else f"{p.seeds} seeds"
        say(f"study {study.study_name} in {mask_url(url)}: {n_finished(study)} of {n_trials} trials done; "
            f"proxy {p.preset}, {p.steps} steps x {seeds}, corpus {data.name} "
            f"({len(data.train):,} train / {len(data.val):,} val tokens)")
        if data.note():
            say(data.note())

    def before_references(self, study, space: BaseSpace, data, quiet: bool) -> None:
        if self.workers > 1 and space.proxy.racing:  # every seed racing may add, trained once here, not by racing workers
            ensure_baselines(study, space, data, quiet=quiet, seeds=range(space.proxy.max_seeds))

    def run_trials(self, study, space: BaseSpace, data, *, url: str, n_trials: int, timeout: float | None,
                   quiet: bool, say: Callable[[str], None]) -> None:
        from autotaper.search.progress import Progress

        progress = Progress(study, n_trials, quiet=quiet)
        if self.workers == 1:
            objective = TaperObjective(space, data, StudyStore(study))
            stop = StopRule(n_trials, space.settings.stop_after_failures)
            if n_finished(study) < n_trials:
                # No full gc.collect() after each trial (Optuna's gc_after_trial, ~0.25 s a trial with
                # torch loaded): a trial's models and tensors are freed by reference counting, never
                # left in a cycle (tests/test_search.py checks every way a trial can end).
                study.optimize(objective, timeout=timeout, catch=(Exception,), callbacks=[stop, progress.on_trial])
        else:
            self._spawn(study, space, url, n_trials, timeout, progress)
        progress.close()

    def _spawn(self, study, space: BaseSpace, url: str, n_trials: int, timeout: float | None, progress) -> None:
        ctx = mp.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        ready = ctx.Barrier(self.workers)
        procs = [ctx.Process(target=_worker, args=(space, url, study.study_name, n_trials, timeout, threads,
                                                   i, self.workers, ready))
                 for i in range(self.workers)]
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
            raise SearchStopped(f"search stopped: {len(bad)} search worker(s) exited with status {bad} (the "
                                f"study keeps every finished trial; run the command again to resume)")


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
    if n_finished(study) >= n_trials:  # (a rerun after a run of failures tries again: the callback judges)
        return
    study.optimize(objective, timeout=timeout, catch=(Exception,), callbacks=[stop])  # no gc: see run_search


def run_search(space: BaseSpace, *, storage: str | None = None, study_name: str | None = None,
               n_trials: int | None = None, timeout: float | None = None, workers: int | str = 1,
               budget_s: float | None = None, confirm: bool = True, quiet: bool = False):
    """Run (or resume) a search on this machine: calibrate, plan (to `budget_s`, default the
    space's search.budget), race the trials, confirm the best on fresh seeds (the space's
    search.confirm; `confirm=False` skips it). `workers="auto"` sizes the worker pool from
    the device (`autotaper.search.workers`). Returns a `SearchResult`."""
    from autotaper.log import sayer
    from autotaper.search import pipeline

    if workers == "auto":
        from autotaper.search.workers import auto_workers

        choice = auto_workers(space)
        workers = choice.workers
        sayer(quiet)(f"workers: {choice.text()}")
    return pipeline.run(space, OptunaBackend(workers), storage=storage, study_name=study_name, n_trials=n_trials,
                        timeout=timeout, budget_s=budget_s, confirm=confirm, quiet=quiet)
