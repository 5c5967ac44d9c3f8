"""The `autotaper` command line.

Subcommands import what they need when they run, so `autotaper --help` stays fast. Bad
input of any kind ends with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from autotaper.errors import AutotaperError, InputError

EXIT_USAGE = 2
EXIT_BUG = 70  # EX_SOFTWARE (sysexits.h): an internal error


class UsageError(InputError):
    """Bad input from the user: reported as one line, exit status 2."""


class _Help(argparse.HelpFormatter):
    """Help that shows each flag's default, unless the text already says it or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message}")


def _add_model_args(p: argparse.ArgumentParser, *, taper_required: bool = True, preset_required: bool = True,
                    several_params: bool = False) -> None:
    p.add_argument("--preset", required=preset_required, help="model preset (see `autotaper presets`)")
    p.add_argument("--family", help="override the preset's family: gpt, llama, gated, or a registered one")
    p.add_argument("--taper", default="uniform" if not taper_required else None,
                   required=taper_required, help="taper text, e.g. ffn:cosine:1.5:0.5 (or 'uniform')")
    p.add_argument("--constraint", default="params", choices=["params", "flops", "both"],
                   help="which budget the tapered model must match (default: params)")
    p.add_argument("--tolerance", type=_bounded(float, 0, 0.5), default=1e-3,
                   help="largest relative budget error when an exact match is impossible (default 1e-3)")
    _add_param_args(p, several=several_params)


def _add_param_args(p: argparse.ArgumentParser, *, several: bool) -> None:
    p.add_argument("--param",
                   help=("parametrizations to compare, e.g. sp,mup (sp, mup, completep; default sp)" if several else
                         "parametrization: sp (one global LR), mup (init, LR, eps and weight decay per matrix "
                         "from its fan-in) or completep (mup plus depth rules); default sp"))
    p.add_argument("--depth-alpha", type=_bounded(float, 0.5, 1.0), default=1.0,
                   help="completep: residual branches x (depth / base depth)^-alpha, alpha in [0.5, 1] (default 1)")
    p.add_argument("--base-d-model", type=_bounded(int, 1, 2**20),
                   help="mup/completep: the width the LR was tuned at (default: the model's own)")
    p.add_argument("--base-n-layers", type=_bounded(int, 1, 10_000),
                   help="completep: the depth the LR was tuned at (default: the model's own)")


def _param_fields(args, name: str | None = None) -> dict:
    """The ModelSpec fields of --param (or `name`), --depth-alpha and the base shape, checked."""
    from autotaper.parametrization import parse_names, problems

    name = name or getattr(args, "param", "sp")
    if name is None:
        name = "sp"
    if "," in name:
        raise UsageError(f"--param: one parametrization here, got {name!r} (compare takes several)")
    found = problems(parse_names(name)[0], args.depth_alpha)
    if found:
        raise UsageError(found[0])
    out = {"parametrization": name, "depth_alpha": args.depth_alpha}
    for key in ("base_d_model", "base_n_layers"):
        if getattr(args, key, None) is not None:
            out[key] = getattr(args, key)
    return out


def _baseline(args, param: str | None = None):
    from autotaper.spec import PRESETS, ModelSpec

    if args.preset not in PRESETS:
        try:
            ModelSpec.from_name(args.preset)
        except ValueError as e:
            raise UsageError(f"--preset: {e}") from None
    overrides = {"family": args.family} if args.family else {}
    try:
        return ModelSpec.from_name(args.preset, **overrides, **_param_fields(args, param))
    except ValueError as e:
        if args.family and "family" in str(e):
            raise UsageError(f"--family: {e}") from None
        raise


# -- plan -------------------------------------------------------------------------------
def _side(spec, cost) -> dict:
    return {"params": cost.params, "params_non_embedding": cost.params_non_embedding,
            "flops_per_token": cost.flops_per_token, "layers": spec.layers()}


def cmd_plan(args) -> int:
    from autotaper.budget import solve_report

    sol = solve_report(_baseline(args), args.taper, constraint=args.constraint, tolerance=args.tolerance)
    if args.out:
        sol.spec.save(args.out)
        print(f"spec written to {args.out}: train it with `autotaper train --spec {args.out}`", file=sys.stderr)
    if args.json:
        out = {"preset": args.preset, "family": sol.spec.family, "taper": sol.spec.taper,
               "parametrization": sol.spec.parametrization, "constraint": args.constraint, "baseline": _side(sol.baseline, sol.baseline_cost),
               "tapered": _side(sol.spec, sol.cost),
               "delta": {"params": sol.params_delta, "flops_per_token": sol.flops_delta},
               "multiples": sol.multiples, "default_multiples": sol.default_multiples,
               "ratios": {dim: {"nominal": list(sol.nominal[dim]), "realised": list(sol.realised[dim])}
                          for dim in sol.realised}}
        print(json.dumps(out))
        return 0
    print(format_plan(sol))
    return 0


