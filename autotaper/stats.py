"""Paired statistics over seeds: the mean difference, its standard error and a t interval.

Tapers are compared on paired seeds (same batches, same initial weights where shapes
agree), so the per-seed differences d_i = metric(taper, seed i) - metric(uniform, seed i)
carry the taper's effect without most of the seed noise. With n seeds the 95% interval is
mean +- t(0.975, n - 1) * sd / sqrt(n); with one seed there is no interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Paired:
    n: int
    mean: float
    sd: float | None
    se: float | None
    ci95: tuple[float, float] | None

    @property
    def significant(self) -> bool:
        """True when the 95% interval excludes zero."""
        return self.ci95 is not None and (self.ci95[1] < 0 or self.ci95[0] > 0)

    def to_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "se": self.se,
                "ci95": list(self.ci95) if self.ci95 else None}


def t_quantile(q: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(q, dof))


def paired(differences: Sequence[float]) -> Paired:
    d = [float(x) for x in differences]
    n = len(d)
    if n == 0:
        raise ValueError("paired statistics need at least one difference")
    mean = sum(d) / n
    if n == 1:
        return Paired(1, mean, None, None, None)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    se = sd / math.sqrt(n)
    half = t_quantile(0.975, n - 1) * se
    return Paired(n, mean, sd, se, (mean - half, mean + half))
