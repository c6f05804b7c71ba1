#!/usr/bin/env bash
# The one prepared command for a lent GPU machine (run from the repository root, $OUT set, the
# bundle of tests/gpu/make_bundle.sh carried: build-bundle/bundle or $MT_BUNDLE). One part per
# call, each under its own deadline, and it always finishes: every step runs under `timeout -k`
# capped by the time left, a step with too little time left is SKIPPED (deadline), and a TERM to
# the script (or its own watchdog at the deadline) still writes the summary.
#   tests     (MT_DC_TESTS_S, 180 s): versions, every bundled gpu test, short CUDA metatrains
#             (Conv-4, a narrow ResNet-12), compute-sanitizer memcheck on vec_ops_cuda_test,
#             batched_kernels_cuda_test and a 2-step metatrain with cuda.conv=gemm
#   bench     (MT_DC_BENCH_S, 240 s): versions, tests/bench/run_gpu_bench.sh (ours vs PyTorch)
#   selftest  (MT_DC_SELFTEST_S, 12 s; here, no GPU, no bundle): the same runner on fake steps
#             that pass, fail, crash, hang, stay silent, ... then checks the fates it recorded
#   usage: OUT=/path bash tests/gpu/device_check.sh tests|bench|selftest
# $OUT (the device tool returns at most 8 files): summary.txt (a line per step: fate, seconds,
# detail; then a totals line), results.jsonl (an object per step; bench adds the benchmark rows),
# logs.tar.gz (one log per step), versions.txt, and for bench bench_summary.md. Exit 0 iff every
# step passed. Knobs: MT_DC_KILL_S (grace after TERM, 5), MT_DC_RESERVE_S (kept for the finish, 10),
# MT_DC_MIN_S (shortest timeout worth starting a step with, 10), MT_DC_ONLY (a regex: run only
# the steps it matches, e.g. a rerun of the skipped ones).
set -euo pipefail

self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
root="$(cd "$(dirname "$self")/../.." && pwd)"
part="${1:-}"

# ---- helpers usable by the hidden sub-commands too -------------------------------------------
now_ms() {  # sets _now (milliseconds since the epoch); no subshell
  if [ -n "${EPOCHREALTIME:-}" ]; then _now=$(( 10#${EPOCHREALTIME//[!0-9]/} / 1000 ))
  else _now=$(date +%s%3N); fi
}
secs() { printf '%d.%d' $(( $1 / 1000 )) $(( $1 % 1000 / 100 )); }   # ms -> "12.3"
one_line() {  # printable ASCII, one line, no '|', at most 200 characters
  printf '%s' "$*" | sed 's/±/+-/g; s/×/x/g; s/−/-/g' | LC_ALL=C tr '\n\r\t|' '   /' | LC_ALL=C tr -cd '\040-\176' | cut -c1-200
}
json_str() { local s="$1"; s="${s//\\/\\\\}"; printf '"%s"' "${s//\"/\\\"}"; }
find_sanitizer() {  # MT_SANITIZER, else compute-sanitizer on the PATH or in the toolkit; "" if none
  local c
  for c in "${MT_SANITIZER:-}" "$(command -v compute-sanitizer || true)" /usr/local/cuda/bin/compute-sanitizer \
           /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
  done
  return 0
}

# ---- hidden sub-commands (each runs as a step's command) -------------------------------------
case "$part" in
_versions)  # _versions BUNDLE: what the device has; "@key: value" lines are read by judge_versions
  set +e +o pipefail
  bundle="$2"
  echo "== date / host"; date -u; uname -a
  echo "== nvidia-smi"; timeout 20 nvidia-smi 2>&1 || echo "(nvidia-smi failed)"
  echo "@gpu: $(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null | head -1)"
  echo "@glibc_have: $(ldd --version 2>&1 | head -1 | grep -o '[0-9][0-9.]*$')"
  echo "@glibc_need: $(sed -n 's/^glibc needed: *\([0-9.]*\).*/\1/p' "$bundle/MANIFEST.txt" 2>/dev/null)"
  echo "== bundle manifest (head)"; head -12 "$bundle/MANIFEST.txt"
  echo "== nvcc"; timeout 10 "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)" --version 2>&1 | tail -2
  echo "== compute-sanitizer $(find_sanitizer)"; timeout 20 "$(find_sanitizer)" --version 2>&1 | head -3
  echo "== python / torch / cuDNN / NCCL"
  timeout 60 "${MT_PYTHON:-python3}" -c '
import sys, torch
print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("cudnn", torch.backends.cudnn.version())
try: print("nccl", ".".join(map(str, torch.cuda.nccl.version())))
except Exception as e: print("nccl ?", e)
if torch.cuda.is_available(): print("gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
' 2>&1 || echo "(python/torch query failed)"
  echo "== env.sh"; MT_BUNDLE_VERBOSE=1 timeout 60 "$bundle/run" true 2>&1
  echo "== library resolution of the bundled programs (ldd under env.sh)"
  for f in "$bundle"/bin/* "$bundle"/tests/*; do
    if [ ! -f "$f" ] || [ "${f##*/}" = tests.tsv ]; then continue; fi
    echo "-- ${f#"$bundle"/}"; timeout 20 "$bundle/run" ldd "$f" 2>&1 | grep -Ev "$bundle/lib|mt-bundle-libs"
  done
  exit 0 ;;
_bench)  # _bench BUNDLE DIR: the benchmark inside this step's timeout (run_gpu_bench.sh reads it)
  exec bash "$root/tests/bench/run_gpu_bench.sh" "$2" "$3" ;;