def format_plan(sol) -> str:
    spec, base = sol.spec, sol.baseline
    widest = max(spec.layer_ffn)
    from autotaper.parametrization import describe

    lr = any(r != 1.0 for r in spec.layer_lr)
    lines = [f"{spec.family} {base.n_layers} layers, d_model {base.d_model}, taper {spec.taper}, "
             f"parametrization {describe(spec)}", "",
             f"{'layer':>5} {'ffn':>7} {'ratio':>6} {'heads':>5} {'kv':>3} {'d_model':>7} "
             + (f"{'lr x':>6} " if lr else "") + f"{'params':>13}  ffn width"]
    for i, (layer, p) in enumerate(zip(spec.layers(), sol.cost.layer_params)):
        bar = "#" * max(1, round(30 * layer["ffn"] / widest))
        lines.append(f"{i:>5} {layer['ffn']:>7} {layer['ffn'] / base.ffn_width:>6.3f} {layer['heads']:>5} "
                     f"{layer['kv_heads']:>3} {layer['d_model']:>7} " + (f"{layer['lr']:>6.3f} " if lr else "")
                     + f"{p:>13,}  {bar}")
    for dim in sol.realised:
        nom = ", ".join(f"{r:.3f}" for r in sol.nominal[dim])
        real = ", ".join(f"{r:.3f}" for r in sol.realised[dim])
        lines += ["", f"{dim} ratios nominal : {nom}", f"{dim} ratios realised: {real}"]
    if sol.multiples:
        used = ", ".join(f"{dim} {m}" + (f" (default {sol.default_multiples[dim]} missed the budget)"
                                          if dim in sol.finer else "") for dim, m in sol.multiples.items())
        lines += ["", f"rounding multiples: {used}"]
    b, t = sol.baseline_cost, sol.cost
    lines += ["", f"{'':<22}{'uniform':>18}{'tapered':>18}{'delta':>16}",
              f"{'params':<22}{b.params:>18,}{t.params:>18,}{t.params - b.params:>+16,}",
              f"{'params (non-embed)':<22}{b.params_non_embedding:>18,}{t.params_non_embedding:>18,}"
              f"{t.params_non_embedding - b.params_non_embedding:>+16,}",
              f"{'FLOPs/token (fwd)':<22}{b.flops_per_token:>18,.0f}{t.flops_per_token:>18,.0f}"
              f"{t.flops_per_token - b.flops_per_token:>+16,.0f}"]
    return "\n".join(lines)


# -- train / compare ---------------------------------------------------------------------
def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=_bounded(int, 1, 10_000_000), default=300, help="optimizer steps (default 300)")
    p.add_argument("--data", help="text file, directory, glob, .bin/.npy tokens, or hf:PATH "
                   "(default: the embedded standard-library corpus)")
    p.add_argument("--strict-data", action="store_true",
                   help="refuse a data folder or glob holding files that are not UTF-8 text (default: skip them)")
    p.add_argument("--tokenizer", default="bytes", choices=["bytes", "bpe"],
                   help="bytes (256 symbols) or a BPE trained on the corpus")
    p.add_argument("--vocab-size", type=_bounded(int, 2, 2**16), help="BPE vocabulary size (default 4096)")
    p.add_argument("--batch-size", type=_bounded(int, 1, 2**20), default=16, help="sequences per step (default 16)")
    p.add_argument("--grad-accum", type=_bounded(int, 1, 2**20), default=1, help="micro-batches per step (default 1)")
    p.add_argument("--lr", type=_bounded(float, 0, 1e4, low_open=True), default=3e-3, help="peak learning rate (default 3e-3)")
    p.add_argument("--schedule", default="cosine", choices=["cosine", "wsd", "constant"],
                   help="the learning-rate schedule after warmup")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 where the device runs it fast, else fp32")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto (cuda when present)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each block (each distinct layer shape compiles once; the time is "
                        "reported apart from tokens/s)")
    p.add_argument("--eval-every", type=_bounded(int, 1, 10_000_000), help="steps between evaluations (default: 4 per run)")
    p.add_argument("--checkpoint-every", type=_bounded(int, 0, 10_000_000), default=0, help="steps between checkpoints (default: end only)")
    p.add_argument("--log-every", type=_bounded(int, 1, 10_000_000), default=10, help="steps between metrics.jsonl rows")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="last line of stdout: one JSON object")


