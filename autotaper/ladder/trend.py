"""The trend across scales: how the best taper's knobs and its effect move with scale, and
what they predict at a target.

Per rung the ladder measured a probe set on fresh paired seeds. From it, per rung:
- the **best** probe taper (lowest mean delta; uniform counts, at 0) and a knob's value
  there (e.g. ffn strength); its standard error is the SD of the best taper's knob over a
  paired-seed bootstrap (seeds resampled, the best taper picked again each time), floored
  at `RESOLUTION`, since a probe set is a handful of tapers and the true optimum lies
  between them;
- the best **effect** (the lowest mean delta) with the larger of the bootstrap SD of that
  minimum (which includes the selection among the probe tapers) and the best taper's own
  paired standard error as its standard error.
Both standard errors come from a few seeds, so they are themselves uncertain: each is
multiplied by t(0.975, n - 1) / z(0.975) (6.5 at 2 seeds, 1.6 at 4, 1.3 at 6), so that the
normal-quantile intervals below are as wide as the t-intervals the seeds justify.

A knob is then fitted against the rungs' scale axes by weighted least squares
(scikit-learn's LinearRegression with weights 1/se^2): log10(params) always, and the number
of layers and log10(tokens per parameter) when the rungs vary them and there are rungs
enough to fit them (an axis that would leave the fit singular or under-determined is left
out, and the fit says so). Coefficient covariance is (X' W X)^-1, scaled by the reduced
chi-square when it exceeds 1 and there are residual degrees of freedom (the rungs scatter
more than their errors say); then the interval at a new point adds that extra scatter, so
it is a prediction interval for the value at the new scale, not only for the fitted line.
A trend is *detectable* when some axis's 95% slope interval excludes 0; when none does,
the prediction assuming no trend (the weighted mean) is given beside the extrapolation,
and the text says plainly that no trend was detected. With as many coefficients as rungs
there are no residual degrees of freedom: the intervals then carry measurement error only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from autotaper.errors import InputError

AXES = ("log10_params", "n_layers", "log10_tokens_per_param")
RESOLUTION = 0.025  # smallest bootstrap SD of a rung's best knob (the probe set is discrete)
N_BOOT = 2000


def features(point: Mapping[str, Any]) -> dict[str, float]:
    return {"log10_params": math.log10(point["params"]), "n_layers": float(point["n_layers"]),
            "log10_tokens_per_param": math.log10(point["tokens_per_param"])}


def _quantile(dof: int, scaled: bool) -> float:
    from scipy.stats import norm, t

    return float(t.ppf(0.975, dof)) if scaled and dof > 0 else float(norm.ppf(0.975))


@dataclass
class TrendFit:
    quantity: str
    axes: list[str]
    coef: list[float]  # intercept first, then one per axis
    cov: list[list[float]]
    dof: int
    chi2_ratio: float | None  # reduced chi-square (dof > 0)
    scatter: float  # SD of the rungs around the line beyond their errors (0 when within them)
    dropped: list[str] = field(default_factory=list)  # axes that vary but could not be fitted
    const: tuple[float, float] = (0.0, 0.0)  # weighted mean and its standard error (no-trend model)

    @property
    def scaled(self) -> bool:
        return self.chi2_ratio is not None and self.chi2_ratio > 1

    def slopes(self) -> dict[str, tuple[float, float, float]]:
        q = _quantile(self.dof, self.scaled)
        return {a: (self.coef[i + 1], self.coef[i + 1] - q * math.sqrt(self.cov[i + 1][i + 1]),
                    self.coef[i + 1] + q * math.sqrt(self.cov[i + 1][i + 1])) for i, a in enumerate(self.axes)}

    @property
    def detectable(self) -> bool:
        return any(lo > 0 or hi < 0 for _, lo, hi in self.slopes().values())

    def predict(self, feats: Mapping[str, float]) -> tuple[float, float, float]:
        """The fitted value at `feats` with its 95% prediction interval."""
        x = np.array([1.0] + [feats[a] for a in self.axes])
        mean = float(x @ np.array(self.coef))
        sd = math.sqrt(float(x @ np.array(self.cov) @ x) + self.scatter ** 2)
        q = _quantile(self.dof, self.scaled)
        return mean, mean - q * sd, mean + q * sd

    def predict_constant(self) -> tuple[float, float, float]:
        """The no-trend prediction: the weighted mean of the rungs, with its 95% interval."""
        m, se = self.const
        sd = math.sqrt(se ** 2 + self.scatter ** 2)
        q = _quantile(self.dof + len(self.axes), self.scaled)
        return m, m - q * sd, m + q * sd

    def to_dict(self) -> dict[str, Any]:
        return {"quantity": self.quantity, "axes": self.axes, "coef": self.coef, "cov": self.cov, "dof": self.dof,
                "chi2_ratio": self.chi2_ratio, "scatter": self.scatter, "dropped": self.dropped,
                "slopes": {a: list(v) for a, v in self.slopes().items()}, "detectable": self.detectable,
                "constant": list(self.predict_constant())}


def fit_trend(points: Sequence[Mapping[str, Any]], y: Sequence[float], se: Sequence[float], *,
              quantity: str = "", axes: Sequence[str] | None = None) -> TrendFit:
    """Weighted least-squares fit of `y` (standard errors `se`) against the points' scale axes."""
    from sklearn.linear_model import LinearRegression

    y, se = np.asarray(y, float), np.asarray(se, float)
    if len(y) < 2:
        raise InputError(f"trend of {quantity or 'a quantity'}: needs 2 or more rungs, got {len(y)}")
    if np.any(~np.isfinite(se)) or np.any(se <= 0):
        raise InputError(f"trend of {quantity}: standard errors must be finite and > 0, got {se.tolist()}")
    feats = [features(p) for p in points]
    w = 1.0 / se ** 2
    candidates = list(axes if axes is not None else AXES)
    varying = [a for a in candidates if np.ptp([f[a] for f in feats]) > 1e-9]
    chosen, dropped = [], []
    for a in varying:  # in order of AXES: params first
        trial = chosen + [a]
        X1 = np.column_stack([np.ones(len(y))] + [[f[b] for f in feats] for b in trial])
        if len(trial) + 1 <= len(y) and np.linalg.matrix_rank(X1 * np.sqrt(w)[:, None], tol=1e-8) == len(trial) + 1:
            chosen = trial
        else:
            dropped.append(a)
    X = np.array([[f[a] for a in chosen] for f in feats]).reshape(len(y), len(chosen))
    X1 = np.column_stack([np.ones(len(y)), X])
    if chosen:
        model = LinearRegression().fit(X, y, sample_weight=w)
        coef = np.concatenate([[model.intercept_], model.coef_])
    else:
        coef = np.array([float(np.sum(w * y) / np.sum(w))])
    cov = np.linalg.inv(X1.T @ (w[:, None] * X1))
    dof = len(y) - len(coef)
    chi2_ratio = None
    scatter = 0.0
    if dof > 0:
        resid = y - X1 @ coef
        chi2_ratio = float(np.sum(w * resid ** 2) / dof)
        if chi2_ratio > 1:
            cov = cov * chi2_ratio
            scatter = math.sqrt((chi2_ratio - 1) * float(np.mean(se ** 2)))
    mean = float(np.sum(w * y) / np.sum(w))
    const_se = math.sqrt(1.0 / float(np.sum(w))) * (math.sqrt(chi2_ratio) if chi2_ratio and chi2_ratio > 1 else 1.0)
    return TrendFit(quantity, chosen, [float(c) for c in coef], cov.tolist(), dof, chi2_ratio, scatter, dropped,
                    (mean, const_se))


