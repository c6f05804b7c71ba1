#!/usr/bin/env bash
# run_abort_test.sh LIMIT_S COMMAND...: runs the abort job (tests/dist/abort_main.cpp under
# mpiexec) and passes iff it ends by itself within LIMIT_S seconds with a non-zero status.
limit=$1
shift
start_ms=$(($(date +%s%N) / 1000000))
timeout --kill-after=5 "$limit" "$@"
rc=$?
elapsed_ms=$(($(date +%s%N) / 1000000 - start_ms))
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "FAIL: the job was still running after ${limit} s: abort did not end every rank"
  exit 1
fi
if [ "$rc" -eq 0 ]; then
  echo "FAIL: the job exited with status 0 although rank 1 aborted"
  exit 1
fi
echo "PASS: the job ended with status $rc after ${elapsed_ms} ms"
