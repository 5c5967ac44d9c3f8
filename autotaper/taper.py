"""The taper family: which dimensions change with depth, along which curve, how far.

Text form, used by the CLI, YAML spaces and logs (`Taper.parse` and `str` round-trip):

    DIM:CURVE:START:END[:KEY=VALUE...]     e.g. ffn:cosine:1.5:0.5
    DIM:list:R0,R1,...,R(L-1)[:KEY=VALUE]  explicit per-layer ratios
    DIM:uniform                            that dimension left alone
    A+B                                    several dimensions, e.g. ffn:cosine:1.5:0.5+heads:linear:1.25:0.75
    uniform                                no taper at all

DIM is one of
    ffn    the MLP hidden width (the paper's d_ff);
    heads  the number of query heads at fixed head_dim; KV heads follow the GQA group size, so
           the rounding unit is one KV head (= n_heads / n_kv_heads query heads);
    embed  the residual width a layer reads and writes: layer l works on the first d_l channels
           of a stream that is max_l d_l wide (see `autotaper.spec`);
    lr     no width at all: layer l's learning rate is multiplied by the curve's ratio (not
           rescaled, no budget), on top of the parametrization's per-matrix rules. Beside a
           width taper under `mup` it separates capacity from per-layer learning rate.
START and END are ratios to the uniform baseline at the first and last layer; START > END
shrinks with depth (the paper), START < END grows (OpenELM). The option `m` sets the rounding
multiple (defaults: ffn 16, heads one GQA group, embed gcd(d_model, 64), or
gcd(d_model, 16) under d_model 512); other options belong
to the curve (sigmoid `k`, power `p`, step `early`/`late`/`mid`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from autotaper.curves import depth_grid, get_curve
from autotaper.errors import InputError

DIMS = ("ffn", "heads", "embed", "lr")
WIDTH_DIMS = ("ffn", "heads", "embed")  # the dimensions a budget is solved over; lr is free


def format_number(value: float) -> str:
    """Shortest text that parses back to exactly `value` (1.5 -> '1.5', 30.0 -> '30', 1e16 ->
    '1e16'). Never contains '+', which joins dimensions in the text form."""
    text = repr(float(value))  # Python's repr is the shortest round-trip form
    if text.endswith(".0"):
        text = text[:-2]
    return text.replace("e+", "e")


def _parse_number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{where} must be finite, got {text!r}")
    return value


MAX_RATIO = 1000.0  # a layer 1000x the baseline's width: far past any taper worth training
MAX_MULTIPLE = 2**20  # rounding multiple (m=): wider than any layer
MAX_TEXT = 200_000  # characters of a taper's text


@dataclass(frozen=True)
class DimTaper:
    """How one dimension varies with depth."""

    dim: str
    curve: str = "uniform"
    start: float = 1.0
    end: float = 1.0
    values: tuple[float, ...] = ()
    options: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.dim not in DIMS:
            raise InputError(f"taper dim must be one of {', '.join(DIMS)}, got {self.dim!r}")
        curve = get_curve(self.curve)
        where = f"taper {self.dim}"
        if self.curve == "list":
            if not self.values:
                raise InputError(f"{where}: the list curve needs per-layer ratios, got none")
            for v in self.values:
                if not (v > 0 and math.isfinite(v)):
                    raise InputError(f"{where}: list ratios must be > 0, got {format_number(v)}")
        elif self.values:
            raise InputError(f"{where}: values are only for the list curve, not {self.curve!r}")
        for name, value in (("start", self.start), ("end", self.end)):
            if not (value > 0 and math.isfinite(value)):
                raise InputError(f"{where}.{name} must be a ratio > 0, got {format_number(value)}")
            if value > MAX_RATIO:
                raise InputError(f"{where}.{name} must be a ratio of at most {MAX_RATIO:g}, got {format_number(value)}")
        if not curve.uses_endpoints or self.curve == "uniform":
            object.__setattr__(self, "start", 1.0)
            object.__setattr__(self, "end", 1.0)
        opts = dict(self.options)
        allowed = dict(curve.defaults, m=float("nan"))
        for key, value in opts.items():
            if key not in allowed:
                raise InputError(f"{where}: unknown option {key!r} for curve {self.curve!r}; "
                                 f"allowed: {', '.join(sorted(allowed))}")
            if not math.isfinite(value):
                raise InputError(f"{where}.{key} must be finite, got {value}")
        if "m" in opts and self.dim == "lr":
            raise InputError(f"{where}: the lr dimension has no rounding multiple (m=)")
        if "m" in opts and (opts["m"] < 1 or opts["m"] != int(opts["m"]) or opts["m"] > MAX_MULTIPLE):
            raise InputError(f"{where}.m (rounding multiple) must be a positive integer, got "
                             f"{format_number(opts['m'])}")
        # Options equal to their defaults are dropped so equal tapers compare and print equal.
        kept = tuple(sorted((k, float(v)) for k, v in opts.items()
                            if k == "m" or not _same(v, curve.defaults.get(k))))
        object.__setattr__(self, "options", kept)
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        try:
            curve.validate(self.start, self.end, **self.curve_options)
        except ValueError as e:
            raise InputError(f"{where}: {e}") from None

    @property
    def curve_options(self) -> dict[str, float]:
        return {k: v for k, v in self.options if k != "m"}

    @property
    def multiple(self) -> int | None:
        m = dict(self.options).get("m")
        return None if m is None else int(m)

    @property
    def is_uniform(self) -> bool:
        return self.curve == "uniform"

    def ratios(self, n_layers: int) -> np.ndarray:
        """Nominal (un-rounded, un-normalised) ratio per layer."""
        if self.curve == "list":
            if len(self.values) != n_layers:
                raise InputError(f"taper {self.dim}: the list has {len(self.values)} ratios but the "
                                 f"model has n_layers={n_layers}")
            return np.array(self.values, dtype=np.float64)
        out = get_curve(self.curve).ratios(depth_grid(n_layers), self.start, self.end,
                                           **self.curve_options)
        out = np.asarray(out, dtype=np.float64)
        if out.shape != (n_layers,) or not np.all(np.isfinite(out)) or np.any(out <= 0):
            raise InputError(f"taper {self.dim}: curve {self.curve!r} gave invalid ratios {out}")
        return out

    def direction(self, n_layers: int) -> int:
        """-1 non-increasing, +1 non-decreasing, 0 unconstrained: rounding keeps this order."""
        r = self.ratios(n_layers)
        if self.curve == "list":
            monotone = True
        else:
            monotone = get_curve(self.curve).is_monotone(self.start, self.end, **self.curve_options)
        if not monotone:
            return 0
        d = np.diff(r)
        if np.all(d <= 1e-12):
            return -1
        if np.all(d >= -1e-12):
            return 1
        return 0

    def __str__(self) -> str:
        parts = [self.dim, self.curve]
        if self.curve == "list":
            parts.append(",".join(format_number(v) for v in self.values))
        elif self.curve != "uniform":
            parts += [format_number(self.start), format_number(self.end)]
        parts += [f"{k}={format_number(v)}" for k, v in self.options]
        return ":".join(parts)


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return False
    return a == b or (math.isnan(a) and math.isnan(b))


@dataclass(frozen=True)
class Taper:
    """A taper over one or more dimensions; dimensions not named stay uniform."""

    dims: tuple[DimTaper, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        seen = [d.dim for d in self.dims]
        for dim in DIMS:
            if seen.count(dim) > 1:
                raise InputError(f"taper names dim {dim!r} more than once")
        ordered = tuple(sorted((d for d in self.dims if not d.is_uniform), key=lambda d: DIMS.index(d.dim)))
        object.__setattr__(self, "dims", ordered)

    @classmethod
    def parse(cls, text: str) -> "Taper":
        if not isinstance(text, str):
            raise InputError(f"taper must be text, got {type(text).__name__}")
        text = text.strip()
        if text in ("", "uniform"):
            return cls()
        if len(text) > MAX_TEXT:  # a per-layer list of 10,000 layers fits; the message stays one short line
            raise InputError(f"taper: {len(text):,} characters, over the {MAX_TEXT:,} a taper may have "
                             f"(starts {text[:40]!r})")
        shown = text if len(text) <= 100 else text[:80] + "..."  # messages quote it: one short line
        return cls(tuple(_parse_segment(seg.strip(), shown) for seg in text.split("+")))

    @classmethod
    def coerce(cls, value: "Taper | str | None") -> "Taper":
        if value is None:
            return cls()
        return value if isinstance(value, Taper) else cls.parse(value)

    def get(self, dim: str) -> DimTaper:
        for d in self.dims:
            if d.dim == dim:
                return d
        return DimTaper(dim)

    @property
    def is_uniform(self) -> bool:
        return not self.dims

    def widths_only(self) -> "Taper":
        """The taper without its `lr` dimension: what a budget is solved over."""
        return Taper(tuple(d for d in self.dims if d.dim in WIDTH_DIMS))

    def __str__(self) -> str:
        return "+".join(str(d) for d in self.dims) if self.dims else "uniform"


def _parse_segment(seg: str, whole: str) -> DimTaper:
    usage = "expected DIM:CURVE:START:END[:KEY=VALUE...]"
    tokens = [t.strip() for t in seg.split(":")]
    if len(tokens) < 2 or not all(tokens):
        raise InputError(f"taper {whole!r}: malformed segment {seg[:80]!r} ({usage})")
    dim, curve = tokens[0], tokens[1]
    if dim not in DIMS:
        raise InputError(f"taper {whole!r}: unknown dim {dim!r}; known: {', '.join(DIMS)}")
    get_curve(curve)
    rest = tokens[2:]
    values: tuple[float, ...] = ()
    start = end = 1.0
    if curve == "list":
        if not rest or "=" in rest[0]:
            raise InputError(f"taper {whole!r}: the list curve needs ratios, e.g. {dim}:list:1.5,1,0.5")
        values = tuple(_parse_number(v, f"taper {dim} list ratio") for v in rest[0].split(","))
        rest = rest[1:]
    elif curve != "uniform":
        if len(rest) < 2 or "=" in rest[0] or "=" in rest[1]:
            raise InputError(f"taper {whole!r}: segment {seg!r} needs START and END ({usage})")
        start = _parse_number(rest[0], f"taper {dim}.start")
        end = _parse_number(rest[1], f"taper {dim}.end")
        rest = rest[2:]
    options = []
    for item in rest:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InputError(f"taper {whole!r}: option {item!r} must be KEY=VALUE")
        options.append((key.strip(), _parse_number(value.strip(), f"taper {dim}.{key.strip()}")))
    keys = [k for k, _ in options]
    if len(set(keys)) != len(keys):
        raise InputError(f"taper {whole!r}: option repeated in {seg!r}")
    return DimTaper(dim, curve, start, end, values, tuple(options))


def discretise(target: np.ndarray, *, total_units: int, direction: int = 0) -> np.ndarray:
    """Round real per-layer widths, in units of the rounding multiple, to integers.

    The result sums to `total_units` exactly, is at least 1 everywhere, and keeps the order
    of `target` where `direction` asks for it (-1 non-increasing, +1 non-decreasing).
    Largest remainders get the spare units; ties go to the layer that keeps the order.
    """
    u = np.asarray(target, dtype=np.float64).copy()
    n = len(u)
    if total_units < n:
        raise InputError(f"cannot give {n} layers at least one multiple each from {total_units} units")
    u *= total_units / u.sum()
    # Water-fill the minimum: layers under one unit are pinned at one, the rest rescaled.
    for _ in range(n):
        low = u < 1.0
        if not low.any():
            break
        free = ~low & (u > 1.0)
        spare = total_units - low.sum() - u[~low & ~free].sum()
        u[low] = 1.0
        if free.any():
            u[free] *= spare / u[free].sum()
    units = np.floor(u + 1e-9).astype(np.int64)
    units = np.maximum(units, 1)
    frac = u - units
    rem = int(total_units - units.sum())
    idx = np.arange(n)
    tie = -idx if direction <= 0 else idx  # prefer earlier layers unless the taper grows
    if rem > 0:
        order = np.lexsort((-tie, -u, -frac))  # largest remainder, then larger width, then tie
        units[order[:rem]] += 1
    elif rem < 0:
        order = np.lexsort((tie, u, frac))
        order = [i for i in order if units[i] > 1]
        units[order[:-rem]] -= 1
    return units
