"""The `autotaper` command line.

Subcommands import what they need when they run, so `autotaper --help` stays fast. Bad
input of any kind ends with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message}")


def _add_model_args(p: argparse.ArgumentParser, *, taper_required: bool = True) -> None:
    p.add_argument("--preset", required=True, help="model preset (see `autotaper presets`)")
    p.add_argument("--family", help="override the preset's family: gpt, llama, gated, or a registered one")
    p.add_argument("--taper", default="uniform" if not taper_required else None,
                   required=taper_required, help="taper text, e.g. ffn:cosine:1.5:0.5 (or 'uniform')")
    p.add_argument("--constraint", default="params", choices=["params", "flops", "both"],
                   help="which budget the tapered model must match (default: params)")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest relative budget error when an exact match is impossible (default 1e-3)")


def _baseline(args):
    from autotaper.spec import ModelSpec

    overrides = {"family": args.family} if args.family else {}
    return ModelSpec.from_name(args.preset, **overrides)


# -- plan -------------------------------------------------------------------------------
def _side(spec, cost) -> dict:
    return {"params": cost.params, "params_non_embedding": cost.params_non_embedding,
            "flops_per_token": cost.flops_per_token, "layers": spec.layers()}


def cmd_plan(args) -> int:
    from autotaper.solve import solve_report

    sol = solve_report(_baseline(args), args.taper, constraint=args.constraint, tolerance=args.tolerance)
    if args.json:
        out = {"preset": args.preset, "family": sol.spec.family, "taper": sol.spec.taper,
               "constraint": args.constraint, "baseline": _side(sol.baseline, sol.baseline_cost),
               "tapered": _side(sol.spec, sol.cost),
               "delta": {"params": sol.params_delta, "flops_per_token": sol.flops_delta},
               "ratios": {dim: {"nominal": list(sol.nominal[dim]), "realised": list(sol.realised[dim])}
                          for dim in sol.realised}}
        print(json.dumps(out))
        return 0
    print(format_plan(sol))
    return 0


def format_plan(sol) -> str:
    spec, base = sol.spec, sol.baseline
    widest = max(spec.layer_ffn)
    lines = [f"{spec.family} {base.n_layers} layers, d_model {base.d_model}, taper {spec.taper}", "",
             f"{'layer':>5} {'ffn':>7} {'ratio':>6} {'heads':>5} {'kv':>3} {'d_model':>7} "
             f"{'params':>13}  ffn width"]
    for i, (layer, p) in enumerate(zip(spec.layers(), sol.cost.layer_params)):
        bar = "#" * max(1, round(30 * layer["ffn"] / widest))
        lines.append(f"{i:>5} {layer['ffn']:>7} {layer['ffn'] / base.ffn_width:>6.3f} {layer['heads']:>5} "
                     f"{layer['kv_heads']:>3} {layer['d_model']:>7} {p:>13,}  {bar}")
    for dim in sol.realised:
        nom = ", ".join(f"{r:.3f}" for r in sol.nominal[dim])
        real = ", ".join(f"{r:.3f}" for r in sol.realised[dim])
        lines += ["", f"{dim} ratios nominal : {nom}", f"{dim} ratios realised: {real}"]
    b, t = sol.baseline_cost, sol.cost
    lines += ["", f"{'':<22}{'uniform':>18}{'tapered':>18}{'delta':>16}",
              f"{'params':<22}{b.params:>18,}{t.params:>18,}{t.params - b.params:>+16,}",
              f"{'params (non-embed)':<22}{b.params_non_embedding:>18,}{t.params_non_embedding:>18,}"
              f"{t.params_non_embedding - b.params_non_embedding:>+16,}",
              f"{'FLOPs/token (fwd)':<22}{b.flops_per_token:>18,.0f}{t.flops_per_token:>18,.0f}"
              f"{t.flops_per_token - b.flops_per_token:>+16,.0f}"]
    return "\n".join(lines)


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
COMMANDS: dict[str, Callable] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autotaper", description="Search how a transformer should spread its "
                     "parameters across depth, at a fixed parameter and FLOP budget.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("plan", help="solve a taper to the baseline's budget and show it layer by layer")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("presets", help="list the model presets")
    p.set_defaults(func=cmd_presets)
    for extend in _EXTENSIONS:
        extend(sub)
    return parser


def _version() -> str:
    from autotaper import __version__

    return f"autotaper {__version__}"


# Later subcommands (train, search, results) register here: callables taking the subparsers.
_EXTENSIONS: list[Callable] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as e:
        print(f"autotaper: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("autotaper: interrupted", file=sys.stderr)
        return 130
