#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz in a separate Clang tree (ASan + UBSan + LSan) and runs
# each for a bounded time from a seed corpus made at run time plus the committed inputs of past
# findings (tests/fuzz/regressions/<target>/); any crash, leak, hang or OOM fails.
# Usage: run_fuzz.sh SOURCE_DIR WORK_DIR   (the CTest test fuzz.store_checkpoint_config runs it)
#   WORK_DIR/tree      the Clang build tree (reused: later runs rebuild incrementally)
#   WORK_DIR/corpus/*  the corpora (kept and grown across runs); WORK_DIR/seeds/*: remade each run
#   WORK_DIR/artifacts the inputs of findings; WORK_DIR/fuzz_*.log: the last run of each target
# Environment: MT_FUZZ_SECONDS (per target, default 30), MT_FUZZ_BIN_DIR (prebuilt fuzz_store,
# fuzz_checkpoint and fuzz_config: no build), MT_FUZZ_CC / MT_FUZZ_CXX (default clang / clang++), MT_FUZZ_OPENMP=gomp
# (force the libgomp fallback), CI=true (a missing Clang is a failure instead of a skip).
set -uo pipefail

src=$(cd "$1" && pwd)
work=$2
seconds=${MT_FUZZ_SECONDS:-30}
cc=${MT_FUZZ_CC:-clang}
cxx=${MT_FUZZ_CXX:-clang++}
readonly kSkip=77  # SKIP_RETURN_CODE of the CTest test
mkdir -p "$work"
work=$(cd "$work" && pwd)

skip_or_fail() {
  if [[ "${CI:-}" =~ ^(true|True|TRUE|1)$ ]]; then
    echo "run_fuzz: FAIL: $* (CI: launch/setup/install_deps.sh installs clang, libclang-rt-14-dev)"
    exit 1
  fi
  echo "run_fuzz: SKIP: $* (install clang and libclang-rt-14-dev to fuzz)"
  exit $kSkip
}

targets=(fuzz_store fuzz_checkpoint fuzz_config)
bin=${MT_FUZZ_BIN_DIR:-}
if [ -z "$bin" ]; then
  command -v "$cxx" >/dev/null 2>&1 || skip_or_fail "no $cxx on PATH"
  command -v "$cc" >/dev/null 2>&1 || skip_or_fail "no $cc on PATH"
  probe=$work/probe
  mkdir -p "$probe"
  # libFuzzer and the sanitizer runtimes (libclang-rt-*-dev) must be there.
  echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' \
    >"$probe/fuzz.cpp"
  if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe/fuzz.cpp" -o "$probe/fuzz" \
    >"$probe/log" 2>&1; then
    cat "$probe/log"
    skip_or_fail "$cxx cannot link -fsanitize=fuzzer,address,undefined"
  fi

  # The project needs OpenMP. Clang's runtime comes with libomp-dev; without it, link libgomp and
  # declare the runtime calls the sources use (GCC's own omp.h does not parse with Clang). Clang
  # then ignores the pragmas: the code runs serially, which is fine for fuzzing.
  omp_args=()
  printf '#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n' \
    >"$probe/omp.cpp"
  if [ "${MT_FUZZ_OPENMP:-}" = "gomp" ] ||
    ! "$cxx" -fopenmp "$probe/omp.cpp" -o "$probe/omp" >"$probe/log" 2>&1; then
    gomp=$(gcc -print-file-name=libgomp.so 2>/dev/null)
    [ -f "$gomp" ] || skip_or_fail "no OpenMP runtime for $cxx (install libomp-dev)"
    mkdir -p "$work/omp-shim"
    cat >"$work/omp-shim/omp.h" <<'SHIM'