# -- from measured probe sets ----------------------------------------------------------
def best_per_rung(deltas: Mapping[str, Sequence[float]], knob: Mapping[str, float | None], *,
                  n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """The best probe taper at one rung (uniform, with deltas 0, included) and its knob, with
    paired-seed bootstrap standard errors (see the module doc). `knob[label]` is the knob's
    value of each taper; tapers whose value is None are left out."""
    labels = [t for t in deltas if knob.get(t) is not None]
    if "uniform" not in labels and knob.get("uniform") is not None:
        labels.append("uniform")
    n = {len(deltas[t]) for t in labels if t != "uniform"}
    if len(n) != 1:
        raise InputError("best_per_rung: every probe taper needs the same seeds")
    n_seeds = n.pop()
    D = np.array([list(deltas[t]) if t != "uniform" else [0.0] * n_seeds for t in labels])
    means = D.mean(1)
    i = int(np.argmin(means))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_seeds, (n_boot, n_seeds))
    boot_means = D[:, idx].mean(2)  # tapers x n_boot
    picks = boot_means.argmin(0)
    values = np.array([knob[t] for t in labels], float)
    from scipy.stats import norm, t

    small = float(t.ppf(0.975, max(1, n_seeds - 1)) / norm.ppf(0.975))  # few seeds: widen to the t-interval
    own_se = float(D[i].std(ddof=1) / math.sqrt(n_seeds)) if n_seeds > 1 else 0.0
    return {"best": labels[i], "knob": float(values[i]),
            "knob_se": small * max(float(values[picks].std(ddof=1)), RESOLUTION),
            "effect": float(means[i]),
            "effect_se": max(small * max(float(boot_means.min(0).std(ddof=1)), own_se), 1e-6),
            "n_seeds": n_seeds}


def held_out(points: Sequence[Mapping[str, Any]], knob: Mapping[str, float | None]) -> dict[str, Any]:
    """Fit the best knob and effect on every rung but the last (as listed: the one nearest
    the target), predict the last, and compare with what it measured (`points[i]["deltas"]`:
    per-seed deltas per probe taper)."""
    order = list(range(len(points)))
    if len(order) < 3:
        return {"text": "needs 3 or more rungs", "available": False}
    fit_pts = [points[i] for i in order[:-1]]
    last = points[order[-1]]
    bests = [best_per_rung(p["deltas"], knob) for p in fit_pts]
    obs = best_per_rung(last["deltas"], knob)
    out: dict[str, Any] = {"available": True, "held_out": last["name"], "fitted_on": [p["name"] for p in fit_pts]}
    lines = []
    for name, key, se_key in (("best strength", "knob", "knob_se"), ("best effect", "effect", "effect_se")):
        fit = fit_trend(fit_pts, [b[key] for b in bests], [b[se_key] for b in bests], quantity=name)
        mean, lo, hi = fit.predict(features(last))
        err = mean - obs[key]
        out[key] = {"predicted": mean, "interval": [lo, hi], "observed": obs[key], "observed_se": obs[se_key],
                    "error": err, "inside": lo <= obs[key] <= hi, "axes": fit.axes}
        lines.append(f"{name} predicted {mean:+.3f} [{lo:+.3f}, {hi:+.3f}], measured {obs[key]:+.3f} "
                     f"(error {err:+.3f}, {'inside' if lo <= obs[key] <= hi else 'outside'} the interval)")
    out["text"] = (f"fitted on {', '.join(out['fitted_on'])} (axes {', '.join(out['knob']['axes']) or 'none'}), "
                   f"predicting {last['name']}: " + "; ".join(lines))
    return out
