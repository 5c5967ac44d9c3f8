"""Commands about searches and their studies: search, calibrate, confirm, results, report, studies."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from autotaper.cli._common import (
    UsageError,
    _add_data_override,
    _add_param_override,
    _auto_or,
    _bounded,
    _duration,
    _floats,
    _load_space,
    _nonnegative,
    _positive,
    _seeds,
)
from autotaper.errors import InputError

# -- search / results -------------------------------------------------------------------
# search options a submitted job's own `autotaper search` takes over as they were given
# search flags a submitted job's own `autotaper search` does not take over: the submission's
# own, the head node's storage (passed apart), and what is local to this machine
NOT_FORWARDED = frozenset({"space", "backend", "submit", "follow", "no_install", "address", "storage", "workers",
                           "data", "help"})


def _forwarded(args) -> list[str]:
    """The search flags given on this command line, as the job's command line takes them."""
    out = []
    for action in args.parser._actions:
        if not action.option_strings or action.dest in NOT_FORWARDED:
            continue
        value = getattr(args, action.dest, None)
        if value is None or value is False or value == action.default:
            continue
        if value is True:
            out.append(action.option_strings[0])
            continue
        value = f"{value[0]}:{value[1]}" if isinstance(value, tuple) else f"{value:g}" if isinstance(value, float) \
            else value
        out += [action.option_strings[0], str(value)]
    return out


def _submit(args, space) -> int:
    """`search --submit`: the search as a Ray job that ships this package (autotaper.cluster)."""
    from autotaper.cluster import follow, submit_search

    job = submit_search(args.submit, args.space, _forwarded(args), storage=args.storage, data=space.proxy.data,
                        install=not args.no_install, say=lambda line: print(line, file=sys.stderr))
    print(f"submitted job {job} to {args.submit}", file=sys.stderr)
    if not args.follow:
        print(f"follow it: ray job logs --follow {job} --address {args.submit}", file=sys.stderr)
        return 0
    status = follow(args.submit, job)
    if status != "SUCCEEDED":
        print(f"autotaper: error: job {job} ended {status}; see `ray job logs {job} --address {args.submit}`",
              file=sys.stderr)
        return 1
    return 0


def cmd_search(args) -> int:
    from autotaper.search import run_search

    space = _load_space(args)
    budget_s = args.budget
    if args.submit:
        if args.backend != "ray":
            raise UsageError("--submit runs the search as a Ray job: add --backend ray")
        return _submit(args, space)
    if args.backend == "ray":
        from autotaper.search.backends.ray import run_ray_search

        summary = run_ray_search(space, storage=args.storage, study_name=args.study, n_trials=args.n_trials,
                                 timeout=args.timeout, address=args.address, cpus_per_trial=args.cpus_per_trial,
                                 gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
                                 tune_storage=args.tune_storage, budget_s=budget_s, confirm=not args.no_confirm,
                                 quiet=args.quiet)
    else:
        summary = run_search(space, storage=args.storage, study_name=args.study, n_trials=args.n_trials,
                             timeout=args.timeout, workers=args.workers, budget_s=budget_s,
                             confirm=not args.no_confirm, quiet=args.quiet)
    from autotaper.search.results import leaderboard, to_table

    board = leaderboard(summary.storage, summary.study_name)
    from autotaper.report import write_report

    try:
        report = write_report(summary.storage, summary.study_name)
    except Exception as e:  # noqa: BLE001 - the search is stored; a failed page must not hide it
        report = f"not written ({type(e).__name__}: {e}); retry with `autotaper report --study {summary.study_name}`"
    if args.json:
        print(json.dumps(board))
    else:
        print(to_table(board))
        given = None if getattr(args, "storage_from_env", False) else args.storage
        print(f"\nresults again: {_results_command(given, summary.storage, summary.study_name)}", file=sys.stderr)
    print(f"report: {report} (one HTML file: open it in a browser)", file=sys.stderr)
    return 0


def _results_command(given: str | None, url: str, study: str) -> str:
    """The `autotaper results` line for a study, never with a password: a URL that came from
    AUTOTAPER_STORAGE stays there, and a password in a given URL is left out (libpq takes it
    from PGPASSWORD or ~/.pgpass)."""
    from autotaper.search.storage import strip_password

    if given is None and os.environ.get("AUTOTAPER_STORAGE") == url:
        return f"autotaper results --study {study}  (storage from AUTOTAPER_STORAGE)"
    shown = strip_password(url)
    note = "  (password from PGPASSWORD or ~/.pgpass)" if shown != url else ""
    return f"autotaper results --storage {shown} --study {study}{note}"


