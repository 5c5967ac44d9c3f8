"""What a search backend is: where a study's trials train. The stages around the trials
(preflight, calibration, the plan, the baselines and references, the confirmation) are the
pipeline's (`autotaper.search.pipeline`), the same for every backend."""

from __future__ import annotations

import abc
import contextlib
from typing import Callable


class Backend(abc.ABC):
    """A place to run trials. `workers` is how many processes share the study (its default
    storage is a journal file when more than one write to it)."""

    name: str = "backend"
    workers: int = 1

    def session(self, study, space, data, say: Callable[[str], None]) -> contextlib.AbstractContextManager:
        """What the whole search runs inside (a Ray connection, a working folder)."""
        return contextlib.nullcontext()

    def opened(self, study, space, data, say: Callable[[str], None]) -> None:
        """Called once the study is open and its corpus checked, before calibration."""

    def announce(self, study, space, data, url: str, n_trials: int, say: Callable[[str], None]) -> None:
        """Tell the user what is about to run (once the study is open)."""

    def before_references(self, study, space, data, quiet: bool) -> None:
        """Called after the uniform baselines of the search's seeds are stored."""

    @abc.abstractmethod
    def run_trials(self, study, space, data, *, url: str, n_trials: int, timeout: float | None, quiet: bool,
                   say: Callable[[str], None]) -> None:
        """Run trials until `n_trials` count (`study.n_finished`), `timeout` passes or the
        failures in a row stop the search."""
