"""Solve a taper to the uniform baseline's parameter and/or FLOP budget.

1. Each tapered dimension's nominal ratios are rescaled to mean 1 (curves that are not
   symmetric about the middle layer, asymmetric start/end pairs, explicit lists).
2. One common scale alpha is found by bisection on the continuous widths so the chosen
   total (params, or FLOPs for constraint="flops") equals the baseline's. Alpha is 1 when
   the cost is linear in the tapered widths (ffn alone, heads alone); it moves for embed
   tapers (the stream, and so the embedding, is as wide as the widest layer) and for
   combined dimensions (d * f terms).
3. Widths are rounded to their multiple, keeping the continuous sum, at least one
   multiple per layer, and the curve's order (`taper.discretise`).
4. A greedy repair moves single units, or pairs of units (one up, one down), between
   layers and dimensions while it lowers the remaining error and keeps the order. For a
   single dimension whose curve keeps the mean steps 3-4 are exact: the sum of widths, and
   with it every count linear in them, equals the baseline's.
5. Budgets first: when the default rounding multiples miss the tolerance, steps 3-4 run
   again with every defaulted multiple halved, down to `MIN_MULTIPLE` (widths) or one GQA
   group (heads); `Solution.multiples` says which were used. A multiple the taper names
   (`m=`) is never changed.
The result must be within `tolerance` (relative) on each constrained total, or the error
says which constraint fails and by how much.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from autotaper.cost import Cost, count, head_flops, layer_flops
from autotaper.errors import InputError
from autotaper.families import get_family
from autotaper.spec import ModelSpec
from autotaper.taper import DIMS, DimTaper, Taper, discretise, format_number

CONSTRAINTS = ("params", "flops", "both")
MIN_MULTIPLE = 8  # the finest width multiple tried for ffn and embed (tensor-core friendly)


@dataclass(frozen=True)
class Solution:
    spec: ModelSpec
    baseline: ModelSpec
    cost: Cost
    baseline_cost: Cost
    nominal: dict[str, tuple[float, ...]] = field(default_factory=dict)
    realised: dict[str, tuple[float, ...]] = field(default_factory=dict)
    multiples: dict[str, int] = field(default_factory=dict)  # rounding multiple used per dim
    default_multiples: dict[str, int] = field(default_factory=dict)  # what the defaults were

    @property
    def finer(self) -> dict[str, int]:
        """Dims rounded to a finer multiple than their default to meet the budget."""
        return {d: m for d, m in self.multiples.items() if m != self.default_multiples.get(d, m)}

    @property
    def params_delta(self) -> int:
        return self.cost.params - self.baseline_cost.params

    @property
    def flops_delta(self) -> float:
        return self.cost.flops_per_token - self.baseline_cost.flops_per_token


def default_multiple(dim: str, spec: ModelSpec) -> int:
    if dim == "ffn":
        return 16
    if dim == "heads":
        return spec.group_size
    # 64 keeps large models' matmuls aligned; small proxies need finer steps to hit budgets.
    return math.gcd(spec.d_model, 64 if spec.d_model >= 512 else 16)


def _base(dim: str, spec: ModelSpec) -> int:
    return {"ffn": spec.ffn_width, "heads": spec.n_heads, "embed": spec.d_model}[dim]


class _Problem:
    """Continuous and integer cost evaluation for one (baseline, taper) pair."""

    def __init__(self, baseline: ModelSpec, taper: Taper, constraint: str):
        self.baseline = baseline
        self.family = get_family(baseline.family)
        self.constraint = constraint
        self.target = count(baseline)
        L = baseline.n_layers
        self.dims: list[DimTaper] = list(taper.dims)
        self.multiple: dict[str, int] = {}
        self.nominal: dict[str, np.ndarray] = {}
        self.shape: dict[str, np.ndarray] = {}
        self.direction: dict[str, int] = {}
        for dt in self.dims:
            m = dt.multiple or default_multiple(dt.dim, baseline)
            if dt.dim == "heads" and m % baseline.group_size:
                raise InputError(f"taper heads.m must be a multiple of the GQA group size "
                                 f"{baseline.group_size}, got {m}")
            self.multiple[dt.dim] = m
            r = dt.ratios(L)
            self.nominal[dt.dim] = r
            self.shape[dt.dim] = r / r.mean()
            self.direction[dt.dim] = dt.direction(L)

    # Widths for every dim as float arrays, tapered dims from `tapered`, the rest uniform.
    def widths(self, tapered: dict[str, np.ndarray]):
        b, L = self.baseline, self.baseline.n_layers
        get = lambda dim: np.asarray(tapered.get(dim, np.full(L, float(_base(dim, b)))), dtype=np.float64)  # noqa: E731
        d, h, f = get("embed"), get("heads"), get("ffn")
        kv = h / b.group_size
        return d, h, kv, f

    def totals(self, tapered: dict[str, np.ndarray]) -> tuple[float, float]:
        b, fam = self.baseline, self.family
        d, h, kv, f = self.widths(tapered)
        ds = float(d.max())
        layer_p = fam.layer_params(d, h, kv, b.head_dim, f).sum()
        stream = fam.stream_params(_Stream(b, ds))
        params = float(layer_p + sum(stream.values()))
        flops = float(layer_flops(fam, d, h, kv, b.head_dim, f, b.context_length).sum() + head_flops(b.vocab_size, ds))
        return params, flops

    def error(self, params, flops):
        """Relative distance of (params, flops) totals from the budget; arrays broadcast."""
        ep = np.abs(params - self.target.params) / self.target.params
        ef = np.abs(flops - self.target.flops_per_token) / self.target.flops_per_token
        return {"params": ep, "flops": ef, "both": ep + ef}[self.constraint]

    def continuous(self, alpha: float) -> dict[str, np.ndarray]:
        return {dim: alpha * s * _base(dim, self.baseline) for dim, s in self.shape.items()}

    def solve_alpha(self) -> float:
        key = 1 if self.constraint == "flops" else 0
        goal = (self.target.params, self.target.flops_per_token)[key]
        total = lambda a: self.totals(self.continuous(a))[key]  # noqa: E731
        lo, hi = 1e-3, 1.0
        while total(hi) < goal and hi < 1e6:
            hi *= 2
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if total(mid) < goal:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-15:
                break
        return 0.5 * (lo + hi)


class _Stream:
    """Just enough of a spec for Family.stream_params at a fractional stream width."""

    def __init__(self, spec: ModelSpec, d_stream: float):
        self.vocab_size, self.context_length = spec.vocab_size, spec.context_length
        self.tie_embeddings, self.d_stream = spec.tie_embeddings, d_stream


def _ordered(units: np.ndarray, direction: int) -> bool:
    if direction == 0:
        return True
    diff = np.diff(units)
    return bool(np.all(diff <= 0)) if direction < 0 else bool(np.all(diff >= 0))


def _repair(problem: _Problem, units: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Greedy single and paired unit moves that lower the budget error and keep order."""
    dims = list(units)
    L = problem.baseline.n_layers
    widths = lambda u: {d: u[d] * problem.multiple[d] for d in dims}  # noqa: E731
    moves = [(d, l, s) for d in dims for l in range(L) for s in (1, -1)]

    def moved(*steps):
        u = {k: v.copy() for k, v in units.items()}
        for d, l, s in steps:
            u[d][l] += s
        ok = all(u[d].min() >= 1 and _ordered(u[d], problem.direction[d]) for d, _, _ in steps)
        return u, ok

    current = problem.error(*problem.totals(widths(units)))
    for _ in range(4 * L * len(dims) + 16):
        if current == 0:
            break
        p_now, f_now = problem.totals(widths(units))
        deltas, best = [], (math.inf, ())
        for move in moves:
            u, ok = moved(move)
            p, f = problem.totals(widths(u))
            deltas.append((p - p_now, f - f_now))
            if ok and problem.error(p, f) < best[0]:
                best = (problem.error(p, f), (move,))
        # Pairs (one unit up, one down): ranked on summed single deltas, checked exactly.
        dp, df = (np.array(x) for x in zip(*deltas))
        approx = problem.error(p_now + dp[:, None] + dp[None, :], f_now + df[:, None] + df[None, :])
        for flat in np.argsort(approx, axis=None)[:64]:
            i, j = divmod(int(flat), len(moves))
            if moves[i][2] == moves[j][2] or approx.flat[flat] >= best[0]:
                continue
            u, ok = moved(moves[i], moves[j])
            if ok:
                err = problem.error(*problem.totals(widths(u)))
                if err < best[0]:
                    best = (err, (moves[i], moves[j]))
        if not best[1] or best[0] >= current:
            break
        units, _ = moved(*best[1])
        current = best[0]
    return units


