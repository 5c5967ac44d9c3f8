"""Paired statistics over seeds: every command that compares on seeds calls this module.

Tapers are compared on paired seeds (same batches, same initial weights where shapes
agree), so the per-seed differences d_i = metric(taper, seed i) - metric(uniform, seed i)
carry the taper's effect without most of the seed noise. With n seeds:
- the interval at level 1 - a is mean +- t(1 - a/2, n - 1) * sd / sqrt(n); one seed, none;
- the two-sided p-value is the one-sample t-test of the d_i against 0;
- the minimum detectable effect (MDE) at level a and power 1 - b is the smallest true
  mean difference that the two-sided paired t-test detects with probability 1 - b, from the
  noncentral t distribution (Cohen 1988, ch. 2): P(|T| > t(1 - a/2, n - 1)) = 1 - b with
  T ~ nct(n - 1, MDE * sqrt(n) / sd);
- Holm's step-down procedure (Holm 1979) controls the family-wise error over m candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from autotaper.errors import InputError

ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Paired:
    n: int
    mean: float
    sd: float | None
    se: float | None
    ci95: tuple[float, float] | None
    p: float | None = None  # two-sided t-test of the mean difference against 0

    @property
    def significant(self) -> bool:
        """True when the 95% interval excludes zero."""
        return self.ci95 is not None and (self.ci95[1] < 0 or self.ci95[0] > 0)

    def interval(self, level: float = 0.95) -> tuple[float, float] | None:
        if self.se is None:
            return None
        half = t_quantile(0.5 + level / 2, self.n - 1) * self.se
        return (self.mean - half, self.mean + half)

    def to_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "se": self.se,
                "ci95": list(self.ci95) if self.ci95 else None, "p": self.p}


def t_quantile(q: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(q, dof))


def paired_stats(differences: Sequence[float]) -> Paired:
    d = [float(x) for x in differences]
    n = len(d)
    if n == 0:
        raise InputError("paired statistics need at least one difference")
    mean = sum(d) / n
    if n == 1:
        return Paired(1, mean, None, None, None)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    se = sd / math.sqrt(n)
    half = t_quantile(0.975, n - 1) * se
    if se > 0:
        from scipy.stats import t

        p = float(2 * t.sf(abs(mean) / se, n - 1))
    else:  # every seed gave the same difference: certain, unless that difference is 0
        p = 1.0 if mean == 0 else 0.0
    return Paired(n, mean, sd, se, (mean - half, mean + half), p)


def power(effect: float, sd: float, n: int, *, alpha: float = ALPHA) -> float:
    """Probability that the two-sided paired t-test at level alpha detects a true mean
    difference `effect` with per-seed difference SD `sd` over n seeds."""
    from scipy.stats import nct, t

    if n < 2:
        return 0.0
    crit = t.ppf(1 - alpha / 2, n - 1)
    nc = abs(effect) * math.sqrt(n) / sd if sd > 0 else math.inf
    if math.isinf(nc):
        return 1.0 if effect else alpha
    upper = float(nct.sf(crit, n - 1, nc))
    lower = float(nct.cdf(-crit, n - 1, nc))  # the wrong-sign tail: tiny for large nc, where scipy can give NaN
    return min(1.0, upper + (lower if math.isfinite(lower) else 0.0))


def mde(sd: float | None, n: int, *, alpha: float = ALPHA, target_power: float = POWER) -> float | None:
    """Minimum detectable effect (same unit as `sd`) of the paired t-test over n seeds;
    None without an SD or with fewer than 2 seeds."""
    from scipy.optimize import brentq

    if sd is None or n < 2 or not math.isfinite(sd):
        return None
    if sd == 0:
        return 0.0
    hi = sd
    while power(hi, sd, n, alpha=alpha) < target_power:
        hi *= 2
    return float(brentq(lambda e: power(e, sd, n, alpha=alpha) - target_power, 0.0, hi, xtol=sd * 1e-6))


def seeds_for_mde(sd: float | None, target: float, *, alpha: float = ALPHA, target_power: float = POWER,
                  limit: int = 10_000) -> int | None:
    """Fewest paired seeds whose MDE is at most `target`; None when sd is unknown or more
    than `limit` seeds would be needed."""
    if target <= 0:
        raise InputError(f"target MDE must be > 0, got {target!r}")
    if sd is None:
        return None
    if sd == 0:
        return 2
    lo, hi = 2, 2
    while mde(sd, hi, alpha=alpha, target_power=target_power) > target:
        lo, hi = hi, hi * 2
        if hi > limit:
            return None
    while lo < hi:  # MDE falls monotonically with n
        mid = (lo + hi) // 2
        if mde(sd, mid, alpha=alpha, target_power=target_power) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def holm(pvalues: Sequence[float], *, alpha: float = ALPHA) -> tuple[list[float], list[bool]]:
    """Holm's step-down correction: (adjusted p-values, rejected) in the input's order.
    The family-wise error rate over all m hypotheses is at most alpha."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted, [a <= alpha for a in adjusted]
