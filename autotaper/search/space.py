"""Search spaces: which tapers a search may try, on which proxy, with which engine settings.

A YAML space has four sections (all checked before any training, every problem reported
at once):

    proxy:   the short training run that ranks candidates (preset, family, steps, seeds, ...)
    search:  engine settings (sampler, pruner, n_trials, objectives, seed)
    taper:   per-dimension knobs (ffn, heads, embed): a scalar fixes a knob, a list is a
             categorical choice, a mapping {low, high[, log][, step]} is a range
    train:   optional non-taper knobs (lr)

and optionally a fifth, `ladder:`, which `autotaper ladder` reads (`autotaper.scale.ladder`)
and a plain search ignores. `proxy.shape` overrides the preset's shape fields (d_model,
n_layers, ...), so a proxy need not be a preset.

Per dimension the knobs are `curve` (required; "uniform" in the list lets the search leave
the dimension alone), then either `start` and `end`, or `strength` and `asymmetry` with
start = 1 + strength + asymmetry and end = 1 - strength + asymmetry (strength > 0 shrinks
with depth, < 0 grows; the paper's 1.5 -> 0.5 is strength 0.5), and the curve's options
`k` (sigmoid), `p` (power), `early`, `late`, `mid` (step), and `multiple`. Curve options are
only sampled for the curve that uses them.

Custom spaces subclass `BaseSpace` (or wrap a function with `FunctionSpace`): `suggest(trial)`
returns a `Candidate` with a taper (text or `Taper`) or a whole `ModelSpec`.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from autotaper.errors import InputError, ProblemsError
from autotaper.taper import DIMS, DimTaper, Taper

SAMPLERS = ("tpe", "gp", "cmaes", "random", "grid", "nsga2")
PRUNERS = ("median", "hyperband", "wilcoxon", "none")
OBJECTIVES = ("bpb", "tokens_per_s")
CURVE_OPTIONS = {"sigmoid": ("k",), "power": ("p",), "step": ("early", "late", "mid")}
DIM_KEYS = {"curve", "start", "end", "strength", "asymmetry", "k", "p", "early", "late", "mid", "multiple"}
TRAIN_KEYS = {"lr"}
SHAPE_KEYS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_width", "context_length")
PAPER_DEFAULT = "ffn:cosine:1.5:0.5"
CONFIRM_SEED_BASE = 1000  # confirmation trains on seeds 1000, 1001, ...: never a search's
MAX_SEARCH_SEEDS = CONFIRM_SEED_BASE
MAX_STEPS = 10_000_000
MAX_SEED = 2**32 - 1  # what numpy and torch take as a seed


@dataclass(frozen=True)
class Confirm:
    """Confirmation after a search: the top_k tapers and the paper's default retrained on
    `seeds` fresh seeds; top_k 0 turns it off."""

    top_k: int = 3
    seeds: int = 3
    # the verdict's taper also trained under the other parametrization (sp <-> mup) on the same
    # fresh seeds: the verdict then says what part of its effect is per-layer learning rate
    decompose: bool = True
    # train the confirmation longer than the search, to decide nearer the target's regime:
    # `steps` per run, or `tokens_per_param` x uniform's parameters (one of them; none: the proxy's)
    steps: int | None = None
    tokens_per_param: float | None = None

    def problems(self) -> list[str]:
        out = []
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or not 1 <= self.steps <= 10_000_000):
            out.append(f"search.confirm.steps: must be a positive integer, got {self.steps!r}")
        tpp = self.tokens_per_param
        if tpp is not None and (isinstance(tpp, bool) or not isinstance(tpp, (int, float)) or not math.isfinite(tpp)
                                or not 0 < tpp <= 1e6):
            out.append(f"search.confirm.tokens_per_param: must be a number in (0, 1e6], got {tpp!r}")
        if self.steps is not None and tpp is not None:
            out.append("search.confirm: give steps or tokens_per_param, not both")
        if not isinstance(self.decompose, bool):
            out.append(f"search.confirm.decompose: must be true or false, got {self.decompose!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            out.append(f"search.confirm.top_k: must be an integer >= 0, got {self.top_k!r}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or not 2 <= self.seeds <= 1000:
            out.append(f"search.confirm.seeds: must be an integer from 2 to 1000 (an interval needs 2), "
                       f"got {self.seeds!r}")
        return out

    @property
    def enabled(self) -> bool:
        return self.top_k > 0

    def run_steps(self, proxy: "Proxy", params: int, context_length: int) -> int:
        """Steps of one confirmation run: `steps`, or tokens_per_param x `params` in whole steps of
        the proxy's batch, or the proxy's own."""
        if self.steps is not None:
            return self.steps
        if self.tokens_per_param is not None:
            return max(1, round(self.tokens_per_param * params / (proxy.batch_size * context_length)))
        return proxy.steps


def parse_duration(text: Any, field_name: str = "budget") -> float:
    """Seconds from 600, "600s", "10m", "1.5h"; ValueError naming the field otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        raw = str(text).strip().lower()
        scale = {"s": 1, "m": 60, "h": 3600}.get(raw[-1:], None)
        try:
            value = float(raw[:-1]) * scale if scale else float(raw)
        except ValueError:
            raise InputError(f"{field_name}: not a duration (e.g. 600, 600s, 10m, 1.5h), got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise InputError(f"{field_name}: must be a positive duration, got {text!r}")
    return value


@dataclass(frozen=True)
class Proxy:
    """The short run that ranks candidates, identical for every trial of a study."""

    preset: str = "proxy-xs"
    family: str | None = None
    shape: dict | None = None  # the preset's shape fields overridden (d_model, n_layers, ...): a ladder's rungs
    steps: int = 150
    batch_size: int = 16
    lr: float = 3e-3
    seeds: int = 2  # seeds every candidate trains on (racing: seeds.min)
    seeds_max: int | None = None  # racing: candidates close to the incumbent get up to this many
    constraint: str = "params"
    tolerance: float = 1e-3
    data: str | None = None
    tokenizer: str = "bytes"
    vocab_size: int | None = None
    eval_every: int | None = None
    precision: str = "auto"
    schedule: str = "cosine"
    compile: bool = False  # torch.compile per block (`autotaper.train.compile`): for large proxies on a GPU
    strict_data: bool = False  # refuse a data folder holding non-text files instead of skipping them
    # sp, mup or completep (`autotaper.parametrization`): part of the study's identity
    parametrization: str = "sp"
    depth_alpha: float = 1.0  # completep's residual exponent, in [0.5, 1]
    base_d_model: int | None = None  # the width and depth the LR was tuned at (a ladder sets them)
    base_n_layers: int | None = None

    def problems(self) -> list[str]:
        from autotaper.budget import CONSTRAINTS
        from autotaper.families import family_names
        from autotaper.spec import PRESETS
        from autotaper.train.config import PRECISIONS, SCHEDULES

        out = []
        if not _one_of(self.preset, PRESETS):
            out.append(f"proxy.preset: unknown preset {self.preset!r}{did_you_mean(self.preset, PRESETS)} (known: {', '.join(PRESETS)})")
        if self.family is not None and not _one_of(self.family, family_names()):
            out.append(f"proxy.family: unknown family {self.family!r}{did_you_mean(self.family, family_names())} "
                       f"(known: {', '.join(family_names())})")
        out += self.shape_problems()
        from autotaper.parametrization import problems as param_problems

        out += param_problems(self.parametrization, self.depth_alpha, where="proxy.")
        for name in ("base_d_model", "base_n_layers"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                out.append(f"proxy.{name}: must be a positive integer, got {v!r}")
        for name in ("compile", "strict_data"):
            if not isinstance(getattr(self, name), bool):
                out.append(f"proxy.{name}: must be true or false, got {getattr(self, name)!r}")
        for name, high in (("steps", MAX_STEPS), ("batch_size", 2**20), ("seeds", MAX_SEARCH_SEEDS)):
            found = _number_problem(f"proxy.{name}", getattr(self, name), low=1, high=high, integer=True)
            if found:
                out.append(found)
        if self.seeds_max is not None and (isinstance(self.seeds_max, bool) or not isinstance(self.seeds_max, int)
                                           or self.seeds_max < (self.seeds if isinstance(self.seeds, int) else 1)):
            out.append(f"proxy.seeds.max: must be an integer >= seeds.min ({self.seeds!r}), got {self.seeds_max!r}")
        elif isinstance(self.seeds, int) and self.max_seeds > MAX_SEARCH_SEEDS:
            out.append(f"proxy.seeds: at most {MAX_SEARCH_SEEDS} (seeds from {CONFIRM_SEED_BASE} on are kept "
                       f"for confirmation), got {self.max_seeds}")
        for name, value, high in (("eval_every", self.eval_every, MAX_STEPS), ("vocab_size", self.vocab_size, 2**16)):
            if value is not None:
                found = _number_problem(f"proxy.{name}", value, low=1 if name == "eval_every" else 2, high=high,
                                        integer=True)
                if found:
                    out.append(found + (" (tokens are stored as uint16)" if name == "vocab_size" else ""))
        for found in (_number_problem("proxy.lr", self.lr, low=0, high=1e4, low_open=True),
                      _number_problem("proxy.tolerance", self.tolerance, low=0, high=0.5)):
            if found:
                out.append(found)
        if not _one_of(self.constraint, CONSTRAINTS):
            out.append(f"proxy.constraint: must be one of {', '.join(CONSTRAINTS)}, got {self.constraint!r}")
        if not _one_of(self.tokenizer, ("bytes", "bpe")):
            out.append(f"proxy.tokenizer: must be bytes or bpe, got {self.tokenizer!r}")
        if not _one_of(self.precision, PRECISIONS):
            out.append(f"proxy.precision: must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not _one_of(self.schedule, SCHEDULES):
            out.append(f"proxy.schedule: must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.data is not None and (not isinstance(self.data, str) or not self.data.strip()):
            out.append(f"proxy.data: must be a path, glob or hf:PATH (leave it out for the embedded corpus), "
                       f"got {self.data!r}")
        elif self.data is not None and not any(c in self.data for c in "*?["):
            found = _path_problem(self.data[3:] if self.data.startswith("hf:") else self.data)
            if found:
                out.append(f"proxy.data: {found}")
        return out

    def shape_problems(self) -> list[str]:
        if self.shape is None:
            return []
        if not isinstance(self.shape, dict):
            return [f"proxy.shape: must be a mapping of shape fields, got {self.shape!r}"]
        unknown = sorted(set(self.shape) - set(SHAPE_KEYS))
        if unknown:
            return [f"proxy.shape.{unknown[0]}: unknown shape field{did_you_mean(unknown[0], SHAPE_KEYS)} "
                    f"(known: {', '.join(SHAPE_KEYS)})"]
        from autotaper.spec import PRESETS, ModelSpec

        if self.preset in PRESETS:
            try:
                ModelSpec.from_name(self.preset, **self.shape)
            except ValueError as e:
                return [f"proxy.shape: {e}"]
        return []

    def spec_fields(self) -> dict[str, Any]:
        """The ModelSpec fields this proxy sets beside its preset and shape: the parametrization."""
        out = {"parametrization": self.parametrization, "depth_alpha": self.depth_alpha}
        out.update({k: getattr(self, k) for k in ("base_d_model", "base_n_layers") if getattr(self, k) is not None})
        return out

    def eval_interval(self) -> int:
        return self.eval_every or max(1, self.steps // 4)

    @property
    def max_seeds(self) -> int:
        return self.seeds_max or self.seeds

    @property
    def racing(self) -> bool:
        return self.max_seeds > self.seeds

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_data(self):
        """The proxy's token data (`autotaper.data.load_data`)."""
        from autotaper.data import load_data

        return load_data(self.data, tokenizer=self.tokenizer, vocab_size=self.vocab_size, strict=self.strict_data)


@dataclass(frozen=True)
class Settings:
    sampler: str = "tpe"
    pruner: str = "median"
    n_trials: int = 12
    objectives: tuple[str, ...] = ("bpb",)
    seed: int = 0
    cpus_per_trial: float = 1.0  # Ray backend: resources per trial (fractions of a GPU share it)
    gpus_per_trial: float | str = 0.0  # "auto": 1 / proxies that fit a cluster GPU (search.workers)
    max_concurrent: int | None = None
    # Ray backend: a trial worker trains the next trial too (imports torch once). Tune then hands
    # a trial whose worker is still starting on another node to a worker that freed up, so with
    # trials shorter than a node's worker start-up, every trial can run on the first node.
    reuse_actors: bool = True
    confirm: Confirm = Confirm()
    budget_s: float | None = None  # wall-clock plan for the whole search (calibration, trials, confirmation)
    suggest_from_probe: bool = False  # confirm the probe's suggestion too (`autotaper.probe.suggest`)
    # this many trials failing in a row stop the search (the input or the machine is at fault,
    # not the candidate); 0 never stops
    stop_after_failures: int = 5

    def problems(self) -> list[str]:
        out = []
        if not _one_of(self.sampler, SAMPLERS):
            out.append(f"search.sampler: unknown sampler {self.sampler!r}{did_you_mean(self.sampler, SAMPLERS)} "
                       f"(known: {', '.join(SAMPLERS)})")
        if not _one_of(self.pruner, PRUNERS):
            out.append(f"search.pruner: unknown pruner {self.pruner!r}{did_you_mean(self.pruner, PRUNERS)} "
                       f"(known: {', '.join(PRUNERS)})")
        for found in (_number_problem("search.n_trials", self.n_trials, low=1, high=1_000_000, integer=True),
                      None if self.seed is None else
                      _number_problem("search.seed", self.seed, low=0, high=MAX_SEED, integer=True)):
            if found:
                out.append(found)
        objs = list(self.objectives)
        if not objs or objs[0] != "bpb" or any(o not in OBJECTIVES for o in objs) or len(set(objs)) != len(objs):
            out.append(f"search.objectives: must be [bpb] or [bpb, tokens_per_s], got {objs!r}")
        if not isinstance(self.suggest_from_probe, bool):
            out.append(f"search.suggest_from_probe: must be true or false, got {self.suggest_from_probe!r}")
        found = _number_problem("search.cpus_per_trial", self.cpus_per_trial, low=0, high=4096, low_open=True)
        if found:
            out.append(found)
        if self.gpus_per_trial != "auto" and _number_problem("", self.gpus_per_trial, low=0, high=64):
            out.append(f"search.gpus_per_trial: must be a number in [0, 64] or auto, got {self.gpus_per_trial!r}")
        if not isinstance(self.reuse_actors, bool):
            out.append(f"search.reuse_actors: must be true or false, got {self.reuse_actors!r}")
        if self.max_concurrent is not None:
            found = _number_problem("search.max_concurrent", self.max_concurrent, low=1, high=100_000, integer=True)
            if found:
                out.append(found)
        if not isinstance(self.stop_after_failures, int) or isinstance(self.stop_after_failures, bool) \
                or not 0 <= self.stop_after_failures <= 1_000_000:
            out.append(f"search.stop_after_failures: must be an integer >= 0 (0: never stop), "
                       f"got {self.stop_after_failures!r}")
        out += self.confirm.problems()
        if len(objs) > 1 and self.sampler in ("gp", "cmaes", "grid"):
            out.append(f"search.sampler: {self.sampler} is single-objective; use tpe or nsga2 with {objs}")
        return out

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


@dataclass
class Candidate:
    """What a space proposes for one trial."""

    taper: Taper | str | None = None
    spec: Any = None  # a full ModelSpec, for spaces that build their own shapes
    train: dict[str, Any] = field(default_factory=dict)  # overrides of the proxy's training knobs


class BaseSpace(abc.ABC):
    """A search space: turns an Optuna trial into a candidate. Subclass for custom spaces."""

    name: str = "custom"
    proxy: Proxy = Proxy()
    settings: Settings = Settings()

    @abc.abstractmethod
    def suggest(self, trial) -> Candidate: ...

    def reference_params(self) -> dict[str, Any] | None:
        """Parameters that reproduce the paper's default taper, or None if outside the space."""
        return None

    def grid(self) -> dict[str, list] | None:
        """The full grid for the grid sampler (every knob a fixed value or a list)."""
        return None

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "proxy": self.proxy.to_dict()}


class FunctionSpace(BaseSpace):
    """A space from a function `fn(trial) -> Taper | str | ModelSpec | Candidate`."""

    def __init__(self, fn: Callable[[Any], Any], *, proxy: Proxy | None = None, settings: Settings | None = None,
                 name: str | None = None):
        self.fn = fn
        self.proxy = proxy or Proxy()
        self.settings = settings or Settings()
        self.name = name or getattr(fn, "__name__", "custom")

    def suggest(self, trial) -> Candidate:
        from autotaper.spec import ModelSpec

        out = self.fn(trial)
        if isinstance(out, Candidate):
            return out
        if isinstance(out, ModelSpec):
            return Candidate(spec=out)
        return Candidate(taper=out)


# -- knobs -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Knob:
    """One value in a space: fixed, a categorical choice, or a numeric range."""

    name: str
    fixed: Any = None
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.low is not None:
            if self.integer:
                return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                         step=int(self.step or 1))
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        return self.fixed

    def values(self) -> list:
        """Every value the knob can take at its extremes (ranges: both ends)."""
        if self.choices is not None:
            return list(self.choices)
        if self.low is not None:
            return [self.low, self.high]
        return [self.fixed]


def _knob(name: str, raw: Any, problems: list[str], *, numeric: bool = True, integer: bool = False) -> Knob | None:
    if isinstance(raw, dict):
        unknown = set(raw) - {"low", "high", "log", "step"}
        if unknown:
            problems.append(f"{name}: unknown range key(s) {', '.join(sorted(unknown))} (use low, high, log, step)")
            return None
        if "low" not in raw or "high" not in raw:
            problems.append(f"{name}: a range needs low and high, got {raw!r}")
            return None
        low, high = raw["low"], raw["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
            problems.append(f"{name}: low and high must be numbers, got {low!r} and {high!r}")
            return None
        if low > high:
            problems.append(f"{name}: inverted range, low {low} > high {high}")
            return None
        if low == high:
            problems.append(f"{name}: empty range, low == high == {low} (write the value itself to fix it)")
            return None
        log = raw.get("log", False)
        if not isinstance(log, bool):
            problems.append(f"{name}.log: must be true or false, got {log!r}")
            return None
        if log and low <= 0:
            problems.append(f"{name}: a log range needs low > 0, got {low}")
            return None
        step = raw.get("step")
        if step is not None:
            found = _number_problem(f"{name}.step", step, low=0, high=high - low, low_open=True, integer=integer)
            if found or log:
                problems.append(found or f"{name}: step and log do not go together (Optuna samples one or the other)")
                return None
        if integer and not all(isinstance(v, int) or float(v).is_integer() for v in (low, high)):
            problems.append(f"{name}: an integer range needs integer low and high, got {low!r} and {high!r}")
            return None
        return Knob(name, low=float(low), high=float(high), log=log, step=step, integer=integer)
    if isinstance(raw, list):
        if not raw:
            problems.append(f"{name}: empty list of choices")
            return None
        if numeric and not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                               for v in raw):
            problems.append(f"{name}: choices must be finite numbers, got {raw!r}")
            return None
        if not numeric and not all(isinstance(v, str) for v in raw):
            problems.append(f"{name}: choices must be names, got {raw!r}")
            return None
        if integer and not all(float(v).is_integer() for v in raw):
            problems.append(f"{name}: choices must be integers, got {raw!r}")
            return None
        return Knob(name, choices=tuple(raw))
    if numeric and (not isinstance(raw, (int, float)) or isinstance(raw, bool) or not math.isfinite(raw)):
        problems.append(f"{name}: must be a finite number, a list or a {{low, high}} range, got {raw!r}")
        return None
    if not numeric and not isinstance(raw, str):
        problems.append(f"{name}: must be a name or a list of names, got {raw!r}")
        return None
    if integer and not float(raw).is_integer():
        problems.append(f"{name}: must be an integer, got {raw!r}")
        return None
    return Knob(name, fixed=raw)


@dataclass(frozen=True)
class DimSpace:
    dim: str
    knobs: dict[str, Knob]

    def suggest(self, trial) -> DimTaper:
        curve = self.knobs["curve"].suggest(trial)
        if curve == "uniform":
            return DimTaper(self.dim)
        if "strength" in self.knobs:
            s = self.knobs["strength"].suggest(trial)
            a = self.knobs["asymmetry"].suggest(trial) if "asymmetry" in self.knobs else 0.0
            start, end = 1.0 + s + a, 1.0 - s + a
        else:
            start, end = self.knobs["start"].suggest(trial), self.knobs["end"].suggest(trial)
        # Ratios to 3 decimals: a 0.1% width change is far below one rounding multiple, and
        # the taper text stays readable in logs and leaderboards.
        start, end = round(float(start), 3), round(float(end), 3)
        options = [(key, float(self.knobs[key].suggest(trial))) for key in CURVE_OPTIONS.get(curve, ())
                   if key in self.knobs]
        if "multiple" in self.knobs:
            options.append(("m", float(self.knobs["multiple"].suggest(trial))))
        return DimTaper(self.dim, curve, start, end, options=tuple(options))


class YamlSpace(BaseSpace):
    """The space a YAML file describes (see the module docstring)."""

    def __init__(self, *, name: str, proxy: Proxy, settings: Settings, dims: list[DimSpace],
                 train: dict[str, Knob], source: dict):
        self.name, self.proxy, self.settings = name, proxy, settings
        self.dims, self.train, self.source = dims, train, source

    def suggest(self, trial) -> Candidate:
        taper = Taper(tuple(d.suggest(trial) for d in self.dims))
        return Candidate(taper=taper, train={k: knob.suggest(trial) for k, knob in self.train.items()})

    def reference_params(self) -> dict[str, Any] | None:
        """Parameters of the paper's cosine 1.5 -> 0.5 on ffn (other dims uniform), or None
        when the space cannot express it. Knobs left out are sampled as usual."""
        if not any(d.dim == "ffn" for d in self.dims):
            return None
        params: dict[str, Any] = {}
        for d in self.dims:
            k = d.knobs
            wanted = {"curve": "cosine" if d.dim == "ffn" else "uniform"}
            if d.dim == "ffn":
                wanted.update({"strength": 0.5, "asymmetry": 0.0} if "strength" in k else {"start": 1.5, "end": 0.5})
            elif "curve" in k and not _admits(k["curve"], "uniform"):  # a fixed curve: flat at strength 0
                wanted = {"strength": 0.0, "asymmetry": 0.0} if "strength" in k else {"start": 1.0, "end": 1.0}
            for key, value in wanted.items():
                if key not in k:
                    continue
                if not _admits(k[key], value):
                    return None
                if k[key].fixed is None:
                    params[k[key].name] = value
        return params

    def grid(self) -> dict[str, list] | None:
        grid: dict[str, list] = {}
        for knob in [k for d in self.dims for k in d.knobs.values()] + list(self.train.values()):
            if knob.low is not None:
                return None
            if knob.choices is not None:
                grid[knob.name] = list(knob.choices)
        return grid

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "proxy": self.proxy.to_dict(),
                "taper": self.source.get("taper"), "train": self.source.get("train")}


def _path_problem(path: str) -> str | None:
    """Why a data path cannot be read (missing, or not a regular file or folder), or None."""
    import stat

    from autotaper._io import kind

    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        return f"path {path!r} does not exist"
    except OSError as e:
        return f"path {path!r} cannot be read ({e.strerror})"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return f"path {path!r} is {kind(mode)}, not a file or folder"
    return None


def _number_problem(field: str, value: Any, *, low: float, high: float, integer: bool = False,
                    low_open: bool = False) -> str | None:
    """A problem line when `value` is not a number in [low, high] ((low, high] with
    `low_open`), an integer with `integer`; None when it is. Booleans and non-finite
    numbers are never numbers here."""
    kinds = (int,) if integer else (int, float)
    ok = (isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
          and (low < value if low_open else low <= value) and value <= high)
    if ok:
        return None
    what = "an integer" if integer else "a number"
    show = (lambda v: f"{v:,}") if integer else (lambda v: f"{v:g}")
    interval = f"{'(' if low_open else '['}{show(low)}, {show(high)}]"
    return f"{field}: must be {what} in {interval}, got {value!r}"


def did_you_mean(name: Any, options) -> str:
    """ " (did you mean 'x'?)" for the option closest to a mistyped `name`, or ""."""
    import difflib

    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _one_of(value: Any, options) -> bool:
    """`value` is one of the named `options` (and a string: a list or a mapping is not)."""
    return isinstance(value, str) and value in options


def _admits(knob: Knob, value: Any) -> bool:
    if knob.choices is not None:
        return value in knob.choices
    if knob.low is not None:
        return knob.low <= value <= knob.high
    return knob.fixed == value


def parse_space(data: Any, *, name: str = "space", overrides: dict[str, Any] | None = None) -> YamlSpace:
    """Validate a space mapping; raise ValueError listing every problem, one per line."""
    from autotaper.curves import curve_names

    problems: list[str] = []
    if not isinstance(data, dict):
        raise InputError(f"space {name}: must be a mapping with proxy, search, taper sections")
    top = {"name", "description", "proxy", "search", "taper", "train", "ladder"}  # ladder: autotaper.scale
    for key in sorted(set(data) - top):
        problems.append(f"{key}: unknown section{did_you_mean(key, top)} (known: {', '.join(sorted(top))})")

    def section(key: str) -> dict:
        value = data.get(key) or {}
        if not isinstance(value, dict):
            problems.append(f"{key}: must be a mapping, got {value!r}")
            return {}
        return value

    proxy_raw = {**section("proxy"), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    seeds_raw = proxy_raw.get("seeds")
    if isinstance(seeds_raw, dict):
        unknown = set(seeds_raw) - {"min", "max"}
        if unknown or "min" not in seeds_raw:
            problems.append(f"proxy.seeds: a mapping takes min (required) and max, got {seeds_raw!r}")
        proxy_raw["seeds"] = seeds_raw.get("min", 2)
        proxy_raw["seeds_max"] = seeds_raw.get("max")
    elif "seeds_max" in proxy_raw:
        problems.append("proxy.seeds_max: write seeds: {min: N, max: M}")
    proxy_fields = {f.name for f in dataclasses.fields(Proxy)}
    for key in sorted(set(proxy_raw) - proxy_fields):
        problems.append(f"proxy.{key}: unknown key{did_you_mean(key, proxy_fields)} (known: {', '.join(sorted(proxy_fields))})")
    data_path = proxy_raw.get("data")
    if isinstance(data_path, str) and data_path:
        # absolute, so workers that run elsewhere (Ray trial directories) find the same files
        proxy_raw["data"] = ("hf:" + os.path.abspath(data_path[3:])) if data_path.startswith("hf:") \
            else os.path.abspath(data_path)
    proxy = Proxy(**{k: v for k, v in proxy_raw.items() if k in proxy_fields})
    problems += proxy.problems()

    search_raw = section("search")
    settings_fields = {f.name for f in dataclasses.fields(Settings)} - {"budget_s"} | {"budget"}
    for key in sorted(set(search_raw) - settings_fields):
        problems.append(f"search.{key}: unknown key{did_you_mean(key, settings_fields)} "
                        f"(known: {', '.join(sorted(settings_fields))})")
    search_kw = {k: v for k, v in search_raw.items() if k in settings_fields}
    confirm_raw = search_kw.pop("confirm", None)
    if confirm_raw is False:
        search_kw["confirm"] = Confirm(top_k=0)
    elif isinstance(confirm_raw, dict):
        keys = ("top_k", "seeds", "decompose", "steps", "tokens_per_param")
        unknown = set(confirm_raw) - set(keys)
        if unknown:
            problems.append(f"search.confirm: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                            f"(known: {', '.join(sorted(keys))})")
        search_kw["confirm"] = Confirm(**{k: v for k, v in confirm_raw.items() if k in keys})
    elif confirm_raw not in (None, True):
        problems.append(f"search.confirm: must be false or a mapping {{top_k, seeds, decompose}}, got {confirm_raw!r}")
    if "budget" in search_kw:
        budget = search_kw.pop("budget")
        if budget is not None:
            try:
                search_kw["budget_s"] = parse_duration(budget, "search.budget")
            except ValueError as e:
                problems.append(str(e))
    if "objectives" in search_kw:
        search_kw["objectives"] = tuple(search_kw["objectives"]) if isinstance(search_kw["objectives"], list) \
            else (search_kw["objectives"],)
    settings = Settings(**search_kw)
    problems += settings.problems()

    dims: list[DimSpace] = []
    taper_raw = section("taper")
    if not taper_raw:
        problems.append("taper: the space names no dimension to taper (ffn, heads or embed)")
    known_curves = set(curve_names()) - {"list"}
    for dim, knobs_raw in taper_raw.items():
        if dim not in DIMS:
            problems.append(f"taper.{dim}: unknown dimension{did_you_mean(dim, DIMS)} (known: {', '.join(DIMS)})")
            continue
        if not isinstance(knobs_raw, dict):
            problems.append(f"taper.{dim}: must be a mapping of knobs, got {knobs_raw!r}")
            continue
        if dim == "lr" and "multiple" in knobs_raw:
            problems.append("taper.lr.multiple: the lr dimension has no rounding multiple")
        for key in sorted(set(knobs_raw) - DIM_KEYS):
            problems.append(f"taper.{dim}.{key}: unknown knob{did_you_mean(key, DIM_KEYS)} (known: {', '.join(sorted(DIM_KEYS))})")
        knobs: dict[str, Knob] = {}
        if "curve" not in knobs_raw:
            problems.append(f"taper.{dim}.curve: required")
        else:
            curve = _knob(f"{dim}.curve", knobs_raw["curve"], problems, numeric=False)
            if curve is not None:
                for c in curve.values():
                    if c not in known_curves:
                        problems.append(f"taper.{dim}.curve: unknown curve {c!r}{did_you_mean(c, known_curves)} "
                                        f"(known: {', '.join(sorted(known_curves))})")
                knobs["curve"] = curve
        has_pair = "start" in knobs_raw or "end" in knobs_raw
        if has_pair and ("strength" in knobs_raw or "asymmetry" in knobs_raw):
            problems.append(f"taper.{dim}: give start/end or strength/asymmetry, not both")
        elif has_pair and not ("start" in knobs_raw and "end" in knobs_raw):
            problems.append(f"taper.{dim}: start and end go together")
        elif not has_pair and "strength" not in knobs_raw and set(knobs.get("curve", Knob("x", fixed="uniform")).values()) != {"uniform"}:
            problems.append(f"taper.{dim}: needs start and end, or strength")
        for key in sorted((set(knobs_raw) & DIM_KEYS) - {"curve"}):
            knob = _knob(f"{dim}.{key}", knobs_raw[key], problems, integer=key == "multiple")
            if knob is not None:
                knobs[key] = knob
        problems += _ratio_problems(dim, knobs)
        dims.append(DimSpace(dim, knobs))

    train: dict[str, Knob] = {}
    for key, raw in section("train").items():
        if key not in TRAIN_KEYS:
            problems.append(f"train.{key}: unknown knob (known: {', '.join(sorted(TRAIN_KEYS))})")
            continue
        knob = _knob(f"train.{key}", raw, problems)
        if knob is not None:
            if any(v <= 0 for v in knob.values()):
                problems.append(f"train.{key}: must be > 0, got {raw!r}")
            train[key] = knob
    if settings.sampler == "grid" and not problems:
        space = YamlSpace(name=name, proxy=proxy, settings=settings, dims=dims, train=train, source=data)
        if space.grid() is None:
            problems.append("search.sampler: grid needs every knob fixed or a list of values, not a range")
    if problems:
        raise ProblemsError(f"space {name}", problems)
    return YamlSpace(name=str(data.get("name") or name), proxy=proxy, settings=settings, dims=dims, train=train,
                     source=data)


def _ratio_problems(dim: str, knobs: dict[str, Knob]) -> list[str]:
    """Ratios that no budget can satisfy: a width ratio of zero or below somewhere in range."""
    out = []
    if "strength" in knobs:
        s_vals = knobs["strength"].values()
        a_vals = knobs["asymmetry"].values() if "asymmetry" in knobs else [0.0]
        if not all(isinstance(v, (int, float)) for v in s_vals + a_vals):
            return out
        for s in s_vals:
            for a in a_vals:
                if 1 + s + a <= 0 or 1 - s + a <= 0:
                    out.append(f"taper.{dim}: strength {s} with asymmetry {a} gives start {1 + s + a:g}, "
                               f"end {1 - s + a:g}; ratios must stay > 0 (|strength| - asymmetry < 1)")
                    return out
    for key in ("start", "end", "k", "p", "mid", "multiple"):
        if key in knobs and any(isinstance(v, (int, float)) and v <= 0 for v in knobs[key].values()):
            out.append(f"taper.{dim}.{key}: must be > 0 everywhere in its range, got {knobs[key].values()}")
    for key in ("early", "late"):
        if key in knobs and any(isinstance(v, (int, float)) and not 0 <= v <= 1 for v in knobs[key].values()):
            out.append(f"taper.{dim}.{key}: a fraction of depth must lie in [0, 1], got {knobs[key].values()}")
    if not out and "curve" in knobs:
        out += _extreme_problems(dim, knobs)
    return out


def _extreme_problems(dim: str, knobs: dict[str, Knob]) -> list[str]:
    """Every curve of the knob at the ends of every range, built as a taper: a value the taper
    grammar refuses (a ratio over MAX_RATIO, a sigmoid k past its bound, ...) is refused here,
    before a search whose trials would all fail."""
    import itertools

    if "strength" in knobs:
        a_vals = knobs["asymmetry"].values() if "asymmetry" in knobs else [0.0]
        pairs = [(1 + st + a, 1 - st + a) for st in knobs["strength"].values() for a in a_vals]
    elif "start" in knobs and "end" in knobs:
        pairs = list(itertools.product(knobs["start"].values(), knobs["end"].values()))
    else:
        pairs = [(1.0, 1.0)]
    from autotaper.curves import curve_names

    for curve in knobs["curve"].values():
        if curve == "uniform" or curve not in curve_names():  # an unknown curve is reported on its own
            continue
        keys = [k for k in CURVE_OPTIONS.get(curve, ()) if k in knobs] + (["multiple"] if "multiple" in knobs else [])
        for start, end in pairs:
            for combo in itertools.product(*(knobs[k].values() for k in keys)):
                options = tuple(("m" if k == "multiple" else k, float(v)) for k, v in zip(keys, combo))
                try:
                    DimTaper(dim, curve, round(float(start), 3), round(float(end), 3), options=options)
                except (ValueError, TypeError) as e:
                    return [f"taper.{dim}: {e} (curve {curve}, start {start:g}, end {end:g}"
                            + "".join(f", {k} {v:g}" for k, v in options) + ")"]
    return []


def read_space_file(path: str | Path) -> Any:
    """The YAML of a space file: a regular file of at most 1 MB, without duplicate keys, deep
    nesting or alias bombs (`autotaper._io.load_yaml`); one-line errors otherwise."""
    from autotaper._io import load_yaml, read_text

    path = Path(path)
    return load_yaml(read_text(path, "space", limit=2**20), f"space {path.name}")


def load_space(path: str | Path, *, overrides: dict[str, Any] | None = None) -> YamlSpace:
    """Read and validate a YAML space; `overrides` replace proxy keys (CLI --preset etc.)."""
    return parse_space(read_space_file(path), name=Path(path).stem, overrides=overrides)