_selftest_inner)  # a part whose second step hangs: _term_check sends it TERM meanwhile
  ;;
_term_check)  # _term_check DIR: TERM to a running device_check must still give summary + finish
  set +e +o pipefail
  dir="$2"; mkdir -p "$dir"
  OUT="$dir" MT_DC_KILL_S=1 bash "$self" _selftest_inner > "$dir/stdout" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q 'fake pass' "$dir/summary.txt" 2>/dev/null && break; sleep 0.05; done
  sleep 0.3
  echo "sending TERM to the inner device_check ($pid) while its hang step runs"
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then echo "inner device_check still alive 5 s after TERM"; kill -KILL "$pid"; exit 1; fi
  wait "$pid"; rc=$?
  cat "$dir/summary.txt"
  bad=0
  grep -q '^TIMEOUT .*| fake hang .*SIGTERM' "$dir/summary.txt" || { echo "no TIMEOUT line naming SIGTERM for the hang step"; bad=1; }
  grep -q '^---- ' "$dir/summary.txt" || { echo "no finish line"; bad=1; }
  [ -s "$dir/logs.tar.gz" ] || { echo "no logs.tar.gz"; bad=1; }
  [ "$rc" != 0 ] || { echo "inner device_check exited 0 after TERM"; bad=1; }
  [ "$bad" = 1 ] || echo "TERM while a step ran: that step TIMEOUT, finish line and logs written, exit $rc"
  exit "$bad" ;;
tests|bench|selftest) ;;
*) echo "usage: OUT=/path bash $0 tests|bench|selftest" >&2; exit 2 ;;
esac

# ---- the part's clock ------------------------------------------------------------------------
case "$part" in
tests) deadline_s="${MT_DC_TESTS_S:-180}" ;;
bench) deadline_s="${MT_DC_BENCH_S:-240}" ;;
selftest) deadline_s="${MT_DC_SELFTEST_S:-12}" ;;
_selftest_inner) deadline_s=30 ;;
esac
if [ "$part" = selftest ] || [ "$part" = _selftest_inner ]; then d_kill=1 d_reserve=1 d_min=1
else d_kill=5 d_reserve=10 d_min=10; fi
kill_s="${MT_DC_KILL_S:-$d_kill}"
reserve_s="${MT_DC_RESERVE_S:-$d_reserve}"
min_s="${MT_DC_MIN_S:-$d_min}"
now_ms; start_ms=$_now
end_ms=$(( start_ms + deadline_s * 1000 ))         # the watchdog sends TERM here
steps_end_ms=$(( end_ms - reserve_s * 1000 ))      # every step is over by here

