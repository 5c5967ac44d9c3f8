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
from typing import Any, Callable, Iterable, Mapping, MutableMapping, Sequence

from autotaper.errors import InputError, PairingError
from autotaper.spec import ModelSpec
from autotaper.stats import Paired, paired_stats

BASELINE_KEY = "baseline/seed{seed}"
RECIPE_DEFAULTS = {"parametrization": "sp", "depth_alpha": 1.0, "base_d_model": None, "base_n_layers": None,
                   "layer_lr": None}
RUN_KEY = "run/{key}/seed{seed}"


def spec_key(spec: ModelSpec, train: Mapping[str, Any] | None = None) -> str:
    """What makes two runs the same: the per-layer shapes and the training overrides (the
    taper text is left out: many knob settings round to the same widths)."""
    fields = spec.to_dict() | {"taper": ""}
    # the recipe fields at their defaults leave the key as it was before they existed, so a
    # study's stored sp runs keep their keys
    for name, default in RECIPE_DEFAULTS.items():
        if fields[name] == default or (name == "layer_lr" and all(v == 1.0 for v in fields[name])):
            del fields[name]
    blob = json.dumps([fields, dict(train or {})], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def metric_key(data) -> str:
    """Bits per byte when the data knows its bytes; loss per token for pre-tokenised data."""
    return "val_bpb" if data.token_bytes is not None else "val_loss"


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
                 out_dir: str | None = None, train: Mapping[str, Any] | None = None):
        self.base, self.data, self.config = base, data, config
        # overrides for every run, the baseline's too (a confirmation that trains longer)
        self.train = dict(train or {})
        self.store = store if store is not None else {}
        self.key = metric_key(data)
        self.quiet, self.out_dir = quiet, out_dir
        self.trained = 0  # runs trained by this evaluator (cache hits excluded)
        self.population = 1  # > 1: `compare` trains the missing runs in populations of up to this many
        self._prefetched: set[str] = set()  # store keys `_prefetch` trained (reported as trained, not stored)

    def _train(self, spec: ModelSpec, seed: int, overrides: Mapping[str, Any], callbacks: Iterable = ()) -> dict:
        from autotaper.train import train

        out = self._run_dir(spec, seed, overrides)
        t0 = time.perf_counter()
        r = train(spec, self.data, self.config(seed, overrides), callbacks=list(callbacks), quiet=self.quiet,
                  out_dir=out)
        self.trained += 1
        return self._entry(r, time.perf_counter() - t0)

    def _run_dir(self, spec: ModelSpec, seed: int, overrides: Mapping[str, Any]) -> str | None:
        """Where a run keeps its folder (checkpoints, metrics), if the evaluator keeps them."""
        return f"{self.out_dir}/{spec_key(spec, overrides)}-seed{seed}" if self.out_dir else None

    def _entry(self, r, wall_s: float) -> dict:
        """A run's stored record, from its TrainResult."""
        values = r.to_dict()
        return {"value": values[self.key], "curve": {str(h["step"]): h[self.key] for h in r.history},
                "tokens_per_s": r.tokens_per_s, "train_time_s": r.train_time_s,
                "train_wall_s": wall_s, "fingerprint": r.data_fingerprint, "steps": r.steps,
                "status": r.status, "reason": r.reason, "device": r.device, "precision": r.precision}

    def prefetch(self, specs: Iterable[ModelSpec], seeds: Iterable[int], *, train: Mapping[str, Any] | None = None) -> None:
        """Train the runs `compare` will need and the store lacks, uniform's too, in populations of
        up to `self.population` members (`autotaper.train.population`): members of one shape but
        their MLP widths and heads, grouped by width. Complete runs are stored under their usual keys; the
        rest (and groups a population cannot hold) are left to `run`, which trains them one by one."""
        from autotaper.train.population import PER_MEMBER_SPEC, group_by_width, train_population

        overrides = {**self.train, **(train or {})}
        wanted: dict[str, tuple[ModelSpec, int, dict]] = {}  # store key -> spec, seed, training overrides
        for seed in seeds:
            if self.store.get(self.baseline_key(seed)) is None:
                wanted[self.baseline_key(seed)] = (self.base, seed, dict(self.train))
            for spec in specs:
                name = RUN_KEY.format(key=spec_key(spec, overrides), seed=seed)
                if spec_key(spec, overrides) != spec_key(self.base, self.train) and self.store.get(name) is None:
                    wanted[name] = (spec, seed, overrides)
        groups: dict[str, list[str]] = {}  # one shape but the widths, one training recipe
        for name, (spec, _, ov) in wanted.items():
            # under sp, candidates of other widths share a population; width-aware parametrizations
            # set per-layer multipliers from the widths, so there only seeds of one spec do
            shape = {k: v for k, v in spec.to_dict().items() if k not in PER_MEMBER_SPEC or spec.parametrization != "sp"}
            groups.setdefault(json.dumps([shape, ov], sort_keys=True), []).append(name)
        for names in groups.values():
            for group in group_by_width([wanted[n][0] for n in names], self.population):
                members = [names[i] for i in group]
                if len(members) < 2:
                    continue
                t0 = time.perf_counter()
                try:
                    results = train_population([wanted[n][0] for n in members], self.data,
                                               [self.config(wanted[n][1], wanted[n][2]) for n in members],
                                               out_dirs=[self._run_dir(*wanted[n]) for n in members])
                except InputError:
                    continue  # e.g. width-aware multipliers that differ between members: one by one
                wall = (time.perf_counter() - t0) / len(members)
                for name, r in zip(members, results):
                    if r.status == "complete" and r.val_loss is not None:
                        self.store.setdefault(name, self._entry(r, wall))
                        self._prefetched.add(name)
                        self.trained += 1

    def is_fresh(self, key: str) -> bool:
        """Whether the run stored under `key` was trained by this evaluator's `prefetch`."""
        return key in self._prefetched

    def baseline(self, seed: int) -> dict:
        """The uniform baseline on `seed`, trained once and kept in the store."""
        name = self.baseline_key(seed)
        entry = self.store.get(name)
        if entry is None:
            entry = self._train(self.base, seed, dict(self.train))
            if entry["status"] != "complete" or entry["value"] is None:
                raise InputError(f"the uniform baseline did not train (seed {seed}): {entry['status']}, "
                                 f"{entry['reason']}")
            entry = self.store.setdefault(name, entry)  # another worker may have finished first: keep one
        return entry

    def baseline_key(self, seed: int) -> str:
        """Where the baseline on `seed` is stored: BASELINE_KEY, or with the evaluator's overrides'
        key when it trains otherwise than the proxy (a longer confirmation)."""
        if not self.train:
            return BASELINE_KEY.format(seed=seed)
        return f"baseline/{spec_key(self.base, self.train)}/seed{seed}"

    def run(self, spec: ModelSpec, seed: int, *, train: Mapping[str, Any] | None = None,
            callbacks: Iterable = ()) -> SeedRun:
        """`spec` on `seed` against the baseline; a complete run already stored is reused."""
        overrides = {**self.train, **(train or {})}
        base = self.baseline(seed)
        if spec_key(spec, overrides) == spec_key(self.base, self.train):
            return SeedRun(seed, "complete", base["value"], base["value"], base, cached=True)
        name = RUN_KEY.format(key=spec_key(spec, overrides), seed=seed)
        entry = self.store.get(name)
        cached = entry is not None and name not in self._prefetched
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
        seeds = list(seeds)
        if self.population > 1:
            self.prefetch(specs.values(), seeds)
        for seed in seeds:
            for name, spec in specs.items():
                r = self.run(spec, seed)
                if r.status != "complete":
                    raise InputError(f"{name} on seed {seed} did not complete: {r.status} {r.reason or ''}".strip())
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
        return paired_stats(self.deltas)

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


