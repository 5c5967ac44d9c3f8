"""What a study stores, every key in this one file.

A study keeps its state in Optuna's string-keyed user attributes: the study's (its space,
corpus, calibration, confirmation, probe, the Ray experiment, the stored runs) and each
trial's (`TrialRecord`). Code reads a trial through `TrialRecord.from_trial` and writes it
through `write`, so a key is spelled once. The keys and their values are the on-disk
format of every existing study: change none of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from autotaper.paired import BASELINE_KEY, RUN_KEY

# The study's attributes.
SPACE_ATTR = "autotaper/space"  # the space's identity (`BaseSpace.identity`): a reopen must match it
CORPUS_ATTR = "autotaper/corpus"  # the corpus the trials train on (`study.corpus_identity`)
CALIBRATION_ATTR = "calibration"  # `Calibration.to_dict`
CONFIRMATION_ATTR = "confirmation"  # `Confirmation.to_dict`
PROBE_ATTR = "probe"  # search.suggest_from_probe: the probe of uniform and its suggestion
EXPERIMENT_ATTR = "ray/experiment"  # the Ray Tune experiment folder to restore
ENVIRONMENT_ATTR = "autotaper/environment"  # versions, device, host and date of the process that created it
# The stored runs: their keys live with the run store (`paired`), re-exported here.
BASELINE_PREFIX = BASELINE_KEY.format(seed="")  # "baseline/seed": one entry per seed
RUN_PREFIX = RUN_KEY.split("{")[0]  # "run/": one entry per (spec, seed)

# A trial's status (`TrialRecord.status`).
REFERENCE = "reference"  # uniform, recorded from the baselines: 0 by definition
COMPLETE = "complete"
PRUNED = "pruned"
INFEASIBLE = "infeasible"  # the solver found no widths within the tolerance
FAILED = "failed"  # the candidate or its training raised, or it diverged
DUPLICATE = "duplicate"  # yielded to a running trial of the same spec: not a row, not counted
# Reasons of trials failed from outside (`storage.fail_dead_trials`): retried, never counted.
INTERRUPTED_REASONS = ("worker process", "lease expired")


def _with_extra(cls, data: dict[str, Any]):
    """`cls` from a stored dict: its fields by name, every other key kept in `extra` (written
    back as it was read, so a newer version's keys survive an older one)."""
    known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    return cls(**{k: v for k, v in data.items() if k in known}, extra={k: v for k, v in data.items() if k not in known})


@dataclass
class TrialRecord:
    """One trial's attributes. Fields left None are not stored."""

    status: str | None = None
    taper: str | None = None
    reason: str | None = None
    # the candidate, as solved (`TaperObjective.prepare`)
    spec: dict | None = None
    spec_key: str | None = None
    layers: dict | None = None  # {"ffn": [...], "heads": [...], "d_model": [...]}
    train: dict | None = None  # the candidate's own training knobs (lr)
    multiples: dict | None = None  # dims rounded finer than their default multiple
    params_delta: int | None = None
    flops_delta: float | None = None
    incumbent: Any = None  # racing's reference: a trial number or a taper text
    # the outcome, over the paired seeds (`Outcome`)
    delta: float | None = None  # mean paired difference to uniform (the metric's unit)
    se: float | None = None
    ci95: list | None = None  # stored with delta, None from one seed
    seed_deltas: list | None = None
    seed_values: list | None = None
    tokens_per_s: float | None = None
    metric: str | None = None
    race: str | None = None
    early_stopped: bool | None = None  # a Tune scheduler stopped it (read as pruned)
    train_time_s: float | None = None  # optimizer steps only
    train_wall_s: float | None = None  # inside train(): build, steps, evals
    wall_time_s: float | None = None
    steps_trained: int | None = None
    steps_unstored: int | None = None
    seeds_reused: int | None = None
    # where and how it ran
    backend: str | None = None  # "ray" for Ray Tune trials; absent (optuna) otherwise
    host: str | None = None
    pid: int | None = None
    node: str | None = None  # Ray: the node id a trial trained on
    lease: dict | None = None  # journal storages: the running trial's host, pid and last beat (`storage.Lease`)
    duplicate_of: int | None = None
    enqueued: str | None = None  # the reference taper a study enqueued
    new_runs: dict | None = None  # Ray: runs the trial trained that the study lacked
    extra: dict = field(default_factory=dict, repr=False)  # keys this version does not know

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "TrialRecord":
        return _with_extra(cls, attrs)

    @classmethod
    def from_trial(cls, trial) -> "TrialRecord":
        return cls.from_attrs(trial.user_attrs)

    def to_attrs(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "extra" and getattr(self, f.name) is not None}
        if self.delta is not None:  # stored beside delta even when None (one seed)
            out["se"], out["ci95"] = self.se, self.ci95
        return {**self.extra, **out}

    @property
    def interrupted(self) -> bool:
        return str(self.reason or "").startswith(INTERRUPTED_REASONS)


@dataclass
class Confirmation:
    """The confirmation of a study's best tapers on fresh seeds, as stored in the study
    (`records.CONFIRMATION_ATTR`): every candidate's paired effect, Holm-adjusted, and the
    verdict."""

    text: str
    winner: str | None  # the taper that beats uniform beyond noise, or None
    beats_uniform: bool
    seeds: list[int]
    candidates: list[dict]  # per taper: mean, sd, ci95, p, p_holm, proxy_delta, ...
    metric: str = "val_bpb"
    mde: float | None = None
    pooled_sd: float | None = None
    m: int = 0  # candidates in Holm's correction
    parametrization: str = "sp"
    steps: int | None = None
    search_steps: int | None = None
    complete_trials: int | None = None
    skipped: dict = field(default_factory=dict)
    decomposition: dict | None = None
    extra: dict = field(default_factory=dict, repr=False)  # keys this version does not know

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Confirmation":
        return _with_extra(cls, data)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "extra"}
        if out["decomposition"] is None:
            del out["decomposition"]
        return {**self.extra, **out}

    def candidate(self, taper: str) -> dict | None:
        return next((c for c in self.candidates if c["taper"] == taper), None)


FIELDS = frozenset(f.name for f in dataclasses.fields(TrialRecord)) - {"extra"}


def write(trial, **values: Any) -> None:
    """Store `values` in `trial`'s attributes, each a `TrialRecord` field (a typo raises)."""
    for key, value in values.items():
        if key not in FIELDS:
            raise KeyError(f"{key!r} is not a TrialRecord field")
        trial.set_user_attr(key, value)


def write_by_id(storage, trial_id: int, **values: Any) -> None:
    """`write` through a storage, for a trial known by its id (another process's trial)."""
    for key, value in values.items():
        if key not in FIELDS:
            raise KeyError(f"{key!r} is not a TrialRecord field")
        storage.set_trial_user_attr(trial_id, key, value)


def status_of(trial) -> str | None:
    return trial.user_attrs.get("status")
