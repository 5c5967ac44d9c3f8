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

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module; resolved on first attribute access (Optuna's _LazyImport idea), so
# `import autotaper` and `autotaper --help` never pay for torch, Optuna or Ray.
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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'autotaper' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
