"""Paired evaluation: candidates trained against the uniform baseline on the same seeds.

`compare`, `calibrate`, the search's racing and `confirm` all ask one question, "what does
this spec score against uniform on seed s", and all answer it here. A run is identified by
(spec widths, training overrides, seed): training is deterministic on CPU, so a run already
in the store is never trained again. The store is a plain dict for one-off comparisons and
a study's user attributes for searches (`autotaper.search.objective.StudyStore`), so a
baseline or a repeated spec is trained once per study whichever command asks first.

Fairness is checked, not assumed: a candidate's data fingerprint (a hash of the batches it
consumed) must equal its baseline's on the same seed, or the pairing is broken.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, MutableMapping

from autotaper.spec import ModelSpec
from autotaper.stats import Paired, paired

BASELINE_KEY = "baseline/seed{seed}"
RUN_KEY = "run/{key}/seed{seed}"


def spec_key(spec: ModelSpec, train: Mapping[str, Any] | None = None) -> str:
    """What makes two runs the same: the per-layer shapes and the training overrides (the
    taper text is left out: many knob settings round to the same widths)."""
    blob = json.dumps([spec.to_dict() | {"taper": ""}, dict(train or {})], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def metric_key(data) -> str:
    """Bits per byte when the data knows its bytes; loss per token for pre-tokenised data."""
    return "val_bpb" if data.token_bytes is not None else "val_loss"


class PairingError(RuntimeError):
    """A candidate did not see its baseline's batches: the comparison would be unfair."""


@dataclass
class SeedRun:
    """One candidate on one seed, against the baseline on that seed."""

    seed: int
    status: str  # complete, stopped (by a callback), diverged
    value: float | None = None
    baseline: float | None = None
    entry: dict = field(default_factory=dict)
    reason: str | None = None
    cached: bool = False

    @property
    def delta(self) -> float | None:
        return None if self.value is None or self.baseline is None else self.value - self.baseline


class PairedEvaluator:
    """Trains specs and the uniform `base` on given seeds; `config(seed, overrides)` gives the
    TrainConfig of a run. Results go to `store` (any mutable mapping of JSON values)."""

    def __init__(self, base: ModelSpec, data, config: Callable[[int, Mapping[str, Any]], Any], *,
                 store: MutableMapping[str, Any] | None = None, quiet: bool = True,
                 out_dir: str | None = None):
        self.base, self.data, self.config = base, data, config
        self.store = store if store is not None else {}
        self.key = metric_key(data)
        self.quiet, self.out_dir = quiet, out_dir
        self.trained = 0  # runs trained by this evaluator (cache hits excluded)

    def _train(self, spec: ModelSpec, seed: int, overrides: Mapping[str, Any], callbacks: Iterable = ()) -> dict:
        from autotaper.train import train

        out = None
        if self.out_dir:
            out = f"{self.out_dir}/{spec_key(spec, overrides)}-seed{seed}"
        t0 = time.perf_counter()
        r = train(spec, self.data, self.config(seed, overrides), callbacks=list(callbacks), quiet=self.quiet,
                  out_dir=out)
        self.trained += 1
        values = r.to_dict()
        return {"value": values[self.key], "curve": {str(h["step"]): h[self.key] for h in r.history},
                "tokens_per_s": r.tokens_per_s, "train_time_s": r.train_time_s,
                "train_wall_s": time.perf_counter() - t0, "fingerprint": r.data_fingerprint, "steps": r.steps,
                "status": r.status, "reason": r.reason}

    def baseline(self, seed: int) -> dict:
        """The uniform baseline on `seed`, trained once and kept in the store."""
        name = BASELINE_KEY.format(seed=seed)
        entry = self.store.get(name)
        if entry is None:
            entry = self._train(self.base, seed, {})
            if entry["status"] != "complete" or entry["value"] is None:
                raise ValueError(f"the uniform baseline did not train (seed {seed}): {entry['status']}, "
                                 f"{entry['reason']}")
            entry = self.store.setdefault(name, entry)  # another worker may have finished first: keep one
        return entry

    def run(self, spec: ModelSpec, seed: int, *, train: Mapping[str, Any] | None = None,
            callbacks: Iterable = ()) -> SeedRun:
        """`spec` on `seed` against the baseline; a complete run already stored is reused."""
        overrides = dict(train or {})
        base = self.baseline(seed)
        if spec_key(spec, overrides) == spec_key(self.base, {}):
            return SeedRun(seed, "complete", base["value"], base["value"], base, cached=True)
        name = RUN_KEY.format(key=spec_key(spec, overrides), seed=seed)
        entry = self.store.get(name)
        cached = entry is not None
        if entry is None:
            entry = self._train(spec, seed, overrides, callbacks)
        if entry["status"] == "diverged":
            return SeedRun(seed, "diverged", entry=entry, reason=entry["reason"])
        if entry["status"] != "complete":
            return SeedRun(seed, entry["status"], entry=entry, reason=entry["reason"])
        if entry["fingerprint"] != base["fingerprint"]:
            raise PairingError(f"seed {seed}: data fingerprint differs from the baseline's; the pairing is broken")
        if not cached:
            self.store.setdefault(name, entry)
        return SeedRun(seed, "complete", entry["value"], base["value"], entry, cached=cached)

    def compare(self, specs: Mapping[str, ModelSpec], seeds: Iterable[int], *,
                on_run: Callable[[str, SeedRun], None] | None = None) -> dict[str, "Comparison"]:
        """Every spec on every seed (seed-major, so an interrupted call leaves whole seeds)."""
        out = {name: Comparison(name, spec) for name, spec in specs.items()}
        for seed in seeds:
            for name, spec in specs.items():
                r = self.run(spec, seed)
                if r.status != "complete":
                    raise ValueError(f"{name} on seed {seed} did not complete: {r.status} {r.reason or ''}".strip())
                out[name].runs.append(r)
                if on_run:
                    on_run(name, r)
        return out


@dataclass
class Comparison:
    """A spec's paired runs against uniform and their statistics."""

    name: str
    spec: ModelSpec
    runs: list[SeedRun] = field(default_factory=list)

    @property
    def deltas(self) -> list[float]:
        return [r.delta for r in self.runs]

    @property
    def stats(self) -> Paired:
        return paired(self.deltas)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "taper": self.spec.taper, "seeds": [r.seed for r in self.runs],
                "values": [r.value for r in self.runs], "baselines": [r.baseline for r in self.runs],
                "deltas": self.deltas, "paired": self.stats.to_dict()}


def describe(stats: Paired, *, unit: str = "bpb") -> str:
    """One line for a paired comparison against uniform: mean, interval, p and the call."""
    if stats.ci95 is None:
        return f"delta {unit} {stats.mean:+.4f} from one seed: no interval; use 3 or more seeds"
    call = ("taper better" if stats.ci95[1] < 0 else "uniform better" if stats.ci95[0] > 0
            else "no difference beyond seed noise")
    return (f"delta {unit} {stats.mean:+.4f} (95% CI {stats.ci95[0]:+.4f} .. {stats.ci95[1]:+.4f}, "
            f"p {stats.p:.3g}, {stats.n} paired seeds): {call}")
