#!/usr/bin/env bash
# Weak scaling of distributed metatrain on this machine: 1 rank vs N ranks (mpiexec, MPI
# backend) at a fixed number of tasks per rank, so ideal scaling keeps the seconds per step flat.
# Reads `sec` (seconds per outer step, timed on rank 0, allreduce included) from metrics.jsonl.
#
#   bash tests/bench/bench_scaling.sh            # ~10 min on a busy 2-core machine
#   CONFIGS="1:1 2:1 4:1" REPEATS=5 STEPS=12 bash tests/bench/bench_scaling.sh
#
# Set-up: Omniglot-shaped glyphs (28x28x1, 5-way 1-shot, 15 queries), Conv-4 with 64 filters
# (112,005 parameters), FOMAML and exact MAML with r = 1, TASKS_PER_RANK tasks per worker
# thread (meta_batch = ranks x threads x TASKS_PER_RANK), no evaluation during training. The first DISCARD steps of every run are
# dropped (warm-up); a run's figure is the median of its remaining steps, a configuration's the
# median over REPEATS runs (runs of different rank counts interleave, so slow drifts in the
# machine's load hit all of them). Efficiency = t1 / tN (1.0 = perfect weak scaling).
# CONFIGS lists ranks:threads pairs; the default adds a control, 1 rank x 2 threads with the
# same meta_batch and cores as 2 ranks x 1 thread: the gap between the two is the cost of
# distributing (allreduce, per-rank set-up), while t1/tN also contains core contention.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

CONFIGS="${CONFIGS:-1:1 2:1 1:2}"
ALGOS="${ALGOS:-fomaml maml}"
TASKS_PER_RANK="${TASKS_PER_RANK:-8}"
STEPS="${STEPS:-10}"
DISCARD="${DISCARD:-2}"
REPEATS="${REPEATS:-3}"
OUT_DIR="${OUT_DIR:-$(mktemp -d /tmp/bench_scaling.XXXXXX)}"
METATRAIN="${METATRAIN:-build/bin/metatrain}"
[ -x "$METATRAIN" ] || { echo "build first: bash launch/setup/build.sh" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

echo "machine: $(getconf _NPROCESSORS_ONLN) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
busiest() { top -bn1 -o %CPU | awk 'NR > 7 && NR <= 10 {printf "%s %s%%; ", $12, $9}'; }
echo "busiest processes before (top): $(busiest)"
echo "raw metrics: $OUT_DIR"
for rep in $(seq 1 "$REPEATS"); do
  for algo in $ALGOS; do
    for cfg in $CONFIGS; do
      n="${cfg%%:*}" threads="${cfg##*:}"
      dir="$OUT_DIR/${algo}_np${n}_t${threads}_rep${rep}"
      # --bind-to none: the box is shared, pinning to a busy core would only add noise.
      mpiexec -np "$n" --oversubscribe --bind-to none -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS \
        "$METATRAIN" dist.backend=mpi algo="$algo" inner.steps=1 threads="$threads" \
        meta_batch=$((n * threads * TASKS_PER_RANK)) steps="$STEPS" log.every=1 eval.every=0 \
        eval.episodes=1 checkpoint.every=0 checkpoint.dir="$dir" > "$dir.log" 2>&1 ||
        { echo "run failed, see $dir.log" >&2; tail -5 "$dir.log" >&2; exit 1; }
      echo "  done: $algo ranks=$n threads=$threads repeat $rep" >&2
    done
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "busiest processes after (top): $(busiest)"

python3 - "$OUT_DIR" "$DISCARD" "$TASKS_PER_RANK" "$ALGOS" "$CONFIGS" <<'PY'
import json, statistics, sys, glob, os
out, discard, tpr = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
algos = sys.argv[4].split()
configs = [tuple(int(x) for x in c.split(":")) for c in sys.argv[5].split()]
print()
print("| algo | ranks x threads | meta_batch | s/step (median) | per-run medians | tasks/s "
      "| efficiency t1/tN |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for algo in algos:
    t1 = None
    for n, threads in configs:
        per_run = []
        pattern = os.path.join(out, f"{algo}_np{n}_t{threads}_rep*", "metrics.jsonl")
        for path in sorted(glob.glob(pattern)):
            secs = [json.loads(l)["sec"] for l in open(path) if '"sec"' in l]
            kept = secs[discard:]
            if kept:
                per_run.append(statistics.median(kept))
        t = statistics.median(per_run)
        if t1 is None:
            t1 = t  # the first configuration is the baseline
        b = n * threads * tpr
        spread = " / ".join(f"{x:.3f}" for x in per_run)
        name = "MAML r=1" if algo == "maml" else ("FOMAML r=1" if algo == "fomaml" else algo)
        print(f"| {name} | {n} x {threads} | {b} | {t:.3f} | {spread} | {b / t:.2f} | {t1 / t:.2f} |")
PY
