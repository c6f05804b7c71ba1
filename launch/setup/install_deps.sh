#!/usr/bin/env bash
# Installs the build and run-time dependencies from Debian packages (Debian 12 / Ubuntu 22.04+).
# The CUDA toolkit, cuDNN and NCCL are not installed here: when nvcc is on PATH or under
# /usr/local/cuda the build picks CUDA up, otherwise it builds the CPU backend only.
set -euo pipefail
packages=(cmake ninja-build g++ pkg-config libopenblas-dev libdnnl-dev libhdf5-dev libyaml-cpp-dev
          libgtest-dev openmpi-bin libopenmpi-dev libpng-dev zlib1g-dev libjpeg-dev libzip-dev
          libssl-dev nlohmann-json3-dev clang libclang-rt-14-dev iproute2)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all packages present"
  exit 0
fi
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
echo "install_deps: installing ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
