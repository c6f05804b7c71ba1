#!/usr/bin/env bash
# One command for a new machine: set up, build, and run the default meta-training job
# (MAML, Conv-4, synthetic glyphs, CPU; a few minutes). Extra arguments are metatrain overrides.
# Each call starts afresh: checkpoint.overwrite=true replaces an earlier default run's files in
# runs/default (metatrain alone refuses a used checkpoint.dir).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bash "$root/launch/setup/build.sh"
"$root/build/bin/metatrain" checkpoint.overwrite=true "$@"
