"""Names a package resolves on first use (Optuna's _LazyImport idea): `import autotaper` and
`autotaper --help` never pay for torch, Optuna or Ray."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_names(package: str, table: dict[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """The module `__getattr__` and `__dir__` of `package`, resolving each name of `table`
    (name -> module) on first access and keeping it in `namespace` (the package's globals)."""
    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(table[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
