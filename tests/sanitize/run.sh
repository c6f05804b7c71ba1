#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer at exit) over the CPU and MPI
# tests: configures build-sanitize (CPU only, -DMT_SANITIZE=address,undefined, -O1 -g1), builds
# it, and runs `ctest -L 'cpu|mpi' -LE 'slow|fuzz|gpu'` in two passes: the tests without MPI, then
# those with it. Any memory error, leak or undefined behaviour fails its test; only Open MPI's and
# HDF5's own leaks are suppressed (lsan.supp says which and why). Fails if either pass fails.
# Usage: tests/sanitize/run.sh [--ci] [ctest args...]   (e.g. -R Checkpoint)
#   --ci  also leaves out the `e2e` tests (long end-to-end runs, covered by the unit and short
#         program tests under the sanitizer), and does not build them: the pass .ci/run makes.
# Environment: MT_SANITIZE_JOBS (build and ctest parallelism, default nproc), MT_SANITIZE_BUILD
# (build folder, default <root>/build-sanitize).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/tests/sanitize"
build="${MT_SANITIZE_BUILD:-$root/build-sanitize}"
jobs="${MT_SANITIZE_JOBS:-$(nproc)}"
skip="slow|fuzz|gpu"
e2e_builds=ON
if [ "${1:-}" = "--ci" ]; then
  skip="$skip|e2e"
  e2e_builds=OFF  # nor build the e2e test executables
  shift
fi

# -O1: ASan's recommendation, and a third less compile time than -O2; -g1: line tables for the
# reports' stack traces.
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMT_ENABLE_CUDA=OFF \
  -DMT_SANITIZE=address,undefined -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1" -DMT_BUILD_E2E_TESTS="$e2e_builds"
cmake --build "$build" -j"$jobs"

# mpiexec passes the environment on to the ranks it starts on this machine.
asan="detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=0"
export LSAN_OPTIONS="suppressions=$here/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
cd "$build"
status=0
ASAN_OPTIONS="$asan" ctest --output-on-failure -j"$jobs" -L 'cpu' -LE "mpi|$skip" "$@" ||
  status=1
# Open MPI's libraries have no frame pointers: ASan's fast unwinder stops in them at an unnamed
# frame that no suppression can match, so the MPI tests unwind slowly (and fully) at each malloc.
ASAN_OPTIONS="$asan:fast_unwind_on_malloc=0" ctest --output-on-failure -j"$jobs" -L 'mpi' \
  -LE "$skip" "$@" || status=1
exit "$status"
