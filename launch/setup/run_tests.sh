#!/usr/bin/env bash
# One command for a new machine: set up, build, and run the test suite with CTest.
# GPU tests skip themselves without a GPU. Extra arguments go to ctest (e.g. -L cpu).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bash "$root/launch/setup/build.sh"
cd "$root/build"
ctest --output-on-failure -j"$(nproc)" "$@"