def cmd_calibrate(args) -> int:
    from autotaper.search.calibrate import calibrate, seeds_in_use
    from autotaper.search.storage import mask_url

    space = _load_space(args)
    lrs = args.lr if args.lr else ([space.proxy.lr * f for f in (0.5, 2.0)] if args.lr is not None else ())
    res = calibrate(space, storage=args.storage, study_name=args.study, lrs=lrs, refresh=args.refresh,
                    quiet=args.quiet)
    cal, study, url = res.calibration, res.study_name, res.storage
    p = space.proxy
    in_use = seeds_in_use(space)
    if args.json:
        out = {**cal.to_dict(), "study": study, "storage": mask_url(url), "mde": cal.mdes(in_use)}
        if args.target_mde:
            out["seeds_for_target_mde"] = cal.seeds_for(args.target_mde)
        print(json.dumps(out))
        return 0
    print(f"study {study} ({mask_url(url)}); proxy {p.preset}, {p.steps} steps x {p.batch_size} sequences, lr {p.lr:g}")
    print("\n".join(cal.lines(in_use, target_mde=args.target_mde)))
    print(f"one proxy run: {cal.run_wall_s:.1f} s on this machine")
    return 0


def cmd_confirm(args) -> int:
    from autotaper.search.confirm import confirm
    from autotaper.search.results import confirmation_lines

    out = confirm(storage=args.storage, study_name=args.study, top_k=args.top_k, seeds=args.seeds,
                  quiet=args.quiet, steps=args.steps, tokens_per_param=args.tokens_per_param,
                  decompose=not args.no_decompose, population=args.population)
    if args.json:
        print(json.dumps(out.to_dict()))
    else:
        print("\n".join(confirmation_lines(out.to_dict())))
        print(f"\nconfirmed verdict: {out.text}")
    return 0


def cmd_results(args) -> int:
    from autotaper.search.results import leaderboard, to_csv, to_table

    board = leaderboard(args.storage, args.study)
    if args.json:
        print(json.dumps({"trials": board["trials"], "verdict": board["verdict"], "study": board["study"],
                          "noise": board["noise"], "confirmation": board["confirmation"]}))
    elif args.csv:
        sys.stdout.write(to_csv(board["trials"]))
    else:
        print(to_table(board))
    report = Path("runs") / "search" / args.study / "report.html"
    if report.is_file():
        print(f"report: {report} (rewrite it with `autotaper report --study {args.study}`)", file=sys.stderr)
    return 0


def cmd_studies(args) -> int:
    from autotaper.search.storage import mask_url
    from autotaper.search.study import delete_study, list_studies

    if args.delete:
        url = delete_study(args.storage, args.delete)
        print(f"deleted study {args.delete} from {mask_url(url)}", file=sys.stderr)
        return 0
    found = list_studies(args.storage)
    if args.json:
        print(json.dumps(found))
        return 0
    if not found:
        print("no studies" + (f" in {mask_url(args.storage)}" if args.storage else " under runs/search/"),
              file=sys.stderr)
        return 0
    width = max(len(s["study"]) for s in found)
    print(f"{'study':<{width}}  {'trials':>6}  {'counted':>7}  {'started':<19}  storage")
    for s in found:
        print(f"{s['study']:<{width}}  {s['trials']:>6}  {s['counted']:>7}  {s['started'] or '-':<19}  {s['storage']}")
    return 0


PROBE_KEYS = ("layer", "cos", "update")  # what the report's probe section draws per layer


