"""Proxy fidelity: do two scales rank the same tapers the same way?

Input per scale: each probe taper's per-seed paired deltas against uniform (taper minus
uniform, on the same fresh seeds; uniform itself is a probe member with deltas of 0). From
the mean deltas:
- Spearman's rho and Kendall's tau-b (scipy.stats) between the two scales' means;
- their 95% intervals by a paired-seed bootstrap: each scale's seeds are resampled with
  replacement (whole seeds, so a seed's deltas stay together, as the pairing requires), the
  means and both coefficients recomputed, and the 2.5% and 97.5% percentiles taken. The two
  scales trained independent models, so they are resampled independently;
- sign agreement of the effects (taper tapers only): the share whose means have the same
  sign at both scales, and the counts that agree or disagree *beyond noise* (both 95%
  intervals exclude zero).
A fidelity whose interval includes 0 means this ladder cannot tell whether the smaller scale
ranks tapers like the larger one: `Fidelity.text` says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

from autotaper.errors import InputError

UNIFORM = "uniform"


@dataclass(frozen=True)
class Fidelity:
    a: str
    b: str
    tapers: list[str]
    spearman: float | None
    spearman_ci95: tuple[float, float] | None
    kendall: float | None
    kendall_ci95: tuple[float, float] | None
    sign_agree: int  # non-uniform tapers whose effects have the same sign at both scales
    sign_total: int
    agree_beyond_noise: int
    disagree_beyond_noise: int
    bootstrap: int
    seeds: int = 0  # the fewer of the two scales' seed counts

    @property
    def includes_zero(self) -> bool:
        """The Spearman interval includes 0 (or there is none): no evidence the scales agree."""
        return self.spearman_ci95 is None or self.spearman_ci95[0] <= 0 <= self.spearman_ci95[1]

    @property
    def text(self) -> str:
        def coef(v, ci):
            if v is None:
                return "n/a"
            return f"{v:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")

        out = (f"{self.a} -> {self.b} ({len(self.tapers)} probe tapers): Spearman {coef(self.spearman, self.spearman_ci95)}, "
               f"Kendall {coef(self.kendall, self.kendall_ci95)}; effect signs agree {self.sign_agree}/{self.sign_total} "
               f"({self.agree_beyond_noise} agree, {self.disagree_beyond_noise} disagree beyond noise)")
        if self.seeds < 4:
            out += f"; only {self.seeds} seeds: a bootstrap this small understates the uncertainty"
        if self.includes_zero:
            out += "; the interval includes 0: no evidence that the smaller scale ranks tapers like the larger"
        return out

    def to_dict(self) -> dict:
        return {**asdict(self), "includes_zero": self.includes_zero, "text": self.text}


def rank_correlations(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, float | None]:
    """(Spearman's rho, Kendall's tau-b); None where undefined (fewer than 3 values, or one
    side constant)."""
    from scipy.stats import kendalltau, spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, None
    rho = float(spearmanr(x, y).statistic)
    tau = float(kendalltau(x, y).statistic)
    return (None if math.isnan(rho) else rho), (None if math.isnan(tau) else tau)


def _ci95(deltas: Sequence[float]) -> tuple[float, float] | None:
    from autotaper.stats import paired_stats

    return paired_stats(deltas).ci95 if len(deltas) >= 2 else None


def fidelity(a: str, deltas_a: Mapping[str, Sequence[float]], b: str, deltas_b: Mapping[str, Sequence[float]], *,
             n_boot: int = 2000, seed: int = 0) -> Fidelity:
    """Rank agreement of the tapers measured at both scales (`deltas_x[taper]`: per-seed paired
    deltas; every taper of one scale on the same seeds). Uniform is added with deltas 0."""
    tapers = [t for t in deltas_a if t in deltas_b and t != UNIFORM]
    names = [UNIFORM] + tapers
    na = {len(deltas_a[t]) for t in tapers} or {1}
    nb = {len(deltas_b[t]) for t in tapers} or {1}
    if len(na) != 1 or len(nb) != 1:
        raise InputError("fidelity: every taper of a scale needs the same seeds")
    A = np.array([[0.0] * na.pop()] + [list(deltas_a[t]) for t in tapers])  # tapers x seeds
    B = np.array([[0.0] * nb.pop()] + [list(deltas_b[t]) for t in tapers])
    rho, tau = rank_correlations(A.mean(1), B.mean(1))
    rho_ci = tau_ci = None
    if rho is not None and A.shape[1] >= 2 and B.shape[1] >= 2 and n_boot > 0:
        rng = np.random.default_rng(seed)
        rhos, taus = [], []
        for _ in range(n_boot):
            ia = rng.integers(0, A.shape[1], A.shape[1])
            ib = rng.integers(0, B.shape[1], B.shape[1])
            r, k = rank_correlations(A[:, ia].mean(1), B[:, ib].mean(1))
            if r is not None:
                rhos.append(r)
                taus.append(k)
        if rhos:
            rho_ci = tuple(float(v) for v in np.percentile(rhos, [2.5, 97.5]))
            tau_ci = tuple(float(v) for v in np.percentile(taus, [2.5, 97.5]))
    agree = disagree = same = 0
    for t in tapers:
        ma, mb = float(np.mean(deltas_a[t])), float(np.mean(deltas_b[t]))
        same += (ma > 0) == (mb > 0) and ma != 0 and mb != 0
        ca, cb = _ci95(deltas_a[t]), _ci95(deltas_b[t])
        if ca and cb and not (ca[0] <= 0 <= ca[1]) and not (cb[0] <= 0 <= cb[1]):
            if (ma > 0) == (mb > 0):
                agree += 1
            else:
                disagree += 1
    return Fidelity(a, b, names, rho, rho_ci, tau, tau_ci, int(same), len(tapers), agree, disagree, n_boot,
                    min(A.shape[1], B.shape[1]))
