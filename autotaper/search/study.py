"""A search's study: opening it (its identity checked against the space's, its corpus
against the data's), the reference trials, and what counts: the trials that count towards
`n_trials` (`n_finished`), the failures in a row that stop a search (`SearchStopped`).
"""

from __future__ import annotations

from autotaper.errors import InputError, SearchStopped
from autotaper.search import records
from autotaper.search.records import CORPUS_ATTR, ENVIRONMENT_ATTR, SPACE_ATTR, TrialRecord
from autotaper.search.samplers import make_pruner, make_sampler
from autotaper.search.space import PAPER_DEFAULT, BaseSpace
from autotaper.search.storage import check_study_name, default_location, mask_url, open_storage

# Where the data comes from may differ between workers (paths, --strict-data); what it is
# (CORPUS_ATTR) may not.
LOCAL_PROXY_FIELDS = ("data", "strict_data")


def open_study(space: BaseSpace, *, storage: str | None, study_name: str | None, workers: int = 1,
               worker: int = 0):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = study_name or space.name
    url = storage or default_location(name, workers=workers)
    directions = ["minimize", "maximize"] if space.settings.multi_objective else ["minimize"]
    study = optuna.create_study(storage=open_storage(url), study_name=name,
                                sampler=make_sampler(space, worker=worker, workers=workers),
                                pruner=make_pruner(space), directions=directions, load_if_exists=True)
    identity = space.identity()
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        study.set_user_attr(SPACE_ATTR, identity)
        study.set_user_attr(ENVIRONMENT_ATTR, environment())
    elif _comparable(stored) != _comparable(identity):
        stored, identity = _comparable(stored), _comparable(identity)
        raise InputError(f"study {name!r} in {mask_url(url)} was created from a different space or proxy "
                         f"({identity_diff(stored, identity)}); pick a new --study name")
    return study, url


def load_study(storage: str | None, study_name: str):
    """An existing study, read as stored (its name checked, never created), and its URL."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_study_name(study_name)  # also names report.html's folder: never a path
    url = storage or default_location(study_name)
    if url.startswith("sqlite:///"):
        from pathlib import Path

        if not Path(url[len("sqlite:///"):]).exists():
            raise InputError(f"results: no study storage at {url} (run the search first, or pass --storage)")
    backend = open_storage(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(backend, include_best_trial=False)]
    if study_name not in names:
        raise InputError(f"results: no study {study_name!r} in {mask_url(url)} (studies: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=study_name, storage=backend), url


def identity_diff(stored: dict, given: dict) -> str:
    """The fields in which two study identities differ, with the stored and the given value."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and v:
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(stored), flat(given)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))

    def short(v) -> str:
        text = repr(v)
        return text if len(text) <= 60 else text[:57] + "..."
    return "; ".join(f"{k}: stored {short(a.get(k))}, given {short(b.get(k))}" for k in keys[:6]) + \
        (f"; and {len(keys) - 6} more" if len(keys) > 6 else "")


def _comparable(identity: dict) -> dict:
    proxy = identity.get("proxy")
    if not isinstance(proxy, dict):
        return identity
    return {**identity, "proxy": {k: v for k, v in proxy.items() if k not in LOCAL_PROXY_FIELDS}}


def corpus_identity(data) -> dict:
    """What a study's trials train on: the corpus's content hash and tokenizer, with what a
    person needs to find it again (its name, sizes, the Python and host that built it)."""
    import platform
    import socket

    m = data.manifest
    return {"corpus": data.name, "content_sha256": m["content_sha256"], "tokenizer": m["tokenizer"]["name"],
            "vocab_size": int(data.vocab_size), "train_tokens": int(len(data.train)),
            "val_tokens": int(len(data.val)), "python": m.get("python", platform.python_version()),
            "host": socket.gethostname(), "folder": str(data.root) if data.root else None}


