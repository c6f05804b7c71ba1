#!/usr/bin/env bash
# Adaptive UFOM's q on the shipped data (issue 22): short adaptive-UFOM runs on the built-in
# glyphs and on the packed Omniglot subset, q, V² and D² logged every step, then a table of the
# first-order error ratio ρ² = D²/V² and of q's trajectory against the rule's saturation point.
#   usage: bash tests/bench/run_ufom_q_study.sh [OUT_DIR]          (default runs/ufom_q_study)
#   env:   SETUPS="glyphs/r1 omniglot/r1 omniglot/r5"  SCALES="1 0.1"  (what to run: data/inner
#          set-ups, each with every d2_scale; glyphs/r5 is the fourth one)
#          STEPS=200 (outer steps of an r = 1 run)  STEPS_R5=40 (of an r = 5 run)
#          MT_DATA_DIR (folder holding omniglot/, default ../shared/data)  BUILD_DIR=build
# Everything else is metatrain's default: 5-way 1-shot, 15 queries, meta_batch 8, Conv-4 64
# filters, q_min 0.05. r1 = the default inner loop (1 step, store: C_F = 2, C_E = 1); r5 = 5 steps,
# recompute (C_F = 6, C_E = 15, DESIGN 3.6) with inner.lr 0.1. One thread, one run at a time;
# finished runs are kept. About 15 minutes with the defaults on one core (RESULTS.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
out="${1:-runs/ufom_q_study}"
setups="${SETUPS:-glyphs/r1 omniglot/r1 omniglot/r5}"
scales="${SCALES:-1 0.1}"
steps_r1="${STEPS:-200}"
steps_r5="${STEPS_R5:-40}"
bin="${BUILD_DIR:-build}/bin"
data="${MT_DATA_DIR:-../shared/data}/omniglot"
[ -x "$bin/metatrain" ] || { echo "no $bin/metatrain: build first (bash launch/setup/build.sh)" >&2; exit 2; }
mkdir -p "$out"

store="$out/omniglot.h5"
if [[ " $setups " == *" omniglot/"* && ! -f "$store" ]]; then
  [ -x "$bin/metapack" ] || { echo "no $bin/metapack: build first" >&2; exit 2; }
  for z in images_background_small1.zip images_background_small2.zip; do
    [ -f "$data/$z" ] || { echo "missing $data/$z (set MT_DATA_DIR)" >&2; exit 2; }
  done
  "$bin/metapack" omniglot -o "$store.tmp" "$data/images_background_small1.zip" \
    "$data/images_background_small2.zip" > "$out/metapack.log" 2>&1
  mv "$store.tmp" "$store"
fi

# inner set-up -> metatrain keys, outer steps, and the costs C_F C_E of DESIGN 3.6
inner_keys() { case "$1" in r1) echo "" ;; r5) echo "inner.steps=5 inner.trajectory=recompute inner.lr=0.1" ;; esac; }
inner_steps() { case "$1" in r1) echo "$steps_r1" ;; r5) echo "$steps_r5" ;; esac; }
inner_costs() { case "$1" in r1) echo "2 1" ;; r5) echo "6 15" ;; esac; }

t0=$SECONDS
for setup in $setups; do
  ds="${setup%/*}" il="${setup#*/}"
  path=glyphs; [ "$ds" = omniglot ] && path="$store"
  [ "$ds" = glyphs ] || [ "$ds" = omniglot ] || { echo "unknown data '$ds' in '$setup'" >&2; exit 2; }
  [ -n "$(inner_steps "$il")" ] || { echo "unknown inner set-up '$il' in '$setup' (r1, r5)" >&2; exit 2; }
  for s in $scales; do
    dir="$out/${ds}_${il}_d2s${s}"
    [ -f "$dir/done" ] && continue
    rm -rf "$dir" && mkdir -p "$dir"
    cmd=("$bin/metatrain" data.path="$path" algo=ufom ufom.q=adaptive ufom.d2_scale="$s"
         $(inner_keys "$il") steps="$(inner_steps "$il")" seed=0 threads=1 data.prefetch=0
         log.every=1 eval.every=0 eval.episodes=20 checkpoint.every=0 checkpoint.dir="$dir")
    echo "${cmd[*]}" > "$dir/command.txt"
    t1=$SECONDS
    "${cmd[@]}" > "$dir/train.log" 2>&1 || { echo "FAILED: $dir (see $dir/train.log)" >&2; exit 1; }
    echo $(( SECONDS - t1 )) > "$dir/wall_seconds.txt"
    touch "$dir/done"
    echo "done $dir in $(cat "$dir/wall_seconds.txt") s" >&2
  done