cd "$root"
if [ -z "${OUT:-}" ]; then OUT="$root/device-out"; echo "device_check: OUT is not set; writing to $OUT" >&2; fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
summary="$OUT/summary.txt"
results="$OUT/results.jsonl"
rm -f "$summary" "$results" "$OUT/logs.tar.gz" "$OUT/versions.txt" "$OUT/bench_summary.md"
work="$(mktemp -d)"
logdir="$work/logs"
scratch="$work/scratch"
mkdir -p "$logdir" "$scratch"
bundle="${MT_BUNDLE:-$root/build-bundle/bundle}"

n_step=0
declare -A count=()
cur_pid="" cur_judge="" step_t0=0 rows_after="" finished="" interrupted="" gpu_seen=0
# Set for the judge of the step that just ended:
name="" log="" rc=0 t_ms=0 el_ms=0 fate="" fate_text="" detail=""

# A line into summary.txt and onto stdout (a closed stdout is no reason to stop: SIGPIPE ignored).
say() { printf '%s\n' "$1" >> "$summary"; printf '%s\n' "$1" 2>/dev/null || true; }

record() {  # record FATE FATE_TEXT NAME SECONDS RC LOGNAME DETAIL: summary line + JSONL object
  local d; d="$(one_line "$7")"
  count[$1]=$(( ${count[$1]:-0} + 1 ))
  say "$(printf '%-24s| %-40s| %6s s | %s' "$2" "$3" "$4" "$d")"
  printf '{"part": %s, "step": %s, "fate": %s, "fate_text": %s, "rc": %s, "seconds": %s, "log": %s, "detail": %s}\n' \
    "$(json_str "$part")" "$(json_str "$3")" "$(json_str "$1")" "$(json_str "$2")" "${5:-null}" "$4" \
    "$(json_str "$6")" "$(json_str "$d")" >> "$results"
}

# step NAME CAP JUDGE CMD...: runs CMD under timeout -k (at most CAP s, never past the steps'
# end), its output in its own log; then fate (TIMEOUT / CRASH / SILENT / FAIL / PASS) from the
# exit status and JUDGE (a function that may refine fate and sets detail). The command sees its
# timeout as MT_STEP_TIMEOUT_S. With MT_DC_ONLY (a bash regex), steps whose name does not match
# are left out (a rerun of what a first call skipped: MT_DC_ONLY='^(versions|memcheck)').
step() {
  name="$1"; local cap_ms=$(( $2 * 1000 )) judge="$3"; shift 3
  if [ -n "${MT_DC_ONLY:-}" ] && ! [[ "$name" =~ $MT_DC_ONLY ]]; then return 0; fi
  n_step=$(( n_step + 1 ))
  log="$(printf '%02d-%s.log' "$n_step" "$(printf '%s' "$name" | LC_ALL=C tr -c 'A-Za-z0-9._=-' '_' | cut -c1-60)")"
  now_ms; local left=$(( steps_end_ms - _now - kill_s * 1000 ))
  t_ms=$(( cap_ms < left ? cap_ms : left ))
  if [ "$t_ms" -lt $(( min_s * 1000 )) ]; then
    record SKIPPED "SKIPPED (deadline)" "$name" 0.0 "" "" \
      "$(secs $(( left > 0 ? left : 0 ))) s left before the deadline, a step needs >= ${min_s} s"
    return 0
  fi
  local t; t="$(secs "$t_ms")"
  step_t0=$_now cur_judge="$judge" rc=0
  MT_STEP_TIMEOUT_S="${t%.*}" timeout -k "$kill_s" "$t" "$@" > "$logdir/$log" 2>&1 < /dev/null &
  cur_pid=$!
  { wait "$cur_pid"; } 2>/dev/null || rc=$?   # (bash's own "Killed" notice kept out)
  cur_pid=""
  now_ms; el_ms=$(( _now - step_t0 ))
  conclude "$judge" ""
}