def environment() -> dict:
    """Where a study was created: the autotaper, torch, Optuna and Python versions, the device
    a run trains on by default here, the host, and the date (UTC). Recorded once, by the
    process that creates the study; each stored run also names its own device."""
    import datetime
    import platform
    import socket

    import optuna
    import torch

    import autotaper

    return {"autotaper": autotaper.__version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "python": platform.python_version(), "device": device_name(), "host": socket.gethostname(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def device_name() -> str:
    """This machine's default training device in words: the GPU's name, or the CPU's model,
    its threads and whether it has native bf16."""
    import platform
    from pathlib import Path

    import torch

    from autotaper.train.trainer import cpu_has_native_bf16

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu: {model}, {torch.get_num_threads()} threads, {'native' if cpu_has_native_bf16() else 'no'} bf16"


def _describe(c: dict) -> str:
    return (f"{c['corpus']} (sha256 {c['content_sha256'][:12]}, {c['tokenizer']} tokenizer of {c['vocab_size']}, "
            f"{c['train_tokens']:,} train tokens, built by Python {c['python']} on {c['host']})")


def check_corpus(study, data) -> None:
    """One corpus per study: the first worker records its corpus; a worker whose data is
    not the same corpus is refused before it trains anything (both are named, with the
    `--data` that gives it the study's corpus)."""
    mine = corpus_identity(data)
    stored = study.user_attrs.get(CORPUS_ATTR)
    if stored is None:
        study.set_user_attr(CORPUS_ATTR, mine)
        return
    key = ("content_sha256", "tokenizer", "vocab_size")
    if all(stored.get(k) == mine[k] for k in key):
        return
    where = (f"copy {stored['host']}:{stored['folder']} here and pass --data with that folder" if stored.get("folder")
             else f"pass --data {stored['corpus']} (the same files or tokens)")
    raise InputError(f"study {study.study_name!r} trains on corpus {_describe(stored)}; this worker's data is "
                     f"{_describe(mine)}: {where}")


def add_references(study, space: BaseSpace, baselines: dict[int, dict], metric: str) -> None:
    """The uniform reference trial (value 0 by definition) and the paper default, once each."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    if not any(records.status_of(t) == records.REFERENCE for t in trials):
        speeds = [b["tokens_per_s"] for b in baselines.values()]
        values = [0.0, sum(speeds) / len(speeds)] if space.settings.multi_objective else [0.0]
        # Wilcoxon compares a trial's per-seed differences (steps 0, 1, ...) with the best
        # trial's; uniform, often the best, needs its own (0 on every seed) or nothing prunes.
        steps = {i: 0.0 for i in range(space.proxy.max_seeds)} if space.settings.pruner == "wilcoxon" else None
        study.add_trial(optuna.trial.create_trial(
            values=values, intermediate_values=steps, user_attrs=TrialRecord(
                taper="uniform", status=records.REFERENCE, delta=0.0, se=0.0, ci95=[0.0, 0.0],
                seed_deltas=[0.0] * len(baselines), seed_values=[b["value"] for b in baselines.values()],
                params_delta=0, flops_delta=0.0, tokens_per_s=values[-1] if len(values) > 1 else
                sum(speeds) / len(speeds), metric=metric).to_attrs(),
            constraints={"budget": 0.0}))
    params = space.reference_params() if space.settings.sampler != "grid" else None  # a grid holds it already
    if params is not None and not any(TrialRecord.from_trial(t).enqueued == PAPER_DEFAULT for t in trials):
        study.enqueue_trial(params, user_attrs=TrialRecord(enqueued=PAPER_DEFAULT).to_attrs(), skip_if_exists=True)


def failed_by_error(trial) -> bool:
    """A trial that failed on its own: its candidate or its training raised. Trials that only
    yielded to a running twin, or whose worker died (retried by a new trial), are not."""
    from optuna.trial import TrialState

    r = TrialRecord.from_trial(trial)
    return trial.state == TrialState.FAIL and r.status == records.FAILED and not r.interrupted


def n_finished(study) -> int:
    """Trials that count towards n_trials: complete, pruned, and failed by an error (a failing
    candidate counts, so a search of candidates that all fail ends)."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or failed_by_error(t))


def failure_streak(study) -> tuple[int, str | None]:
    """How many of the last finished trials failed by an error in a row, and their most
    common reason."""
    from collections import Counter

    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False)
            if t.state.is_finished() and records.status_of(t) not in (records.REFERENCE, records.DUPLICATE)
            and (t.state != TrialState.FAIL or failed_by_error(t))]
    done.sort(key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number))
    streak = []
    for t in reversed(done):
        if not failed_by_error(t):
            break
        streak.append(str(TrialRecord.from_trial(t).reason or "no reason recorded"))
    if not streak:
        return 0, None
    reason, _ = Counter(streak).most_common(1)[0]
    return len(streak), reason


def check_failures(study, space: BaseSpace) -> None:
    """Raise SearchStopped when the last `search.stop_after_failures` trials all failed."""
    limit = space.settings.stop_after_failures
    n, reason = failure_streak(study)
    if limit and n >= limit:
        raise SearchStopped(f"search stopped: the last {n} trials of study {study.study_name!r} failed "
                            f"(search.stop_after_failures is {limit}); most common reason: {reason}")


class StopRule:
    """An Optuna callback: stop once `n_trials` count (`finished`) or the last
    `stop_after_failures` trials failed."""

    def __init__(self, n_trials: int, stop_after_failures: int):
        self.n_trials, self.limit = n_trials, stop_after_failures

    def __call__(self, study, trial) -> None:
        if n_finished(study) >= self.n_trials or (self.limit and failure_streak(study)[0] >= self.limit):
            study.stop()


def list_studies(storage: str | None = None, *, root=None) -> list[dict]:
    """The studies of `storage`, or, without one, of every default location under
    runs/search/ (as `optuna studies` lists a storage's): name, storage (masked), trials,
    the trials that count, and when the first trial started."""
    from pathlib import Path

    import optuna

    from autotaper.search.storage import DEFAULT_ROOT, check_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is not None:
        urls = [check_storage(storage)]
    else:
        base = Path(root or DEFAULT_ROOT)
        urls = sorted({default_location(f.name, root=base) for f in base.glob("*")
                       if (f / "study.db").is_file() or (f / "journal.log").is_file()})
    out = []
    for url in urls:
        backend = open_storage(url)
        for s in optuna.get_all_study_summaries(backend, include_best_trial=False):
            study = optuna.load_study(study_name=s.study_name, storage=backend)
            out.append({"study": s.study_name, "storage": mask_url(url), "trials": s.n_trials,
                        "counted": n_finished(study),
                        "started": s.datetime_start.isoformat(timespec="seconds") if s.datetime_start else None})
    return out


def delete_study(storage: str | None, study_name: str) -> str:
    """Delete study `study_name` (its trials and stored runs) from `storage` (default: its own
    default location); refused when there is no such study. Returns the storage URL."""
    import optuna

    _, url = load_study(storage, study_name)
    optuna.delete_study(study_name=study_name, storage=open_storage(url))
    return url
