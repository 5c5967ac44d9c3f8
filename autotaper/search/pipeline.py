"""A search, stage by stage, the same for every backend: preflight (`preflight`), the study
(`study`), calibration (the noise floor, `calibrate`), the time plan (`timeplan`), the
uniform baselines and the reference trials, the trials (the backend's, raced on paired
seeds by `objective`), and the confirmation of the best on fresh seeds (`confirm`).

Every study starts with two reference points: the uniform baseline (a trial whose value is
0 by definition, recorded from the cached per-seed baselines) and the paper's cosine
1.5 -> 0.5 on ffn (enqueued when the space can express it). Re-running the same command
loads the study and runs only the trials still missing from `n_trials` (complete, pruned
and failed trials count; a trial whose worker died is retried by a new one).
`search.stop_after_failures` failures in a row stop the search (`SearchStopped`). Nothing
is stored before `preflight` has checked the whole search.
"""

from __future__ import annotations

import math
import time

from autotaper.errors import InputError
from autotaper.log import sayer
from autotaper.search.backends._base import Backend
from autotaper.search.calibrate import measure_noise, seeds_in_use
from autotaper.search.confirm import confirm_study
from autotaper.search.objective import baseline_spec, ensure_baselines, metric_key, train_config
from autotaper.search.preflight import preflight
from autotaper.search.records import PROBE_ATTR
from autotaper.search.result import SearchResult
from autotaper.search.space import BaseSpace
from autotaper.search.study import add_references, check_corpus, check_failures, n_finished, open_study
from autotaper.search.timeplan import make_plan


def run(space: BaseSpace, backend: Backend, *, storage: str | None = None, study_name: str | None = None,
        n_trials: int | None = None, timeout: float | None = None, budget_s: float | None = None,
        confirm: bool = True, quiet: bool = False) -> SearchResult:
    """Run (or resume) a search of `space` on `backend`, every stage in order."""
    say = sayer(quiet)
    if timeout is not None and timeout <= 0:
        raise InputError(f"timeout must be > 0 seconds, got {timeout}")
    n_trials = n_trials or space.settings.n_trials
    if n_trials < 1:
        raise InputError(f"n_trials must be >= 1, got {n_trials}")
    started = time.time()
    ready = preflight(space, storage=storage, study_name=study_name, workers=backend.workers)  # nothing stored yet
    study, url = open_study(space, storage=ready.url, study_name=ready.name, workers=backend.workers)
    data = ready.data
    check_corpus(study, data)
    backend.opened(study, space, data, say)
    backend.announce(study, space, data, url, n_trials, say)
    with backend.session(study, space, data, say):
        budget_s = space.settings.budget_s if budget_s is None else budget_s
        cal, plan = prepare_search(study, space, data, n_trials=n_trials, started=started, budget_s=budget_s,
                                   confirm=confirm, say=say)
        n_trials = plan.n_trials
        if plan.trials_timeout_s is not None:
            timeout = min(timeout or math.inf, max(1.0, plan.trials_timeout_s))
        baselines = ensure_baselines(study, space, data, quiet=quiet)
        backend.before_references(study, space, data, quiet)
        add_references(study, space, baselines, metric_key(data))
        backend.run_trials(study, space, data, url=url, n_trials=n_trials, timeout=timeout, quiet=quiet, say=say)
        check_failures(study, space)
        confirmation = finish_search(study, space, data, confirm=confirm, say=say, quiet=quiet, plan=plan)
    return SearchResult(study_name=study.study_name, storage=url, trials=len(study.get_trials(deepcopy=False)),
                        elapsed_s=time.time() - started, backend=backend.name, calibration=cal.to_dict(),
                        plan=plan.text(), confirmation=confirmation)


def prepare_search(study, space: BaseSpace, data, *, n_trials: int, started: float, budget_s: float | None,
                   confirm: bool, say) -> tuple:
    """The stages before the trials, shared by both backends: calibration, then the plan."""
    cal = measure_noise(study, space, data, say=say)  # read from the study when it holds one
    for line in cal.lines(seeds_in_use(space, confirm=confirm)):
        say(line)
    from autotaper.cost import count

    base = baseline_spec(space, data)
    scale = space.settings.confirm.run_steps(space.proxy, count(base).params, base.context_length) / space.proxy.steps
    plan = make_plan(space, run_s=cal.run_wall_s, n_trials=n_trials, elapsed_s=time.time() - started,
                     budget_s=budget_s, confirm=confirm and space.settings.confirm.enabled, done=n_finished(study),
                     confirm_scale=scale)
    say(plan.text())
    return cal, plan


def probe_suggestion(study, space: BaseSpace, data, say) -> str:
    """`search.suggest_from_probe`: the uniform proxy trained on seed 0 and probed, and the
    taper that follows its per-layer angles (`autotaper.probe.suggest`); kept in the study, so
    a resumed search and the report read it instead of training again."""
    from autotaper.probe import probe_spec, suggest

    found = study.user_attrs.get(PROBE_ATTR)
    if found is None:
        found = probe_spec(baseline_spec(space, data), data, train_config(space, 0))
        found["suggestion"] = suggest(found)
        study.set_user_attr(PROBE_ATTR, found)
    cos = " ".join(f"{r['cos']:.3f}" for r in found["layers"])
    say(f"probe of uniform (seed 0): cos per layer {cos}; its suggestion joins the confirmation: "
        f"{found['suggestion']}")
    return found["suggestion"]


def finish_search(study, space: BaseSpace, data, *, confirm: bool, say, quiet: bool, plan=None) -> dict | None:
    """The stage after the trials, shared by both backends: confirmation on fresh seeds, with
    the top k and the seeds of the `plan` (which may have cut them to fit the budget)."""
    c = space.settings.confirm
    if not (confirm and c.enabled):
        return None
    top_k, seeds = (plan.confirm_top_k, plan.confirm_seeds) if plan is not None and plan.confirm_top_k \
        else (c.top_k, c.seeds)
    extra = [probe_suggestion(study, space, data, say)] if space.settings.suggest_from_probe else []
    try:
        out = confirm_study(study, space, data, top_k=top_k, seeds=seeds, quiet=quiet, extra=extra,
                            decompose=c.decompose, steps=c.steps, tokens_per_param=c.tokens_per_param)
    except ValueError as e:  # nothing complete to confirm: the leaderboard says why
        say(f"no confirmation: {e}")
        return None
    say("confirmed: " + out["text"])
    return out
