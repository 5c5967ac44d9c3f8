"""From one proxy to the target: a ladder of scales (`rungs`), proxy fidelity between them
(`fidelity`), the trend of the best taper across them and its prediction at the target
(`trend`), and the whole run with its hand-off (`ladder`)."""

from autotaper.scale.fidelity import Fidelity, fidelity, rank_correlations
from autotaper.scale.ladder import load_ladder, run_ladder, to_text
from autotaper.scale.rungs import LadderConfig, Rules, RungDef, parse_ladder, resolve
from autotaper.scale.trend import TrendFit, best_per_rung, fit_trend, held_out

__all__ = ["Fidelity", "LadderConfig", "Rules", "RungDef", "TrendFit", "best_per_rung", "fidelity", "fit_trend",
           "held_out", "load_ladder", "parse_ladder", "rank_correlations", "resolve", "run_ladder", "to_text"]
