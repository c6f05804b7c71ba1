#!/usr/bin/env bash
# The one command for a lent GPU machine (run from the repository root, $OUT set): with the
# carried bundle (tests/gpu/make_bundle.sh; default build-bundle/bundle, or $MT_BUNDLE) it records
# versions, then part `tests` (every bundled gpu test, a short CUDA metatrain, compute-sanitizer
# memcheck on it and on one gpu test; <= 3 min) and/or part `bench` (tests/bench/run_gpu_bench.sh,
# <= 4 min). Every step of the chosen part runs; $OUT/summary.txt has PASS/FAIL per step and the
# exit code is non-zero if any step failed.
#   usage: OUT=/path bash tests/gpu/device_check.sh [tests|bench|all]      (default: all)
# Files in $OUT (the device tool returns at most 8): summary.txt versions.txt tests.log gtest.json
# sanitizer.log and, for bench, bench.log results_gpu.jsonl summary.md.
set -euo pipefail

part="${1:-all}"
case "$part" in tests|bench|all) ;; *) echo "usage: $0 [tests|bench|all]" >&2; exit 2 ;; esac
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
if [ -z "${OUT:-}" ]; then
  OUT="$root/device-out"
  echo "device_check: OUT is not set; writing to $OUT" >&2
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
bundle="${MT_BUNDLE:-$root/build-bundle/bundle}"
summary="$OUT/summary.txt"
versions="$OUT/versions.txt"
tests_log="$OUT/tests.log"
san_log="$OUT/sanitizer.log"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
: > "$summary"
failed=0
t_all=$SECONDS

record() {  # record STATUS STEP SECONDS DETAIL
  printf '%-4s  %-40s %4ss  %s\n' "$1" "$2" "$3" "$4" | tee -a "$summary"
  [ "$1" = FAIL ] && failed=$((failed + 1))
  return 0
}
finish() {
  echo "---- $(grep -c '^PASS' "$summary" || true) passed, $(grep -c '^FAIL' "$summary" || true) failed, $((SECONDS - t_all)) s total (part: $part)" | tee -a "$summary"
  exit $(( failed > 0 ? 1 : 0 ))
}
echo "device_check: part=$part bundle=$bundle OUT=$OUT" | tee -a "$summary"

if [ ! -x "$bundle/run" ] || [ ! -f "$bundle/env.sh" ]; then
  record FAIL bundle 0 "no bundle at $bundle: build one with tests/gpu/make_bundle.sh and carry it (or set MT_BUNDLE)"
  finish
fi
# Tests that start programs (metatrain_cuda_test) find them, and write scratch, under the bundle.
export MT_BINARY_DIR="$bundle"
run_b() { "$bundle/run" "$@"; }   # a bundled program with env.sh applied (in its own process)

# ---- versions -----------------------------------------------------------------------------------
t=$SECONDS
(
  set +e +o pipefail   # a missing tool is reported in the file, not fatal
  echo "== date / host"; date -u; uname -a
  echo "== nvidia-smi"; timeout 20 nvidia-smi 2>&1 || echo "(nvidia-smi failed: $?)"
  timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.sm,clocks.mem --format=csv 2>&1 || true
  echo "== glibc"; ldd --version 2>&1 | head -1
  echo "== bundle manifest (head)"; head -12 "$bundle/MANIFEST.txt"
  echo "== nvcc"; (command -v nvcc >/dev/null && nvcc --version || /usr/local/cuda/bin/nvcc --version) 2>&1 | tail -2
  echo "== compute-sanitizer"; (compute-sanitizer --version || /usr/local/cuda/bin/compute-sanitizer --version) 2>&1 | head -3
  echo "== python / torch / cuDNN / NCCL (device venv)"
  timeout 60 "${MT_PYTHON:-python3}" -c '
import sys, torch
print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("cudnn", torch.backends.cudnn.version())
try: print("nccl", ".".join(map(str, torch.cuda.nccl.version())))
except Exception as e: print("nccl ?", e)
if torch.cuda.is_available(): print("gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
' 2>&1 || echo "(python/torch query failed)"
  echo "== env.sh"
  MT_BUNDLE_VERBOSE=1 run_b true 2>&1 || true
  echo "== library resolution of the bundled programs (ldd under env.sh)"
  for f in "$bundle"/bin/* "$bundle"/tests/*; do
    [ -f "$f" ] && [ "${f##*/}" != tests.tsv ] || continue
    echo "-- ${f#"$bundle"/}"; run_b ldd "$f" 2>&1 | grep -Ev "$bundle/lib|mt-bundle-libs" || true
  done
) > "$versions" 2>&1
gpu_line="$(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || true)"
need="$(sed -n 's/^glibc needed: *\([0-9.]*\).*/\1/p' "$bundle/MANIFEST.txt")"
have="$(ldd --version 2>&1 | head -1 | grep -o '[0-9][0-9.]*$' || true)"
if [ -z "$gpu_line" ]; then
  record FAIL versions+ldd $((SECONDS - t)) "nvidia-smi sees no GPU (the gpu tests will skip); see versions.txt"
