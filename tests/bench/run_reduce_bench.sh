#!/bin/bash
# dist.reduce = exact against float (tests/bench/RESULTS.md, issue 16): the reduction alone
# (bench_reduce) and whole metatrain steps, on 1, 2 and 4 ranks of this machine.
#   bash tests/bench/run_reduce_bench.sh [build dir, default build]
set -euo pipefail
BUILD=${1:-build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=PASSIVE
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in 1 2 4; do
  mpiexec --oversubscribe -n "$n" "$BUILD/bin/bench_reduce" --tasks 8 --reps 31 | grep '^|'
done
# Whole steps: FOMAML r = 1 on glyphs, Conv-4 64 filters, meta_batch 8; median sec of steps 3-8.
tmp=$(mktemp -d)
for n in 1 2 4; do
  for red in float exact; do
    mpiexec --oversubscribe -n "$n" "$BUILD/bin/metatrain" algo=fomaml inner.steps=1 meta_batch=8 \
      threads=1 steps=8 log.every=1 eval.episodes=1 dist.reduce=$red \
      checkpoint.dir="$tmp/$n$red" > /dev/null 2>&1
    python3 - "$tmp/$n$red/metrics.jsonl" "$n" "$red" <<'PY'
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
sec = [l["sec"] for l in lines[2:]]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {statistics.median(sec):.3f} | " +
      " ".join(f"{s:.3f}" for s in sec) + " |")
PY
  done
done
rm -rf "$tmp"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
