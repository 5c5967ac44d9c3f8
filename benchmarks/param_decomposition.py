"""Is it the taper or the learning rate? A taper's effect under each parametrization, on the
same paired seeds, and the part of it that is per-layer learning rate and init (sp - mup).

Two shapes by default: the quickstart's proxy (proxy-xs, 120 steps x 8, lr 1.5e-3, as
search_spaces/quickstart.yaml trains it) and a GPT 8 x 128 with FFN 512 (400 steps x 16 x 128
bytes, lr 3e-3), the shape of the independent measurement in the issue that asked for this.
Prints one markdown row per (shape, taper, parametrization) and per difference, with 95%
intervals over paired seeds, for docs/ and benchmarks/RESULTS.md.

    python benchmarks/param_decomposition.py --seeds 8
    python benchmarks/param_decomposition.py --shapes quickstart --tapers ffn:cosine:1.5:0.5 --seeds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import time

import torch

from autotaper.data import load_data
from autotaper.paired import compare_parametrizations
from autotaper.spec import ModelSpec
from autotaper.train import TrainConfig

SHAPES = {
    "quickstart": (ModelSpec.from_name("proxy-xs"), {"steps": 120, "batch_size": 8, "lr": 1.5e-3}),
    "gpt-8x128": (ModelSpec(family="gpt", vocab_size=256, d_model=128, n_layers=8, n_heads=4, ffn_width=512,
                            context_length=128), {"steps": 400, "batch_size": 16, "lr": 3e-3}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="quickstart,gpt-8x128")
    ap.add_argument("--tapers", default="ffn:cosine:1.5:0.5,ffn:cosine:0.5:1.5")
    ap.add_argument("--param", default="sp,mup")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--json", help="also write every comparison to this JSON file")
    args = ap.parse_args()
    data = load_data(None)
    names = args.param.split(",")
    rows, dump = [], []
    print(f"# {datetime.date.today()} {platform.node()} {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; corpus {data.name}")
    print("| shape | taper | parametrization | seeds | delta vs uniform | 95% CI |")
    print("|---|---|---|---|---|---|")
    for shape in args.shapes.split(","):
        base, recipe = SHAPES[shape]
        base = dataclasses.replace(base, vocab_size=data.vocab_size)
        bases = {n: dataclasses.replace(base, parametrization=n) for n in names}
        for taper in args.tapers.split(","):
            t0 = time.perf_counter()
            result = compare_parametrizations(bases, taper, data,
                                              lambda seed, o: TrainConfig(seed=seed, eval_every=recipe["steps"],
                                                                          **recipe),
                                              seeds=range(args.seeds))
            for n in names:
                st = result.by_param[n].stats
                rows.append(f"| {shape} | {taper} | {n} | {st.n} | {st.mean:+.4f} | "
                            f"[{st.ci95[0]:+.4f}, {st.ci95[1]:+.4f}] |")
                print(rows[-1], flush=True)
            for a, b in result.pairs():
                st = result.difference(a, b)
                rows.append(f"| {shape} | {taper} | {a} - {b} | {st.n} | {st.mean:+.4f} | "
                            f"[{st.ci95[0]:+.4f}, {st.ci95[1]:+.4f}] |")
                print(rows[-1], flush=True)
            uniform = [r.baseline for r in result.by_param[names[0]].runs]
            print(f"<!-- {shape} {taper}: uniform mean {sum(uniform) / len(uniform):.4f} {result.unit}, "
                  f"{time.perf_counter() - t0:.0f} s -->", flush=True)
            dump.append({"shape": shape, "recipe": recipe, **result.to_dict()})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dump, f, indent=1)


if __name__ == "__main__":
    main()
