"""From one proxy to the target: a ladder of scales (`rungs`), proxy fidelity between them
(`fidelity`), the trend of the best taper across them and its prediction at the target
(`trend`), and the whole run with its hand-off (`run`: `run_ladder` returns a `LadderResult`)."""

from autotaper.ladder.fidelity import Fidelity, fidelity, rank_correlations
from autotaper.ladder.run import LadderResult, load_ladder, run_ladder, to_text
from autotaper.ladder.rungs import LadderConfig, Rules, RungDef, parse_ladder, resolve
from autotaper.ladder.trend import TrendFit, best_per_rung, fit_trend, held_out

__all__ = ["Fidelity", "LadderConfig", "LadderResult", "Rules", "RungDef", "TrendFit", "best_per_rung", "fidelity", "fit_trend",
           "held_out", "load_ladder", "parse_ladder", "rank_correlations", "resolve", "run_ladder", "to_text"]