# conclude JUDGE WHY: the fate of the step that just ended (WHY: set when device_check was told to stop).
conclude() {
  local judge="$1" why="$2"
  if [ -n "$why" ] || { { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && [ "$el_ms" -ge $(( t_ms - 100 )) ]; }; then
    fate=TIMEOUT; fate_text=TIMEOUT
    detail="${why:-no exit within $(secs "$t_ms") s (TERM, KILL after ${kill_s} s)}"
  elif [ "$rc" -gt 128 ] && [ "$rc" -lt 193 ]; then
    fate=CRASH; fate_text="CRASH (SIG$(kill -l $(( rc - 128 )) 2>/dev/null || echo $(( rc - 128 ))))"; detail="killed by a signal"
  elif [ ! -s "$logdir/$log" ]; then
    fate=SILENT; fate_text=SILENT; detail="no output at all (exit $rc)"
  elif [ "$rc" = 0 ]; then
    fate=PASS; fate_text=PASS; detail=""
  else
    fate=FAIL; fate_text="FAIL (exit $rc)"; detail=""
  fi
  rows_after=""
  "$judge" || detail="${detail:+$detail; }(the judge $judge failed)"
  record "$fate" "$fate_text" "$name" "$(secs "$el_ms")" "$rc" "$log" "$detail"
  [ -z "$rows_after" ] || grep '^{.*}$' "$rows_after" >> "$results" 2>/dev/null || true
}

# ---- judges: read the step's log, never fail (`local -` keeps set +e inside) ------------------
first_line() { grep -m1 -E "$1" "$logdir/$log" 2>/dev/null | cut -c1-160 || true; }
last_line() { grep -v '^[[:space:]]*$' "$logdir/$log" 2>/dev/null | tail -1 | cut -c1-160 || true; }
add() { [ -z "$*" ] || detail="${detail:+$detail; }$*"; }
add_last() { local l; l="$(last_line)"; [ -z "$l" ] || add "last output: $l"; }

judge_plain() {
  local -; set +e +o pipefail
  case "$fate" in
    PASS) add "$(last_line)" ;;
    FAIL) add "$(first_line '[Ee]rror|FAIL|[Aa]bort')"; [ -n "$(first_line '[Ee]rror|FAIL|[Aa]bort')" ] || add "$(last_line)" ;;
    TIMEOUT|CRASH) add_last ;;
  esac
  return 0
}

