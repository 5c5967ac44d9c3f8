"""How exactly an exported model reproduces autotaper's: logits of the Hugging Face folder
against the trained module's, per family, taper and parametrization.

    python benchmarks/export_parity.py [--preset proxy-xs] [--steps 20]

For each case it trains a run for --steps (so the weights are not at their init), exports it
with `autotaper.export.export_hf` (which itself refuses a folder over 1e-4), loads it back with
`transformers` and prints the architecture it became, whether it needs remote code, the max
|logit difference| on the export check's windows, and the export's wall time over the
training's (a ratio measured in this run).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

CASES = [("llama", "uniform", "sp"), ("llama", "ffn:cosine:1.5:0.5", "sp"), ("llama", "heads:linear:1.5:0.5", "sp"),
         ("llama", "embed:linear:1.2:0.8", "sp"), ("llama", "ffn:cosine:1.5:0.5", "mup"),
         ("llama", "ffn:cosine:1.5:0.5", "completep"), ("gpt", "uniform", "sp"), ("gpt", "ffn:cosine:1.5:0.5", "sp"),
         ("gated", "ffn:cosine:1.5:0.5", "sp")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="proxy-xs")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()

    import autotaper as at
    from autotaper.data import load_data
    from autotaper.export import export_hf
    from autotaper.train import TrainConfig, train

    data = load_data()
    print(f"{'family':<7} {'taper':<22} {'param':<10} {'architecture':<22} {'remote':>6} {'max |diff|':>11} "
          f"{'export/train':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (family, taper, param) in enumerate(CASES):
            base = dataclasses.replace(at.ModelSpec.from_name(args.preset, family=family), parametrization=param)
            spec = at.solve(base, taper)
            run = Path(tmp) / f"run{i}"
            t0 = time.perf_counter()
            train(spec, data, TrainConfig(steps=args.steps, batch_size=8, seed=0, precision="fp32"),
                  out_dir=str(run), quiet=True)
            t1 = time.perf_counter()
            result = export_hf(run, Path(tmp) / f"hf{i}")
            t2 = time.perf_counter()
            print(f"{family:<7} {taper:<22} {param:<10} {result.architecture:<22} {str(result.remote_code):>6} "
                  f"{result.max_abs_diff:>11.2e} {(t2 - t1) / (t1 - t0):>12.2f}")


if __name__ == "__main__":
    main()
