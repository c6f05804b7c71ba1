#!/usr/bin/env bash
# GPU benchmark of one meta-iteration, ours (BUNDLE/bin/bench_metastep --device cuda) side by
# side with the PyTorch reference (tests/bench/reference/torch_metastep.py, loop and vmap
# variants) in the same run: Conv-4 on Omniglot 5-way 1-shot 15 queries B=32 r in {1,5} and
# Mini-ImageNet 5-way 1-shot B=4 r=5 for FOMAML / MAML / UFOM q=0.1 (meta-iterations/s, peak
# device memory), and exact-MAML peak memory for r = 1, 5, 10, 20, 50 (Omniglot, B=4; ours in
# recompute mode); then ResNet-12 (64,160,320,640) at Mini-ImageNet shape, 5-way 1-shot, B=4,
# exact MAML, r = 1, 5, 10, 20 (ours in checkpoint:5 mode: at most 3 stored states), time and
# peak memory. The ResNet-12 rows get the last RESNET_SHARE_S (110 s) of the budget: the Conv-4
# rows run within the rest, so a slow Conv-4 row cannot crowd them out. A binary whose CUDA
# backend does not run ResNet-12 gives failed rows naming its error, and the rest goes on.
# Peak memory is measured the same way on both sides (peak_device_mib, memory_method: the
# process's cudaMemGetInfo total - free, max over the timed iterations, less the reading right
# after context creation).
# Writes exactly three files into OUTDIR: results_gpu.jsonl (every row, failures as rows with
# "error"), summary.md (tables, ratios ours / PyTorch-best) and bench.log (every process's
# output); per-row scratch lives in a temporary folder. Fits its budget: few iterations per
# row, a timeout per process that ends within the budget (kill grace included), and rows that
# would start with too little budget left are recorded as skipped. Budget: MT_BENCH_BUDGET_S,
# else this step's timeout under tests/gpu/device_check.sh (MT_STEP_TIMEOUT_S) less 20 s, else 230 s.
#   usage: tests/bench/run_gpu_bench.sh BUNDLE OUTDIR      (env: MT_PYTHON, MT_BENCH_BUDGET_S)
#
# bench_metastep's interface used here (bench_metastep --help): --device cuda|cpu, --dataset
# omniglot|miniimagenet (28x28x1 / 84x84x3; --filters 64 / 32 passed explicitly), --algo --r --B
# --q --trajectory --ways --shots --queries --filters --iters --warmup; its last stdout line is a
# JSON object with impl, algo, r, B, sec_per_iter, peak_device_mib and memory_method.
set -euo pipefail