judge_versions() {
  local -; set +e +o pipefail
  local gpu have need
  gpu="$(sed -n 's/^@gpu: *//p' "$logdir/$log" | head -1)"
  have="$(sed -n 's/^@glibc_have: *//p' "$logdir/$log" | head -1)"
  need="$(sed -n 's/^@glibc_need: *//p' "$logdir/$log" | head -1)"
  cp "$logdir/$log" "$OUT/versions.txt"
  [ -n "$gpu" ] && gpu_seen=1
  if [ "$fate" != PASS ]; then add "see versions.txt"
  elif [ -z "$gpu" ]; then fate=FAIL; fate_text="FAIL (no GPU)"; add "nvidia-smi sees no GPU: the gpu tests will skip"
  elif sed -n '/^== library resolution/,$p' "$logdir/$log" | grep -q 'not found'; then
    fate=FAIL; fate_text="FAIL (ldd)"; add "libraries not found under env.sh: see versions.txt"
  elif [ -n "$need" ] && [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
    fate=FAIL; fate_text="FAIL (glibc)"; add "glibc $have here, the bundle needs $need"
  else add "$gpu; glibc $have (needs ${need:-?})"; fi
  return 0
}

judge_gtest() {  # from GoogleTest's text output
  local -; set +e +o pipefail
  local ran passed skipped failed
  ran="$(grep -o '^\[==========\] [0-9]* tests\? from .* ran' "$logdir/$log" | tail -1 | grep -o '[0-9][0-9]*' | head -1)"
  passed="$(grep -o '^\[  PASSED  \] [0-9]*' "$logdir/$log" | tail -1 | grep -o '[0-9]*$')"
  skipped="$(grep -o '^\[  SKIPPED \] [0-9]* test' "$logdir/$log" | tail -1 | grep -o '[0-9][0-9]*')"
  failed="$(grep -o '^\[  FAILED  \] [0-9]* test' "$logdir/$log" | tail -1 | grep -o '[0-9][0-9]*')"
  if [ -n "$ran" ]; then add "$ran tests: ${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped"
  else
    local started; started="$(grep '^\[ RUN      \]' "$logdir/$log" | tail -1 | cut -c14-100)"
    add "no gtest summary${started:+, last test started: $started}"
  fi
  if [ "$fate" = PASS ] && [ -n "$ran" ] && [ "$ran" -gt 0 ] && [ "${skipped:-0}" = "$ran" ] && [ "$gpu_seen" = 1 ]; then
    fate=FAIL; fate_text="FAIL (all skipped)"; add "although nvidia-smi sees a GPU: $(first_line 'Skipped|SKIP')"
  elif [ "$fate" = FAIL ]; then add "$(first_line '^\[  FAILED  \] [A-Za-z]')"
  elif [ "$fate" != PASS ] && [ -n "$ran" ]; then add_last; fi
  return 0
}

judge_metatrain() {
  local -; set +e +o pipefail
  if [ "$fate" = PASS ]; then add "$(grep -o 'accuracy [0-9.]*%.*' "$logdir/$log" | tail -1 | cut -c1-80)"
  else judge_plain; fi
  return 0
}

# compute-sanitizer: its own verdict is the ERROR SUMMARY line; none means memcheck itself failed
# (or was cut off) and says nothing about the target.
judge_memcheck() {
  local -; set +e +o pipefail
  local s n
  s="$(grep -o 'ERROR SUMMARY: [0-9]* error' "$logdir/$log" | tail -1)"
  n="$(printf '%s' "$s" | grep -o '[0-9][0-9]*')"
  if [ -z "$s" ]; then
    case "$fate" in
      PASS|FAIL) fate=FAIL; fate_text="FAIL (no ERROR SUMMARY)"
                 add "memcheck printed no ERROR SUMMARY: the sanitizer itself failed (exit $rc): $(last_line)" ;;
      *) add "memcheck did not finish (no ERROR SUMMARY): $(last_line)" ;;
    esac
  elif [ "$n" != 0 ]; then
    [ "$fate" = PASS ] && { fate=FAIL; fate_text="FAIL (memcheck errors)"; }
    add "$s(s), first: $(first_line '^========= [A-Z][a-z]' | cut -c11-130)"
  elif [ "$fate" = PASS ]; then add "$s(s)"
  else add "$s(s) but the target failed under memcheck: $(first_line '^\[  FAILED  \] [A-Za-z]|[Ee]rror')"; fi
  return 0
}

judge_bench() {  # folds the benchmark's rows into results.jsonl, its tables into bench_summary.md
  local -; set +e +o pipefail
  local dir="$scratch/bench" rows bad
  [ -f "$dir/bench.log" ] && cp "$dir/bench.log" "$logdir/${log%.log}-rows.log"
  [ -f "$dir/summary.md" ] && cp "$dir/summary.md" "$OUT/bench_summary.md"
  rows="$(grep -c '^{' "$dir/results_gpu.jsonl" 2>/dev/null)"
  bad="$(grep -c '"error"' "$dir/results_gpu.jsonl" 2>/dev/null)"
  rows_after="$dir/results_gpu.jsonl"   # appended after this step's own line
  add "${rows:-0} rows, ${bad:-0} failed/skipped (rows in results.jsonl, tables in bench_summary.md)"
  [ "${rows:-0}" != 0 ] || add_last
  [ ! -f "$OUT/bench_summary.md" ] || cat "$OUT/bench_summary.md"
  return 0
}

