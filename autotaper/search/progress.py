"""Live search progress: trials done, pruned, failed, infeasible; best so far with its
interval; ETA from the mean wall time of the trials finished in this session."""

from __future__ import annotations

import sys
import time

from autotaper.search import records
from autotaper.search.records import TrialRecord


class Progress:
    def __init__(self, study, n_trials: int, *, quiet: bool = False):
        import logging

        from tqdm.auto import tqdm

        from autotaper.log import logger

        quiet = quiet or not logger.isEnabledFor(logging.INFO)  # set_verbosity("warning"): the bar off too
        self.study, self.n_trials, self.quiet = study, n_trials, quiet
        self.started = time.time()
        self.start_done = self._counts()["done"]
        self.seen: set[int] = set()
        self.bar = tqdm(total=n_trials, initial=self.start_done, disable=quiet, unit="trial", desc="search",
                        dynamic_ncols=True, file=sys.stderr)

    def _counts(self) -> dict:
        from optuna.trial import TrialState

        c = {"done": 0, "pruned": 0, "failed": 0, "infeasible": 0, "duplicates": 0, "best": None}
        for t in self.study.get_trials(deepcopy=False):
            r = TrialRecord.from_trial(t)
            status = r.status
            if status == records.DUPLICATE:
                c["duplicates"] += 1
                continue
            if t.state == TrialState.COMPLETE or t.state == TrialState.PRUNED:
                c["done"] += 1
            if t.state == TrialState.PRUNED:
                c["pruned"] += 1
            elif t.state == TrialState.FAIL:
                c["failed"] += 1
            elif status == records.INFEASIBLE:
                c["infeasible"] += 1
            elif status == records.COMPLETE and r.delta is not None:
                if c["best"] is None or r.delta < c["best"].delta:
                    c["best"] = r
        return c

    def _line(self, c: dict) -> str:
        best = c["best"]
        text = f"pruned {c['pruned']} failed {c['failed']} infeasible {c['infeasible']}"
        if c["duplicates"]:
            text += f" duplicates {c['duplicates']}"
        if best is not None:
            ci = best.ci95
            ci_text = f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""
            text += f" | best {best.taper} {best.delta:+.4f}{ci_text}"
        return text

    def on_trial(self, study, trial) -> None:  # an Optuna callback
        self.poll()

    def poll(self) -> None:
        if self.quiet:
            return
        c = self._counts()
        for t in self.study.get_trials(deepcopy=False):
            a = TrialRecord.from_trial(t)
            if t.number in self.seen or not t.state.is_finished() or a.status in (records.REFERENCE,
                                                                                  records.DUPLICATE):
                continue
            self.seen.add(t.number)
            d_text = f"{a.delta:+.4f}" if isinstance(a.delta, float) else "   n/a "
            seeds = len(a.seed_deltas or [])
            race = {"worse": ", raced out", "better": ", better than the incumbent", "max_seeds": ", at seeds.max"}
            detail = f"({seeds} seed{'s' * (seeds != 1)}{race.get(a.race, '')})" if seeds else ""
            self.bar.write(f"  trial {t.number:>3} {t.state.name.lower():>8} {d_text}  "
                           f"{a.taper if a.taper is not None else '?'}  {detail}  {a.reason or ''}".rstrip(),
                           file=sys.stderr)  # stdout: results only
        new = c["done"] - self.bar.n
        if new > 0:
            self.bar.update(new)
        done_here = c["done"] - self.start_done
        if done_here > 0:
            per = (time.time() - self.started) / done_here
            eta = max(0, self.n_trials - c["done"]) * per
            self.bar.set_postfix_str(self._line(c) + f" | eta {eta / 60:.1f} min")
        else:
            self.bar.set_postfix_str(self._line(c))

    def close(self) -> None:
        self.poll()
        self.bar.close()
