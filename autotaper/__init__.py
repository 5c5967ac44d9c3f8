"""autotaper: find how a transformer should spread its parameters across depth.

Public API (imports stay light: numpy only until a model is built or trained):

    Taper.parse("ffn:cosine:1.5:0.5")     the taper family and its text form
    ModelSpec.from_name("440m")           per-layer model shapes and presets
    count(spec)                           exact parameters and FLOPs per token
    solve(baseline, taper)                a taper solved to the baseline's budget
    build_model(spec)                     the torch module (imports torch)
    set_verbosity("warning")              progress lines off (logging.getLogger("autotaper"))

Searches, their results and the ladder: `autotaper.search`, `autotaper.ladder`. Errors:
`autotaper.errors` (`AutotaperError`; bad input is `InputError`, a ValueError).
"""

from __future__ import annotations

from autotaper._lazy import lazy_names

__version__ = "0.1.0"

# name -> module, resolved on first attribute access (`autotaper._lazy`)
_LAZY = {
    "Taper": "autotaper.taper",
    "DimTaper": "autotaper.taper",
    "Curve": "autotaper.curves",
    "register_curve": "autotaper.curves",
    "ModelSpec": "autotaper.spec",
    "PRESETS": "autotaper.spec",
    "Family": "autotaper.families",
    "register_family": "autotaper.families",
    "count": "autotaper.cost",
    "Cost": "autotaper.cost",
    "solve": "autotaper.budget",
    "solve_report": "autotaper.budget",
    "build_model": "autotaper.models",
    "set_verbosity": "autotaper.log",
    "AutotaperError": "autotaper.errors",
    "InputError": "autotaper.errors",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
