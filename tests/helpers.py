"""Small deterministic corpora for tests (written here, so no test depends on the stdlib's
exact contents or on the network)."""

from pathlib import Path

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
