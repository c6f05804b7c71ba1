#!/usr/bin/env bash
# CPU benchmark of one meta-iteration (Omniglot 5-way 1-shot, 15 queries, Conv-4 64 filters,
# B = 32), ours (build/bin/bench_metastep) side by side in the same run with two independent
# references: PyTorch on the CPU (tests/bench/reference/torch_metastep.py: torch.func, a
# per-task loop as learn2learn/higher users write it, and vmap over tasks) and JAX
# (tests/bench/reference/jax_metastep.py: jit per task); then the peak-memory sweep of exact
# MAML over r and the default `metatrain` wall time. PyTorch goes into .venv-torch and JAX into
# .venv-bench, made by this script only. Every row runs in its own process (peak RSS is per
# process). Writes tests/bench/results_cpu.jsonl and prints Markdown tables with ours against
# the best PyTorch variant. About 25 minutes on 2 cores.
#   usage: bash tests/bench/run_cpu_bench.sh [quick]   (quick: the speed table only)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
out=tests/bench/results_cpu.jsonl
bench=build/bin/bench_metastep
[ -x "$bench" ] || { echo "build first: bash launch/setup/build.sh" >&2; exit 2; }
threads=$(nproc)
if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install -q -r tests/bench/reference/requirements.txt
fi
if [ ! -x .venv-torch/bin/python ]; then
  python3 -m venv .venv-torch
  .venv-torch/bin/pip install -q torch numpy
fi
jax=(.venv-bench/bin/python tests/bench/reference/jax_metastep.py)
torch=(.venv-torch/bin/python tests/bench/reference/torch_metastep.py --device cpu --threads "$threads")
: > "$out"
run() { echo "+ $*" >&2; "$@" | tail -n 1 | tee -a "$out"; }

# Speed: B = 32, r in {1, 5}, FOMAML / MAML / UFOM q = 0.1.
for r in 1 5; do
  for algo in fomaml maml ufom; do
    run "$bench" --algo $algo --r $r --B 32 --q 0.1 --iters 3 --warmup 1 --threads "$threads"
    for variant in loop vmap; do
      run "${torch[@]}" --algo $algo --r $r --B 32 --q 0.1 --variant $variant --iters 3 --warmup 1
    done
    run "${jax[@]}" --algo $algo --r $r --B 32 --q 0.1 --iters 3 --warmup 1
  done
done

if [ "${1:-}" != quick ]; then
  # Memory: exact MAML, B = 4, r = 1 … 50 (ours in both trajectory modes; the references keep
  # the autograd graph of every inner step).
  for r in 1 5 10 20 50; do
    run "$bench" --algo maml --r $r --B 4 --trajectory recompute --iters 1 --warmup 0
    run "$bench" --algo maml --r $r --B 4 --trajectory store --iters 1 --warmup 0
    run "${torch[@]}" --algo maml --r $r --B 4 --variant loop --iters 1 --warmup 0
    run "${jax[@]}" --algo maml --r $r --B 4 --iters 1 --warmup 1
  done
  # The default run, as README's first command runs it (after the build).
  dir=$(mktemp -d)
  t0=$(date +%s.%N)
  build/bin/metatrain checkpoint.dir="$dir" > "$dir/out.txt" 2>&1
  t1=$(date +%s.%N)
  python3 - "$t0" "$t1" "$dir/out.txt" >> "$out" <<'PY'
import json, re, sys
text = open(sys.argv[3]).read()
acc = re.search(r"final eval .*accuracy ([0-9.]+)% ± ([0-9.]+)%", text)
kernels = re.search(r"^cpu kernels: (.*)$", text, re.M)
print(json.dumps({"impl": "ours", "row": "default metatrain", "wall_s": float(sys.argv[2]) - float(sys.argv[1]),
                  "acc_mean": float(acc.group(1)) if acc else None,
                  "kernels": kernels.group(1) if kernels else None}))
PY
  tail -n 1 "$out"
  rm -rf "$dir"
fi

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
timed = [x for x in rows if "sec_per_iter" in x]
def name(x):
    v = x.get("variant") or x.get("batching")
    return x["impl"] + (f"-{v}" if v and v != "per_task" else "")
print("| impl | algo | trajectory | r | B | s/iter | tasks/s | peak RSS MB | GEMM GFLOP/s (share of SGEMM peak) | kernels |")
print("|---|---|---|---|---|---|---|---|---|---|")
for x in timed:
    flops = f"{x['gemm_gflops']:.1f} ({100 * x['peak_fraction']:.0f}%)" if x.get("gemm_gflops") else "–"
    print(f"| {name(x)} | {x['algo']} | {x.get('trajectory', '–')} | {x['r']} | {x['B']} | "
          f"{x['sec_per_iter']:.3f} | {x['tasks_per_s']:.1f} | {x.get('peak_rss_mb', 0):.0f} | {flops} | "
          f"{x.get('blas_core', '–')} |")
print()
print("| B = 32 | ours s/iter | best PyTorch s/iter (variant) | PyTorch / ours |")
print("|---|---|---|---|")
for x in timed:
    if x["impl"] != "ours" or x["B"] != 32:
        continue
    peers = [y for y in timed if y["impl"] == "pytorch" and (y["algo"], y["r"], y["B"]) == (x["algo"], x["r"], x["B"])]
    if not peers:
        continue
    best = min(peers, key=lambda y: y["sec_per_iter"])
    print(f"| {x['algo']} r={x['r']} | {x['sec_per_iter']:.3f} | {best['sec_per_iter']:.3f} ({best['variant']}) | "
          f"{best['sec_per_iter'] / x['sec_per_iter']:.2f}x |")
for x in rows:
    if x.get("row") == "default metatrain":
        print(f"\ndefault metatrain: {x['wall_s']:.0f} s wall, accuracy {x['acc_mean']}%, kernels: {x['kernels']}")
PY
