#!/usr/bin/env bash
# run_abort_test.sh LIMIT_S [--expect REGEX] COMMAND...: runs a job that must end itself
# (tests/dist/abort_main.cpp, nccl_stall_main.cpp under mpiexec) and passes iff it ends within
# LIMIT_S seconds with a non-zero status and, with --expect, its output matches REGEX (grep -E),
# so that it ended for the reason under test. Status 77 is passed on: the job could not run here
# (CTest's SKIP_RETURN_CODE).
limit=$1
shift
expect=""
if [ "$1" = "--expect" ]; then
  expect=$2
  shift 2
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start_ms=$(($(date +%s%N) / 1000000))
timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
elapsed_ms=$(($(date +%s%N) / 1000000 - start_ms))
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "FAIL: the job was still running after ${limit} s: abort did not end every rank"
  exit 1
fi
if [ "$rc" -eq 77 ]; then
  echo "SKIP: the job cannot run on this machine"
  exit 77
fi
if [ "$rc" -eq 0 ]; then
  echo "FAIL: the job exited with status 0 although it should have ended itself with an error"
  exit 1
fi
if [ -n "$expect" ] && ! grep -Eq "$expect" "$log"; then
  echo "FAIL: the job ended with status $rc, but its output has no match for: $expect"
  exit 1
fi
echo "PASS: the job ended with status $rc after ${elapsed_ms} ms"