elif grep -q 'not found' <(sed -n '/^== library resolution/,$p' "$versions"); then
  record FAIL versions+ldd $((SECONDS - t)) "libraries not found under env.sh: see versions.txt"
elif [ -n "$need" ] && [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
  record FAIL versions+ldd $((SECONDS - t)) "glibc $have here, the bundle needs $need: build on an older system"
else
  record PASS versions+ldd $((SECONDS - t)) "${gpu_line:-no GPU seen by nvidia-smi}; glibc $have (needs $need)"
fi

sanitizer="$(command -v compute-sanitizer || true)"
[ -n "$sanitizer" ] || for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [ -x "$c" ] && { sanitizer="$c"; break; }
done

metatrain_args=(device=cuda steps=3 meta_batch=4 eval.episodes=10 eval.every=3 inner.steps=1
                log.every=1 data.prefetch=0 checkpoint.dir="$work/ck")
explain_rc() {  # what an exit code means for our programs
  case "$1" in
    0) echo "ok" ;; 1) echo "exit 1 (runtime failure)" ;;
    2) echo "exit 2 (bad usage/config/data: e.g. this build has no CUDA backend for the step)" ;;
    124|137) echo "timeout" ;; *) [ "$1" -gt 128 ] && echo "killed by signal $(( $1 - 128 ))" || echo "exit $1" ;;
  esac
}

# ---- part tests ---------------------------------------------------------------------------------
if [ "$part" = tests ] || [ "$part" = all ]; then
  : > "$tests_log"; : > "$san_log"
  first_test=""
  while IFS=$'\t' read -r name kind _; do
    [ -n "$name" ] || continue
    [ -n "$first_test" ] || first_test="$name"
    t=$SECONDS; rc=0
    echo "===== $name ($kind)" >> "$tests_log"
    # kind mpi: MPI_Init as a singleton (env.sh sets Open MPI up; no mpirun on this machine).
    timeout -k 5 90 "$bundle/run" "$name" --gtest_output=json:"$work/gtest_$name.json" >> "$tests_log" 2>&1 || rc=$?
    counts="$(python3 - "$work/gtest_$name.json" 2>/dev/null <<'PY' || true
import json, sys
d = json.load(open(sys.argv[1]))
tests = [t for s in d.get("testsuites", []) for t in s.get("testsuite", [])]
skipped = sum(1 for t in tests if t.get("result") == "SKIPPED" or t.get("status") == "NOTRUN")
failed = sum(1 for t in tests if t.get("failures"))
print(f"{len(tests)} tests, {failed} failed, {skipped} skipped")
PY
)"
    all_skipped=0
    [[ "$counts" =~ ^([0-9]+)\ tests,\ 0\ failed,\ ([0-9]+)\ skipped ]] && [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ] \
      && [ "${BASH_REMATCH[1]}" -gt 0 ] && all_skipped=1
    if [ "$rc" = 0 ] && [ "$all_skipped" = 1 ] && [ -n "$gpu_line" ]; then
      record FAIL "test $name" $((SECONDS - t)) "$counts although nvidia-smi sees a GPU; see tests.log"
    elif [ "$rc" = 0 ]; then
      record PASS "test $name" $((SECONDS - t)) "${counts:-ok}"
    else
      record FAIL "test $name" $((SECONDS - t)) "$(explain_rc "$rc"); ${counts:-no gtest report}; see tests.log"
    fi
  done < "$bundle/tests/tests.tsv"
  [ -n "$first_test" ] || record FAIL "gpu tests" 0 "the bundle holds no gpu test executable"
  # Merge the per-executable gtest reports into one file (the tool returns few files).
  python3 - "$OUT/gtest.json" "$work"/gtest_*.json <<'PY' 2>/dev/null || true
import json, os, sys
out = {}
for p in sys.argv[2:]:
    try:
        out[os.path.basename(p)[6:-5]] = json.load(open(p))
    except Exception as e:
        out[os.path.basename(p)] = {"error": str(e)}
