#!/usr/bin/env bash
# GPU benchmark of one meta-iteration, ours (BUNDLE/bin/bench_metastep --device cuda) side by
# side with the PyTorch reference (tests/bench/reference/torch_metastep.py, loop and vmap
# variants) in the same run: Omniglot 5-way 1-shot 15 queries B=32 r in {1,5} and Mini-ImageNet
# 5-way 1-shot B=4 r=5 for FOMAML / MAML / UFOM q=0.1 (meta-iterations/s, peak device memory),
# and exact-MAML peak memory for r = 1, 5, 10, 20, 50 (Omniglot, B=4; ours in recompute mode).
# Writes OUTDIR/results_gpu.jsonl (every row, failures as rows with "error"), OUTDIR/summary.md
# (tables, ratios ours / PyTorch-best) and OUTDIR/bench.log. Fits ~4 minutes: few iterations
# per row, a timeout per process, and a total budget (MT_BENCH_BUDGET_S, default 230 s) after
# which remaining rows are recorded as skipped.
#   usage: tests/bench/run_gpu_bench.sh BUNDLE OUTDIR      (env: MT_PYTHON, MT_BENCH_BUDGET_S)
#
# bench_metastep's interface used here (bench_metastep --help): --device cuda|cpu, --dataset
# omniglot|miniimagenet (28x28x1 / 84x84x3; --filters 64 / 32 passed explicitly), --algo --r --B
# --q --trajectory --ways --shots --queries --filters --iters --warmup; its last stdout line is a
# JSON object with impl, algo, r, B, sec_per_iter and peak_mem_bytes (device memory on the GPU).
set -euo pipefail

