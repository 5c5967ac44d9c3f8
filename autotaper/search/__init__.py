"""Taper search: spaces, the noise floor, the raced paired-seed objective, the Optuna engine,
confirmation on fresh seeds, the leaderboard."""

from autotaper.search.calibrate import Calibration, calibrate
from autotaper.search.confirm import confirm
from autotaper.search.engine import run_search
from autotaper.search.objective import TaperObjective, ensure_baselines
from autotaper.search.results import leaderboard
from autotaper.search.space import (
                                    BaseSpace,
                                    Candidate,
                                    FunctionSpace,
                                    Proxy,
                                    Settings,
                                    YamlSpace,
                                    load_space,
                                    parse_space,
)

__all__ = ["BaseSpace", "Calibration", "Candidate", "FunctionSpace", "Proxy", "Settings", "TaperObjective",
           "YamlSpace", "calibrate", "confirm", "ensure_baselines", "leaderboard", "load_space", "parse_space",
           "run_search"]
