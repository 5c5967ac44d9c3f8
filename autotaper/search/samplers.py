"""Samplers and pruners by name: registries, so a space names one and an unknown name is
refused with the list (`search.sampler`, `search.pruner`)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Callable

from autotaper.errors import InputError

if TYPE_CHECKING:
    from autotaper.search.space import BaseSpace


def _startup(space) -> int:
    return max(2, min(6, space.settings.n_trials // 3))


def _tpe(space, seed, workers):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=_startup(space), constant_liar=workers > 1)


def _gp(space, seed, workers):
    import optuna

    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=_startup(space))


def _cmaes(space, seed, workers):  # infeasible trials carry a penalty value, so CMA-ES need not read constraints
    import optuna

    warnings.filterwarnings("ignore", message="Constraints have been set, but CmaEsSampler")
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def _random(space, seed, workers):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _grid(space, seed, workers):
    import optuna

    grid = space.grid()
    if grid is None:
        raise InputError(f"search.sampler: grid needs a space without ranges ({space.name})")
    return optuna.samplers.GridSampler(grid, seed=seed)


def _nsga2(space, seed, workers):
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, space.settings.n_trials // 2)))


# name -> factory(space, seed, workers): the names a space's search.sampler may take
SAMPLERS: dict[str, Callable] = {"tpe": _tpe, "gp": _gp, "cmaes": _cmaes, "random": _random, "grid": _grid,
                                 "nsga2": _nsga2}


def _median(space):
    import optuna

    # Paired running means are noisy early: wait for four finished trials (the uniform
    # reference and the paper's default among them) and half of the first seed.
    return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=space.proxy.steps // 2)


def _hyperband(space):
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=space.proxy.eval_interval(),
                                          max_resource=space.proxy.steps * space.proxy.seeds)


def _wilcoxon(space):
    import optuna

    return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)


def _none(space):
    import optuna

    return optuna.pruners.NopPruner()


# name -> factory(space): the names a space's search.pruner may take
PRUNERS: dict[str, Callable] = {"median": _median, "hyperband": _hyperband, "wilcoxon": _wilcoxon, "none": _none}


def _lookup(registry: dict, name: str, field: str) -> Callable:
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise InputError(f"{field}: unknown {name!r} (one of {', '.join(registry)})") from None


def make_sampler(space: "BaseSpace", *, worker: int = 0, workers: int = 1):
    """The space's sampler. Parallel workers each get their own seed (space seed + worker
    index: the same seed would propose the same candidates in every worker), and TPE lies
    about running trials (constant liar) so that workers spread out."""
    s = space.settings
    seed = None if s.seed is None else s.seed + worker
    return _lookup(SAMPLERS, s.sampler, "search.sampler")(space, seed, workers)


def make_pruner(space: "BaseSpace"):
    """The space's pruner; none for a multi-objective search (Optuna cannot prune those)."""
    name = "none" if space.settings.multi_objective else space.settings.pruner
    return _lookup(PRUNERS, name, "search.pruner")(space)