def solve_report(baseline: ModelSpec, taper: Taper | str, *, constraint: str = "params",
                 tolerance: float = 1e-3) -> Solution:
    """Like `solve`, with the costs and the nominal and realised ratios per dimension."""
    if constraint not in CONSTRAINTS:
        raise InputError(f"constraint must be one of {', '.join(CONSTRAINTS)}, got {constraint!r}")
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise InputError(f"tolerance must be a number >= 0, got {tolerance!r}")
    whole = Taper.coerce(taper)
    base = baseline.uniform()
    sol = _solve_widths(base, whole.widths_only(), constraint, tolerance)
    lr = whole.get("lr")
    if lr.is_uniform:
        return sol
    # The lr dimension costs nothing: its ratios multiply each layer's LR as they are.
    ratios = lr.ratios(base.n_layers)
    spec = dataclasses.replace(sol.spec, taper=str(whole), layer_lr=tuple(float(r) for r in ratios))
    return dataclasses.replace(sol, spec=spec, nominal={**sol.nominal, "lr": tuple(float(r) for r in ratios)},
                               realised={**sol.realised, "lr": tuple(float(r) for r in ratios)})


def _solve_widths(base: ModelSpec, taper: Taper, constraint: str, tolerance: float) -> Solution:
    base_cost = count(base)
    if taper.is_uniform:
        return Solution(base, base, base_cost, base_cost)
    problem = _Problem(base, taper, constraint)
    alpha = problem.solve_alpha()
    cont = problem.continuous(alpha)
    defaults = dict(problem.multiple)
    named = {dt.dim for dt in taper.dims if dt.multiple is not None}
    checks = {"params": [("params", lambda c: c.params)],
              "flops": [("flops_per_token", lambda c: c.flops_per_token)]}
    checks["both"] = checks["params"] + checks["flops"]
    shape_error, miss = None, None
    ladder = list(_multiple_ladder(defaults, named, base))
    for multiples in ladder:
        problem.multiple = multiples
        try:
            lists = _round(problem, cont)
        except ValueError as e:  # too few units per layer at this multiple
            shape_error = shape_error or e
            continue
        spec = _apply(base, taper, lists)
        cost = count(spec)
        misses = [(name, get(cost), get(base_cost)) for name, get in checks[constraint]
                  if abs(get(cost) - get(base_cost)) > tolerance * get(base_cost)]
        if not misses:
            break
        miss = misses[0]
    else:
        if miss is None:
            raise shape_error
        name, got, want = miss
        tried = "/".join(str(m) for m in sorted({m for ms in ladder for m in ms.values()}, reverse=True))
        raise InputError(
            f"taper {taper}: cannot meet the {name} budget: {format_number(float(got))} vs "
            f"baseline {format_number(float(want))} ({(got - want) / want:+.4%}), over tolerance "
            f"{format_number(tolerance)} at rounding multiples {tried}; loosen tolerance or "
            f"name a finer multiple (m=)")
    realised = {dim: tuple(float(v) / _base(dim, base) for v in lists[dim]) for dim in lists}
    nominal = {dim: tuple(float(v) for v in problem.nominal[dim]) for dim in lists}
    return Solution(spec, base, cost, base_cost, nominal, realised, dict(problem.multiple), defaults)


