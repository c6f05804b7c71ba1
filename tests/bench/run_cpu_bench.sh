#!/usr/bin/env bash
# CPU benchmark of one meta-iteration (Omniglot 5-way 1-shot, 15 queries, Conv-4 64 filters,
# B = 32), ours (build/bin/bench_metastep) side by side in the same run with two independent
# references: PyTorch on the CPU (tests/bench/reference/torch_metastep.py: torch.func, a
# per-task loop as learn2learn/higher users write it, and vmap over tasks) and JAX
# (tests/bench/reference/jax_metastep.py: jit per task); then the peak-memory sweep of exact
# MAML over r and the default `metatrain` wall time. PyTorch goes into .venv-torch and JAX into
# .venv-bench, made by this script only. Every row runs in its own process (peak RSS is per
# process). Writes tests/bench/results_cpu.jsonl and prints Markdown tables with ours against
# the best PyTorch variant. About 25 minutes on 2 cores; then ResNet-12 (64,160,320,640) at
# Mini-ImageNet shape (84x84x3, 5-way 1-shot 15 queries), B = 1 and 2, r = 1, FOMAML and exact
# MAML, ours and both PyTorch variants side by side: about 40 minutes more, and up to ~14 GB
# (B = 2: two tasks of ~6 GB in flight; a row over the memory cap, MemTotal less 1 GiB, fails
# alone and is recorded with its error).
#   usage: bash tests/bench/run_cpu_bench.sh [quick|resnet12]
#     quick: the Conv-4 speed table only; resnet12: the ResNet-12 rows only, written to
#     tests/bench/results_cpu_resnet12.jsonl (results_cpu.jsonl is left as it is)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
mode="${1:-}"
case "$mode" in ""|quick|resnet12) ;; *) echo "usage: $0 [quick|resnet12]" >&2; exit 2 ;; esac
out=tests/bench/results_cpu.jsonl
[ "$mode" = resnet12 ] && out=tests/bench/results_cpu_resnet12.jsonl
bench=build/bin/bench_metastep
[ -x "$bench" ] || { echo "build first: bash launch/setup/build.sh" >&2; exit 2; }
threads=$(nproc)
if [ "$mode" != resnet12 ] && [ ! -x .venv-bench/bin/python ]; then  # JAX: Conv-4 rows only
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
# run_capped IMPL ARGS...: as run, under an address-space cap, and a failure (out of memory
# above all) becomes a row with "error" instead of ending the script.
cap_kb=$(( $(awk '/^MemTotal/ {print $2}' /proc/meminfo) - 1048576 ))
run_capped() {
  local impl="$1" line rc=0
  shift
  echo "+ $*" >&2
  line=$( (ulimit -v "$cap_kb"; "$@") | tail -n 1) || rc=$?
  if [ "$rc" = 0 ] && [ "${line:0:1}" = "{" ]; then
    echo "$line" | tee -a "$out"
  else
    printf '{"impl": "%s", "config": "%s", "error": "exit %s: %s"}\n' "$impl" \
      "$(echo "$*" | tr -d '"\134')" "$rc" "$(echo "$line" | tr -d '"\134' | cut -c1-200)" |
      tee -a "$out"
  fi
}

if [ "$mode" != resnet12 ]; then
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

fi

if [ -z "$mode" ]; then
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

if [ "$mode" != quick ]; then
  # ResNet-12 at Mini-ImageNet shape, full widths: B = 1 and 2, r = 1, FOMAML and exact MAML;
  # each row its own process. 3 timed iterations after 1 warm-up, as above. Both on every
  # core: ours runs tasks side by side, and a task left without a partner (B = 1) on every
  # thread, its passes cut into pieces (PyTorch uses every core on each task).
  resnet=(--model resnet12 --dataset miniimagenet --ways 5 --shots 1 --queries 15 --r 1)
  for B in 1 2; do
    for algo in fomaml maml; do
      run_capped ours "$bench" "${resnet[@]}" --algo $algo --B $B --iters 3 --warmup 1 \
        --threads "$threads"
      for variant in loop vmap; do
        run_capped pytorch "${torch[@]}" "${resnet[@]}" --algo $algo --B $B --variant $variant --iters 3 --warmup 1
      done
    done
  done
fi

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
timed = [x for x in rows if "sec_per_iter" in x]
def name(x):
    v = x.get("variant") or x.get("batching")
    return x["impl"] + (f"-{v}" if v and v != "per_task" else "")
def model(x):  # rows from before the model field are Conv-4's
    return x.get("model", "conv4") + "/" + x.get("dataset", "omniglot")
print("| impl | model | algo | trajectory | r | B | s/iter | tasks/s | peak RSS MiB | GEMM GFLOP/s (share of SGEMM peak) | kernels |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for x in timed:
    flops = f"{x['gemm_gflops']:.1f} ({100 * x['peak_fraction']:.0f}%)" if x.get("gemm_gflops") else "–"
    print(f"| {name(x)} | {model(x)} | {x['algo']} | {x.get('trajectory', '–')} | {x['r']} | {x['B']} | "
          f"{x['sec_per_iter']:.3f} | {x['tasks_per_s']:.2f} | {x.get('peak_rss_mb', 0):.0f} | {flops} | "
          f"{x.get('blas_core', '–')} |")
print()
print("| speed rows | ours s/iter | best PyTorch s/iter (variant) | PyTorch / ours |")
print("|---|---|---|---|")
for x in timed:
    speed = (x.get("model", "conv4") == "conv4" and x["B"] == 32) or x.get("model") == "resnet12"
    if x["impl"] != "ours" or not speed:
        continue
    peers = [y for y in timed if y["impl"] == "pytorch" and
             (model(y), y["algo"], y["r"], y["B"]) == (model(x), x["algo"], x["r"], x["B"])]
    if not peers:
        continue
    best = min(peers, key=lambda y: y["sec_per_iter"])
    print(f"| {model(x)} {x['algo']} r={x['r']} B={x['B']} | {x['sec_per_iter']:.3f} | "
          f"{best['sec_per_iter']:.3f} ({best['variant']}) | {best['sec_per_iter'] / x['sec_per_iter']:.2f}x |")
for x in rows:
    if "error" in x:
        print(f"\nfailed: {x['impl']} {x.get('config', '')}: {x['error']}")
for x in rows:
    if x.get("row") == "default metatrain":
        print(f"\ndefault metatrain: {x['wall_s']:.0f} s wall, accuracy {x['acc_mean']}%, kernels: {x['kernels']}")
PY
