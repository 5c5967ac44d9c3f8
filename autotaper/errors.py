"""autotaper's exceptions (in the manner of `optuna/exceptions.py`).

The CLI turns these, and only these, into one-line messages: `InputError` and its
subclasses exit with status 2 (the command cannot work as given), the others with 1 (the
command was fine, the machine, a server or a store failed). Any other exception is a bug
in autotaper and is shown with its traceback. Every class keeps the built-in base it had
before the hierarchy existed (`InputError` is a `ValueError`, `CheckpointError` an
`OSError`), so `except ValueError` in user code still catches bad input.
"""

from __future__ import annotations


class AutotaperError(Exception):
    """The base of every error autotaper raises on purpose."""

    exit_code = 1


class InputError(AutotaperError, ValueError):
    """A value, file or flag the user gave cannot be used: one line naming it."""

    exit_code = 2


class ProblemsError(InputError):
    """Every problem a validation found, each a line naming its field and value."""

    def __init__(self, where: str, problems: list[str]):
        self.where, self.problems = where, list(problems)
        super().__init__(f"{where}: {len(problems)} problem(s): " + "; ".join(problems))

    def __reduce__(self):  # survives pickling across processes and Ray workers
        return (type(self), (self.where, self.problems))


class DataError(InputError):
    """The training data cannot be used as given (missing, unreadable, too small, wrong kind)."""


class StorageError(AutotaperError):
    """A study storage failed or holds something it should not (its URL and why)."""


class CheckpointError(AutotaperError, OSError):
    """A checkpoint could not be written; the previous one is untouched."""


class SearchStopped(AutotaperError, RuntimeError):
    """Trials failed `stop_after_failures` times in a row: the fault is not the candidates'."""


class PairingError(AutotaperError, RuntimeError):
    """A candidate did not see its baseline's batches: the comparison would be unfair."""


class VersionSkew(InputError):
    """Nodes of a Ray cluster run other versions of autotaper, torch, Optuna, Ray or Python."""
