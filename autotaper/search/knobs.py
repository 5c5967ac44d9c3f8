"""A space's knobs: a scalar fixes one, a list is a categorical choice, a mapping
{low, high[, log][, step]} a range (`Knob`); per taper dimension, its curve and its knobs
(`DimSpace`), checked at the ends of their ranges before any training."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from autotaper.search.settings import (
    _number_problem,
)
from autotaper.taper import DimTaper

CURVE_OPTIONS = {"sigmoid": ("k",), "power": ("p",), "step": ("early", "late", "mid")}


DIM_KEYS = {"curve", "start", "end", "strength", "asymmetry", "k", "p", "early", "late", "mid", "multiple"}


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


def _admits(knob: Knob, value: Any) -> bool:
    if knob.choices is not None:
        return value in knob.choices
    if knob.low is not None:
        return knob.low <= value <= knob.high
    return knob.fixed == value


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