def _train_config(args, seed: int):
    from autotaper.train import TrainConfig

    return TrainConfig(steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
                       schedule=args.schedule, precision=args.precision, device=args.device,
                       compile=args.compile, eval_every=args.eval_every,
                       checkpoint_every=args.checkpoint_every, log_every=args.log_every, seed=seed)


def _data_and_baseline(args):
    import dataclasses

    data = _load_data(args)
    base = _baseline(args)
    return data, dataclasses.replace(base, vocab_size=data.vocab_size)


def _load_data(args):
    from autotaper.data import load_data

    if args.data is not None and not args.data.strip():
        raise UsageError("--data: an empty path (leave --data out for the embedded corpus)")

    data = load_data(args.data, tokenizer=args.tokenizer, vocab_size=args.vocab_size, strict=args.strict_data)
    if data.note():
        print(data.note(), file=sys.stderr)
    return data


def _slug(text: str) -> str:
    return "".join(c if (c.isascii() and c.isalnum()) or c in ".-" else "_" for c in text)


def cmd_train(args) -> int:
    from autotaper.budget import solve
    from autotaper.train import train

    config = _train_config(args, args.seed)
    if args.spec:
        from autotaper.spec import ModelSpec

        if args.preset or args.family or args.taper != "uniform" or args.param is not None:
            raise UsageError("autotaper train: --spec gives the whole model, its parametrization included; leave "
                             "out --preset, --family, --taper and --param")
        from autotaper.budget import check_taper

        spec = ModelSpec.load(args.spec)
        check_taper(spec, f"spec file {args.spec!r}")
        data = _load_data(args)
        name = Path(args.spec).stem
    elif args.preset:
        data, base = _data_and_baseline(args)
        spec = solve(base, args.taper, constraint=args.constraint, tolerance=args.tolerance)
        name = args.preset
    else:
        raise UsageError("autotaper train: give --preset (with --taper) or --spec")
    out = args.out or f"runs/train/{name}-{_slug(spec.taper)}-seed{args.seed}-{args.steps}steps"
    if args.ray_workers:
        if args.tensorboard:
            raise UsageError("autotaper train: --tensorboard is for local runs; Ray Train runs log to Ray's own")
        from types import SimpleNamespace

        from autotaper.train.ray_train import train_on_ray

        train_on_ray(spec, config, out_dir=out, data=args.data, tokenizer=args.tokenizer,
                     vocab_size=args.vocab_size, num_workers=args.ray_workers, use_gpu=args.use_gpu,
                     address=args.address)
        # rank 0 wrote the run directory, summary included, exactly as a local run does
        summary = {k: v for k, v in json.loads((Path(out) / "summary.json").read_text()).items() if k != "history"}
        result = SimpleNamespace(**summary)
    else:
        callbacks = []
        if args.tensorboard and int(os.environ.get("RANK", "0")) == 0:
            from autotaper.train import TensorBoard

            callbacks.append(TensorBoard(args.tensorboard))
        result = train(spec, data, config, out_dir=out, quiet=args.quiet, callbacks=callbacks)
        summary = {k: v for k, v in result.to_dict().items() if k != "history"}
    bpb = "n/a" if result.val_bpb is None else f"{result.val_bpb:.4f}"
    loss = "n/a" if result.val_loss is None or result.val_loss != result.val_loss else f"{result.val_loss:.4f}"
    if getattr(result, "resumed_from", None) is not None and result.resumed_from >= args.steps:
        print(f"{result.status}: {out} already holds all {result.steps} steps of this run ({spec.taper} on {name}, "
              f"seed {args.seed}); nothing trained. val_loss {loss}  val_bpb {bpb}", file=sys.stderr)
        if args.json:
            print(json.dumps(summary))
        return 0 if result.status != "diverged" else 1
    print(f"{result.status}{' (' + result.reason + ')' if result.reason else ''}: {spec.taper} on "
          f"{name}, {result.steps} steps, seed {args.seed}, corpus {data.name}", file=sys.stderr)
    print(f"val_loss {loss}  val_bpb {bpb}  {result.tokens_per_s:,.0f} tokens/s  "
          f"precision {result.precision}  parametrization {spec.parametrization}"
          + (f"  compile {result.compile_s:.1f} s (first step)" if getattr(result, "compile_s", None) else "")
          + f"  run dir {out}", file=sys.stderr)
    if result.status != "diverged" and not args.ray_workers:
        print(f"export it: autotaper export {out} --format hf {out}/hf", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    return 0 if result.status != "diverged" else 1


def cmd_compare(args) -> int:
    from autotaper.paired import compare_parametrizations, describe
    from autotaper.parametrization import parse_names
    from autotaper.stats import mde

    names = parse_names(args.param or "sp")
    data = _load_data(args)
    bases = {name: dataclasses.replace(_baseline(args, name), vocab_size=data.vocab_size) for name in names}
    several = len(names) > 1

    def show(name, label, r):
        print(f"{name + ' ' if several else ''}seed {r.seed}: uniform {r.baseline:.4f}  taper {r.value:.4f}  "
              f"delta {r.delta:+.4f}", file=sys.stderr)

    result = compare_parametrizations(bases, args.taper, data, lambda seed, o: _train_config(args, seed),
                                      seeds=range(args.seeds), constraint=args.constraint, tolerance=args.tolerance,
                                      quiet=args.quiet, out_dir=args.out, on_run=show)
    if several:
        for line in result.lines():
            print(line, file=sys.stderr)
        if args.json:
            print(json.dumps(result.to_dict()))
        return 0
    comp = result.by_param[names[0]]
    stats = comp.stats
    floor = mde(stats.sd, stats.n)
    floor_text = f"; minimum detectable effect at {stats.n} seeds {floor:.4f}" if floor is not None else ""
    print(f"{result.taper} vs uniform: {describe(stats, unit=result.unit)}{floor_text} (parametrization "
          f"{names[0]})", file=sys.stderr)
    if args.json:
        print(json.dumps({"taper": result.taper, "parametrization": names[0], **comp.to_dict(), "mde": floor}))
    return 0


# -- search / results -------------------------------------------------------------------
# search options a submitted job's own `autotaper search` takes over as they were given
_FORWARDED = (("study", "--study"), ("n_trials", "--n-trials"), ("timeout", "--timeout"),
              ("cpus_per_trial", "--cpus-per-trial"), ("gpus_per_trial", "--gpus-per-trial"),
              ("max_concurrent", "--max-concurrent"), ("tune_storage", "--tune-storage"), ("budget", "--budget"),
              ("sampler_seed", "--sampler-seed"), ("preset", "--preset"), ("family", "--family"),
              ("steps", "--steps"), ("seeds", "--seeds"), ("param", "--param"), ("depth_alpha", "--depth-alpha"))
_FORWARDED_FLAGS = (("no_confirm", "--no-confirm"), ("strict_data", "--strict-data"), ("json", "--json"),
                    ("quiet", "--quiet"))


def _submit(args, space) -> int:
    """`search --submit`: the search as a Ray job that ships this package (autotaper.cluster)."""
    from autotaper.cluster import follow, submit_search

    forwarded = []
    for dest, flag in _FORWARDED:
        value = getattr(args, dest)
        if value is not None:
            value = f"{value[0]}:{value[1]}" if dest == "seeds" else f"{value:g}" if isinstance(value, float) else value
            forwarded += [flag, str(value)]
    forwarded += [flag for dest, flag in _FORWARDED_FLAGS if getattr(args, dest)]
    job = submit_search(args.submit, args.space, forwarded, storage=args.storage, data=space.proxy.data,
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


def _add_data_override(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="override the proxy's data (a study keeps one corpus: a worker elsewhere passes "
                   "the study's corpus folder)")
    p.add_argument("--strict-data", action="store_true", help="refuse data folders holding files that are not text")


def _add_param_override(p: argparse.ArgumentParser) -> None:
    from autotaper.parametrization import PARAMETRIZATIONS

    p.add_argument("--param", choices=PARAMETRIZATIONS,
                   help="override the proxy's parametrization (a study holds one: the default study name gets "
                        "-PARAM appended)")
    p.add_argument("--depth-alpha", type=_bounded(float, 0.5, 1.0), help="completep's depth exponent, in [0.5, 1] (default 1)")


def _load_space(args):
    from autotaper.search import load_space

    seeds = getattr(args, "seeds", None)
    param = getattr(args, "param", None)
    if getattr(args, "data", None) is not None and not args.data.strip():
        raise UsageError("--data: an empty path (leave --data out for the space's data)")
    overrides = {"preset": getattr(args, "preset", None), "family": getattr(args, "family", None),
                 "steps": getattr(args, "steps", None), "data": getattr(args, "data", None),
                 "strict_data": getattr(args, "strict_data", None) or None,
                 "parametrization": param, "depth_alpha": getattr(args, "depth_alpha", None)}
    if seeds is not None:
        overrides["seeds"] = {"min": seeds[0], "max": seeds[1]}
    space = load_space(args.space, overrides=overrides)
    if getattr(args, "study", None) is None:  # the overrides name their own study: the space's stays its own
        space.name = _derived_name(args.space, space)
    elif param is not None and param != "sp":
        space.name = f"{space.name}-{param}"
    if getattr(args, "sampler_seed", None) is not None:
        import dataclasses

        space.settings = dataclasses.replace(space.settings, seed=args.sampler_seed)
    return space


def _derived_name(path: str, space) -> str:
    """The default study name of a search whose flags override its space's proxy: the space's
    name, then each proxy field the flags changed (preset, family, steps, seeds, parametrization),
    so `search --space quickstart.yaml --steps 20` is not stored as the quickstart's own study."""
    from autotaper.search.space import Proxy, read_space_file

    raw = read_space_file(path)
    section = raw.get("proxy") if isinstance(raw, dict) and isinstance(raw.get("proxy"), dict) else {}
    default = Proxy()
    given = space.proxy
    raw_seeds = section.get("seeds", default.seeds)
    seeds = (raw_seeds.get("min"), raw_seeds.get("max")) if isinstance(raw_seeds, dict) else (raw_seeds, None)
    seeds = (seeds[0], seeds[1] or seeds[0])
    parts = []
    for key in ("preset", "family"):
        if getattr(given, key) != section.get(key, getattr(default, key)):
            parts.append(str(getattr(given, key)))
    if given.steps != section.get("steps", default.steps):
        parts.append(f"{given.steps}steps")
    if (given.seeds, given.max_seeds) != seeds:
        parts.append(f"seeds{given.seeds}" + (f"-{given.max_seeds}" if given.racing else ""))
    if given.parametrization != section.get("parametrization", default.parametrization):
        parts.append(given.parametrization)
    if given.depth_alpha != section.get("depth_alpha", default.depth_alpha):
        parts.append(f"alpha{given.depth_alpha:g}")
    name = "-".join([space.name, *(_slug(x) for x in parts)])
    return name if len(name) <= 100 else name[:90] + "-" + __import__("hashlib").sha256(name.encode()).hexdigest()[:8]


def _seeds(text: str) -> tuple[int, int]:
    """--seeds N (every candidate on N seeds) or MIN:MAX (racing)."""
    try:
        lo, _, hi = text.partition(":")
        pair = (int(lo), int(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be N or MIN:MAX, got {text!r}") from None
    if pair[0] < 1 or pair[1] < pair[0]:
        raise argparse.ArgumentTypeError(f"needs 1 <= MIN <= MAX, got {text!r}")
    return pair


def cmd_calibrate(args) -> int:
    from autotaper.search.calibrate import calibrate
    from autotaper.search.storage import mask_url

    space = _load_space(args)
    lrs = args.lr if args.lr else ([space.proxy.lr * f for f in (0.5, 2.0)] if args.lr is not None else ())
    res = calibrate(space, storage=args.storage, study_name=args.study, lrs=lrs, refresh=args.refresh,
                    quiet=args.quiet)
    cal, study, url = res.calibration, res.study_name, res.storage
    p = space.proxy
    in_use = {"search": p.seeds} | ({"racing up to": p.max_seeds} if p.racing else {})
    if space.settings.confirm.enabled:
        in_use["confirmation"] = (space.settings.confirm.seeds, space.settings.confirm.top_k + 1)
    if args.json:
        mdes = {k: cal.mde(n[0], alpha=0.05 / n[1]) if isinstance(n, tuple) else cal.mde(n) for k, n in in_use.items()}
        out = {**cal.to_dict(), "study": study, "storage": mask_url(url), "mde": mdes}
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
                  decompose=not args.no_decompose)
    if args.json:
        print(json.dumps(out.to_dict()))
    else:
        print("\n".join(confirmation_lines(out.to_dict())))
        print(f"\nconfirmed verdict: {out.text}")
    return 0


def cmd_ladder(args) -> int:
    from autotaper.ladder.run import load_ladder, run_ladder, to_text, with_rules

    scales = args.scales.split(",") if args.scales else None
    space, config = load_ladder(args.space, scales=scales,
                                overrides={"parametrization": args.param, "depth_alpha": args.depth_alpha})
    if args.param is not None and args.param != "sp" and not args.prefix:
        space.name = f"{space.name}-{args.param}"  # its own rung studies: a study holds one parametrization
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


def _article(kind) -> str:
    return "an" if kind.__name__[0] in "aeiou" else "a"


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {_article(kind)} {kind.__name__}, got {text!r}") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
        return value
    return parse


def _bounded(kind, low, high, *, low_open: bool = False):
    """An argparse type: a finite `kind` in [low, high] ((low, high] with `low_open`)."""
    import math

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {_article(kind)} {kind.__name__}, got {text!r}") from None
        if not math.isfinite(value) or not (low < value if low_open else low <= value) or value > high:
            show = (lambda v: f"{v:,}") if kind is int else (lambda v: f"{v:g}")
            raise argparse.ArgumentTypeError(f"must be in {'(' if low_open else '['}{show(low)}, {show(high)}], "
                                             f"got {text!r}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


def _auto_or(kind):
    def parse(text):
        return "auto" if text == "auto" else kind(text)
    return parse


def _duration(text: str) -> float:
    from autotaper.search.space import parse_duration

    try:
        return parse_duration(text, "--budget")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[1]) from None


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be numbers separated by commas, got {text!r}") from None
    if not values or any(not 0 < v <= 1e4 for v in values):
        raise argparse.ArgumentTypeError(f"must be positive numbers, got {text!r}")
    return values


def _nonnegative(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {_article(kind)} {kind.__name__}, got {text!r}") from None
        if not 0 <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
        return value
    return parse


# -- export -----------------------------------------------------------------------------
def cmd_export(args) -> int:
    from autotaper.export import export_hf

    result = export_hf(args.run_dir, args.out, overwrite=args.overwrite, verify=not args.no_verify)
    if args.json:
        print(json.dumps(result.__dict__, indent=1))
    else:
        print(result.text())
    return 0


# -- probe ------------------------------------------------------------------------------
def cmd_probe(args) -> int:
    from autotaper.data import load_data
    from autotaper.probe import probe_run, to_table
    from autotaper.spec import ModelSpec

    run = Path(args.run_dir)
    if not (run / "spec.json").is_file():
        raise InputError(f"probe: RUN_DIR {str(run)!r} has no spec.json (not an autotaper run directory)")
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    tokenizer = args.tokenizer or (summary.get("corpus") or {}).get("tokenizer") or "bytes"
    vocab = ModelSpec.load(run / "spec.json").vocab_size if tokenizer == "bpe" else None
    if args.data is not None and not args.data.strip():
        raise UsageError("--data: an empty path (leave --data out for the embedded corpus)")
    data = load_data(args.data, tokenizer=tokenizer, vocab_size=vocab)
    result = probe_run(run, data, windows=args.windows, device=args.device)
    if args.suggest:
        from autotaper.budget import solve_report
        from autotaper.probe import suggest

        spec = ModelSpec.load(run / "spec.json")
        text = suggest(result, dim=args.dim, strength=args.strength)
        sol = solve_report(spec.uniform(), text)  # checked: it solves to the run's uniform budget
        result["suggestion"] = {"taper": text, "params": sol.cost.params, "baseline_params": sol.baseline_cost.params}
    print(json.dumps(result, indent=1) if args.json else to_table(result))
    if args.suggest and not args.json:
        s = result["suggestion"]
        print(f"suggested taper (solves to {s['params']:,} params, uniform {s['baseline_params']:,}): {s['taper']}")
    from autotaper.report import probe_plot

    (run / "probe.svg").write_text(probe_plot(result))
    print(f"written to {run / 'probe.json'} and {run / 'probe.svg'} (the plot)", file=sys.stderr)
    return 0


def cmd_presets(args) -> int:
    from autotaper.cost import count
    from autotaper.spec import PRESETS, ModelSpec

    for name in PRESETS:
        spec = ModelSpec.from_name(name)
        c = count(spec)
        print(f"{name:<9} {spec.family:<6} L={spec.n_layers:<3} d={spec.d_model:<5} heads={spec.n_heads:<3} "
              f"kv={spec.n_kv_heads:<3} ffn={spec.ffn_width:<5} ctx={spec.context_length:<5} "
              f"vocab={spec.vocab_size:<6} params={c.params:,}")
    return 0


# -- wiring -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autotaper", description="Search how a transformer should spread its "
                     "parameters across depth, at a fixed parameter and FLOP budget.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("plan", help="solve a taper to the baseline's budget and show it layer by layer")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="also write the solved spec to this JSON file (for `autotaper train --spec`)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("train", help="train one model (a proxy run, or full size with torchrun)")
    _add_model_args(p, taper_required=False, preset_required=False)
    p.add_argument("--spec", help="train this spec file (from `autotaper plan --out`) instead of --preset/--taper")
    _add_train_args(p)
    p.add_argument("--seed", type=_bounded(int, 0, 2**32 - 1), default=0, help="seed of the init and the batches (default 0)")
    p.add_argument("--out", help="run directory (default runs/train/...); an existing run resumes")
    p.add_argument("--tensorboard", metavar="DIR", help="also write the training metrics to TensorBoard in DIR")
    p.add_argument("--ray-workers", type=_bounded(int, 0, 4096), default=0,
                   help="train with DDP on this many Ray Train workers (TorchTrainer)")
    p.add_argument("--use-gpu", action="store_true", help="Ray Train workers take one GPU each")
    p.add_argument("--address", help="Ray cluster for --ray-workers (default: start one here)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="a taper against uniform on paired seeds, with a 95%% interval; "
                       "under several parametrizations, the part of its effect that is per-layer LR")
    _add_model_args(p, several_params=True)
    _add_train_args(p)
    p.add_argument("--seeds", type=_bounded(int, 2, 1000), default=3, help="paired seeds (default 3, at least 2)")
    p.add_argument("--out", help="parent directory for the runs (default: none kept)")
    p.set_defaults(func=cmd_compare)

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
    p.add_argument("--preset", help="override the space's proxy preset")
    p.add_argument("--family", help="override the space's proxy family")
    p.add_argument("--steps", type=_bounded(int, 1, 10_000_000), help="override the proxy's training steps")
    p.add_argument("--seeds", type=_seeds, help="override the proxy's paired seeds: N, or MIN:MAX to race")
    _add_data_override(p)
    _add_param_override(p)
    p.add_argument("--budget", type=_duration, help="plan trials to finish in this wall time: 600, 600s, 10m, 1.5h "
                   "(default: the space's search.budget)")
    p.add_argument("--no-confirm", action="store_true", help="skip the confirmation on fresh seeds")
    p.add_argument("--sampler-seed", type=_bounded(int, 0, 2**32 - 1), help="override the space's search.seed")
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
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("calibrate", help="measure the noise floor of a space's proxy: SDs and minimum "
                       "detectable effect")
    p.add_argument("--space", required=True, help="YAML search space")
    p.add_argument("--storage", help="the study's storage URL (default runs/search/STUDY/)")
    p.add_argument("--study", help="study name (default: the space's name); a search of it reuses the runs")
    p.add_argument("--preset", help="override the space's proxy preset")
    p.add_argument("--family", help="override the space's proxy family")
    p.add_argument("--steps", type=_bounded(int, 1, 10_000_000), help="override the proxy's training steps")
    p.add_argument("--seeds", type=_seeds, help="override the proxy's paired seeds: N or MIN:MAX")
    _add_data_override(p)
    _add_param_override(p)
    p.add_argument("--lr", type=_floats, nargs="?", const=(),
                   help="also sweep uniform's learning rate: these values (e.g. 1e-3,2e-3,4e-3), or with no "
                   "value 0.5x, 1x and 2x the proxy's")
    p.add_argument("--target-mde", type=_positive(float), help="print the seeds this MDE needs")
    p.add_argument("--refresh", action="store_true", help="measure again even if the study holds a calibration")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("confirm", help="retrain a study's best tapers on fresh seeds; Holm-corrected verdict")
    p.add_argument("--study", required=True, help="the study's name")
    p.add_argument("--storage", help="the study's storage URL (default runs/search/STUDY/)")
    p.add_argument("--top-k", type=_bounded(int, 0, 1000), default=3, help="tapers to confirm besides the paper default "
                   "(default 3)")
    p.add_argument("--seeds", type=_bounded(int, 2, 1000), default=3, help="fresh paired seeds (default 3, at least 2)")
    p.add_argument("--steps", type=_bounded(int, 1, 10_000_000), help="train every confirmation run this long (default: the "
                   "search's steps): decide nearer the target's regime")
    p.add_argument("--tokens-per-param", type=_bounded(float, 0, 1e6, low_open=True), help="or this many tokens per uniform parameter")
    p.add_argument("--no-decompose", action="store_true", help="do not retrain the verdict's taper under the "
                   "other parametrization (sp <-> mup)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_confirm)

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
    p.add_argument("--seeds", type=_bounded(int, 2, 1000), help="fresh paired seeds of the probe set (default ladder.probe.seeds)")
    p.add_argument("--top-k", type=_bounded(int, 0, 1000), help="each rung's best tapers added to the probe set "
                   "(default ladder.probe.top_k)")
    p.add_argument("--out", help="directory for ladder.json and the target spec (default runs/ladder/PREFIX)")
    _add_param_override(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_ladder)

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

    p = sub.add_parser("export", help="write a trained run as a Hugging Face folder (config, weights, "
                       "tokenizer; remote code for tapered models)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory from `autotaper train --out`")
    p.add_argument("--format", default="hf", choices=["hf"], help="hf: transformers' from_pretrained folder")
    p.add_argument("out", metavar="OUT", help="the folder to write (refused when it holds files, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT, once the new export has been verified")
    p.add_argument("--no-verify", action="store_true",
                   help="skip loading OUT back with transformers and comparing its logits with autotaper's")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("probe", help="per layer: how much each block changes the residual stream (cosine "
                       "similarity and relative update norm, attention and MLP apart)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory from `autotaper train --out`")
    p.add_argument("--data", help="validation data (default: the embedded corpus; give the run's own --data)")
    p.add_argument("--tokenizer", choices=["bytes", "bpe"], help="default: the run's")
    p.add_argument("--windows", type=_bounded(int, 1, 100_000), default=64, help="validation windows (default 64)")
    p.add_argument("--device", default="cpu", help="where the probe runs the model")
    p.add_argument("--suggest", action="store_true",
                   help="also print a taper whose per-layer ratios follow the measured update norms")
    p.add_argument("--dim", default="ffn", choices=["ffn", "heads", "embed"], help="--suggest: the dimension")
    p.add_argument("--strength", type=_bounded(float, 0, 10, low_open=True), default=1.0,
                   help="--suggest: 1 follows the measurement, smaller pulls towards uniform")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("studies", help="list the studies of a storage (default: every study under runs/search/), "
                                       "or delete one")
    p.add_argument("--storage", default=None, help="an Optuna storage URL (AUTOTAPER_STORAGE when unset)")
    p.add_argument("--delete", metavar="STUDY", default=None, help="delete this study and everything it stores")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=cmd_studies)

    p = sub.add_parser("presets", help="list the model presets")
    p.set_defaults(func=cmd_presets)
    return parser


def _problem_lines(e: AutotaperError) -> str:
    """An error as the lines to print: one per problem when a validation found several
    (`ProblemsError`), each naming its field and standing on its own."""
    problems = getattr(e, "problems", None)
    if not problems:
        return f"autotaper: error: {e.strerror if isinstance(e, OSError) and e.strerror else e}"
    return "\n".join(f"autotaper: error: {e.where}: {line}" for line in problems)


def _version() -> str:
    from autotaper import __version__

    return f"autotaper {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = None

    def say(text: str) -> None:  # an error, with every secret of the storage URLs in play masked
        from autotaper.search.storage import scrub

        urls = (getattr(args, "storage", None), os.environ.get("AUTOTAPER_STORAGE"), *(argv or sys.argv[1:]))
        print(scrub(text, *urls), file=sys.stderr)

    try:
        args = parser.parse_args(argv)
        if getattr(args, "storage", "") is None and os.environ.get("AUTOTAPER_STORAGE"):
            args.storage, args.storage_from_env = os.environ["AUTOTAPER_STORAGE"], True  # keeps passwords off argv
        return int(args.func(args) or 0)
    except UsageError as e:
        say(f"error: {e}")
        return EXIT_USAGE
    except AutotaperError as e:  # ours: bad input exits 2, a fault of the machine or a server 1
        say(_problem_lines(e))
        return e.exit_code
    except RecursionError:
        say("autotaper: error: input nested too deeply")
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("autotaper: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`, `| grep -m1`): end quietly, as git and coreutils do.
        # Later writes (the interpreter's final flush included) go to /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13  # the shell's status for a writer killed by SIGPIPE
    except OSError as e:  # permission, a folder where a file goes, a full disk: the path and why, one line
        where = f"{e.filename}: " if e.filename else ""
        say(f"autotaper: error: {where}{e.strerror or e}")
        return 1
    except MemoryError:
        say("autotaper: error: out of memory (the input asks for more than this machine has)")
        return 1
    except Exception:  # noqa: BLE001 - not ours: a bug, shown whole
        import traceback

        say(traceback.format_exc().rstrip())
        say(f"autotaper: internal error: this is a bug in autotaper {_version().split()[-1]}, not in your input; "
            "please report it with the command and the traceback above")
        return EXIT_BUG
