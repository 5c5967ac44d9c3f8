"""A search's settings: the proxy (the short training run that ranks candidates, `Proxy`),
the engine (`Settings`) and the confirmation (`Confirm`), each a dataclass validated with
every problem named at once, and the checks they share (numbers, paths, names)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotaper.errors import InputError
from autotaper.search.samplers import PRUNERS, SAMPLERS
from autotaper.train.config import TrainConfig, eval_interval

OBJECTIVES = ("bpb", "tokens_per_s")


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
    lr: float = TrainConfig.lr
    seeds: int = 2  # seeds every candidate trains on (racing: seeds.min)
    seeds_max: int | None = None  # racing: candidates close to the incumbent get up to this many
    constraint: str = "params"
    tolerance: float = 1e-3
    data: str | None = None
    tokenizer: str = "bytes"
    vocab_size: int | None = None
    eval_every: int | None = None
    precision: str = TrainConfig.precision
    schedule: str = TrainConfig.schedule
    compile: bool | str = False  # torch.compile per block (`autotaper.train.compile`), or its mode: for GPUs
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
        if not isinstance(self.strict_data, bool):
            out.append(f"proxy.strict_data: must be true or false, got {self.strict_data!r}")
        from autotaper.train.config import COMPILE_MODES

        if not isinstance(self.compile, bool) and self.compile not in COMPILE_MODES:
            out.append(f"proxy.compile: must be true, false or one of {', '.join(COMPILE_MODES)}, "
                       f"got {self.compile!r}")
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
        return eval_interval(self.steps, self.eval_every)

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
    # runs trained at once in one process (`autotaper.train.population`): the baselines of the
    # racing seeds, a candidate's first seeds (without pruning), the confirmation's candidates x
    # fresh seeds, grouped by width (MLP and heads); 1 trains one run at a time, auto sizes it from the
    # device (`population.auto_size`: 1 on a CPU)
    population: int | str = 1

    def problems(self) -> list[str]:
        out = []
        if self.population != "auto" and (isinstance(self.population, bool) or not isinstance(self.population, int)
                                          or not 1 <= self.population <= 256):
            out.append(f"search.population: must be an integer from 1 to 256 or auto, got {self.population!r}")
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
