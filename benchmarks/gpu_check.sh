#!/usr/bin/env bash
# The GPU run book: what a session lent a GPU runs first (issue 28), in one go, within 8 minutes
# on one H100/H200. Each step has its own time limit, so one that hangs costs only its own.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # OUT_DIR default: $OUT, else benchmarks/results/gpu_check
#   GPU_CHECK_ONLY=cuda_tests,population bash benchmarks/gpu_check.sh    # a rerun of some steps
#
# The device has torch with CUDA but no Optuna or pytest: wheels carried in .whl/ are installed
# first (see docs/development.md, "The GPU run book"). Writes OUT_DIR/gpu_check.json (every
# step: command, exit status, seconds, its output's tail) and OUT_DIR/gpu_check.md (a table for
# benchmarks/RESULTS.md), each step's full log beside them.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-benchmarks/results/gpu_check}}"
mkdir -p "$out"
rm -f "$out/steps.tsv"
export PYTHONUNBUFFERED=1 RAY_AUTH_MODE=disabled
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || echo "warning: the carried wheels did not install" >&2
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
py=python3

steps=(
  "env|10|nvidia-smi -L; $py -c 'import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))'"
  "cuda_tests|80|$py -m pytest -q -rs -p no:cacheprovider tests/test_train.py tests/test_search.py tests/test_population.py -k 'cuda'"
  "throughput_proxy_xs|40|$py benchmarks/train_throughput.py --preset proxy-xs --batch-size 16 --steps 30 --repeats 2"
  "throughput_proxy_s|40|$py benchmarks/train_throughput.py --preset proxy-s --batch-size 16 --steps 30 --repeats 2"
  "throughput_125m_compiled|70|$py benchmarks/train_throughput.py --preset 125m --batch-size 16 --steps 20 --repeats 2 --compile"
  "throughput_440m_compiled|80|$py benchmarks/train_throughput.py --preset 440m --batch-size 8 --steps 15 --repeats 2 --compile"
  "search_workers|55|$py benchmarks/gpu_search_throughput.py --workers 1,4,8 --steps 100 --trials-per-worker 2"
  "population|55|$py benchmarks/population_throughput.py --presets proxy-xs,proxy-s,proxy-m --k 1,4,16 --steps 20 --batch-size 16"
  "cuda_graphs|30|$py benchmarks/cuda_graphs.py --presets proxy-xs --steps 30 --repeats 2"
  "memory_estimate|20|$py benchmarks/memory_estimate.py --presets proxy-xs,proxy-s,proxy-m,125m"
)  # the limits add up to 480 s: the run book ends within 8 minutes whatever hangs

for entry in "${steps[@]}"; do
  name="${entry%%|*}"; rest="${entry#*|}"; limit="${rest%%|*}"; cmd="${rest#*|}"
  if [ -n "${GPU_CHECK_ONLY:-}" ] && [[ ",$GPU_CHECK_ONLY," != *",$name,"* ]]; then continue; fi
  echo "== $name (limit ${limit}s): $cmd"
  start=$(date +%s%N)
  timeout --kill-after=5 "$limit" bash -c "$cmd" >"$out/$name.log" 2>&1
  rc=$?
  end=$(date +%s%N)
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( (end - start) / 1000000 ))" "$cmd" >>"$out/steps.tsv"
  tail -n 25 "$out/$name.log"
done

$py - "$out" <<'PY'
import json, sys, datetime
from pathlib import Path
out = Path(sys.argv[1])
rows = []
for line in (out / "steps.tsv").read_text().splitlines():
    name, rc, seconds, cmd = line.split("\t", 3)
    log = (out / f"{name}.log").read_text(errors="replace")
    rows.append({"step": name, "command": cmd, "exit": int(rc), "seconds": round(int(seconds) / 1000, 1),
                 "timed_out": int(rc) in (124, 137), "tail": log.splitlines()[-40:]})
report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "steps": rows}
(out / "gpu_check.json").write_text(json.dumps(report, indent=1))
table = ["| step | exit | seconds | last line |", "|---|---|---|---|"]
for r in rows:
    last = next((t for t in reversed(r["tail"]) if t.strip()), "").replace("|", "\\|")[:100]
    table.append(f"| {r['step']} | {r['exit']}{' (time limit)' if r['timed_out'] else ''} | {r['seconds']} | {last} |")
(out / "gpu_check.md").write_text("\n".join(table) + "\n")
print("\n".join(table))
print(f"total {sum(r['seconds'] for r in rows):.0f} s; {out}/gpu_check.json")
PY
