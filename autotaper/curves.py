"""Taper curves: how a width ratio moves from the first layer to the last.

A curve maps normalised depth x = l / (L - 1) in [0, 1] to a width ratio relative to the
uniform baseline. Because it is defined on x and not on l, a taper transfers across depths.
Built-in curves follow ../shared/TAPERING.md (the Tapered Language Models schedules):

    linear:  r(x) = start - (start - end) * x
    cosine:  r(x) = end + (start - end) / 2 * (1 + cos(pi * x))
    sigmoid: r(x) = end + (start - end) / (1 + exp(k * (x - 0.5))),   k = 10
    power:   r(x) = start - (start - end) * x ** p                   (p = 1 is linear)
    step:    early layers `start`, middle layers `mid`, late layers `end` (the paper's
             three-group experiment), group sizes from the `early` and `late` fractions
    valley:  r(x) = end + (start - end) * cos(pi * x)^2: `start` at the first and last layers,
             `end` in the middle (1.5, 0.5: the X-shape of Variable-Width Transformers,
             arXiv 2606.18246, applied to the tapered dimension; 0.5, 1.5 a bulge)
    list:    explicit per-layer ratios

Users add curves with `register_curve`, by subclassing `Curve` or from a plain function.
"""

from __future__ import annotations

import abc
import math
from typing import Callable, Mapping

import numpy as np

from autotaper.errors import InputError


def depth_grid(n_layers: int) -> np.ndarray:
    """Normalised depth x_l = l / (L - 1); a single layer sits at x = 0."""
    if n_layers < 1:
        raise InputError(f"n_layers must be >= 1, got {n_layers}")
    if n_layers == 1:
        return np.zeros(1)
    return np.arange(n_layers, dtype=np.float64) / (n_layers - 1)


class Curve(abc.ABC):
    """A family of per-layer ratio schedules with named float options.

    `defaults` lists every option the curve accepts with its default value; the parser
    rejects any other. `uses_endpoints` is False for curves that take their own values
    (the explicit list).
    """

    name: str = ""
    defaults: Mapping[str, float] = {}
    uses_endpoints: bool = True

    @abc.abstractmethod
    def ratios(self, x: np.ndarray, start: float, end: float, **options: float) -> np.ndarray:
        """Width ratio per layer at normalised depths `x`."""

    def is_monotone(self, start: float, end: float, **options: float) -> bool:
        """Whether the schedule never changes direction, so rounding must keep it that way."""
        return True

    def validate(self, start: float, end: float, **options: float) -> None:
        """Raise ValueError naming the option when options are out of range."""


class ShapeCurve(Curve):
    """A curve given by a shape s(x) that falls from 1 at x=0 to 0 at x=1:
    r(x) = end + (start - end) * s(x)."""

    @abc.abstractmethod
    def shape(self, x: np.ndarray, **options: float) -> np.ndarray: ...

    def ratios(self, x, start, end, **options):
        return end + (start - end) * self.shape(np.asarray(x, dtype=np.float64), **options)


class Uniform(Curve):
    name = "uniform"

    def ratios(self, x, start, end, **options):
        return np.ones_like(np.asarray(x, dtype=np.float64))


class Linear(ShapeCurve):
    name = "linear"

    def shape(self, x, **options):
        return 1.0 - x


class Cosine(ShapeCurve):
    name = "cosine"

    def shape(self, x, **options):
        return 0.5 * (1.0 + np.cos(np.pi * x))


# Sharper than this is a step (sigmoid k) or a flat line with one late drop (power p); larger
# values only overflow.
MAX_SHAPE_OPTION = 1000.0


class Sigmoid(ShapeCurve):
    name = "sigmoid"
    defaults = {"k": 10.0}

    def shape(self, x, k=10.0):
        return 1.0 / (1.0 + np.exp(k * (x - 0.5)))

    def validate(self, start, end, k=10.0):
        if not 0 < k <= MAX_SHAPE_OPTION:
            raise InputError(f"sigmoid option k must be in (0, {MAX_SHAPE_OPTION:g}], got {k}")


class Power(ShapeCurve):
    name = "power"
    defaults = {"p": 2.0}

    def shape(self, x, p=2.0):
        return 1.0 - x**p

    def validate(self, start, end, p=2.0):
        if not 0 < p <= MAX_SHAPE_OPTION:
            raise InputError(f"power option p must be in (0, {MAX_SHAPE_OPTION:g}], got {p}")


