"""Search spaces: which tapers a search may try, on which proxy, with which engine settings.

A YAML space has four sections (all checked before any training, every problem reported
at once):

    proxy:   the short training run that ranks candidates (preset, family, steps, seeds, ...)
    search:  engine settings (sampler, pruner, n_trials, objectives, seed)
    taper:   per-dimension knobs (ffn, heads, embed): a scalar fixes a knob, a list is a
             categorical choice, a mapping {low, high[, log][, step]} is a range
    train:   optional non-taper knobs (lr)

and optionally a fifth, `ladder:`, which `autotaper ladder` reads (`autotaper.ladder.run`)
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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from autotaper.errors import InputError, ProblemsError
from autotaper.search.knobs import DIM_KEYS, DimSpace, Knob, _admits, _knob, _ratio_problems
from autotaper.search.settings import (  # noqa: F401 - re-exported: a space's settings
    CONFIRM_SEED_BASE,
    MAX_SEARCH_SEEDS,
    MAX_SEED,
    MAX_STEPS,
    OBJECTIVES,
    PAPER_DEFAULT,
    SHAPE_KEYS,
    TRAIN_KEYS,
    Confirm,
    Proxy,
    Settings,
    _number_problem,
    _one_of,
    _path_problem,
    did_you_mean,
    parse_duration,
)
from autotaper.taper import DIMS, Taper


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


def parse_space(data: Any, *, name: str = "space", overrides: dict[str, Any] | None = None) -> YamlSpace:
    """Validate a space mapping; raise ValueError listing every problem, one per line."""
    from autotaper.curves import curve_names

    problems: list[str] = []
    if not isinstance(data, dict):
        raise InputError(f"space {name}: must be a mapping with proxy, search, taper sections")
    top = {"name", "description", "proxy", "search", "taper", "train", "ladder"}  # ladder: autotaper.ladder
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


def read_space_file(path: str | Path) -> Any:
    """The YAML of a space file: a regular file of at most 1 MB, without duplicate keys, deep
    nesting or alias bombs (`autotaper._io.load_yaml`); one-line errors otherwise."""
    from autotaper._io import load_yaml, read_text

    path = Path(path)
    return load_yaml(read_text(path, "space", limit=2**20), f"space {path.name}")


def load_space(path: str | Path, *, overrides: dict[str, Any] | None = None) -> YamlSpace:
    """Read and validate a YAML space; `overrides` replace proxy keys (CLI --preset etc.)."""
    return parse_space(read_space_file(path), name=Path(path).stem, overrides=overrides)
