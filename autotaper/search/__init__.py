"""Taper search: spaces, the paired-seed objective, the Optuna engine, the leaderboard."""

from autotaper.search.engine import run_search
from autotaper.search.objective import TaperObjective, ensure_baselines
from autotaper.search.results import leaderboard
from autotaper.search.space import (BaseSpace, Candidate, FunctionSpace, Proxy, Settings, YamlSpace, load_space,
                                    parse_space)

__all__ = ["BaseSpace", "Candidate", "FunctionSpace", "Proxy", "Settings", "TaperObjective", "YamlSpace",
           "ensure_baselines", "leaderboard", "load_space", "parse_space", "run_search"]