json.dump(out, open(sys.argv[1], "w"), indent=1)
PY

  # A short CUDA training run (glyphs, built in), then the same under memcheck.
  t=$SECONDS; rc=0
  echo "===== metatrain ${metatrain_args[*]}" >> "$tests_log"
  timeout -k 5 60 "$bundle/run" metatrain "${metatrain_args[@]}" > "$work/metatrain.out" 2>&1 || rc=$?
  cat "$work/metatrain.out" >> "$tests_log"
  if [ "$rc" = 0 ]; then
    record PASS "metatrain device=cuda steps=3" $((SECONDS - t)) "$(grep -o 'accuracy [0-9.]*%.*' "$work/metatrain.out" | tail -1 | cut -c1-60)"
  else
    record FAIL "metatrain device=cuda steps=3" $((SECONDS - t)) "$(explain_rc "$rc"): $( (grep -m1 -iE 'error' "$work/metatrain.out" || tail -1 "$work/metatrain.out") | cut -c1-160)"
  fi
  if [ -z "$sanitizer" ]; then
    record FAIL "memcheck metatrain" 0 "compute-sanitizer not found"
    record FAIL "memcheck $first_test" 0 "compute-sanitizer not found"
  else
    rm -rf "$work/ck"
    t=$SECONDS; rc=0
    echo "===== compute-sanitizer memcheck: metatrain ${metatrain_args[*]}" >> "$san_log"
    # The sanitizer itself runs outside env.sh (its own libraries); the target gets it via run.
    timeout -k 5 100 "$sanitizer" --tool memcheck --error-exitcode 99 --target-processes all \
      --print-limit 50 "$bundle/run" metatrain "${metatrain_args[@]}" >> "$san_log" 2>&1 || rc=$?
    errs="$(grep -o 'ERROR SUMMARY: [0-9]* error' "$san_log" | tail -1)"
    if [ "$rc" = 0 ]; then record PASS "memcheck metatrain" $((SECONDS - t)) "${errs:-no summary}"
    elif [ "$rc" = 99 ]; then record FAIL "memcheck metatrain" $((SECONDS - t)) "memcheck found errors: $errs; see sanitizer.log"
    else record FAIL "memcheck metatrain" $((SECONDS - t)) "$(explain_rc "$rc") ${errs}; see sanitizer.log"; fi
    if [ -n "$first_test" ]; then
      t=$SECONDS; rc=0
      echo "===== compute-sanitizer memcheck: $first_test" >> "$san_log"
      timeout -k 5 100 "$sanitizer" --tool memcheck --error-exitcode 99 --target-processes all \
        --print-limit 50 "$bundle/run" "$first_test" --gtest_brief=1 >> "$san_log" 2>&1 || rc=$?
      errs="$(grep -o 'ERROR SUMMARY: [0-9]* error' "$san_log" | tail -1)"
      if [ "$rc" = 0 ]; then record PASS "memcheck $first_test" $((SECONDS - t)) "${errs:-no summary}"
      elif [ "$rc" = 99 ]; then record FAIL "memcheck $first_test" $((SECONDS - t)) "memcheck found errors: $errs; see sanitizer.log"
      else record FAIL "memcheck $first_test" $((SECONDS - t)) "$(explain_rc "$rc") ${errs}; see sanitizer.log"; fi
    fi
  fi
fi

# ---- part bench ---------------------------------------------------------------------------------
if [ "$part" = bench ] || [ "$part" = all ]; then
  t=$SECONDS; rc=0
  timeout -k 10 250 bash "$root/tests/bench/run_gpu_bench.sh" "$bundle" "$OUT" > "$work/bench.out" 2>&1 || rc=$?
  rows=$(grep -c . "$OUT/results_gpu.jsonl" 2>/dev/null || echo 0)
  bad=$(grep -c '"error"' "$OUT/results_gpu.jsonl" 2>/dev/null || true)
  if [ "$rc" = 0 ]; then
    record PASS "bench (run_gpu_bench.sh)" $((SECONDS - t)) "$rows rows; summary.md"
  else
    record FAIL "bench (run_gpu_bench.sh)" $((SECONDS - t)) "$(explain_rc "$rc"); $rows rows, ${bad:-0} failed/skipped; see summary.md, bench.log"
  fi
  [ -f "$OUT/summary.md" ] && cat "$OUT/summary.md"
fi
finish