// Written by tests/fuzz/run_fuzz.sh: the OpenMP runtime calls of libgomp, for Clang without
// libomp-dev.
#pragma once
#ifdef __cplusplus
extern "C" {
#endif
int omp_get_max_threads(void);
int omp_get_num_threads(void);
int omp_get_thread_num(void);
int omp_get_num_procs(void);
int omp_in_parallel(void);
void omp_set_num_threads(int);
void omp_set_dynamic(int);
int omp_get_dynamic(void);
double omp_get_wtime(void);
#ifdef __cplusplus
}
#endif
SHIM
    omp_args=("-DOpenMP_CXX_FLAGS=-fopenmp=libgomp -isystem $work/omp-shim"
              "-DOpenMP_CXX_LIB_NAMES=gomp" "-DOpenMP_gomp_LIBRARY=$gomp")
    echo "run_fuzz: OpenMP via libgomp ($gomp), pragmas ignored"
  fi

  tree=$work/tree
  san="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all"
  san+=" -fno-omit-frame-pointer"
  generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  # A tree configured with another generator cannot be reused.
  if [ -f "$tree/CMakeCache.txt" ] && [ ${#generator[@]} -gt 0 ] &&
    ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$tree/CMakeCache.txt"; then
    rm -rf "$tree"
  fi
  echo "run_fuzz: configuring $tree with $cxx"
  start=$SECONDS
  if ! cmake -S "$src" -B "$tree" "${generator[@]}" \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_C_FLAGS="$san" -DCMAKE_CXX_FLAGS="$san" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
    -DMT_ENABLE_CUDA=OFF -DMT_FUZZ=ON -DBUILD_TESTING=ON "${omp_args[@]}" \
    >"$work/configure.log" 2>&1; then
    cat "$work/configure.log"
    echo "run_fuzz: FAIL: configuring the fuzz tree failed"
    exit 1
  fi
  echo "run_fuzz: building ${targets[*]}"
  if ! cmake --build "$tree" --target "${targets[@]}" >"$work/build.log" 2>&1; then
    tail -n 80 "$work/build.log"
    echo "run_fuzz: FAIL: building the fuzz targets failed"
    exit 1
  fi
  echo "run_fuzz: configure + build took $((SECONDS - start)) s"
  bin=$tree/bin
fi

export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMP_NUM_THREADS=1
mkdir -p "$work/artifacts"
status=0
for target in "${targets[@]}"; do
  name=${target#fuzz_}
  regressions=$src/tests/fuzz/regressions/$name
  seeds=$work/seeds/$name
  corpus=$work/corpus/$name
  log=$work/$target.log
  dict=$work/$name.dict
  rm -rf "$seeds" "$dict" "$work/artifacts/$name-"*
  mkdir -p "$seeds" "$corpus"
  # Valid stores / configs (and a dictionary of config keys), written by the target itself.
  if ! MT_FUZZ_WRITE_SEEDS=$seeds MT_FUZZ_WRITE_DICT=$dict "$bin/$target" >"$log" 2>&1; then
    cat "$log"
    echo "run_fuzz: FAIL: $target could not write its seed corpus"
    status=1
    continue
  fi
  # Past findings are read with the seeds (libFuzzer writes only to the first folder, the corpus).
  inputs=("$corpus" "$seeds")
  [ -d "$regressions" ] && inputs+=("$regressions")
  echo "run_fuzz: $target for $seconds s ($(ls "$seeds" | wc -l) seeds," \
    "$(ls "$corpus" | wc -l) corpus files, $(ls "$regressions" 2>/dev/null | wc -l) regressions)"
  dict_arg=()
  [ -f "$dict" ] && dict_arg=("-dict=$dict")
  # -timeout: an input running 10 s is a hang; -rss_limit_mb also caps any single allocation.
  "$bin/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -detect_leaks=1 \
    "${dict_arg[@]}" -print_final_stats=1 -artifact_prefix="$work/artifacts/$name-" \
    "${inputs[@]}" >"$log" 2>&1
  rc=$?
  if [ $rc -ne 0 ] || grep -q -E '^(==[0-9]+==ERROR|SUMMARY: )' "$log"; then
    tail -n 60 "$log"
    grep -m 3 'BUG:' "$log"
    echo "run_fuzz: FAIL: $target exited with $rc; full log: $log"
    for a in "$work/artifacts/$name-"*; do
      [ -e "$a" ] && echo "run_fuzz:   reproduce: $bin/$target $a"
    done
    status=1
  else
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" | tr '\n' ' '
    echo
  fi
done
[ $status -eq 0 ] && echo "run_fuzz: OK: no crash, leak or hang"
exit $status
