#!/usr/bin/env bash
# Episode-streaming throughput (build/bin/bench_stream): packs the real Omniglot subset from
# ../shared/data/omniglot with build/bin/metapack into a temporary store, then streams it and a
# synthetic Mini-ImageNet-shaped store. JSON lines go to tests/bench/results_stream.jsonl.
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
echo "+ $bench --omniglot $tmp/omniglot.h5 $*" >&2
"$bench" --omniglot "$tmp/omniglot.h5" "$@" | tee "$out"
