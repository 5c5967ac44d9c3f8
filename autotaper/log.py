"""autotaper's logger: progress and notes go to `logging.getLogger("autotaper")` (as
transformers' do), shown on stderr at INFO by default. `set_verbosity("warning")` (or
the standard `logging` calls) quiets them, the search's progress bar (tqdm's) with them."""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("autotaper")


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is at the time (pytest and notebooks swap it)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the property always reads sys.stderr
        pass


if not any(isinstance(h, _Stderr) for h in logger.handlers):
    _handler = _Stderr()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def set_verbosity(level: int | str) -> None:
    """How much autotaper says: a `logging` level or its name ("info", "warning", ...)."""
    logger.setLevel(level.upper() if isinstance(level, str) else level)


def sayer(quiet: bool):
    """The function that tells the user a line of progress: nothing when `quiet`."""
    return (lambda msg: None) if quiet else logger.info