# ---- finishing: always, once -----------------------------------------------------------------
finish() {
  [ -z "$finished" ] || return 0
  finished=1
  stop_watchdog
  now_ms
  local total=$(( _now - start_ms )) f line="---- part $part:" ok=1
  for f in PASS FAIL CRASH TIMEOUT SILENT SKIPPED; do
    line+=" ${count[$f]:-0} $f,"
    [ "$f" = PASS ] || [ "${count[$f]:-0}" = 0 ] || ok=0
  done
  [ "$n_step" -gt 0 ] || ok=0
  line+=" $(secs "$total") s of ${deadline_s} s${interrupted:+; stopped by $interrupted}"
  say "$line"
  timeout 20 tar -C "$work" -czf "$OUT/logs.tar.gz" logs 2>/dev/null || say "device_check: tar of the logs failed"
  local status=$(( ok ? 0 : 1 ))
  [ "$part" != selftest ] || { status=0; selftest_verify "$total" || status=1; }
  rm -rf "$work"
  exit "$status"
}

on_signal() {  # TERM / INT / HUP (also the watchdog's): stop the running step, record it, finish
  trap '' TERM INT HUP
  interrupted="SIG$1"
  if [ -n "$cur_pid" ]; then
    kill -TERM "$cur_pid" 2>/dev/null || true   # timeout passes it on, and KILLs after kill_s
    rc=0; { wait "$cur_pid"; } 2>/dev/null || rc=$?
    cur_pid=""
    now_ms; el_ms=$(( _now - step_t0 ))
    conclude "$cur_judge" "device_check got SIG$1 while this step ran"
  fi
  finish
}