def _multiple_ladder(defaults: dict[str, int], named: set[str], base: ModelSpec):
    """The defaulted multiples, then each halved (to its floor) until none can be."""
    current = dict(defaults)
    yield dict(current)
    while True:
        nxt = {}
        for dim, m in current.items():
            floor = base.group_size if dim == "heads" else min(MIN_MULTIPLE, defaults[dim])
            half = m // 2
            ok = dim not in named and half >= floor and m % 2 == 0 and (dim != "heads" or half % base.group_size == 0)
            nxt[dim] = half if ok else m
        if nxt == current:
            return
        current = nxt
        yield dict(current)


def _round(problem: _Problem, cont: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Integer widths at the problem's multiples (steps 3-4 of the module docstring)."""
    base = problem.baseline
    units = {}
    for dim, w in cont.items():
        m = problem.multiple[dim]
        total = int(round(w.sum() / m))
        L = base.n_layers
        if total < L:
            need = L * m
            raise InputError(
                f"taper {dim}: the {problem.constraint} budget leaves {w.sum():.0f} "
                f"{dim} width over {L} layers, under the minimum of one multiple ({m}) per "
                f"layer ({need}); lower the rounding multiple or the taper's strength")
        units[dim] = discretise(w / m, total_units=total, direction=problem.direction[dim])
    units = _repair(problem, units)
    return {dim: units[dim] * problem.multiple[dim] for dim in units}


def _apply(base: ModelSpec, taper: Taper, lists: dict[str, np.ndarray]) -> ModelSpec:
    overrides = {"taper": str(taper)}
    if "ffn" in lists:
        overrides["layer_ffn"] = tuple(int(v) for v in lists["ffn"])
    if "heads" in lists:
        overrides["layer_heads"] = tuple(int(v) for v in lists["heads"])
        overrides["layer_kv_heads"] = tuple(int(v) // base.group_size for v in lists["heads"])
    if "embed" in lists:
        overrides["layer_d_model"] = tuple(int(v) for v in lists["embed"])
    return dataclasses.replace(base, **overrides)


def solve(baseline: ModelSpec, taper: Taper | str, *, constraint: str = "params",
          tolerance: float = 1e-3) -> ModelSpec:
    """The tapered spec whose totals match the uniform `baseline` (see the module docstring).

    `constraint` is "params", "flops" or "both"; `tolerance` the largest relative error
    allowed on each constrained total when an exact match is impossible.
    """
    return solve_report(baseline, taper, constraint=constraint, tolerance=tolerance).spec


def check_taper(spec: ModelSpec, where: str = "spec") -> None:
    """ValueError when `spec`'s taper text does not give its per-layer lists under any budget
    constraint: a spec file edited by hand (its lists or its text), which would train one model
    and report another. Specs whose taper text is not a taper (a custom spec) pass."""
    try:
        taper = Taper.coerce(spec.taper)
    except ValueError:
        return
    lists = ("layer_ffn", "layer_heads", "layer_kv_heads", "layer_d_model", "layer_lr")
    solved = None
    for constraint in CONSTRAINTS:
        try:
            solved = solve(spec.uniform(), taper, constraint=constraint)
        except ValueError:
            continue
        if all(getattr(solved, k) == getattr(spec, k) for k in lists):
            return
    if solved is None:
        raise InputError(f"{where}: taper {spec.taper!r} cannot be solved for its own shape")
    wrong = next(k for k in lists if getattr(solved, k) != getattr(spec, k))
    raise InputError(f"{where}: taper {spec.taper!r} does not give the file's per-layer lists ({wrong} "
                     f"{list(getattr(spec, wrong))} in the file, {list(getattr(solved, wrong))} from the taper); "
                     "fix the text or the lists, or write the file again with `autotaper plan --out`")


__all__ = ["CONSTRAINTS", "DIMS", "Solution", "check_taper", "solve", "solve_report", "default_multiple"]
