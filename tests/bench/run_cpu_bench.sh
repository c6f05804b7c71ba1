#!/usr/bin/env bash
# CPU benchmark of one meta-iteration (Omniglot 5-way 1-shot, 15 queries, Conv-4 64 filters),
# ours (build/bin/bench_metastep) side by side with an independent JAX implementation
# (tests/bench/reference/jax_metastep.py: jit, one call per task; once also jit + vmap over
# tasks) in the same run, plus the
# peak-memory sweep of exact MAML over r. JAX is installed into .venv-bench by this script only.
# Every configuration runs in its own process (peak RSS is per process). Writes
# tests/bench/results_cpu.jsonl and prints a Markdown table. Takes ~9 minutes on 2 cores.
#   usage: bash tests/bench/run_cpu_bench.sh [quick]   (quick: speed table only, no r sweep)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
out=tests/bench/results_cpu.jsonl
bench=build/bin/bench_metastep
[ -x "$bench" ] || { echo "build first: bash launch/setup/build.sh" >&2; exit 2; }
if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install -q -r tests/bench/reference/requirements.txt
fi
jax=(.venv-bench/bin/python tests/bench/reference/jax_metastep.py)
: > "$out"
run() { echo "+ $*" >&2; "$@" | tail -n 1 | tee -a "$out"; }

# Speed: B = 32, r in {1, 5}, FOMAML / MAML / UFOM q = 0.1.
for r in 1 5; do
  for algo in fomaml maml ufom; do
    run "$bench" --algo $algo --r $r --B 32 --q 0.1 --iters 3 --warmup 1
    run "${jax[@]}" --algo $algo --r $r --B 32 --q 0.1 --iters 3 --warmup 1
  done
done

# JAX with vmap over tasks (the issue's reference form): one configuration, it is slow on CPU.
run "${jax[@]}" --algo maml --r 1 --B 32 --iters 2 --warmup 1 --batching vmap

# Memory: exact MAML, B = 4, r = 1 … 50 (ours in both trajectory modes; JAX keeps the graph).
if [ "${1:-}" != quick ]; then
  for r in 1 5 10 20 50; do
    run "$bench" --algo maml --r $r --B 4 --trajectory recompute --iters 1 --warmup 0
    run "$bench" --algo maml --r $r --B 4 --trajectory store --iters 1 --warmup 0
    run "${jax[@]}" --algo maml --r $r --B 4 --iters 1 --warmup 1
  done
fi

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| impl | algo | trajectory | r | B | s/iter | tasks/s | peak RSS MB | GFLOP/s (share of SGEMM peak) |")
print("|---|---|---|---|---|---|---|---|---|")
for x in rows:
    flops = f"{x['gemm_gflops']:.1f} ({100 * x['peak_fraction']:.0f}%)" if "gemm_gflops" in x else "–"
    impl = x["impl"] + ("-vmap" if x.get("batching") == "vmap" else "")
    print(f"| {impl} | {x['algo']} | {x.get('trajectory', '–')} | {x['r']} | {x['B']} | "
          f"{x['sec_per_iter']:.3f} | {x['tasks_per_s']:.1f} | {x['peak_rss_mb']:.0f} | {flops} |")
PY
