"""The ladder command: one space at several scales."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from autotaper.cli._common import (
    UsageError,
    _add_param_override,
    _auto_or,
    _bounded,
    _duration,
    with_population,
)


def cmd_ladder(args) -> int:
    from autotaper.ladder.run import load_ladder, run_ladder, to_text, with_rules

    scales = args.scales.split(",") if args.scales else None
    space, config = load_ladder(args.space, scales=scales,
                                overrides={"parametrization": args.param, "depth_alpha": args.depth_alpha})
    if args.param is not None and args.param != "sp" and not args.prefix:
        space.name = f"{space.name}-{args.param}"  # its own rung studies: a study holds one parametrization
    space = with_population(space, args.population)
    config = with_rules(config, budget_s=args.budget, seeds=args.seeds, top_k=args.top_k, n_trials=args.n_trials)
    target = args.target or config.target
    if not target:
        raise UsageError("autotaper ladder: give --target (a preset or a spec file), or ladder.target in the space")
    from autotaper.report import write_ladder_report

    result = run_ladder(space, config, target=target, storage=args.storage, prefix=args.prefix, out_dir=args.out,
                        quiet=args.quiet)
    result.html_path = str(write_ladder_report(result.report, Path(result.path).with_name("ladder.html")))
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(to_text(result.report))
    print(f"report: {result.html_path} (one HTML file: open it in a browser)", file=sys.stderr)
    return 0


def add_commands(sub) -> None:
    """This group's subcommands, on the `autotaper` parser's subparsers."""
    p = sub.add_parser("ladder", help="one space at several scales: confirmed verdicts per scale, proxy fidelity, "
                       "the trend, and a spec for the target")
    p.add_argument("--space", required=True, help="YAML space with a ladder section, e.g. search_spaces/ladder.yaml")
    p.add_argument("--scales", help="rungs as presets, smallest first (e.g. proxy-xs,proxy-s), instead of the "
                   "ladder section's")
    p.add_argument("--target", help="the model to predict for: a preset (e.g. 440m) or a spec file "
                   "(default: ladder.target)")
    p.add_argument("--storage", help="one storage for every rung's study (default runs/search/PREFIX-RUNG/)")
    p.add_argument("--prefix", help="study name prefix (default: the space's name); rerunning resumes every rung")
    p.add_argument("--budget", type=_duration, help="each rung's search: 600, 10m, 1.5h (default: ladder.budget)")
    p.add_argument("--n-trials", type=_bounded(int, 1, 1_000_000), help="each rung's trials (default: ladder.n_trials, else the "
                   "space's)")
    p.add_argument("--fresh-seeds", "--seeds", dest="seeds", type=_bounded(int, 2, 1000),
                   help="fresh seeds the probe set is confirmed on (default ladder.probe.seeds; --seeds: the "
                        "former name)")
    p.add_argument("--top-k", type=_bounded(int, 0, 1000), help="each rung's best tapers added to the probe set "
                   "(default ladder.probe.top_k)")
    p.add_argument("--out", help="directory for ladder.json and the target spec (default runs/ladder/PREFIX)")
    _add_param_override(p)
    p.add_argument("--population", type=_auto_or(_bounded(int, 1, 256)),
                   help="train up to this many runs at once in one process, or auto: each rung's racing baselines, "
                   "candidates' seeds and probe set x fresh seeds (default: the space's search.population)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_ladder)
