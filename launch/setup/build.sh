#!/usr/bin/env bash
# Installs dependencies (launch/setup/install_deps.sh), configures and builds everything into
# build/ (Release; CUDA sources too when nvcc is found). Extra arguments go to CMake.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bash "$root/launch/setup/install_deps.sh"
export PATH="$PATH:/usr/local/cuda/bin"
cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$root/build" -j"$(nproc)"