class Step(Curve):
    """Three groups of layers: early (ratio `start`), middle (ratio `mid`), late (`end`).

    `mid` defaults to the mean of start and end; the early and late fractions of depth
    default to a third each. Layer l belongs to the early group when l < round(early * L).
    """

    name = "step"
    defaults = {"early": 1 / 3, "late": 1 / 3, "mid": float("nan")}

    def _groups(self, n: int, early: float, late: float) -> tuple[int, int]:
        n_early = int(round(early * n))
        n_late = int(round(late * n))
        return n_early, max(n_early, n - n_late)

    def ratios(self, x, start, end, early=1 / 3, late=1 / 3, mid=float("nan")):
        n = len(x)
        mid = (start + end) / 2 if math.isnan(mid) else mid
        a, b = self._groups(n, early, late)
        out = np.full(n, mid, dtype=np.float64)
        out[:a] = start
        out[b:] = end
        return out

    def is_monotone(self, start, end, early=1 / 3, late=1 / 3, mid=float("nan")):
        mid = (start + end) / 2 if math.isnan(mid) else mid
        return min(start, end) <= mid <= max(start, end)

    def validate(self, start, end, early=1 / 3, late=1 / 3, mid=float("nan")):
        for key, value in (("early", early), ("late", late)):
            if not 0 <= value <= 1:
                raise InputError(f"step option {key} must be in [0, 1], got {value}")
        if early + late > 1 + 1e-12:
            raise InputError(f"step options early + late must be <= 1, got {early} + {late}")
        if not math.isnan(mid) and not mid > 0:
            raise InputError(f"step option mid must be > 0, got {mid}")


class Explicit(Curve):
    """Per-layer ratios given as a list; its length must equal the number of layers."""

    name = "list"
    uses_endpoints = False

    def ratios(self, x, start, end, **options):  # pragma: no cover - handled by the taper
        raise TypeError("the list curve takes its values from the taper, not from start/end")


class Valley(ShapeCurve):
    """Wide (or narrow) at both ends, the other way in the middle: not monotone."""

    name = "valley"

    def shape(self, x, **options):
        return np.cos(np.pi * x) ** 2

    def is_monotone(self, start, end, **options):
        return start == end


class FunctionCurve(ShapeCurve):
    """Adapter for `register_curve(name, fn)` with a plain shape function."""

    def __init__(self, name: str, fn: Callable[..., np.ndarray], defaults: Mapping[str, float],
                 monotone: bool):
        self.name = name
        self._fn = fn
        self.defaults = dict(defaults)
        self._monotone = monotone

    def shape(self, x, **options):
        return np.asarray(self._fn(x, **options), dtype=np.float64)

    def is_monotone(self, start, end, **options):
        return self._monotone


_CURVES: dict[str, Curve] = {c.name: c for c in (Uniform(), Linear(), Cosine(), Sigmoid(), Power(),
                                                  Step(), Valley(), Explicit())}


def register_curve(name: str, curve: Curve | Callable[..., np.ndarray], *,
                   defaults: Mapping[str, float] | None = None, monotone: bool = False,
                   overwrite: bool = False) -> Curve:
    """Register a curve under `name` so taper text such as `ffn:NAME:1.4:0.6` can use it.

    `curve` is a `Curve` instance, or a function `shape(x, **options)` falling from 1 at
    x=0 to 0 at x=1 (the ratio is then end + (start - end) * shape). Configs only ever hold
    the name, so a registered curve must be registered again in every process that parses it.
    """
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise InputError(f"curve name must be alphanumeric (with - or _), got {name!r}")
    if name in _CURVES and not overwrite:
        raise InputError(f"curve {name!r} is already registered (pass overwrite=True to replace it)")
    if not isinstance(curve, Curve):
        if not callable(curve):
            raise InputError(f"curve must be a Curve or a callable, got {type(curve).__name__}")
        curve = FunctionCurve(name, curve, defaults or {}, monotone)
    curve.name = name
    _CURVES[name] = curve
    return curve


def get_curve(name: str) -> Curve:
    try:
        return _CURVES[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(str(name), list(_CURVES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"unknown curve {name!r}{hint}; known: {', '.join(sorted(_CURVES))}") from None


def curve_names() -> list[str]:
    return sorted(_CURVES)
