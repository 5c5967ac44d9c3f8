"""What the search API returns: objects with the answer on them (in the manner of Optuna's
`study.best_trial` and Ray Tune's `ResultGrid.get_best_result()`), each of which
round-trips through JSON (`to_dict` / `from_dict`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from autotaper.search.records import Confirmation


@dataclass
class Best:
    """A search's answer: the best taper, its effect against uniform and its interval,
    confirmed on fresh seeds or not."""

    taper: str
    delta: float | None  # mean paired difference to uniform (bpb, or loss on pre-tokenised data)
    ci95: list | None
    seeds: int
    confirmed: bool
    beats_uniform: bool
    text: str  # the verdict, one line
    trial: int | None = None  # the search trial that measured it
    spec: dict | None = None  # the solved model (`ModelSpec.from_dict`)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Best":
        return cls(**data)

    def model_spec(self):
        """The solved model as a `ModelSpec` (None for a taper no trial measured)."""
        from autotaper.spec import ModelSpec

        return None if self.spec is None else ModelSpec.from_dict(self.spec)


@dataclass
class SearchResult:
    """What `run_search` and `run_ray_search` return: where the study is, and the answer.
    `.best`, `.leaderboard` and `.to_dataframe()` read the study (as stored now)."""

    study_name: str
    storage: str
    trials: int  # trials in the study, every state
    elapsed_s: float
    backend: str = "optuna"
    calibration: dict | None = None  # `Calibration.to_dict`
    plan: str | None = None  # the time plan, as printed
    confirmation: dict | None = None  # `Confirmation.to_dict`; None when confirmation was off or failed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchResult":
        return cls(**data)

    @property
    def study(self):
        """The Optuna study, loaded from its storage."""
        from autotaper.search.study import load_study

        return load_study(self.storage, self.study_name)[0]

    @property
    def leaderboard(self) -> dict[str, Any]:
        """The leaderboard (`autotaper.search.leaderboard`): rows, noise floor, verdict."""
        from autotaper.search.results import leaderboard

        return leaderboard(self.storage, self.study_name)

    @property
    def confirmed(self) -> Confirmation | None:
        return None if self.confirmation is None else Confirmation.from_dict(self.confirmation)

    @property
    def best(self) -> Best | None:
        """The answer: the confirmed winner (or the confirmation's best) when the search was
        confirmed, else the search stage's best; None before any trial completed."""
        from autotaper.search.records import TrialRecord

        board = self.leaderboard
        specs = {t.number: TrialRecord.from_trial(t).spec for t in self.study.get_trials(deepcopy=False)}
        return best_of(board, specs)

    def to_dataframe(self):
        """One row per candidate (pandas), as `autotaper results` shows them."""
        import pandas as pd

        return pd.DataFrame(self.leaderboard["trials"])


def best_of(board: dict[str, Any], specs: dict[int, dict | None] | None = None) -> Best | None:
    """The `Best` a leaderboard names; `specs`: the solved spec of each trial, by number."""
    specs = specs or {}
    rows = {r["trial"]: r for r in board["trials"]}
    conf = board.get("confirmation")
    verdict = board["verdict"]
    if conf:
        c = Confirmation.from_dict(conf)
        chosen = c.candidate(c.winner) if c.winner else min(c.candidates, key=lambda x: x["mean"])
        row = rows.get(chosen.get("trial"))
        return Best(taper=chosen["taper"], delta=chosen["mean"], ci95=chosen.get("ci95"), seeds=len(c.seeds),
                    confirmed=True, beats_uniform=c.winner is not None, text=verdict["text"],
                    trial=chosen.get("trial"), spec=specs.get(row["trial"]) if row else None)
    if verdict.get("best") is None:
        return None
    row = rows[verdict["best"]]
    return Best(taper=row["taper"], delta=row["delta_bpb"], ci95=row["ci95"], seeds=row["seeds"], confirmed=False,
                beats_uniform=bool(verdict["beats_uniform"]), text=verdict["text"], trial=row["trial"],
                spec=specs.get(row["trial"]) if row else None)