def trains_as_sp(base: ModelSpec) -> bool:
    """Whether the uniform `base` trains bit for bit as under sp (it is its own base shape), so
    that one baseline per seed serves every parametrization."""
    from autotaper.parametrization import depth_multiplier, width_multiplier

    return base.parametrization == "sp" or (width_multiplier(base) == 1.0 and depth_multiplier(base) == 1.0)


@dataclass
class ParamComparison:
    """One taper against uniform under several parametrizations on the same paired seeds, and
    the per-seed differences of its effects between them: under sp minus under mup is the part
    of the effect that comes from the taper's per-layer learning rate and init, not its capacity."""

    taper: str
    unit: str
    by_param: dict[str, Comparison]

    @property
    def names(self) -> list[str]:
        return list(self.by_param)

    def difference(self, a: str, b: str) -> Paired:
        """Paired statistics of (effect under a) - (effect under b) over the common seeds."""
        da = {r.seed: r.delta for r in self.by_param[a].runs}
        db = {r.seed: r.delta for r in self.by_param[b].runs}
        return paired_stats([da[s] - db[s] for s in da if s in db])

    def pairs(self) -> list[tuple[str, str]]:
        first = self.names[0]
        return [(first, other) for other in self.names[1:]]

    def lines(self) -> list[str]:
        stats = {name: c.stats for name, c in self.by_param.items()}
        n = next(iter(stats.values())).n
        width = max(len(x) for x in self.names)
        out = [f"{self.taper} vs uniform on {n} paired seeds ({self.unit}; negative = taper better):"]
        for name, st in stats.items():
            out.append(f"  under {name:<{width}}  {describe(st, unit=self.unit)}")
        for a, b in self.pairs():
            st = self.difference(a, b)
            text = describe(st, unit=self.unit).replace("taper better", f"{a} credits the taper more") \
                .replace("uniform better", f"{b} credits the taper more")
            out.append(f"  {a} - {b}{'':<{max(0, 2 * width - len(a) - len(b))}}  {text}")
            if {a, b} >= {"sp"} and b != "sp":
                ci = st.ci95
                share = "" if ci is None else f" [{ci[0]:+.4f}, {ci[1]:+.4f}]"
                out.append(f"  decomposition: capacity (the effect under {b}) {stats[b].mean:+.4f}; per-layer "
                           f"learning rate and init ({a} - {b}) {st.mean:+.4f}{share} {self.unit}")
        return out

    def to_dict(self) -> dict[str, Any]:
        diffs = {f"{a}-{b}": self.difference(a, b).to_dict() for a, b in self.pairs()}
        return {"taper": self.taper, "unit": self.unit,
                "by_parametrization": {name: c.to_dict() for name, c in self.by_param.items()},
                "differences": diffs}