def cmd_report(args) -> int:
    from autotaper.report import write_ladder_report, write_report

    if bool(args.study) == bool(args.ladder):
        raise UsageError("autotaper report: give --study (a search) or --ladder (a ladder.json), one of them")
    if args.ladder:
        src = Path(args.ladder)
        if not src.exists():
            raise InputError(f"report: --ladder {args.ladder!r} does not exist (autotaper ladder writes "
                             f"runs/ladder/PREFIX/ladder.json)")
        from autotaper._io import read_json

        report = read_json(src, f"report: --ladder {args.ladder!r}", limit=64 * 2**20)
        try:
            path = write_ladder_report(report, args.out or src.with_suffix(".html"))
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            raise InputError(f"report: --ladder {args.ladder!r} is not a ladder.json ({e!r})") from None
        print(f"report: {path}")
        return 0
    probe = None
    if args.probe:
        probe_file = Path(args.probe) / "probe.json"
        if not probe_file.is_file():
            raise InputError(f"report: --probe {args.probe!r} has no probe.json (run `autotaper probe "
                             f"{args.probe}` first)")
        from autotaper._io import read_json

        probe = read_json(probe_file, f"report: --probe {args.probe!r}")
        layers = probe.get("layers") if isinstance(probe, dict) else None
        if not isinstance(layers, list) or not layers or not all(
                isinstance(r, dict) and all(isinstance(r.get(k), (int, float)) for k in PROBE_KEYS) for r in layers):
            raise InputError(f"report: --probe {args.probe!r}: probe.json holds no per-layer rows with "
                             f"{', '.join(PROBE_KEYS)} (rerun `autotaper probe {args.probe}`)")
    path = write_report(args.storage, args.study, args.out, probe=probe)
    print(f"report: {path}")
    if args.open:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return 0


def _add_proxy_overrides(p) -> None:
    """The flags that override a space's proxy (search and calibrate): they name their own study."""
    p.add_argument("--preset", help="override the space's proxy preset")
    p.add_argument("--family", help="override the space's proxy family")
    p.add_argument("--steps", type=_bounded(int, 1, 10_000_000), help="override the proxy's training steps")
    p.add_argument("--seeds", type=_seeds, help="override the proxy's paired seeds: N, or MIN:MAX to race")
    _add_data_override(p)
    _add_param_override(p)


