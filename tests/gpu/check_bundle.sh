#!/usr/bin/env bash
# Proves on this (GPU-less) machine that a bundle made by tests/gpu/make_bundle.sh is
# self-contained: (1) ldd of every bundled ELF, with a cleared environment and only the bundle's
# libraries + the CUDA toolkit's lib folder on the path, resolves nothing outside the bundle,
# that CUDA folder (CUDA libraries only) and glibc; (2) every program's --help and every test's
# --gtest_list_tests run from env.sh with `env -i`; (3) the same, plus a 2-step CPU metatrain,
# inside a minimal root (mount namespace + chroot) holding only the bundle, the CUDA lib folder
# and glibc. Exits non-zero if anything fails or resolves elsewhere.
#   usage: tests/gpu/check_bundle.sh DEST      (env: MT_CUDA_LIBDIR, default /usr/local/cuda/lib64;
#          MT_CHECK_NO_CHROOT=1 skips part 3)
set -euo pipefail

die() { echo "check_bundle: error: $*" >&2; exit 2; }
[ $# -eq 1 ] || die "usage: $0 DEST"
dest="$(cd "$1" 2>/dev/null && pwd)" || die "bundle '$1' does not exist"
for f in env.sh run MANIFEST.txt tests/tests.tsv bin/metatrain bin/metaeval bin/metapack bin/bench_metastep; do
  [ -e "$dest/$f" ] || die "$dest/$f is missing: not a bundle made by tests/gpu/make_bundle.sh"
done
cuda_dir="$(readlink -f "${MT_CUDA_LIBDIR:-/usr/local/cuda/lib64}")"
[ -d "$cuda_dir" ] || die "CUDA lib folder $cuda_dir not found (set MT_CUDA_LIBDIR)"

tmp="$(mktemp -d)"
cleanup() {
  if [ -n "${root:-}" ] && [ -d "$root" ]; then
    # Mounts live in the unshared namespace only; nothing to unmount here.
    rm -rf --one-file-system "$root" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; fails=$((fails + 1)); }

# Packed libraries: unpack once into a private cache (env.sh would do the same).
libpath="$dest/lib"
cache="$tmp/cache"
if [ -f "$dest/lib-packed.tar.xz" ]; then
  mkdir -p "$cache"
  tar -C "$cache" -xJf "$dest/lib-packed.tar.xz" || die "cannot unpack $dest/lib-packed.tar.xz"
  touch "$cache/.complete"
  libpath="$libpath:$cache"
fi

# glibc's own shared objects (by package when dpkg knows, else by name).
glibc_re='^(ld-linux-x86-64\.so\.2|lib(c|m|mvec|dl|pthread|rt|resolv|util|anl|thread_db|BrokenLocale|c_malloc_debug|nss_[a-z]+)\.so\.[0-9]+)$'
cuda_re='^lib(cudart|cublas|cublasLt|cudnn[a-z_]*|nccl|curand|cufft|cufftw|cusparse|cusolver|cusolverMg|nvrtc[a-z.-]*|nvJitLink|cupti|nvToolsExt|cufile|nvblas)\.so'
bundle_elfs=()
for f in "$dest"/bin/* "$dest"/tests/* "$dest"/lib/*.so* "$dest"/lib/openmpi/*.so "$cache"/lib*.so*; do
  [ -f "$f" ] || continue
  head -c 4 "$f" 2>/dev/null | grep -q 'ELF' || continue
  bundle_elfs+=("$f")
done
echo "== 1. ldd with env -i, LD_LIBRARY_PATH=$libpath:$cuda_dir (${#bundle_elfs[@]} ELF files) =="
bad_total=0
for f in "${bundle_elfs[@]}"; do
  out="$(env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="$libpath:$cuda_dir" ldd "$f" 2>&1)" || true
  bad=""
  while IFS= read -r line; do
    if [[ "$line" == *"not found"* ]]; then bad+="    $line"$'\n'; continue; fi
    if [[ "$line" =~ ^[[:space:]]*([^[:space:]]+)[[:space:]]+=\>[[:space:]]+(/[^[:space:]]+) ]]; then
      name="${BASH_REMATCH[1]}"; path="${BASH_REMATCH[2]}"
    elif [[ "$line" =~ ^[[:space:]]*(/[^[:space:]]+)[[:space:]]+\( ]]; then
      path="${BASH_REMATCH[1]}"; name="$(basename "$path")"
    else
      continue
    fi
    rp="$(readlink -f "$path")"
    case "$path" in
      "$dest"/lib/*|"$cache"/*) continue ;;
    esac
    if [[ "$rp" == "$cuda_dir"/* || "$path" == "$cuda_dir"/* ]] && [[ "$name" =~ $cuda_re ]]; then continue; fi
    if [[ "$name" =~ $glibc_re ]]; then continue; fi
    bad+="    $name => $path (outside the bundle, the CUDA folder and glibc)"$'\n'
  done <<< "$out"
  if [ -n "$bad" ]; then
    fail "ldd ${f#"$dest"/}"; printf '%s' "$bad"; bad_total=$((bad_total + 1))
  fi
done
[ "$bad_total" -eq 0 ] && pass "ldd: all ${#bundle_elfs[@]} ELF files resolve inside the bundle, $cuda_dir (CUDA libraries) or glibc"

# Probes: program -> arguments and the exit code expected. bench_metastep has no --help; an
# unknown option proves it loaded and reached main() (exit 2, "unknown option").
probe_cmds=()
probe_cmds+=("bin/metatrain|0|--help")
probe_cmds+=("bin/metaeval|0|--help")
probe_cmds+=("bin/metapack|0|--help")
probe_cmds+=("bin/bench_metastep|2|--check-bundle-probe 1")
while IFS=$'\t' read -r name _; do
  [ -n "$name" ] && probe_cmds+=("tests/$name|0|--gtest_list_tests")
done < "$dest/tests/tests.tsv"

check_probe() {  # check_probe LABEL RC EXPECTED OUTPUT_FILE
  local label="$1" rc="$2" want="$3" out="$4"
  if grep -Eq 'error while loading shared libraries|symbol lookup error|version .* not found|cannot open shared object' "$out"; then
    fail "$label: loader error"; sed 's/^/    /' "$out" | head -8
  elif [ "$rc" != "$want" ]; then
    fail "$label: exit $rc (expected $want)"; sed 's/^/    /' "$out" | tail -8
  else
    pass "$label (exit $rc, $(wc -l < "$out") lines)"
  fi
}

echo "== 2. programs through env.sh with env -i (host file system) =="
for p in "${probe_cmds[@]}"; do
  IFS='|' read -r rel want args <<< "$p"
  rc=0
  # shellcheck disable=SC2086
  env -i PATH=/usr/bin:/bin HOME="$tmp" MT_BUNDLE_CACHE="$cache" bash -c \
    '. "$1/env.sh" && shift && exec "$@"' _ "$dest" "$dest/$rel" $args > "$tmp/out" 2>&1 || rc=$?
  check_probe "env.sh: $rel $args" "$rc" "$want" "$tmp/out"
done
# What env.sh sets (used verbatim inside the minimal root, where the same paths exist).
env -i PATH=/usr/bin:/bin HOME="$tmp" MT_BUNDLE_CACHE="$cache" bash -c '. "$1/env.sh" && env' _ "$dest" \
  | grep -E '^(LD_LIBRARY_PATH|MT_BUNDLE|MT_BUNDLE_CACHE|OMPI_[A-Za-z_]+|OPAL_[A-Z_]+)=' > "$tmp/env.txt" \
  || die "sourcing $dest/env.sh failed"

echo "== 3. minimal root: only the bundle, $cuda_dir and glibc =="
if [ "${MT_CHECK_NO_CHROOT:-0}" = 1 ]; then
  echo "SKIP  minimal root (MT_CHECK_NO_CHROOT=1)"
elif ! command -v unshare >/dev/null || ! command -v chroot >/dev/null; then
  echo "SKIP  minimal root: unshare/chroot not available (parts 1 and 2 stand)"
elif ! unshare -m --propagation private true 2>/dev/null && ! unshare -r -m true 2>/dev/null; then
  echo "SKIP  minimal root: this machine refuses mount namespaces (parts 1 and 2 stand)"
else
  root="$(mktemp -d /tmp/mt-minroot.XXXXXX)"
  mkdir -p "$root/lib64" "$root/lib/x86_64-linux-gnu" "$root/proc" "$root/dev/shm" "$root/tmp" "$root/etc"
  # glibc: the loader and glibc's libraries only (copied, so nothing else of /lib is visible).
  for f in /lib/x86_64-linux-gnu/* /usr/lib/x86_64-linux-gnu/*; do
    n="$(basename "$f")"
    [[ "$n" =~ $glibc_re ]] && [ -f "$f" ] && cp -L "$f" "$root/lib/x86_64-linux-gnu/$n"
  done
  cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
  [ -f "$root/lib/x86_64-linux-gnu/libc.so.6" ] || die "could not find glibc's libc.so.6 to copy"
  echo "root:x:0:0:root:/tmp:/nonexistent" > "$root/etc/passwd"
  echo "root:x:0:" > "$root/etc/group"
  echo "127.0.0.1 localhost $(uname -n)" > "$root/etc/hosts"
  ls "$root/lib/x86_64-linux-gnu" | tr '\n' ' ' | sed 's/^/  glibc copied: /'; echo
  mapfile -t envv < "$tmp/env.txt"
  run_in_root() {  # run_in_root OUTFILE PROGRAM ARGS...: inside the unshared mounts + chroot
    local out="$1"; shift
    local script='set -e; r="$1"; d="$2"; c="$3"; k="$4"; shift 4
      mount -t tmpfs tmpfs "$r/tmp"
      mkdir -p "$r$d" "$r$c" "$r/usr/local/cuda/lib64"
      mount --bind "$d" "$r$d"; mount -o remount,bind,ro "$r$d" 2>/dev/null || true
      mount --bind "$c" "$r$c"
      [ "$c" = /usr/local/cuda/lib64 ] || mount --bind "$c" "$r/usr/local/cuda/lib64"
      if [ -d "$k" ]; then mkdir -p "$r$k"; mount --bind "$k" "$r$k"; fi
      mount -t proc proc "$r/proc"
      mount -t tmpfs tmpfs "$r/dev/shm"
      touch "$r/dev/null" && mount --bind /dev/null "$r/dev/null"
      touch "$r/dev/urandom" && mount --bind /dev/urandom "$r/dev/urandom"
      exec chroot "$r" "$@"'
    local rc=0
    if unshare -m --propagation private true 2>/dev/null; then
      env -i HOME=/tmp TMPDIR=/tmp "${envv[@]}" unshare -m --propagation private \
        sh -c "$script" _ "$root" "$dest" "$cuda_dir" "$cache" "$@" > "$out" 2>&1 || rc=$?
    else
      env -i HOME=/tmp TMPDIR=/tmp "${envv[@]}" unshare -r -m --propagation private \
        sh -c "$script" _ "$root" "$dest" "$cuda_dir" "$cache" "$@" > "$out" 2>&1 || rc=$?
    fi
    return "$rc"
  }
  for p in "${probe_cmds[@]}"; do
    IFS='|' read -r rel want args <<< "$p"
    rc=0
    # shellcheck disable=SC2086
    run_in_root "$tmp/out" "$dest/$rel" $args || rc=$?
    check_probe "minimal root: $rel $args" "$rc" "$want" "$tmp/out"
  done
  # A real run: 2 outer steps of MAML on the built-in glyphs, CPU (OpenBLAS, OpenMP, HDF5 writes).
  rc=0
  run_in_root "$tmp/out" "$dest/bin/metatrain" device=cpu steps=2 meta_batch=2 eval.episodes=4 \
    eval.every=2 threads=1 data.prefetch=0 checkpoint.dir=/tmp/ck checkpoint.overwrite=true log.every=1 || rc=$?
  if [ "$rc" = 0 ] && grep -q 'accuracy' "$tmp/out"; then
    pass "minimal root: metatrain device=cpu steps=2 (trained, evaluated, checkpointed)"
  else
    check_probe "minimal root: metatrain device=cpu steps=2" "$rc" 0 "$tmp/out"
    [ "$rc" = 0 ] && { fail "minimal root: metatrain printed no accuracy line"; tail -5 "$tmp/out" | sed 's/^/    /'; }
  fi
  # device=cuda without a GPU must be a clean refusal (exit 1 or 2 with a message), not a crash.
  rc=0
  run_in_root "$tmp/out" "$dest/bin/metatrain" device=cuda steps=1 meta_batch=2 eval.episodes=4 \
    checkpoint.dir=/tmp/ck2 checkpoint.overwrite=true || rc=$?
  if grep -Eq 'error while loading shared libraries|symbol lookup error' "$tmp/out"; then
    fail "minimal root: metatrain device=cuda: loader error"; head -5 "$tmp/out" | sed 's/^/    /'
  elif [ "$rc" != 1 ] && [ "$rc" != 2 ]; then
    fail "minimal root: metatrain device=cuda without a GPU: exit $rc (expected a refusal, 1 or 2)"; tail -5 "$tmp/out" | sed 's/^/    /'
  else
    pass "minimal root: metatrain device=cuda without a GPU exits $rc: $(grep -m1 -iE 'cuda|gpu' "$tmp/out" | cut -c1-150)"
  fi
fi

echo
if [ "$fails" -eq 0 ]; then
  echo "check_bundle: OK: $dest is self-contained ($(du -sb "$dest" | cut -f1) bytes)"
else
  echo "check_bundle: $fails check(s) FAILED for $dest"
  exit 1
fi