die() { echo "run_gpu_bench: error: $*" >&2; exit 2; }
[ $# -eq 2 ] || die "usage: $0 BUNDLE OUTDIR"
bundle="$(cd "$1" 2>/dev/null && pwd)" || die "bundle '$1' not found (make it with tests/gpu/make_bundle.sh)"
[ -x "$bundle/run" ] && [ -x "$bundle/bin/bench_metastep" ] || die "$bundle is not a bundle (no run / bin/bench_metastep)"
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
budget="${MT_BENCH_BUDGET_S:-230}"
results="$outdir/results_gpu.jsonl"
log="$outdir/bench.log"
: > "$results"
: > "$log"
start=$SECONDS
export PYTHONUNBUFFERED=1

left() { echo $((budget - (SECONDS - start))); }
skip_row() {  # skip_row IMPL DESC: record a row that did not run for lack of time
  printf '{"impl": "%s", "config": "%s", "error": "skipped: benchmark time budget (%s s) spent"}\n' "$1" "$2" "$budget" >> "$results"
  echo "SKIP $1 $2 (budget)" | tee -a "$log" >&2
}

# ours ARGS...: one configuration per process (peak memory is per process).
ours() {
  local desc="$*" t rc=0
  t=$(( $(left) < 45 ? $(left) : 45 ))
  if [ "$t" -lt 5 ]; then skip_row ours "$desc"; return 0; fi
  echo "+ [$((SECONDS - start)) s] ours $desc (timeout $t s)" | tee -a "$log" >&2
  timeout -k 5 "$t" "$bundle/run" bench_metastep --device cuda "$@" > "$outdir/.row" 2> "$outdir/.err" || rc=$?
  local line
  line="$(grep '^{' "$outdir/.row" | tail -n 1 || true)"
  cat "$outdir/.row" "$outdir/.err" >> "$log"
  if [ "$rc" = 0 ] && [ -n "$line" ]; then
    echo "$line" >> "$results"
  else
    local why
    why="exit $rc: $( (tail -1 "$outdir/.err" || true) | tr -d '"\\' | cut -c1-200)"
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && why="timeout after $t s"
    printf '{"impl": "ours", "config": "%s", "error": "%s"}\n' "$desc" "$why" >> "$results"
    echo "FAIL ours $desc: $why" | tee -a "$log" >&2
  fi
  rm -f "$outdir/.row" "$outdir/.err"
}

# torch TIMEOUT ARGS...: one process, many rows (every combination of the list arguments).
torch_rows() {
  local cap="$1"; shift
  local desc="$*" t rc=0
  t=$(( $(left) < cap ? $(left) : cap ))
  if [ "$t" -lt 10 ]; then skip_row pytorch "$desc"; return 0; fi
  echo "+ [$((SECONDS - start)) s] pytorch $desc (timeout $t s)" | tee -a "$log" >&2
  # Rows stream to the results as they finish, so a timeout keeps the rows done before it.
  local before after
  before=$(grep -c . "$results" || true)
  timeout -k 5 "$t" "$py" "$ref" --device cuda "$@" 2> "$outdir/.err" | grep --line-buffered '^{' >> "$results" || rc=$?
  cat "$outdir/.err" >> "$log"
  after=$(grep -c . "$results" || true)
  if [ "$rc" != 0 ]; then
    # Rows that finished are kept (a failed row is a row with "error"); say why the rest is missing.
    local why
    why="exit $rc: $( (grep -v '^ ' "$outdir/.err" || true) | tail -1 | tr -d '"\\' | cut -c1-200)"
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && why="timeout after $t s ($((after - before)) rows done)"
    if [ "$after" = "$before" ] || [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      printf '{"impl": "pytorch", "config": "%s", "error": "%s"}\n' "$desc" "$why" >> "$results"
    fi
    echo "NOTE pytorch $desc: $why" | tee -a "$log" >&2
  fi
  rm -f "$outdir/.err"
  return 0
}

omni=(--dataset omniglot --filters 64 --ways 5 --shots 1 --queries 15)
mini=(--dataset miniimagenet --filters 32 --ways 5 --shots 1 --queries 15)

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

echo "benchmark: $((SECONDS - start)) s" | tee -a "$log" >&2

"$py" - "$results" "$outdir/summary.md" <<'PY'
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

def mib(b):
    return None if b is None else b / 2**20

ours, torch = {}, {}
for x in ok:
    if x["impl"] == "ours":
        traj = x.get("trajectory", "store")
        ours[(key(x), traj)] = x
    elif x["impl"] == "pytorch":
        torch[(key(x), x.get("variant", "loop"))] = x

out = ["# GPU benchmark: ours vs PyTorch (torch.func)", ""]
meta = next((x for x in ok if x["impl"] == "pytorch"), {})
if meta:
    out.append(f"PyTorch {meta.get('torch_version')} (CUDA {meta.get('cuda_version')}, cuDNN "
               f"{meta.get('cudnn_version')}, cudnn.benchmark={meta.get('cudnn_benchmark')}, "
               f"TF32={meta.get('tf32')}) on {meta.get('device_name')}. Peak memory: ours "
               f"peak_mem_bytes as bench_metastep reports it; PyTorch "
               f"torch.cuda.max_memory_allocated (reset per row).")
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
    best_m = min((t["peak_mem_bytes"] for t in tt if t.get("peak_mem_bytes")), default=None)
    om = o.get("peak_mem_bytes") if o else None
    out.append("| " + " | ".join([
        k[0], k[1], str(k[2]), str(k[3]),
        fmt(o["sec_per_iter"] if o else None), fmt(1 / o["sec_per_iter"] if o else None, "{:.1f}"),
        fmt(tl["sec_per_iter"] if tl else None), fmt(tv["sec_per_iter"] if tv else None),
        fmt(o["sec_per_iter"] / best_t if o and best_t else None, "{:.2f}"),
        fmt(mib(om), "{:.0f}"), fmt(mib(best_m), "{:.0f}"),
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
    om = o.get("peak_mem_bytes") if o else None
    best_m = min((t["peak_mem_bytes"] for t in (tl, tv) if t and t.get("peak_mem_bytes")), default=None)
    out.append("| " + " | ".join([
        str(r), fmt(mib(om), "{:.0f}"), fmt(mib(tl.get("peak_mem_bytes")) if tl else None, "{:.0f}"),
        fmt(mib(tv.get("peak_mem_bytes")) if tv else None, "{:.0f}"),
        fmt(om / best_m if om and best_m else None, "{:.2f}"),
        fmt(o["sec_per_iter"] if o else None), fmt(tl["sec_per_iter"] if tl else None),
        fmt(tv["sec_per_iter"] if tv else None)]) + " |")
if ours and not any("peak_mem_bytes" in x for x in ours.values()):
    out += ["", "Note: ours printed no peak_mem_bytes (bench_metastep's CUDA path should add it)."]
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