die() { echo "run_gpu_bench: error: $*" >&2; exit 2; }
[ $# -eq 2 ] || die "usage: $0 BUNDLE OUTDIR"
bundle="$(cd "$1" 2>/dev/null && pwd)" || die "bundle '$1' not found (make it with tests/gpu/make_bundle.sh)"
if [ ! -x "$bundle/run" ] || [ ! -x "$bundle/bin/bench_metastep" ]; then
  die "$bundle is not a bundle (no run / bin/bench_metastep)"
fi
mkdir -p "$2"
outdir="$(cd "$2" && pwd)"
root="$(cd "$(dirname "$0")/../.." && pwd)"
ref="$root/tests/bench/reference/torch_metastep.py"
[ -f "$ref" ] || die "$ref not found"
py="${MT_PYTHON:-}"
if [ -z "$py" ]; then
  for c in /opt/torch/.venv/bin/python3 python3; do command -v "$c" >/dev/null && { py="$c"; break; }; done
fi
[ -n "$py" ] || die "no python3 found (set MT_PYTHON)"
if [ -n "${MT_BENCH_BUDGET_S:-}" ]; then budget="$MT_BENCH_BUDGET_S"
elif [ -n "${MT_STEP_TIMEOUT_S:-}" ]; then budget=$(( MT_STEP_TIMEOUT_S - 20 ))
else budget=230; fi
kill_s=5
results="$outdir/results_gpu.jsonl"
log="$outdir/bench.log"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
: > "$results"
: > "$log"
start=$SECONDS
export PYTHONUNBUFFERED=1

reserve=0  # seconds of the budget kept for later sections
left() { echo $((budget - reserve - (SECONDS - start))); }
row_timeout() {  # row_timeout CAP: min(CAP, budget left less the kill grace)
  local l=$(( $(left) - kill_s ))
  echo $(( l < $1 ? l : $1 ))
}
skip_row() {  # skip_row IMPL DESC: record a row that did not run for lack of time
  printf '{"impl": "%s", "config": "%s", "error": "skipped: benchmark time budget (%s s) spent"}\n' "$1" "$2" "$budget" >> "$results"
  echo "SKIP $1 $2 (budget)" | tee -a "$log" >&2
}

# ours ARGS...: one configuration per process (peak memory is per process).
ours() {
  local desc="$*" t rc=0
  t=$(row_timeout 45)
  if [ "$t" -lt 5 ]; then skip_row ours "$desc"; return 0; fi
  echo "+ [$((SECONDS - start)) s] ours $desc (timeout $t s)" | tee -a "$log" >&2
  timeout -k "$kill_s" "$t" "$bundle/run" bench_metastep --device cuda "$@" > "$tmp/row" 2> "$tmp/err" < /dev/null || rc=$?
  local line
  line="$(grep '^{' "$tmp/row" | tail -n 1 || true)"
  cat "$tmp/row" "$tmp/err" >> "$log"
  if [ "$rc" = 0 ] && [ -n "$line" ]; then
    echo "$line" >> "$results"
  else
    local why
    why="exit $rc: $( (tail -1 "$tmp/err" || true) | tr -d '"\134' | cut -c1-200)"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then why="timeout after $t s"; fi
    printf '{"impl": "ours", "config": "%s", "error": "%s"}\n' "$desc" "$why" >> "$results"
    echo "FAIL ours $desc: $why" | tee -a "$log" >&2
  fi
  rm -f "$tmp/row" "$tmp/err"
}

# torch CAP ARGS...: one process, many rows (every combination of the list arguments).
torch_rows() {
  local cap="$1"; shift
  local desc="$*" t rc=0
  t=$(row_timeout "$cap")
  if [ "$t" -lt 10 ]; then skip_row pytorch "$desc"; return 0; fi
  echo "+ [$((SECONDS - start)) s] pytorch $desc (timeout $t s)" | tee -a "$log" >&2
  # Rows are flushed one by one into the scratch file, so a timeout keeps the rows done before it.
  timeout -k "$kill_s" "$t" "$py" "$ref" --device cuda "$@" > "$tmp/rows" 2> "$tmp/err" < /dev/null || rc=$?
  local n
  n=$(grep -c '^{' "$tmp/rows" || true)
  grep '^{.*}$' "$tmp/rows" >> "$results" || true
  cat "$tmp/rows" "$tmp/err" >> "$log"
  if [ "$rc" != 0 ]; then
    # Rows that finished are kept (a failed row is a row with "error"); say why the rest is missing.
    local why
    why="exit $rc: $( (grep -v '^ ' "$tmp/err" || true) | tail -1 | tr -d '"\134' | cut -c1-200)"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then why="timeout after $t s ($n rows done)"; fi
    if [ "$n" = 0 ] || [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      printf '{"impl": "pytorch", "config": "%s", "error": "%s"}\n' "$desc" "$why" >> "$results"
    fi
    echo "NOTE pytorch $desc: $why" | tee -a "$log" >&2
  fi
  rm -f "$tmp/rows" "$tmp/err"
  return 0
}

omni=(--dataset omniglot --filters 64 --ways 5 --shots 1 --queries 15)
mini=(--dataset miniimagenet --filters 32 --ways 5 --shots 1 --queries 15)
resnet=(--model resnet12 --dataset miniimagenet --widths 64,160,320,640 --ways 5 --shots 1 --queries 15)
resnet_share=$(( budget * 110 / 230 ))  # RESNET_SHARE_S, scaled with the budget
reserve=$resnet_share

# 1. Speed, Omniglot, B = 32, r in {1, 5}.
for r in 1 5; do
  for algo in fomaml maml ufom; do
    ours "${omni[@]}" --algo $algo --r $r --B 32 --q 0.1 --iters 5 --warmup 2
  done
done
torch_rows 100 "${omni[@]}" --algo fomaml,maml,ufom --r 1,5 --B 32 --q 0.1 --variant loop,vmap --iters 5 --warmup 2

# 2. Speed, Mini-ImageNet, B = 4, r = 5.
for algo in fomaml maml ufom; do
  ours "${mini[@]}" --algo $algo --r 5 --B 4 --q 0.1 --iters 5 --warmup 2
done
torch_rows 60 "${mini[@]}" --algo fomaml,maml,ufom --r 5 --B 4 --q 0.1 --variant loop,vmap --iters 5 --warmup 2

# 3. Peak memory of exact MAML against r (Omniglot, B = 4); ours in recompute mode.
for r in 1 5 10 20 50; do
  ours "${omni[@]}" --algo maml --r $r --B 4 --trajectory recompute --iters 2 --warmup 1
done
torch_rows 80 "${omni[@]}" --algo maml --r 1,5,10,20,50 --B 4 --variant loop,vmap --iters 2 --warmup 1

# 4. ResNet-12, Mini-ImageNet shape, B = 4, exact MAML, r = 1, 5, 10, 20: time and peak memory.
# Ours in checkpoint:5 (the stored states stay at most 3); PyTorch keeps every step's graph.
reserve=0
for r in 1 5 10 20; do
  ours "${resnet[@]}" --algo maml --r $r --B 4 --trajectory checkpoint:5 --iters 2 --warmup 1
done
torch_rows 70 "${resnet[@]}" --algo maml --r 1,5,10,20 --B 4 --variant loop,vmap --iters 2 --warmup 1

echo "benchmark: $((SECONDS - start)) s" | tee -a "$log" >&2

# Tables (plain python, no torch): bounded, and a failure here keeps the rows.
timeout 60 "$py" - "$results" "$outdir/summary.md" <<'PY' || echo "run_gpu_bench: the summary failed (rows are in $results)" | tee -a "$log" >&2
import json, sys
rows = []
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
ok = [x for x in rows if "error" not in x and "sec_per_iter" in x]
bad = [x for x in rows if "error" in x]

def key(x):
    return (x.get("dataset", "omniglot"), x["algo"], int(x["r"]), int(x["B"]))

def fmt(v, f="{:.4f}"):
    return "–" if v is None else f.format(v)

def mib(x):  # the comparable figure: the same field, measured the same way, on both sides
    return x.get("peak_device_mib") if x else None

ours, torch = {}, {}
res_ours, res_torch = {}, {}  # ResNet-12: by r, and by (r, variant)
for x in ok:
    if x.get("model", "conv4") == "resnet12":
        if x["impl"] == "ours":
            res_ours[int(x["r"])] = x
        elif x["impl"] == "pytorch":
            res_torch[(int(x["r"]), x.get("variant", "loop"))] = x
    elif x["impl"] == "ours":
        ours[(key(x), x.get("trajectory", "store"))] = x
    elif x["impl"] == "pytorch":
        torch[(key(x), x.get("variant", "loop"))] = x

out = ["# GPU benchmark: ours vs PyTorch (torch.func)", ""]
meta = next((x for x in ok if x["impl"] == "pytorch"), {})
if meta:
    out.append(f"PyTorch {meta.get('torch_version')} (CUDA {meta.get('cuda_version')}, cuDNN "
               f"{meta.get('cudnn_version')}, cudnn.benchmark={meta.get('cudnn_benchmark')}, "
               f"TF32={meta.get('tf32')}) on {meta.get('device_name')}.")
    out.append("")
methods = sorted({x.get("memory_method", "?") for x in ok})
out.append("Memory (MiB): peak_device_mib, measured the same way for both: " + (" / ".join(methods) or "no rows") +
           ". PyTorch's own torch.cuda.max_memory_allocated (tensors only) is in the rows as "
           "max_memory_allocated_bytes.")
out.append("")
out += ["## Speed (seconds per meta-iteration, median)", "",
        "| dataset | algo | r | B | ours s/iter | ours it/s | torch loop s/iter | torch vmap s/iter "
        "| ours / torch-best time | ours MiB | torch-best MiB | ours / torch-best memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
speed_keys = sorted({k for (k, t) in ours if t == "store"} |
                    {k for (k, v) in torch if not (k[1] == "maml" and k[3] == 4 and k[0] == "omniglot")})
for k in speed_keys:
    o = ours.get((k, "store"))
    tl, tv = torch.get((k, "loop")), torch.get((k, "vmap"))
    tt = [t for t in (tl, tv) if t]
    best_t = min((t["sec_per_iter"] for t in tt), default=None)
    best_m = min((mib(t) for t in tt if mib(t)), default=None)
    om = mib(o)
    out.append("| " + " | ".join([
        k[0], k[1], str(k[2]), str(k[3]),
        fmt(o["sec_per_iter"] if o else None), fmt(1 / o["sec_per_iter"] if o else None, "{:.1f}"),
        fmt(tl["sec_per_iter"] if tl else None), fmt(tv["sec_per_iter"] if tv else None),
        fmt(o["sec_per_iter"] / best_t if o and best_t else None, "{:.2f}"),
        fmt(om, "{:.0f}"), fmt(best_m, "{:.0f}"),
        fmt(om / best_m if om and best_m else None, "{:.2f}")]) + " |")
out += ["", "## Exact MAML peak memory against r (Omniglot, B = 4)", "",
        "| r | ours recompute MiB | torch loop MiB | torch vmap MiB | ours / torch-best memory "
        "| ours s/iter | torch loop s/iter | torch vmap s/iter |",
        "|---|---|---|---|---|---|---|---|"]
for r in sorted({k[2] for (k, t) in ours if t == "recompute"} |
                {k[2] for (k, v) in torch if k[1] == "maml" and k[3] == 4 and k[0] == "omniglot"}):
    k = ("omniglot", "maml", r, 4)
    o = ours.get((k, "recompute"))
    tl, tv = torch.get((k, "loop")), torch.get((k, "vmap"))
    om = mib(o)
    best_m = min((mib(t) for t in (tl, tv) if mib(t)), default=None)
    out.append("| " + " | ".join([
        str(r), fmt(om, "{:.0f}"), fmt(mib(tl), "{:.0f}"), fmt(mib(tv), "{:.0f}"),
        fmt(om / best_m if om and best_m else None, "{:.2f}"),
        fmt(o["sec_per_iter"] if o else None), fmt(tl["sec_per_iter"] if tl else None),
        fmt(tv["sec_per_iter"] if tv else None)]) + " |")
out += ["", "## ResNet-12 (64,160,320,640), Mini-ImageNet shape, exact MAML, B = 4", "",
        "| r | ours s/iter | torch loop s/iter | torch vmap s/iter | ours / torch-best time "
        "| ours MiB | torch loop MiB | torch vmap MiB | ours / torch-best memory |",
        "|---|---|---|---|---|---|---|---|---|"]
for r in sorted(set(res_ours) | {k[0] for k in res_torch}):
    o = res_ours.get(r)
    tl, tv = res_torch.get((r, "loop")), res_torch.get((r, "vmap"))
    tt = [t for t in (tl, tv) if t]
    best_t = min((t["sec_per_iter"] for t in tt), default=None)
    best_m = min((mib(t) for t in tt if mib(t)), default=None)
    om = mib(o)
    out.append("| " + " | ".join([
        str(r), fmt(o["sec_per_iter"] if o else None), fmt(tl["sec_per_iter"] if tl else None),
        fmt(tv["sec_per_iter"] if tv else None),
        fmt(o["sec_per_iter"] / best_t if o and best_t else None, "{:.2f}"),
        fmt(om, "{:.0f}"), fmt(mib(tl), "{:.0f}"), fmt(mib(tv), "{:.0f}"),
        fmt(om / best_m if om and best_m else None, "{:.2f}")]) + " |")
if res_ours:
    out.append("")
    out.append("Ours in " + ", ".join(sorted({x.get("trajectory", "?") for x in res_ours.values()})) +
               " mode; PyTorch keeps the autograd graph of every inner step.")
if len(methods) > 1:
    out += ["", "Note: the rows name different memory methods: the MiB columns do not compare."]
if bad:
    out += ["", f"## Rows that failed or were skipped ({len(bad)})", ""]
    for x in bad:
        cfg = x.get("config") or f"{x.get('algo')} r={x.get('r')} B={x.get('B')} {x.get('variant', '')}"
        out.append(f"- {x['impl']}: {cfg}: {x['error']}")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
n_bad=$(grep -c '"error"' "$results" || true)
echo "run_gpu_bench: $(grep -c . "$results") rows ($n_bad failed/skipped) in $results; summary $outdir/summary.md" >&2
[ "$n_bad" -eq 0 ]