def compare_parametrizations(bases: Mapping[str, ModelSpec], taper: str, data,
                             config: Callable[[int, Mapping[str, Any]], Any], *, seeds: Iterable[int],
                             constraint: str = "params", tolerance: float = 1e-3, quiet: bool = True,
                             out_dir: str | None = None, population: int = 1,
                             on_run: Callable[[str, str, SeedRun], None] | None = None) -> ParamComparison:
    """`taper` solved against each parametrization's uniform `bases[name]` and trained with it on
    the same `seeds` (seed-major: an interrupted call leaves whole seeds). Uniform is trained once
    per seed for every parametrization under which it trains as sp does (at its own base shape).
    `population` > 1: each parametrization's runs (uniform and taper x seeds) train in populations
    of up to that many (`PairedEvaluator.prefetch`)."""
    from autotaper.budget import solve

    shared: dict = {}
    evaluators = {name: PairedEvaluator(base, data, config, store=shared if trains_as_sp(base) else {},
                                        quiet=quiet, out_dir=out_dir)
                  for name, base in bases.items()}
    specs = {name: solve(base, taper, constraint=constraint, tolerance=tolerance) for name, base in bases.items()}
    out = {name: Comparison(name, spec) for name, spec in specs.items()}
    seeds = list(seeds)
    for name, ev in evaluators.items():
        ev.population = population
        if population > 1:
            ev.prefetch([specs[name]], seeds)
    for seed in seeds:
        for name, ev in evaluators.items():
            r = ev.run(specs[name], seed)
            if r.status != "complete":
                raise InputError(f"{taper} under {name} on seed {seed} did not complete: {r.status} "
                                 f"{r.reason or ''}".strip())
            out[name].runs.append(r)
            if on_run:
                on_run(name, taper, r)
    unit = "bpb" if metric_key(data) == "val_bpb" else "loss"
    return ParamComparison(str(specs[next(iter(specs))].taper), unit, out)


def compare(baseline: ModelSpec, taper: str, data, config, *, params: Sequence[str] = ("sp",), seeds: int = 3,
            constraint: str = "params", tolerance: float = 1e-3, quiet: bool = True, out_dir: str | None = None,
            population: int = 1, on_run: Callable[[str, str, SeedRun], None] | None = None,
            **param_fields: Any) -> ParamComparison:
    """`autotaper compare`: `taper` against the uniform `baseline` on seeds 0..`seeds`-1, each
    pair trained with `config` (a TrainConfig; its seed set per pair), under every
    parametrization in `params` (`param_fields`: depth_alpha, base_d_model, base_n_layers)."""
    import dataclasses

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise InputError(f"seeds: a paired interval needs at least 2 seeds, got {seeds!r}")
    bases = {name: dataclasses.replace(baseline, parametrization=name, **param_fields) for name in params}
    return compare_parametrizations(bases, taper, data, lambda seed, overrides: dataclasses.replace(config, seed=seed),
                                    seeds=range(seeds), constraint=constraint, tolerance=tolerance, quiet=quiet,
                                    out_dir=out_dir, population=population, on_run=on_run)
