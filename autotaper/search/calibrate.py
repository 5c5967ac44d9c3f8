"""The noise floor, measured before searching: how large an effect can this proxy see?

Calibration trains the uniform baseline and the paper's default taper (cosine 1.5 -> 0.5 on
ffn) on the first seeds of the search (at least 3, so an SD has 2 degrees of freedom), plus
one repeat of seed 0 where the device is nondeterministic (CUDA; on CPU a seed run twice is
bit-identical, which the tests check). From those runs:
- per-seed SD: the SD of uniform's metric across seeds (what an unpaired comparison fights);
- paired-delta SD: the SD of (paper default - uniform) per seed (what a paired one fights);
- run-to-run SD: one seed trained twice, |a - b| / sqrt(2) (0 on a deterministic device);
- the minimum detectable effect (two-sided 5%, power 80%) for the seeds in use, and the
  seeds a `--target-mde` needs (`autotaper.stats`).
Everything lands in the study (`calibration`): the runs are the search's own baselines and
the paper default trial's first seeds, so calibrating costs a search almost nothing extra.
An optional LR sweep trains uniform at other learning rates on the same seeds, paired
against the proxy's own LR. With `search.population` > 1 the seeds train as populations
(uniform and the reference together, each swept LR's seeds together); the run-to-run repeat
trains alone, as a search's single run would.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from autotaper import stats
from autotaper.errors import InputError
from autotaper.log import sayer
from autotaper.search.records import CALIBRATION_ATTR
from autotaper.search.space import PAPER_DEFAULT, BaseSpace

MIN_CALIBRATION_SEEDS = 3


def calibration_seeds(space: BaseSpace) -> list[int]:
    return list(range(max(MIN_CALIBRATION_SEEDS, space.proxy.seeds)))


@dataclass
class Calibration:
    metric: str
    seeds: list[int]
    uniform: list[float]
    reference_taper: str | None
    reference: list[float]  # the paper default's metric per seed (empty when infeasible)
    repeat: float | None  # seed 0's uniform trained again (nondeterministic devices only)
    deterministic: bool
    device: str
    run_wall_s: float  # mean wall time of one proxy run (build, steps, evaluations)
    lr_sweep: list[dict] = field(default_factory=list)

    @property
    def deltas(self) -> list[float]:
        return [r - u for r, u in zip(self.reference, self.uniform)]

    @property
    def per_seed_sd(self) -> float | None:
        return statistics.stdev(self.uniform) if len(self.uniform) > 1 else None

    @property
    def delta_sd(self) -> float | None:
        return statistics.stdev(self.deltas) if len(self.deltas) > 1 else None

    @property
    def run_to_run_sd(self) -> float | None:
        if self.deterministic:
            return 0.0
        return None if self.repeat is None else abs(self.repeat - self.uniform[0]) / math.sqrt(2)

    def mde(self, n: int, *, alpha: float = stats.ALPHA) -> float | None:
        return stats.mde(self.delta_sd, n, alpha=alpha)

    def mdes(self, seeds_in_use: dict[str, int | tuple[int, int]]) -> dict[str, float | None]:
        """The MDE at each stage's seeds (a confirmation's at Holm's alpha / candidates)."""
        return {k: self.mde(n[0], alpha=stats.ALPHA / n[1]) if isinstance(n, tuple) else self.mde(n)
                for k, n in seeds_in_use.items()}

    def seeds_for(self, target: float) -> int | None:
        return stats.seeds_for_mde(self.delta_sd, target)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(per_seed_sd=self.per_seed_sd, delta_sd=self.delta_sd, run_to_run_sd=self.run_to_run_sd,
                   deltas=self.deltas)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})

    def lines(self, seeds_in_use: dict[str, int | tuple[int, int]], *, target_mde: float | None = None) -> list[str]:
        """A readable noise floor: SDs, then the MDE for each named number of seeds; a value
        (n, m) is n seeds under Holm's correction over m tests (its first step: 5% / m)."""
        def f(x):
            return "n/a" if x is None else f"{x:.4f}"

        unit = "bpb" if self.metric == "val_bpb" else "nats"
        r2r = "0 (deterministic device)" if self.deterministic else f(self.run_to_run_sd)
        out = [f"noise floor ({len(self.seeds)} seeds, {self.device}): uniform {f(_mean(self.uniform))} {unit}, "
               f"per-seed SD {f(self.per_seed_sd)}; paired-delta SD {f(self.delta_sd)} "
               f"({self.reference_taper or 'no reference'} vs uniform, mean {f(_mean(self.deltas))}); "
               f"run-to-run SD {r2r}"]
        mdes = []
        for label, n in seeds_in_use.items():
            n, m = n if isinstance(n, tuple) else (n, 1)
            holm = f" (Holm over {m})" if m > 1 else ""
            mdes.append(f"{label} {n} seeds{holm}: {f(self.mde(n, alpha=stats.ALPHA / m))}")
        if mdes:
            out.append("minimum detectable effect (two-sided 5%, power 80%): " + "; ".join(mdes))
        if target_mde is not None:
            need = self.seeds_for(target_mde)
            out.append(f"seeds for an MDE of {target_mde:g} {unit}: "
                       f"{need if need is not None else 'more than 10,000 (or unknown: no paired SD)'}")
        for row in self.lr_sweep:
            ci = row["ci95"]
            ci_text = f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""
            out.append(f"  lr {row['lr']:g}: uniform {row['mean']:.4f} {unit}, vs the proxy's lr "
                       f"{row['delta']:+.4f}{ci_text}{'  <- lowest' if row.get('best') else ''}")
        return out


