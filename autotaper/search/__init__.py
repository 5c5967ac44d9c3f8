"""Taper search, by concern (in the manner of Optuna's package):

- `space`: what is searched (`BaseSpace`, `YamlSpace`, `FunctionSpace`) and its settings;
- `records`: every key a study stores, and `TrialRecord`;
- `storage`, `study`: where a study lives, opening it, what counts;
- `samplers`: the sampler and pruner registries;
- `objective`, `racing`: a trial on paired seeds, raced against the incumbent;
- `calibrate`, `timeplan`, `confirm`: the noise floor, the time plan, fresh-seed confirmation;
- `pipeline`, `backends/`: the stages in order, and where the trials run (Optuna, Ray Tune);
- `results`, `result`: the leaderboard, and the objects the API returns.
"""

from autotaper.search.backends.optuna import OptunaBackend, run_search
from autotaper.search.backends.ray import RayBackend, run_ray_search
from autotaper.search.calibrate import Calibration, CalibrationResult, calibrate
from autotaper.search.confirm import confirm
from autotaper.search.objective import TaperObjective, ensure_baselines
from autotaper.search.result import Best, Confirmation, SearchResult
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

__all__ = ["BaseSpace", "Best", "Calibration", "CalibrationResult", "Candidate", "Confirmation", "FunctionSpace",
           "OptunaBackend", "Proxy", "RayBackend", "SearchResult", "Settings", "TaperObjective", "YamlSpace",
           "calibrate", "confirm", "ensure_baselines", "leaderboard", "load_space", "parse_space", "run_ray_search",
           "run_search"]