watchdog_pid=""
start_watchdog() {
  now_ms
  local wait_s; wait_s="$(secs $(( end_ms - _now > 0 ? end_ms - _now : 0 )))"
  ( trap 'kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$wait_s" & sp=$!; wait "$sp"; kill -TERM "$$" 2>/dev/null ) > /dev/null 2>&1 < /dev/null &
  watchdog_pid=$!
}
stop_watchdog() {
  [ -z "$watchdog_pid" ] || { kill -TERM "$watchdog_pid" 2>/dev/null || true; wait "$watchdog_pid" 2>/dev/null || true; }
  watchdog_pid=""
}

trap '' PIPE
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
trap 'on_signal HUP' HUP
trap 'rm -rf "$work"' EXIT
start_watchdog
say "device_check: part=$part deadline=${deadline_s}s (steps end by -${reserve_s}s, kill grace ${kill_s}s) bundle=$bundle OUT=$OUT"

# ---- the parts --------------------------------------------------------------------------------
have_bundle() {
  if [ -x "$bundle/run" ] && [ -f "$bundle/env.sh" ] && [ -f "$bundle/tests/tests.tsv" ]; then return 0; fi
  n_step=$(( n_step + 1 ))
  record FAIL "FAIL (no bundle)" bundle 0.0 "" "" "no bundle at $bundle: build one with tests/gpu/make_bundle.sh and carry it (or set MT_BUNDLE)"
  return 1
}

part_tests() {
  have_bundle || return 0
  export MT_BINARY_DIR="$bundle"   # tests that start programs find them, and write scratch, there
  step versions 40 judge_versions bash "$self" _versions "$bundle"
  local names=() n
  while IFS=$'\t' read -r n _; do if [ -n "$n" ]; then names+=("$n"); fi; done < "$bundle/tests/tests.tsv"
  [ "${#names[@]}" -gt 0 ] || { n_step=$(( n_step + 1 )); record FAIL "FAIL (no tests)" "gpu tests" 0.0 "" "" "the bundle holds no gpu test executable"; }
  # kind mpi: MPI_Init as a singleton (env.sh sets Open MPI up; no mpirun there).
  for n in "${names[@]}"; do
    step "test $n" 60 judge_gtest "$bundle/run" "$n" --gtest_output="json:$logdir/$n.gtest.json"
  done
  local mt=(device=cuda steps=3 meta_batch=4 eval.episodes=10 eval.every=3 inner.steps=1
            log.every=1 data.prefetch=0 checkpoint.dir="$scratch/ck")
  step "metatrain cuda steps=3" 60 judge_metatrain "$bundle/run" metatrain "${mt[@]}"
  # ResNet-12 through the same model-generic backend (narrow, glyphs: seconds, not minutes).
  step "metatrain cuda resnet12 steps=2" 45 judge_metatrain "$bundle/run" metatrain "${mt[@]}" \
    steps=2 eval.every=2 model.name=resnet12 model.widths=16,16,32,32 checkpoint.dir="$scratch/ck_resnet12"

  local san; san="$(find_sanitizer)"
  # The sanitizer runs outside env.sh (its own libraries); the target gets env.sh through run.
  local mc=(--tool memcheck --error-exitcode 99 --target-processes all --print-limit 50)
  for n in vec_ops_cuda_test batched_kernels_cuda_test; do
    if [ -z "$san" ]; then n_step=$(( n_step + 1 )); record FAIL "FAIL (no sanitizer)" "memcheck $n" 0.0 "" "" "compute-sanitizer not found"
    elif [[ " ${names[*]} " != *" $n "* ]]; then n_step=$(( n_step + 1 )); record FAIL "FAIL (not bundled)" "memcheck $n" 0.0 "" "" "$n is not in the bundle"
    else step "memcheck $n" 60 judge_memcheck "$san" "${mc[@]}" "$bundle/run" "$n" --gtest_brief=1; fi
  done
  if [ -z "$san" ]; then n_step=$(( n_step + 1 )); record FAIL "FAIL (no sanitizer)" "memcheck metatrain gemm steps=2" 0.0 "" "" "compute-sanitizer not found"
  else
    step "memcheck metatrain gemm steps=2" 90 judge_memcheck "$san" "${mc[@]}" "$bundle/run" metatrain \
      device=cuda cuda.conv=gemm steps=2 meta_batch=2 model.filters=16 task.queries=5 eval.episodes=4 \
      eval.every=2 inner.steps=1 log.every=1 data.prefetch=0 checkpoint.dir="$scratch/ck_memcheck"
  fi
}

part_bench() {
  have_bundle || return 0
  step versions 40 judge_versions bash "$self" _versions "$bundle"
  # run_gpu_bench.sh keeps its rows within this step's timeout (MT_STEP_TIMEOUT_S) less 20 s.
  step "bench (run_gpu_bench.sh)" 600 judge_bench bash "$self" _bench "$bundle" "$scratch/bench"
}

# Fake steps through the same step(): name, expected fate text (checked by selftest_verify).
# The plan is listed first (selftest_plan=1), so a step that never ran is missed by the check.
selftest_expect=() selftest_plan=0
fake() {  # fake EXPECTED_FATE NAME CAP JUDGE CMD...
  if [ "$selftest_plan" = 1 ]; then selftest_expect+=("$2|$1"); else shift; step "$@"; fi
}
part_selftest() {
  fake PASS "fake pass" 5 judge_plain bash -c 'echo all good'
  fake "FAIL (exit 3)" "fake fail exit 3" 5 judge_plain bash -c 'echo "error: boom" >&2; exit 3'
  fake SILENT "fake silent" 5 judge_plain true
  fake "CRASH (SIGSEGV)" "fake crash" 5 judge_plain bash -c 'echo about to crash; kill -SEGV $$'
  fake TIMEOUT "fake hang" 1 judge_plain sleep infinity
  fake TIMEOUT "fake hang ignoring TERM" 1 judge_plain \
    bash -c 'trap "" TERM; echo stubborn; while :; do sleep 1; done'
  fake PASS "fake memcheck clean" 5 judge_memcheck \
    bash -c 'echo "========= COMPUTE-SANITIZER"; echo "========= ERROR SUMMARY: 0 errors"'
  fake "FAIL (exit 99)" "fake memcheck errors" 5 judge_memcheck \
    bash -c 'echo "========= Invalid __global__ read of size 4 bytes"; echo "========= ERROR SUMMARY: 2 errors"; exit 99'
  fake "FAIL (no ERROR SUMMARY)" "fake memcheck no summary" 5 judge_memcheck \
    bash -c 'echo "========= COMPUTE-SANITIZER"; echo "========= Error: Target application terminated before first instrumented API call"'
  fake PASS "fake device_check sent TERM" 8 judge_plain \
    bash "$self" _term_check "$scratch/term"
  fake TIMEOUT "fake hang past the deadline" 999 judge_plain sleep infinity
  fake "SKIPPED (deadline)" "fake step after the deadline" 5 judge_plain true
}

selftest_verify() {  # selftest_verify TOTAL_MS: every fake step got its fate, and the files are right
  local -; set +e +o pipefail
  local e want_name want_fate got bad=0 n_files
  echo "== selftest: checking the summary it wrote"
  for e in "${selftest_expect[@]}"; do
    want_name="${e%%|*}"; want_fate="${e#*|}"
    got="$(awk -F'|' -v n="$want_name" '{ s = $2; gsub(/^ +| +$/, "", s); f = $1; gsub(/ +$/, "", f); if (s == n) print f }' "$summary")"
    if [ "$got" = "$want_fate" ]; then printf 'ok    %-32s %s\n' "$want_name" "$got"
    else printf 'WRONG %-32s got "%s", expected "%s"\n' "$want_name" "$got" "$want_fate"; bad=1; fi
  done
  grep -q '^---- part selftest:' "$summary" || { echo "WRONG no finish line"; bad=1; }
  [ -z "$interrupted" ] || { echo "WRONG stopped by $interrupted (the watchdog, or a signal from outside)"; bad=1; }
  [ "$(grep -c . "$results")" = "${#selftest_expect[@]}" ] || { echo "WRONG results.jsonl has $(grep -c . "$results") lines"; bad=1; }
  if command -v python3 >/dev/null; then
    timeout 10 python3 -c 'import json, sys; [json.loads(l) for l in open(sys.argv[1])]' "$results" \
      || { echo "WRONG results.jsonl is not JSON lines"; bad=1; }
  fi
  [ "$(tar -tzf "$OUT/logs.tar.gz" 2>/dev/null | grep -c '\.log$')" -ge 11 ] || { echo "WRONG logs.tar.gz lacks the step logs"; bad=1; }
  n_files="$(find "$OUT" -mindepth 1 -maxdepth 1 | wc -l)"
  [ "$n_files" -le 8 ] || { echo "WRONG $n_files entries in OUT (at most 8)"; bad=1; }
  [ "$1" -le $(( deadline_s * 1000 + 1000 )) ] || { echo "WRONG took $(secs "$1") s, deadline ${deadline_s} s"; bad=1; }
  if [ "$bad" = 0 ]; then echo "selftest: OK: ${#selftest_expect[@]} fates as expected, $(secs "$1") s"
  else echo "selftest: FAILED"; fi
  return "$bad"
}

case "$part" in
  tests) part_tests ;;
  bench) part_bench ;;
  selftest) selftest_plan=1; part_selftest; selftest_plan=0; part_selftest ;;
  _selftest_inner)
    step "fake pass" 5 judge_plain bash -c 'echo all good'
    step "fake hang" 25 judge_plain sleep infinity ;;
esac
finish
