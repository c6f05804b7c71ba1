#!/usr/bin/env bash
# Peak memory of exact MAML on ResNet-12 against the number of inner steps r (issue 23, DESIGN
# §11): Mini-ImageNet shape (84x84x3), full widths (64,160,320,640), 5-way 1-shot 15 queries,
# B = 1, trajectory recompute, checkpoint:C and store, r = 1, 5, 10, 20, one process per
# configuration (peak RSS belongs to it alone; build/bin/bench_metastep, one iteration, no
# warm-up: the peak is reached in the first). Claims checked and printed: recompute and
# checkpoint:C peak flat in r (r = 20 within +10% of r = 1); store grows by one parameter
# vector per stored state (r - 1 states of d floats: 47.4 MiB each at B = 1), stated from the
# rows as MiB per stored state. Writes tests/bench/results_memory.jsonl and prints a Markdown
# table. About 35 minutes on 2 quiet cores (recompute at r = 20 alone about 10: r(r-1)/2 = 190
# inner steps rebuilt), about 6 GB of memory.
#   usage: bash tests/bench/run_memory_bench.sh [R...]
#   env: MT_BENCH (the binary), MT_CHECKPOINT_C (5), MT_OUT, MT_WIDTHS (a smoke test's small net)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
bench="${MT_BENCH:-build/bin/bench_metastep}"
[ -x "$bench" ] || { echo "run_memory_bench: $bench not built (bash launch/setup/build.sh)" >&2; exit 2; }
out="${MT_OUT:-tests/bench/results_memory.jsonl}"
widths="${MT_WIDTHS:-64,160,320,640}"
c="${MT_CHECKPOINT_C:-5}"  # about sqrt(20): at most C - 1 states rebuilt per adjoint step
rs=("$@")
[ ${#rs[@]} -gt 0 ] || rs=(1 5 10 20)
# B = 1 on one thread: each worker thread keeps its own task buffers (core/batched_model_cpu.h)
# and the single task of each call goes to whichever thread is free, so a second thread would
# add a second set at random, more likely the more calls (larger r), and blur the comparison.
threads=1
: > "$out"

for mode in recompute "checkpoint:$c" store; do
  for r in "${rs[@]}"; do
    echo "+ $bench ... --trajectory $mode --r $r" >&2
    rc=0
    line=$("$bench" --model resnet12 --widths "$widths" --dataset miniimagenet --algo maml --B 1 --r "$r" \
      --trajectory "$mode" --iters 1 --warmup 0 --threads "$threads" | tail -n 1) || rc=$?
    if [ "$rc" = 0 ] && [ "${line:0:1}" = "{" ]; then
      echo "$line" | tee -a "$out"
    else
      printf '{"impl": "ours", "trajectory": "%s", "r": %s, "error": "exit %s"}\n' "$mode" "$r" "$rc" | tee -a "$out"
    fi
  done
done

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = [x for x in rows if "error" not in x]
modes = list(dict.fromkeys(x["trajectory"] for x in rows))
rs = sorted({x["r"] for x in rows})
peak = {(x["trajectory"], x["r"]): x["peak_rss_mb"] for x in ok}  # ru_maxrss / 1024: MiB
secs = {(x["trajectory"], x["r"]): x["sec_per_iter"] for x in ok}
widths = ok[0]["widths"] if ok else "?"
print(f"\nExact MAML, ResNet-12 ({widths}), 84x84x3, 5-way 1-shot 15 queries, B = 1: "
      "peak RSS MiB (s/iter)")
print("| r | " + " | ".join(modes) + " |")
print("|---|" + "---|" * len(modes))
for r in rs:
    cells = [f"{peak[(m, r)]:.0f} ({secs[(m, r)]:.0f} s)" if (m, r) in peak else "failed" for m in modes]
    print(f"| {r} | " + " | ".join(cells) + " |")
if ok:
    d = ok[0]["params"]
    act = ok[0].get("activations_mib_per_task")
    print(f"\nd = {d:.0f} parameters: one stored state is {d * 4 / 2**20:.1f} MiB; predicted "
          f"activations per task (start-up line): {act} MiB")
lo, hi = rs[0], rs[-1]
verdict = 0
for m in modes:
    if (m, lo) not in peak or (m, hi) not in peak:
        print(f"{m}: rows missing, no verdict")
        verdict = 1
        continue
    growth = peak[(m, hi)] / peak[(m, lo)] - 1
    if m == "store":
        per_state = (peak[(m, hi)] - peak[(m, lo)]) / max(hi - lo, 1)
        print(f"store: +{per_state:.1f} MiB per stored state (r = {lo} -> {hi}: {hi - lo} more states; "
              f"+{100 * growth:.0f}%)")
    else:
        flat = growth <= 0.10
        verdict |= not flat
        print(f"{m}: r = {lo} -> {hi}: {100 * growth:+.1f}% ({'flat, within +10%' if flat else 'NOT flat: over +10%'})")
sys.exit(verdict)
PY
