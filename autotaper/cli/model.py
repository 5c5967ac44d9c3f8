"""Commands about one model: presets, plan, train, compare, probe, export."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from autotaper.cli._common import (
    COMPARE_SEEDS,
    UsageError,
    _add_model_args,
    _add_train_args,
    _baseline,
    _bounded,
    _data_and_baseline,
    _load_data,
    _param_fields,
    _recipe_space,
    _slug,
    _train_config,
)


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


def cmd_train(args) -> int:
    from autotaper.budget import solve
    from autotaper.train import train

    if args.spec and args.space:
        raise UsageError("autotaper train: --spec gives the whole model and --space a proxy recipe: one of them")
    space = _recipe_space(args)
    config = _train_config(args, args.seed, space)
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
    elif args.preset or space is not None:
        data, base = _data_and_baseline(args, space)
        spec = solve(base, args.taper, constraint=args.constraint, tolerance=args.tolerance)
        name = space.proxy.preset if space is not None else args.preset
    else:
        raise UsageError("autotaper train: give --preset (with --taper), --space or --spec")
    out = args.out or f"runs/train/{name}-{_slug(spec.taper)}-seed{args.seed}-{config.steps}steps"
    if args.ray_workers:
        if args.tensorboard:
            raise UsageError("autotaper train: --tensorboard is for local runs; Ray Train runs log to Ray's own")
        from types import SimpleNamespace

        from autotaper.train.ray_train import train_on_ray

        train_on_ray(spec, config, out_dir=out, data=space.proxy.data if space else args.data,
                     tokenizer=space.proxy.tokenizer if space else args.tokenizer or "bytes",
                     vocab_size=space.proxy.vocab_size if space else args.vocab_size, num_workers=args.ray_workers, use_gpu=args.use_gpu,
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
    if getattr(result, "resumed_from", None) is not None and result.resumed_from >= config.steps:
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
        print(f"export it: autotaper export {out} {out}/hf", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    return 0 if result.status != "diverged" else 1


def cmd_compare(args) -> int:
    from autotaper.paired import compare, describe
    from autotaper.parametrization import parse_names
    from autotaper.stats import mde

    space = _recipe_space(args, skip=("param",))  # --param may name several here
    if space is None and not args.preset:
        raise UsageError("autotaper compare: give --preset or --space")
    names = parse_names(args.param or (space.proxy.parametrization if space is not None else "sp"))
    data, base = _data_and_baseline(args, space, param=names[0])
    fields = {k: getattr(args, k) for k in ("depth_alpha", "base_d_model", "base_n_layers")
              if getattr(args, k, None) is not None}
    if space is None:
        fields = {k: v for k, v in _param_fields(args, names[0]).items() if k != "parametrization"}
    seeds = args.seeds or (space.proxy.seeds if space is not None else COMPARE_SEEDS)
    several = len(names) > 1

    def show(name, label, r):
        print(f"{name + ' ' if several else ''}seed {r.seed}: uniform {r.baseline:.4f}  taper {r.value:.4f}  "
              f"delta {r.delta:+.4f}", file=sys.stderr)

    result = compare(base, args.taper, data, _train_config(args, 0, space), params=names, seeds=seeds,
                     constraint=args.constraint, tolerance=args.tolerance, quiet=args.quiet, out_dir=args.out,
                     population=args.population, on_run=show, **fields)
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
    from autotaper.probe import probe_run, to_table

    run = Path(args.run_dir)
    space = _recipe_space(args)
    if space is None and args.data is not None and not args.data.strip():
        raise UsageError("--data: an empty path (leave --data out for the embedded corpus)")
    data = space.proxy.load_data() if space is not None else args.data
    result = probe_run(run, data, tokenizer=args.tokenizer, windows=args.windows, device=args.device,
                       suggest_dim=args.dim if args.suggest else None, strength=args.strength)
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


def add_commands(sub) -> None:
    """This group's subcommands, on the `autotaper` parser's subparsers."""
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
    _add_model_args(p, several_params=True, preset_required=False)
    _add_train_args(p)
    p.add_argument("--seeds", type=_bounded(int, 2, 1000), help=f"paired seeds, at least 2 (default {COMPARE_SEEDS}, "
                   "or the --space proxy's)")
    p.add_argument("--out", help="parent directory for the runs (default: none kept)")
    p.add_argument("--population", type=_bounded(int, 1, 256), default=1,
                   help="train up to this many runs at once in one process (uniform and taper x seeds, per "
                   "parametrization; autotaper.train.population); 1: one at a time")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="write a trained run as a Hugging Face folder (config, weights, "
                       "tokenizer; remote code for tapered models)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory from `autotaper train --out`")
    p.add_argument("out", metavar="OUT", help="the folder to write (refused when it holds files, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT, once the new export has been verified")
    p.add_argument("--no-verify", action="store_true",
                   help="skip loading OUT back with transformers and comparing its logits with autotaper's")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("probe", help="per layer: how much each block changes the residual stream (cosine "
                       "similarity and relative update norm, attention and MLP apart)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory from `autotaper train --out`")
    p.add_argument("--space", metavar="FILE", help="take --data and --tokenizer from this space's proxy section")
    p.add_argument("--data", help="validation data (default: the embedded corpus; give the run's own --data)")
    p.add_argument("--tokenizer", choices=["bytes", "bpe"], help="default: the run's")
    p.add_argument("--windows", type=_bounded(int, 1, 100_000), default=64,  # autotaper.probe.WINDOWS (loads torch)
                   help="validation windows")
    p.add_argument("--device", default="cpu", help="where the probe runs the model")
    p.add_argument("--suggest", action="store_true",
                   help="also print a taper whose per-layer ratios follow the measured update norms")
    p.add_argument("--dim", default="ffn", choices=["ffn", "heads", "embed"], help="--suggest: the dimension")
    p.add_argument("--strength", type=_bounded(float, 0, 10, low_open=True), default=1.0,
                   help="--suggest: 1 follows the measurement, smaller pulls towards uniform")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("presets", help="list the model presets")
    p.set_defaults(func=cmd_presets)