def seeds_in_use(space: BaseSpace, *, confirm: bool = True) -> dict[str, int | tuple[int, int]]:
    """The seed counts a search of `space` decides on, by stage: the search's, racing's most,
    and the confirmation's (seeds, candidates in its Holm correction)."""
    p, c = space.proxy, space.settings.confirm
    out: dict[str, int | tuple[int, int]] = {"search": p.seeds} | ({"racing up to": p.max_seeds} if p.racing else {})
    if confirm and c.enabled:
        out["confirmation"] = (c.seeds, c.top_k + 1)
    return out


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def measure_noise(study, space: BaseSpace, data, *, lrs: Sequence[float] = (), quiet: bool = True,
                  refresh: bool = False, say=None) -> Calibration:
    """Calibrate the study's proxy (see the module docstring); cached in the study. `say`
    receives a line per seed (default: stderr unless quiet)."""
    from autotaper.budget import solve
    from autotaper.search.objective import StudyStore, make_evaluator
    from autotaper.train.trainer import resolve_device

    cached = study.user_attrs.get(CALIBRATION_ATTR)
    if cached is not None and not refresh and not lrs:
        return Calibration.from_dict(cached)
    store = StudyStore(study)
    ev = make_evaluator(space, data, store)  # no progress bar per run: a line per seed instead
    seeds = calibration_seeds(space)
    if say is None:
        say = sayer(quiet)
    try:
        reference = solve(ev.base, PAPER_DEFAULT, constraint=space.proxy.constraint, tolerance=space.proxy.tolerance)
    except ValueError:
        reference = None  # a proxy whose ffn cannot take the paper's taper: no paired SD
    say(f"calibrating the noise floor: uniform{' and ' + PAPER_DEFAULT if reference else ''} on seeds "
        f"{seeds[0]}..{seeds[-1]}")
    walls: list[float] = []
    uniform, ref_values = [], []
    if ev.population > 1:  # uniform and the reference on every seed, as populations
        ev.prefetch([reference] if reference is not None else [], seeds)
        walls += [ev.store[ev.baseline_key(seed)]["train_wall_s"] for seed in seeds
                  if ev.is_fresh(ev.baseline_key(seed))]
    for seed in seeds:
        before = ev.trained
        base = ev.baseline(seed)
        if ev.trained > before:
            walls.append(base["train_wall_s"])
        uniform.append(base["value"])
        if reference is not None:
            r = ev.run(reference, seed)
            if r.status != "complete":
                raise InputError(f"calibration: {PAPER_DEFAULT} did not train on seed {seed}: {r.reason}")
            if not r.cached:
                walls.append(r.entry["train_wall_s"])
            ref_values.append(r.value)
        say(f"  seed {seed}: uniform {uniform[-1]:.4f}" + (f", {reference.taper} {r.delta:+.4f}" if reference else ""))
    device = resolve_device("auto")  # where the proxy trains (TrainConfig.device)
    deterministic = device.type != "cuda"
    repeat = None
    if not deterministic:
        again = ev._train(ev.base, seeds[0], {})
        walls.append(again["train_wall_s"])
        repeat = again["value"]
    if not walls:  # every run was already in the study: keep the wall time measured then
        walls = [cached["run_wall_s"]] if cached else [base.get("train_wall_s", 0.0)]
    cal = Calibration(metric=ev.key, seeds=seeds, uniform=uniform, reference_taper=reference.taper if reference else None,
                      reference=ref_values, repeat=repeat, deterministic=deterministic, device=device.type,
                      run_wall_s=sum(walls) / len(walls))
    if lrs:
        cal.lr_sweep = lr_sweep(ev, seeds, lrs, space.proxy.lr)
    study.set_user_attr(CALIBRATION_ATTR, cal.to_dict())
    return cal


