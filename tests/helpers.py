"""Small deterministic corpora for tests (written here, so no test depends on the stdlib's
exact contents or on the network)."""

import contextlib
import os
from pathlib import Path

from autotaper.search import FunctionSpace

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega").split()


def write_corpus(root: Path, n_files: int = 8, lines: int = 120) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        text = []
        for i in range(lines):
            a, b, c = WORDS[(i * 7 + f) % 24], WORDS[(i * 3 + 2 * f) % 24], WORDS[(i + 5 * f) % 24]
            text.append(f"def {a}_{i}({b}, {c}):\n    return {b} * {i % 13} + {c}  # {a} {f}\n")
        (root / f"doc{f:02d}.py").write_text("".join(text))
    return root


def micro_space(corpus: str, name: str = "micro", **changes) -> dict:
    """A search space on the tiny preset that finishes in seconds; `changes` merge per section.
    Confirmation is off unless a test turns it on (tests/test_trust.py does)."""
    data = {"name": name, "proxy": {"preset": "tiny", "steps": 10, "batch_size": 8, "seeds": 2,
                                    "precision": "fp32", "data": corpus, "eval_every": 5},
            "search": {"sampler": "tpe", "pruner": "none", "n_trials": 4, "confirm": False},
            "taper": {"ffn": {"curve": ["linear", "cosine"], "strength": {"low": -0.5, "high": 0.75}}}}
    for section, value in changes.items():
        data[section] = {**data.get(section, {}), **value} if isinstance(value, dict) else value
    return data


def assert_raced(study, n_min: int, n_max: int) -> int:
    """Every complete trial ran seeds.min..seeds.max seeds, and every seed past seeds.min was
    given while its comparison with the incumbent was still open (mean below it, 95% interval
    reaching it). Returns how many seeds racing added."""
    from autotaper.search import racing
    from autotaper.stats import paired_stats

    baselines = {int(k.rsplit("seed", 1)[1]): v["value"] for k, v in study.user_attrs.items()
                 if k.startswith("baseline/seed")}
    by_number = {t.number: t for t in study.trials}
    added = 0
    for t in study.trials:
        a = t.user_attrs
        if a.get("status") != "complete":
            continue
        values = a["seed_values"]
        assert n_min <= len(values) <= n_max, (t.number, values)
        inc = by_number.get(a["incumbent"]) if isinstance(a["incumbent"], int) else None
        inc_values = inc.user_attrs["seed_values"] if inc else None
        for k in range(n_min, len(values)):
            s = paired_stats(racing.differences(values[:k], [baselines[i] for i in range(k)], inc_values))
            assert s.mean < 0 and s.ci95[0] <= 0 <= s.ci95[1], (t.number, k)
            added += 1
    return added


def raising_candidate(trial):
    """A space function whose middle grid point makes training raise a TypeError on the
    worker (a learning rate of None reaches `float()`): an exception nobody planned for."""
    from autotaper.search import Candidate

    strength = trial.suggest_categorical("strength", [0.2, 0.3, 0.4])
    return Candidate(taper=f"ffn:linear:{1 + strength}:{1 - strength}", train={"lr": None} if strength == 0.3 else {})


class Grid(FunctionSpace):
    """A function space under the grid sampler over the `strength` values given (at module
    level: Tune pickles spaces)."""

    def __init__(self, fn, *, strengths, **kwargs):
        super().__init__(fn, **kwargs)
        self.strengths = list(strengths)

    def grid(self):
        return {"strength": self.strengths}


def vanishing_candidate(trial):
    """Deletes the folders named in $AUTOTAPER_VANISH (the corpus and its token cache) when the
    driver proposes the first trial, after it loaded the data: workers that read the data
    from disk instead of from the driver fail."""
    import os
    import shutil

    for path in os.environ.get("AUTOTAPER_VANISH", "").split(os.pathsep):
        if path:
            shutil.rmtree(path, ignore_errors=True)
    strength = trial.suggest_categorical("strength", [0.2, 0.4])
    return f"ffn:linear:{1 + strength}:{1 - strength}"



def assert_t_interval(ci95, deltas) -> None:
    """`ci95` equals scipy's 95% t interval of the per-seed paired `deltas` (computed here
    independently of autotaper.stats)."""
    import numpy as np
    import pytest
    from scipy import stats

    d = np.asarray(deltas, dtype=float)
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert list(ci95) == pytest.approx([lo, hi], rel=1e-9, abs=1e-12), (ci95, deltas)


@contextlib.contextmanager
def ray_unmeasured():
    """Ray started inside this block runs its own processes (dashboard, agents, log monitor and
    the workers its raylet spawns) without coverage's tracer: they never run autotaper's code,
    and traced they take CPU from every test beside them (the suite's pytest time under --cov
    went from 14:50 to 13:11 without them). Yields the environment variables that measure a
    process again, for a runtime env's `env_vars`: workers that train trials are worth
    measuring; {} when not under --cov."""
    measure = {k: os.environ.pop(k) for k in ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")
               if k in os.environ}
    try:
        yield measure
    finally:
        os.environ.update(measure)
