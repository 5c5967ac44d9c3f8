"""Ray Tune's side of the Ray backend: the trainable each trial runs, the OptunaSearch that
records its trials in the study (`_StudySearch`), and the define-by-run space it asks
(`_Define`). See `backends/ray.py` for how they fit together."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from autotaper.search import records
from autotaper.search.objective import (
    INFEASIBLE_PENALTY,
    MemoryStore,
    TaperObjective,
    one_line,
    running_twin,
)
from autotaper.search.records import TrialRecord
from autotaper.search.space import BaseSpace

METRIC = "delta_bpb"


NEW_RUNS = "new_runs"  # runs a trial trained that the study lacked: written there by the driver


MAX_FAILURES = 2


def _trainable(config: dict, space: BaseSpace = None, cpus: float = 1.0, data=None) -> None:
    """One Tune trial: train the prepared candidate on the paired seeds, on the driver's token
    arrays (`data`, from the object store: identical on every node whatever its Python)."""
    import ray
    import torch
    from ray import tune

    from autotaper.search.objective import Prepared
    from autotaper.spec import ModelSpec

    torch.set_num_threads(max(1, int(cpus)))
    started = time.perf_counter()
    node = {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid()}
    steps_total = space.proxy.steps * space.proxy.max_seeds
    if config.get("duplicate_of") is not None:
        tune.report({METRIC: INFEASIBLE_PENALTY, "tokens_per_s": 0.0, "step": steps_total, "final": True,
                     "attrs": TrialRecord(status=records.DUPLICATE, duplicate_of=config["duplicate_of"],
                                           **node).to_attrs()})
        return
    if config.get("infeasible"):
        tune.report({METRIC: INFEASIBLE_PENALTY, "tokens_per_s": 0.0, "step": steps_total, "final": True,
                     "attrs": TrialRecord(status=records.INFEASIBLE, **node).to_attrs()})
        return
    data = ray.get(data) if isinstance(data, ray.ObjectRef) else data if data is not None else space.proxy.load_data()
    store = MemoryStore(config.get("known"))
    objective = TaperObjective(space, data, store)
    prep = Prepared(spec=ModelSpec.from_dict(config["spec"]), train=config.get("train") or {})
    prep.incumbent = config["incumbent"]
    first = []

    def report(value: float, step: int) -> bool:
        attrs = node if not first else {}
        first.append(step)
        tune.report({METRIC: value, "tokens_per_s": 0.0, "step": step, "final": False, "attrs": attrs})
        return False  # the scheduler stops trials itself

    try:
        out = objective.run(prep, report)
    except Exception as e:  # noqa: BLE001 - a Python error repeats on a retry: FAIL now, with its reason
        tune.report({METRIC: INFEASIBLE_PENALTY, "tokens_per_s": 0.0, "step": steps_total, "final": True,
                     "attrs": {**TrialRecord(status=records.FAILED, reason=one_line(e), **node).to_attrs(),
                               NEW_RUNS: json.dumps(store.added)}})
        return
    attrs = {**node, **out.attrs(time.perf_counter() - started),
             NEW_RUNS: json.dumps(store.added)}  # a string: Tune flattens nested dicts in results
    value = sum(out.deltas) / len(out.deltas) if out.deltas else INFEASIBLE_PENALTY
    speed = attrs.get("tokens_per_s", 0.0)
    tune.report({METRIC: value, "tokens_per_s": speed, "step": steps_total, "final": True, "attrs": attrs})


def _study_search_class():
    from ray.tune.search.optuna import OptunaSearch

    class _StudySearch(OptunaSearch):
        """OptunaSearch that writes trial attributes into the study and tells Optuna the
        truth about early-stopped, failed and crashed trials."""

        def __init__(self, *args, paths: dict | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self._last: dict[str, dict] = {}
            self._paths = paths if paths is not None else {}  # trial id -> trial dir, for errors

        def in_flight(self) -> set[int]:
            """Study trial numbers this searcher started and has not finished."""
            return {ot.number for tid, ot in self._ot_trials.items() if tid not in self._completed_trials}

        def _record(self, ot, result: dict) -> None:
            attrs = dict(_attrs(result))
            for key, value in json.loads(attrs.pop(NEW_RUNS, None) or "{}").items():
                if self._ot_study.user_attrs.get(key) is None:
                    self._ot_study.set_user_attr(key, value)
            records.write(ot, **attrs)

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            ot = self._ot_trials.get(trial_id)
            if ot is None or trial_id in self._completed_trials:
                return
            self._record(ot, result)
            records.write(ot, early_stopped=not result.get("final", False))
            self._last[trial_id] = result
            if not result.get("final"):
                super().on_trial_result(trial_id, result)  # the intermediate value, for TPE

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            import optuna

            ot = self._ot_trials.get(trial_id)
            if ot is None or trial_id in self._completed_trials:
                return
            result = result or self._last.get(trial_id) or {}
            status = _attrs(result).get("status")
            try:
                # the last result may reach on_trial_complete without on_trial_result first
                self._record(ot, result)
                # a crashed trial was not stopped by the scheduler: no "stopped early" mark
                records.write(ot, early_stopped=not error and not result.get("final", False))
                if error:
                    records.write(ot, status=records.FAILED, reason=_error_reason(self._paths.get(trial_id)))
                    self._ot_study.tell(ot, state=optuna.trial.TrialState.FAIL)
                elif status in ("failed", "duplicate"):
                    self._ot_study.tell(ot, state=optuna.trial.TrialState.FAIL)
                elif status in ("complete", "infeasible") and result.get("final"):
                    values = [result[m] for m in self.metric] if isinstance(self.metric, list) else result[self.metric]
                    self._ot_study.tell(ot, values)
                else:  # stopped by ASHA/HyperBand: its value is not final
                    records.write(ot, status=records.PRUNED, early_stopped=True,
                                  reason="stopped early by the Tune scheduler")
                    self._ot_study.tell(ot, state=optuna.trial.TrialState.PRUNED)
            except Exception as e:  # noqa: BLE001 - a finished trial must never stop the search
                import logging

                logging.getLogger(__name__).warning("could not record trial %s: %s", trial_id, e)
            self._completed_trials.add(trial_id)

    return _StudySearch


def _attrs(result: dict) -> dict:
    """Trial attributes from a result; Tune flattens nested dicts to "attrs/key" keys."""
    if isinstance(result.get("attrs"), dict):
        return result["attrs"]
    return {k[len("attrs/"):]: v for k, v in result.items() if k.startswith("attrs/")}


def _error_reason(path: str | None) -> str:
    if path:
        err = Path(path) / "error.txt"
        if err.exists():
            lines = [line for line in err.read_text().splitlines() if line.strip()]
            if lines:
                return f"failed {MAX_FAILURES + 1} times; last error: {lines[-1][:300]}"
    return f"the trial's worker failed {MAX_FAILURES + 1} times"


def _paths_callback(paths: dict):
    from ray.tune import Callback

    class _Paths(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            paths[trial.trial_id] = trial.local_path

        def on_trial_recover(self, iteration, trials, trial, **info):
            paths[trial.trial_id] = trial.local_path

    return _Paths()


class _Define:
    """The define-by-run space for OptunaSearch: `TaperObjective.prepare` on the driver.
    Tune pickles its searcher (and so this) into the experiment state; the objective, which
    holds memory-mapped token arrays, is rebuilt after unpickling instead of copied."""

    def __init__(self, space: BaseSpace, objective: TaperObjective | None = None):
        self.space, self._objective = space, objective
        self.live = None  # () -> numbers of the study trials this driver's searcher has in flight

    def __getstate__(self):
        return {"space": self.space, "_objective": None, "live": None}

    def __call__(self, trial) -> dict[str, Any]:
        if self._objective is None:  # after unpickling on the driver (a restored experiment)
            self._objective = TaperObjective(self.space, self.space.proxy.load_data())
        records.write(trial, backend="ray")
        prep = self._objective.prepare(trial)
        if prep.infeasible:
            return {"infeasible": True}
        # The driver prepares trials one at a time, so this check is exact: a spec that a running
        # trial is training is not trained twice (the trial ends FAIL, as a duplicate).
        twin = running_twin(trial, TrialRecord.from_trial(trial).spec_key, among=self.live() if self.live else None)
        if twin is not None:
            records.write(trial, status=records.DUPLICATE, duplicate_of=twin)
            return {"duplicate_of": twin}
        return {"spec": prep.spec.to_dict(), "train": prep.train, "incumbent": prep.incumbent, "known": prep.known}