def add_commands(sub) -> None:
    """This group's subcommands, on the `autotaper` parser's subparsers."""
    p = sub.add_parser("search", help="search the best taper in a space (Optuna locally, or Ray Tune)")
    p.add_argument("--space", required=True, help="YAML search space, e.g. search_spaces/quickstart.yaml")
    p.add_argument("--backend", default="optuna", choices=["optuna", "ray"],
                   help="optuna: trials on this machine; ray: Ray Tune trials over a cluster")
    p.add_argument("--n-trials", type=_bounded(int, 1, 1_000_000), help="trials in the study in total (default: the space's)")
    p.add_argument("--timeout", type=_positive(float), help="stop starting trials after this many seconds")
    p.add_argument("--storage", help="sqlite:///f.db, journal:f.log or postgresql://... "
                   "(default runs/search/STUDY/)")
    p.add_argument("--study", help="study name (default: the space's name); re-running resumes it")
    p.add_argument("--workers", type=_auto_or(_positive(int)), default=1,
                   help="worker processes on this machine, or auto: as many as fit the GPU's memory and "
                        "the host's cores (one per two cores on a CPU)")
    _add_proxy_overrides(p)
    p.add_argument("--budget", type=_duration, help="plan trials to finish in this wall time: 600, 600s, 10m, 1.5h "
                   "(default: the space's search.budget)")
    p.add_argument("--no-confirm", action="store_true", help="skip the confirmation on fresh seeds")
    p.add_argument("--sampler-seed", type=_bounded(int, 0, 2**32 - 1), help="override the space's search.seed")
    p.add_argument("--population", type=_auto_or(_bounded(int, 1, 256)),
                   help="train up to this many runs at once in one process, or auto (default: the space's "
                   "search.population)")
    ray = p.add_argument_group("ray backend")
    ray.add_argument("--address", help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: start one)")
    ray.add_argument("--cpus-per-trial", type=_bounded(float, 0, 4096, low_open=True), help="default: the space's search.cpus_per_trial (1)")
    ray.add_argument("--gpus-per-trial", type=_auto_or(_nonnegative(float)),
                     help="fractions share one GPU; auto: 1 / as many proxies as fit a cluster GPU's memory "
                          "(default: the space's, 0)")
    ray.add_argument("--max-concurrent", type=_bounded(int, 1, 100_000), help="trials at once (default: as resources allow)")
    ray.add_argument("--tune-storage", help="where Ray Tune keeps its own state (default ~/ray_results/autotaper)")
    ray.add_argument("--submit", metavar="DASHBOARD", help="run the search as a Ray job on the cluster whose "
                     "dashboard is at this URL (http://HEAD:8265), shipping this autotaper, the space and its data; "
                     "needs --storage (or AUTOTAPER_STORAGE) that the head node reaches")
    ray.add_argument("--follow", action="store_true", help="with --submit: print the job's log until it ends")
    ray.add_argument("--no-install", action="store_true", help="with --submit: install nothing on the nodes "
                     "(they already hold autotaper's dependencies)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    p.add_argument("--json", action="store_true", help="print the leaderboard as one JSON object")
    p.set_defaults(func=cmd_search, parser=p)

    p = sub.add_parser("calibrate", help="measure the noise floor of a space's proxy: SDs and minimum "
                       "detectable effect")
    p.add_argument("--space", required=True, help="YAML search space")
    p.add_argument("--storage", help="the study's storage URL (default runs/search/STUDY/)")
    p.add_argument("--study", help="study name (default: the space's name); a search of it reuses the runs")
    _add_proxy_overrides(p)
    p.add_argument("--lr-sweep", "--lr", dest="lr", type=_floats, nargs="?", const=(),
                   help="also sweep uniform's learning rate: these values (e.g. 1e-3,2e-3,4e-3), or with no "
                   "value 0.5x, 1x and 2x the proxy's (--lr: the former name)")
    p.add_argument("--target-mde", type=_positive(float), help="print the seeds this MDE needs")
    p.add_argument("--refresh", action="store_true", help="measure again even if the study holds a calibration")
    p.add_argument("--population", type=_auto_or(_bounded(int, 1, 256)),
                   help="train up to this many runs at once in one process, or auto (default: the space's "
                   "search.population)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("confirm", help="retrain a study's best tapers on fresh seeds; Holm-corrected verdict")
    p.add_argument("--study", required=True, help="the study's name")
    p.add_argument("--storage", help="the study's storage URL (default runs/search/STUDY/)")
    from autotaper.search.settings import Confirm

    p.add_argument("--top-k", type=_bounded(int, 0, 1000), default=Confirm.top_k,
                   help="tapers to confirm besides the paper default")
    p.add_argument("--fresh-seeds", "--seeds", dest="seeds", type=_bounded(int, 2, 1000), default=Confirm.seeds,
                   help="fresh seeds to confirm on, at least 2 (--seeds: the former name)")
    p.add_argument("--steps", type=_bounded(int, 1, 10_000_000), help="train every confirmation run this long (default: the "
                   "search's steps): decide nearer the target's regime")
    p.add_argument("--tokens-per-param", type=_bounded(float, 0, 1e6, low_open=True), help="or this many tokens per uniform parameter")
    p.add_argument("--no-decompose", action="store_true", help="do not retrain the verdict's taper under the "
                   "other parametrization (sp <-> mup)")
    p.add_argument("--population", type=_auto_or(_bounded(int, 1, 256)), default=1,
                   help="train up to this many runs at once in one process (candidates x fresh seeds, grouped by "
                   "width; autotaper.train.population), or auto (as many as the device's memory fits); 1: one "
                   "at a time")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_confirm)

    p = sub.add_parser("results", help="the leaderboard of a study, with paired intervals and a verdict")
    p.add_argument("--storage", help="the study's storage URL (default runs/search/STUDY/)")
    p.add_argument("--study", required=True, help="the study's name")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help='{"trials": [...], "verdict": ...}')
    fmt.add_argument("--csv", action="store_true", help="one CSV row per candidate")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("report", help="one self-contained HTML page of a study: leaderboard with intervals, "
                       "widths, history, importances, learning curves")
    p.add_argument("--storage", help="the study's storage URL (default runs/search/STUDY/)")
    p.add_argument("--study", help="a search's study")
    p.add_argument("--ladder", metavar="LADDER_JSON", help="or a ladder's report, runs/ladder/PREFIX/ladder.json")
    p.add_argument("--out", help="the HTML file (default runs/search/STUDY/report.html, or beside ladder.json)")
    p.add_argument("--probe", metavar="RUN_DIR", help="also show this run's residual-stream probe")
    p.add_argument("--open", action="store_true", help="open it in the browser")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("studies", help="list the studies of a storage (default: every study under runs/search/), "
                                       "or delete one")
    p.add_argument("--storage", default=None, help="an Optuna storage URL (AUTOTAPER_STORAGE when unset)")
    p.add_argument("--delete", metavar="STUDY", default=None, help="delete this study and everything it stores")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=cmd_studies)