done
echo "$(( SECONDS - t0 ))" > "$out/last_invocation_seconds.txt"

# The table. ρ² per step = (mean ‖g_E − g_F‖²)/(mean ‖g_E‖²) over the step's exact tasks (the
# logged d2 / v2, unscaled); "rule's ρ²" = the ratio of the bias-corrected EMAs (β = 0.99) the
# rule reads, rebuilt from the log as core/ufom.cpp does, at the last step. q saturates at 1
# when d2_scale·ρ² ≥ ½ C_E/(C_F + C_E), i.e. when the rule's ρ² ≥ the "q = 1 at ρ² ≥" column.
table="$out/table.md"
{
  echo "| data | inner | d2_scale | steps | ρ² per step: median [10%, 90%] | ρ² first 20% / last 20% of steps (median) | rule's ρ² at the end | q = 1 at ρ² ≥ | q median | q mean | steps at q = 1 | steps at q_min | grad. evals per step | wall s |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for setup in $setups; do
    ds="${setup%/*}" il="${setup#*/}"
    for s in $scales; do
        dir="$out/${ds}_${il}_d2s${s}"
        [ -f "$dir/done" ] || continue
        # shellcheck disable=SC2046
        python3 - "$dir/metrics.jsonl" "$ds" "$il" "$s" $(inner_costs "$il") \
          "$(cat "$dir/wall_seconds.txt")" <<'EOF'
import json, sys
path, ds, inner, scale, cf, ce, wall = sys.argv[1:]
scale, cf, ce = float(scale), float(cf), float(ce)
rows = [json.loads(l) for l in open(path) if '"loss"' in l]
def pct(xs, p):
    xs = sorted(xs); k = (len(xs) - 1) * p; i = int(k)
    return xs[i] if i + 1 >= len(xs) else xs[i] + (k - i) * (xs[i + 1] - xs[i])
rho = [r["d2"] / r["v2"] for r in rows if "v2" in r and r["v2"] > 0] or [float("nan")]
qs = [r["q"] for r in rows]
v = d = 0.0; n = 0
for r in rows:  # AdaptiveQ::update, once per step with exact tasks
    if "v2" in r:
        v = 0.99 * v + 0.01 * r["v2"]; d = 0.99 * d + 0.01 * r["d2"]; n += 1
ema = d / v if n and v > 0 else float("nan")
fifth = max(1, len(rho) // 5)
thr = 0.5 * ce / (cf + ce) / scale
q1 = sum(q == 1.0 for q in qs); qmin = sum(abs(q - 0.05) < 1e-12 for q in qs)
evals = rows[-1]["grad_evals_total"] / len(rows)
print(f"| {ds} | {inner} (C_F {cf:g}, C_E {ce:g}) | {scale:g} | {len(rows)} | "
      f"{pct(rho, .5):.3f} [{pct(rho, .1):.3f}, {pct(rho, .9):.3f}] | "
      f"{pct(rho[:fifth], .5):.3f} / {pct(rho[-fifth:], .5):.3f} | {ema:.3f} | {thr:.3f} | "
      f"{pct(qs, .5):.3f} | {sum(qs) / len(qs):.3f} | {q1} ({100 * q1 / len(qs):.0f}%) | "
      f"{qmin} ({100 * qmin / len(qs):.0f}%) | {evals:.1f} | {wall} |")
EOF
    done
  done
} > "$table"
cat "$table"