def lr_sweep(ev, seeds: Sequence[int], lrs: Sequence[float], proxy_lr: float) -> list[dict]:
    """Uniform at each learning rate, paired by seed against uniform at the proxy's LR."""
    rows = []
    for lr in sorted(set(float(x) for x in lrs) | {float(proxy_lr)}):
        if ev.population > 1 and lr != proxy_lr:  # this LR's seeds as one population
            ev.prefetch([ev.base], seeds, train={"lr": lr})
        values, deltas = [], []
        for seed in seeds:
            r = ev.run(ev.base, seed, train={} if lr == proxy_lr else {"lr": lr})
            if r.status != "complete":
                values, deltas = [], []
                break
            values.append(r.value)
            deltas.append(r.delta)
        if not values:
            rows.append({"lr": lr, "mean": float("nan"), "delta": float("nan"), "ci95": None, "diverged": True})
            continue
        s = stats.paired_stats(deltas)
        rows.append({"lr": lr, "mean": sum(values) / len(values), "delta": s.mean,
                     "ci95": list(s.ci95) if s.ci95 and lr != proxy_lr else None})
    finite = [r for r in rows if not r.get("diverged")]
    if finite:
        min(finite, key=lambda r: r["mean"])["best"] = True
    return rows


@dataclass
class CalibrationResult:
    """What `calibrate` returns: the noise floor and the study that holds it."""

    calibration: Calibration
    study_name: str
    storage: str

    def to_dict(self) -> dict[str, Any]:
        return {"calibration": self.calibration.to_dict(), "study_name": self.study_name, "storage": self.storage}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CalibrationResult":
        return cls(Calibration.from_dict(data["calibration"]), data["study_name"], data["storage"])


def calibrate(space: BaseSpace, *, storage: str | None = None, study_name: str | None = None,
              lrs: Sequence[float] = (), refresh: bool = False, quiet: bool = False) -> CalibrationResult:
    """`autotaper calibrate`: measure (or read) the noise floor of a space's proxy, in the
    study a search of the space uses."""
    from autotaper.search.preflight import preflight
    from autotaper.search.study import check_corpus, open_study

    ready = preflight(space, storage=storage, study_name=study_name)  # before anything is stored
    study, url = open_study(space, storage=ready.url, study_name=ready.name)
    data = ready.data
    check_corpus(study, data)
    return CalibrationResult(measure_noise(study, space, data, lrs=lrs, quiet=quiet, refresh=refresh),
                             study.study_name, url)
