#!/usr/bin/env bash
# Episode-streaming throughput (build/bin/bench_stream) on ONE core: packs the real Omniglot
# subset from ../shared/data/omniglot with build/bin/metapack into a temporary store, then draws
# episodes from it and from a synthetic Mini-ImageNet-shaped store in every data.resident mode
# (off and host side by side; device only where a GPU is usable), pinned to CPU ${CORE:-0} with
# one producer thread. JSON lines (set_up, mode, draw, episodes_per_s, ...) go to
# tests/bench/results_stream.jsonl.
#   usage: bash tests/bench/run_stream_bench.sh [bench_stream options, e.g. --seconds 3]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
out=tests/bench/results_stream.jsonl
build="${BUILD_DIR:-build}"  # another build tree: BUILD_DIR=build-x bash tests/bench/...
bench=$build/bin/bench_stream
pack=$build/bin/metapack
data=../shared/data/omniglot
[ -x "$bench" ] || { echo "no $bench: build first (bash launch/setup/build.sh)" >&2; exit 2; }
[ -x "$pack" ] || { echo "no $pack yet: the packer is needed to pack Omniglot; build it first" >&2; exit 2; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "+ $pack omniglot -o $tmp/omniglot.h5 ..." >&2
"$pack" omniglot -o "$tmp/omniglot.h5" "$data/images_background_small1.zip" \
  "$data/images_background_small2.zip" >&2
pin=()
if command -v taskset >/dev/null; then
  pin=(taskset -c "${CORE:-0}")
else
  echo "taskset not found: not pinned (the stream rows still use one producer thread)" >&2
fi
echo "machine: $(lscpu | grep 'Model name' | sed 's/Model name: *//'), $(nproc) cores" >&2
echo "+ ${pin[*]} $bench --omniglot $tmp/omniglot.h5 --threads 1 $*" >&2
"${pin[@]}" "$bench" --omniglot "$tmp/omniglot.h5" --threads 1 "$@" | tee "$out"
