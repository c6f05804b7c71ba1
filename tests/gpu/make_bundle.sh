#!/usr/bin/env bash
# Collects a self-contained bundle for the GPU machine from a CUDA build: the programs, every
# gpu-labelled test executable, bench_metastep, and every shared library they need that neither
# glibc, the NVIDIA driver nor the CUDA libraries of the device image provide (Open MPI's
# plug-ins included, so that a singleton MPI_Init works without mpirun), plus env.sh / run
# wrappers that set the library path on the device, and a manifest.
#   usage: tests/gpu/make_bundle.sh BUILD_DIR DEST
#   env:   MT_BUNDLE_MAX_MIB (default 56: the device tool carries 64 MiB in all; 0 = no limit):
#          libraries are xz-packed, largest first,
#          until DEST fits;  MT_BUNDLE_STRIP=debug|all|none (default debug)
set -euo pipefail

die() { echo "make_bundle: error: $*" >&2; exit 2; }
log() { echo "make_bundle: $*" >&2; }

[ $# -eq 2 ] || die "usage: $0 BUILD_DIR DEST"
build="$(cd "$1" 2>/dev/null && pwd)" || die "BUILD_DIR '$1' does not exist"
dest_arg="$2"
max_mib="${MT_BUNDLE_MAX_MIB:-56}"
strip_mode="${MT_BUNDLE_STRIP:-debug}"
case "$strip_mode" in debug|all|none) ;; *) die "MT_BUNDLE_STRIP must be debug, all or none" ;; esac
for tool in ldd python3 tar xz; do
  command -v "$tool" >/dev/null || die "'$tool' is needed on this machine"
done
[ -f "$build/CMakeCache.txt" ] || die "$build is not a CMake build directory (no CMakeCache.txt)"
if ! grep -Eq '^CMAKE_CUDA_COMPILER:[A-Z]+=.+' "$build/CMakeCache.txt"; then
  log "warning: $build was configured without a CUDA compiler; the bundle will hold CPU-only programs"
fi

programs=(metatrain metaeval metapack)
bench="$build/bin/bench_metastep"
for p in "${programs[@]}"; do
  [ -x "$build/bin/$p" ] || die "$build/bin/$p is missing: build first (cmake --build $build)"
done
[ -x "$bench" ] || die "$bench is missing: build first (cmake --build $build)"

# ---- gpu-labelled test executables: from CTest's JSON, plus any *_cuda_test -----------------
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$build" && timeout 600 ctest -L gpu --show-only=json-v1) > "$tmp/ctest.json" 2> "$tmp/ctest.err"; then
  log "warning: 'ctest -L gpu --show-only=json-v1' failed ($(head -c 300 "$tmp/ctest.err")); falling back to *_cuda_test"
  echo '{"tests": []}' > "$tmp/ctest.json"
fi
# tests.tsv: executable path, kind (gtest | mpi: needs MPI_Init, run as a singleton), ctest names
python3 - "$build" "$tmp/ctest.json" > "$tmp/tests.tsv" <<'PY'
import json, os, sys
build, path = sys.argv[1], sys.argv[2]
try:
    tests = json.load(open(path)).get("tests", [])
except ValueError:
    tests = []
found = {}
for t in tests:
    cmd = t.get("command") or []
    exe = None
    for a in cmd:
        if os.path.isabs(a) and a.startswith(build + "/") and os.path.isfile(a) and os.access(a, os.X_OK):
            exe = a
            break
    if exe is None:
        continue
    kind = "mpi" if os.path.basename(cmd[0]).startswith(("mpiexec", "mpirun", "srun")) else "gtest"
    e = found.setdefault(exe, {"kind": kind, "names": []})
    if kind == "mpi":
        e["kind"] = "mpi"
    e["names"].append(t.get("name", "?"))
for root, dirs, files in os.walk(build):
    dirs[:] = [d for d in dirs if d not in ("CMakeFiles", "bundle", "Testing")]
    for f in files:
        p = os.path.join(root, f)
        if f.endswith("_cuda_test") and os.access(p, os.X_OK) and p not in found:
            found[p] = {"kind": "gtest", "names": ["(found by name)"]}
for exe, e in sorted(found.items()):
    print(f"{exe}\t{e['kind']}\t{','.join(e['names'])}")
PY
n_tests=$(wc -l < "$tmp/tests.tsv")
[ "$n_tests" -gt 0 ] || log "warning: no gpu-labelled test executable found in $build"
# Two executables with one base name would collide in DEST/tests.
dups=$(cut -f1 "$tmp/tests.tsv" | xargs -r -n1 basename | sort | uniq -d)
[ -z "$dups" ] || die "gpu test executables with the same name: $dups"

# ---- DEST layout ----------------------------------------------------------------------------
mkdir -p "$dest_arg"
dest="$(cd "$dest_arg" && pwd)"
case "$dest" in "$build"/bin*|"$build"/tests*) die "DEST must not be inside $build/bin or $build/tests" ;; esac
[ "$dest" != / ] || die "DEST must not be /"
rm -rf "${dest:?}/bin" "${dest:?}/tests" "${dest:?}/lib" "${dest:?}/share" "${dest:?}/etc" \
       "$dest/lib-packed.tar.xz" "$dest/env.sh" "$dest/run" "$dest/MANIFEST.txt" "$dest/libs.tsv"
mkdir -p "$dest/bin" "$dest/tests" "$dest/lib"

strip_copy() {  # strip_copy FILE: strip a copied ELF file in place according to MT_BUNDLE_STRIP
  [ "$strip_mode" = none ] && return 0
  command -v strip >/dev/null || { log "warning: no 'strip'; leaving $1 as is"; return 0; }
  local mode=--strip-debug
  [ "$strip_mode" = all ] && mode=--strip-unneeded
  chmod u+w "$1"
  strip "$mode" "$1" 2>/dev/null || log "warning: strip failed on $1 (kept unstripped)"
}

for p in "${programs[@]}" bench_metastep; do
  cp -L "$build/bin/$p" "$dest/bin/$p"
  strip_copy "$dest/bin/$p"
done
: > "$dest/tests/tests.tsv"
while IFS=$'\t' read -r exe kind names; do
  [ -n "$exe" ] || continue
  name="$(basename "$exe")"
  cp -L "$exe" "$dest/tests/$name"
  strip_copy "$dest/tests/$name"
  printf '%s\t%s\t%s\n' "$name" "$kind" "$names" >> "$dest/tests/tests.tsv"
done < "$tmp/tests.tsv"

# ---- library classification -----------------------------------------------------------------
# Which names glibc itself owns: ask dpkg when possible, else a fixed list.
glibc_names="$tmp/glibc_names"
if command -v dpkg-query >/dev/null && dpkg-query -L libc6 >/dev/null 2>&1; then
  dpkg-query -L libc6 | grep -E '/(ld-linux[^/]*|lib[^/]*\.so[^/]*)$' | xargs -r -n1 basename | sort -u > "$glibc_names"
fi
cat >> "$glibc_names" <<'EOF'
ld-linux-x86-64.so.2
libc.so.6
libm.so.6
libmvec.so.1
libdl.so.2
libpthread.so.0
librt.so.1
libresolv.so.2
libutil.so.1
libanl.so.1
libthread_db.so.1
libBrokenLocale.so.1
libc_malloc_debug.so.0
libnss_files.so.2
libnss_dns.so.2
EOF
sort -u -o "$glibc_names" "$glibc_names"

classify() {  # classify SONAME -> glibc | driver | cuda | bundle
  local n="$1"
  if grep -qxF "$n" "$glibc_names" || [[ "$n" == ld-linux* ]] || [[ "$n" == linux-vdso* ]]; then
    echo glibc
  elif [[ "$n" =~ ^lib(cuda|nvidia|nvcuvid|nvoptix)[.-] ]] || [[ "$n" == libcuda.so* ]]; then
    echo driver
  elif [[ "$n" =~ ^lib(cudart|cublas|cublasLt|cudnn|nccl|curand|cufft|cufftw|cusparse|cusolver|cusolverMg|nvrtc|nvJitLink|cupti|nvToolsExt|nvtx3interop|cufile|nvblas)[._-] ]]; then
    echo cuda
  else
    echo bundle
  fi
}

# libs.tsv rows: soname, class, source path, needed-by (first binary seen)
declare -A seen=()
libs_tsv="$dest/libs.tsv"
printf 'soname\tclass\tsource\tneeded_by\n' > "$libs_tsv"
missing=()

resolve() {  # resolve ELF LABEL: copy every bundle-class dependency of ELF into DEST/lib
  local elf="$1" label="$2" line name path cls
  local out
  out="$(ldd "$elf" 2>&1)" || { log "warning: ldd failed on $elf: $out"; return 0; }
  while IFS= read -r line; do
    if [[ "$line" =~ ^[[:space:]]*([^[:space:]]+)[[:space:]]+=\>[[:space:]]+not\ found ]]; then
      name="${BASH_REMATCH[1]}"
      cls="$(classify "$name")"
      if [ "$cls" = bundle ]; then
        missing+=("$name (needed by $label)")
      elif [ -z "${seen[$name]:-}" ]; then
        seen[$name]=1
        printf '%s\t%s\t%s\t%s\n' "$name" "$cls" "not found here" "$label" >> "$libs_tsv"
      fi
      continue
    fi
    if [[ "$line" =~ ^[[:space:]]*([^[:space:]]+)[[:space:]]+=\>[[:space:]]+(/[^[:space:]]+) ]]; then
      name="${BASH_REMATCH[1]}"; path="${BASH_REMATCH[2]}"
    elif [[ "$line" =~ ^[[:space:]]*(/[^[:space:]]+)[[:space:]]+\( ]]; then
      path="${BASH_REMATCH[1]}"; name="$(basename "$path")"
    else
      continue
    fi
    [ -z "${seen[$name]:-}" ] || continue
    seen[$name]=1
    cls="$(classify "$name")"
    printf '%s\t%s\t%s\t%s\n' "$name" "$cls" "$path" "$label" >> "$libs_tsv"
    if [ "$cls" = bundle ]; then
      cp -L "$path" "$dest/lib/$name"
      chmod u+w,a+r "$dest/lib/$name"
      strip_copy "$dest/lib/$name"
    fi
  done <<< "$out"
}

for f in "$dest"/bin/* "$dest"/tests/*; do
  [ -f "$f" ] && [ "$(basename "$f")" != tests.tsv ] || continue
  resolve "$f" "$(basename "$f")"
done

# ---- Open MPI plug-ins (dlopen'ed by MPI_Init, invisible to ldd of the programs) -------------
ompi_note="Open MPI: not linked"
if [ -f "$dest/lib/libmpi.so.40" ] || compgen -G "$dest/lib/libmpi.so*" >/dev/null; then
  libmpi_src="$(awk -F'\t' '$1 ~ /^libmpi\.so/ {print $3; exit}' "$libs_tsv")"
  comp_dir=""
  if command -v ompi_info >/dev/null; then
    comp_dir="$(ompi_info --path pkglibdir --parsable 2>/dev/null | sed -n 's/^path:pkglibdir://p' | head -1)"
  fi
  if [ -z "$comp_dir" ] || [ ! -f "$comp_dir/mca_ess_singleton.so" ]; then
    real="$(readlink -f "$libmpi_src")"
    for c in "$(dirname "$real")"/openmpi/lib/openmpi* "$(dirname "$real")"/openmpi "$(dirname "$real")"/../lib/openmpi*; do
      [ -f "$c/mca_ess_singleton.so" ] && { comp_dir="$c"; break; }
    done
  fi
  if [ -n "$comp_dir" ] && [ -f "$comp_dir/mca_ess_singleton.so" ]; then
    mkdir -p "$dest/lib/openmpi"
    # Leave out plug-ins for fabrics a single GPU host does not use and whose libraries are
    # large (UCX, libfabric, PSM, verbs, munge, external PMIx, OpenSHMEM).
    deny='^lib(ucp|ucs|uct|ucm|fabric|psm|psm2|psm_infinipath|infinipath|ibverbs|rdmacm|efa|nl-|munge|pmix|mca_common_ucx|mca_common_ofi|mca_common_verbs|oshmem)'
    n_in=0; n_out=0; skipped=()
    for so in "$comp_dir"/mca_*.so; do
      bad=""
      while read -r dep; do
        [[ "$dep" =~ $deny ]] && { bad="$dep"; break; }
      done < <(ldd "$so" 2>/dev/null | awk '/=>/ {print $1}')
      if ldd "$so" 2>/dev/null | grep -q 'not found'; then bad="${bad:-a library not found here}"; fi
      if [ -n "$bad" ]; then
        n_out=$((n_out + 1)); skipped+=("$(basename "$so"):$bad")
        continue
      fi
      cp -L "$so" "$dest/lib/openmpi/"
      strip_copy "$dest/lib/openmpi/$(basename "$so")"
      resolve "$so" "openmpi/$(basename "$so")"
      n_in=$((n_in + 1))
    done
    # Help texts (error messages) and the system parameter file.
    share_src="$(ompi_info --path pkgdatadir --parsable 2>/dev/null | sed -n 's/^path:pkgdatadir://p' | head -1)"
    [ -n "$share_src" ] && [ -d "$share_src" ] || share_src=/usr/share/openmpi
    if [ -d "$share_src" ]; then
      mkdir -p "$dest/share/openmpi"
      cp -L "$share_src"/help-*.txt "$dest/share/openmpi/" 2>/dev/null || true
    fi
    mkdir -p "$dest/etc"
    if [ -f /etc/openmpi/openmpi-mca-params.conf ]; then
      cp -L /etc/openmpi/openmpi-mca-params.conf "$dest/etc/"
    else
      : > "$dest/etc/openmpi-mca-params.conf"
    fi
    printf '%s\n' "${skipped[@]}" > "$dest/lib/openmpi/SKIPPED.txt"
    ompi_note="Open MPI plug-ins from $comp_dir: $n_in bundled, $n_out left out (fabric stacks; list in lib/openmpi/SKIPPED.txt)"
  else
    ompi_note="Open MPI linked but its plug-in folder was not found: MPI_Init will fail on the device"
    log "warning: $ompi_note"
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  printf '  %s\n' "${missing[@]}" >&2
  die "libraries not found on this machine (install them or fix the build)"
fi

# ---- size limit: xz-pack the largest libraries until DEST fits -------------------------------
size_of() { du -sb "$1" | cut -f1; }
packed=()
if [ "$max_mib" != 0 ]; then
  limit=$((max_mib * 1024 * 1024))
  total=$(size_of "$dest")
  if [ "$total" -gt "$limit" ]; then
    mapfile -t by_size < <(find "$dest/lib" -maxdepth 1 -type f -name 'lib*.so*' -printf '%s\t%f\n' | sort -rn | cut -f2)
    # Move the largest into the pack until the rest plus an xz ratio of ~1/4 fits.
    need=$((total - limit))
    for f in "${by_size[@]}"; do
      [ "$need" -le 0 ] && break
      s=$(stat -c %s "$dest/lib/$f")
      packed+=("$f")
      need=$((need - s * 3 / 4))
    done
    log "DEST is $((total / 1048576)) MiB > $max_mib MiB: xz-packing the largest libraries"
    while :; do
      XZ_OPT="-6 -T0" tar -C "$dest/lib" -cJf "$tmp/lib-packed.tar.xz" "${packed[@]}"
      rest=0
      for f in "${by_size[@]:${#packed[@]}}"; do rest=$((rest + $(stat -c %s "$dest/lib/$f"))); done
      # total = everything but lib/'s libraries, + the unpacked rest + the pack
      total=$(( $(size_of "$dest") - $(find "$dest/lib" -maxdepth 1 -type f -name 'lib*.so*' -printf '%s\n' | awk '{s+=$1} END {print s+0}') + rest + $(stat -c %s "$tmp/lib-packed.tar.xz") ))
      [ "$total" -le "$limit" ] && break
      [ "${#packed[@]}" -lt "${#by_size[@]}" ] || break
      packed+=("${by_size[${#packed[@]}]}")
    done
    mv "$tmp/lib-packed.tar.xz" "$dest/lib-packed.tar.xz"
    for f in "${packed[@]}"; do rm -f "$dest/lib/$f"; done
    log "packed ${#packed[@]} libraries into lib-packed.tar.xz: ${packed[*]}"
    total=$(size_of "$dest")
    [ "$total" -le "$limit" ] || die "bundle is still $((total / 1048576)) MiB after packing (limit $max_mib MiB; raise MT_BUNDLE_MAX_MIB or MT_BUNDLE_STRIP=all)"
  fi
fi

# ---- env.sh and run -------------------------------------------------------------------------
cat > "$dest/env.sh" <<'ENV'
# Source me (bash): sets up the environment for the bundled programs. LD_LIBRARY_PATH =
# bundle lib/ (+ unpacked lib-packed.tar.xz) : NVIDIA pip-wheel lib folders of python3 (cuDNN,
# NCCL, cuBLAS, ...) : /usr/local/cuda/lib64 : the driver's folders : the previous value.
# Knobs: MT_PYTHON (python3 to ask for the wheels), MT_BUNDLE_CACHE (where packed libs are
# unpacked; default ${TMPDIR:-/tmp}/mt-bundle-libs-<checksum>), MT_CUDA_PREFER=toolkit (put
# /usr/local/cuda before the wheels), MT_BUNDLE_VERBOSE=1 (print what was set).
MT_BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export MT_BUNDLE
_mt_paths="$MT_BUNDLE/lib"
if [ -f "$MT_BUNDLE/lib-packed.tar.xz" ]; then
  _mt_sum="$(cksum < "$MT_BUNDLE/lib-packed.tar.xz" | cut -d' ' -f1)"
  MT_BUNDLE_CACHE="${MT_BUNDLE_CACHE:-${TMPDIR:-/tmp}/mt-bundle-libs-$_mt_sum}"
  export MT_BUNDLE_CACHE
  if [ ! -f "$MT_BUNDLE_CACHE/.complete" ]; then
    mkdir -p "$MT_BUNDLE_CACHE"
    if command -v xz >/dev/null 2>&1; then
      tar -C "$MT_BUNDLE_CACHE" -xJf "$MT_BUNDLE/lib-packed.tar.xz"
    else
      "${MT_PYTHON:-python3}" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
        "$MT_BUNDLE/lib-packed.tar.xz" "$MT_BUNDLE_CACHE"
    fi || { echo "env.sh: could not unpack $MT_BUNDLE/lib-packed.tar.xz into $MT_BUNDLE_CACHE" >&2; return 1; }
    touch "$MT_BUNDLE_CACHE/.complete"
  fi
  _mt_paths="$_mt_paths:$MT_BUNDLE_CACHE"
fi
_mt_py="${MT_PYTHON:-}"
if [ -z "$_mt_py" ]; then
  for _c in python3 /opt/torch/.venv/bin/python3; do
    if command -v "$_c" >/dev/null 2>&1; then _mt_py="$_c"; break; fi
  done
fi
_mt_wheels=""
if [ -n "$_mt_py" ]; then
  _mt_wheels="$("$_mt_py" - 2>/dev/null <<'PY'
import importlib, os
dirs = []
def add(d):
    if os.path.isdir(d) and d not in dirs and any(".so" in f for f in os.listdir(d)):
        dirs.append(d)
# The ones the bundle needs first, then every other nvidia wheel's lib folder.
for mod in ("nvidia.cudnn", "nvidia.nccl", "nvidia.cublas", "nvidia.cuda_runtime", "nvidia.cu13"):
    try:
        m = importlib.import_module(mod)
    except Exception:
        continue
    for base in list(getattr(m, "__path__", [])) or [os.path.dirname(m.__file__)]:
        add(os.path.join(base, "lib"))
try:
    import nvidia
    for base in nvidia.__path__:
        for sub in sorted(os.listdir(base)):
            add(os.path.join(base, sub, "lib"))
except Exception:
    pass
print(":".join(dirs))
PY
)" || _mt_wheels=""
fi
_mt_toolkit=""
for _d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$_d" ] && _mt_toolkit="${_mt_toolkit:+$_mt_toolkit:}$_d"
done
if [ "${MT_CUDA_PREFER:-wheels}" = toolkit ]; then
  _mt_paths="$_mt_paths${_mt_toolkit:+:$_mt_toolkit}${_mt_wheels:+:$_mt_wheels}"
else
  _mt_paths="$_mt_paths${_mt_wheels:+:$_mt_wheels}${_mt_toolkit:+:$_mt_toolkit}"
fi
for _d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
  [ -d "$_d" ] && _mt_paths="$_mt_paths:$_d"
done
export LD_LIBRARY_PATH="$_mt_paths${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$MT_BUNDLE/bin:$MT_BUNDLE/tests:$PATH"
# Open MPI from the bundle: its plug-ins, help texts and parameter file; a process started
# without a launcher runs as an isolated singleton (no orted daemon is needed).
if [ -d "$MT_BUNDLE/lib/openmpi" ]; then
  export OMPI_MCA_mca_base_component_path="$MT_BUNDLE/lib/openmpi"
  export OPAL_PKGDATADIR="$MT_BUNDLE/share/openmpi"
  export OPAL_SYSCONFDIR="$MT_BUNDLE/etc"
  export OMPI_MCA_mca_base_param_files="$MT_BUNDLE/etc/openmpi-mca-params.conf"
  export OMPI_MCA_ess_singleton_isolated=1
fi
export MT_BUNDLE_WHEEL_LIBS="$_mt_wheels"
if [ "${MT_BUNDLE_VERBOSE:-0}" = 1 ]; then
  echo "env.sh: MT_BUNDLE=$MT_BUNDLE" >&2
  echo "env.sh: LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >&2
fi
unset _mt_paths _mt_sum _mt_py _mt_wheels _mt_toolkit _d _c
ENV

cat > "$dest/run" <<'RUN'
#!/usr/bin/env bash
# Runs a bundled program (a name from bin/ or tests/, or any command) with env.sh applied:
#   BUNDLE/run metatrain device=cuda ...   BUNDLE/run linear_cuda_test --gtest_brief=1
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -ge 1 ] || { echo "usage: $0 PROGRAM [ARGS...]" >&2; exit 2; }
# shellcheck source=/dev/null
. "$here/env.sh"
prog="$1"; shift
if [ -x "$here/bin/$prog" ]; then prog="$here/bin/$prog"
elif [ -x "$here/tests/$prog" ]; then prog="$here/tests/$prog"; fi
exec "$prog" "$@"
RUN
chmod +x "$dest/run"

# ---- manifest ---------------------------------------------------------------------------------
glibc_need="$( (for f in "$dest"/bin/* "$dest"/tests/* "$dest"/lib/*.so* "$dest"/lib/openmpi/*.so; do
  [ -f "$f" ] && strings -a "$f" 2>/dev/null | grep -o '^GLIBC_2\.[0-9.]*$'; done
  if [ -f "$dest/lib-packed.tar.xz" ]; then
    mkdir -p "$tmp/packed" && tar -C "$tmp/packed" -xJf "$dest/lib-packed.tar.xz"
    for f in "$tmp"/packed/*; do strings -a "$f" | grep -o '^GLIBC_2\.[0-9.]*$'; done
  fi) | sort -Vu | tail -1)"
total=$(size_of "$dest")
{
  echo "metatrain GPU bundle"
  echo "created:      $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n) ($(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-?}"))"
  echo "build dir:    $build"
  echo "source rev:   $(git -C "$build/.." rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$build/.." diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "compiler:     $(grep -E '^CMAKE_CXX_COMPILER:' "$build/CMakeCache.txt" | cut -d= -f2) / CUDA $(grep -E '^CMAKE_CUDA_COMPILER:' "$build/CMakeCache.txt" | cut -d= -f2 | xargs -r -I{} sh -c '{} --version 2>/dev/null | sed -n "s/.*release \([0-9.]*\).*/\1/p"' || true)"
  echo "glibc here:   $(ldd --version 2>&1 | head -1 | grep -o '[0-9][0-9.]*$')"
  echo "glibc needed: ${glibc_need#GLIBC_} (newest GLIBC_ symbol version referenced by the bundle; the device's glibc must be at least this)"
  echo "strip:        $strip_mode"
  echo "total size:   $total bytes ($(awk -v b="$total" 'BEGIN{printf "%.1f", b/1048576}') MiB; limit ${max_mib} MiB)"
  echo "$ompi_note"
  echo
  echo "== programs (bin/) =="
  for f in "$dest"/bin/*; do printf '  %-22s %10d bytes\n' "$(basename "$f")" "$(stat -c %s "$f")"; done
  echo "== gpu tests (tests/; kind mpi = calls MPI_Init, runs as a singleton without mpirun) =="
  while IFS=$'\t' read -r n k names; do
    printf '  %-22s %10d bytes  %-5s ctest: %s\n' "$n" "$(stat -c %s "$dest/tests/$n")" "$k" "$names"
  done < "$dest/tests/tests.tsv"
  echo "== libraries included (lib/) =="
  for f in "$dest"/lib/*.so*; do
    [ -f "$f" ] || continue
    n="$(basename "$f")"
    printf '  %-34s %10d bytes  from %s\n' "$n" "$(stat -c %s "$f")" "$(awk -F'\t' -v n="$n" '$1==n {print $3; exit}' "$libs_tsv")"
  done
  if [ ${#packed[@]} -gt 0 ]; then
    echo "== libraries included, xz-packed in lib-packed.tar.xz ($(stat -c %s "$dest/lib-packed.tar.xz") bytes; env.sh unpacks them) =="
    for n in "${packed[@]}"; do
      printf '  %-34s %10d bytes  from %s\n' "$n" "$(stat -c %s "$tmp/packed/$n")" "$(awk -F'\t' -v n="$n" '$1==n {print $3; exit}' "$libs_tsv")"
    done
  fi
  if [ -d "$dest/lib/openmpi" ]; then
    echo "== Open MPI plug-ins (lib/openmpi/): $(ls "$dest"/lib/openmpi/*.so | wc -l) files, $(du -sb "$dest/lib/openmpi" | cut -f1) bytes =="
  fi
  echo "== excluded (provided by the device: glibc, the driver, the CUDA toolkit / NVIDIA wheels) =="
  awk -F'\t' 'NR > 1 && $2 != "bundle" {printf "  %-34s %-7s %s\n", $1, $2, $3}' "$libs_tsv"
} > "$dest/MANIFEST.txt"

log "bundle: $dest ($(awk -v b="$total" 'BEGIN{printf "%.1f", b/1048576}') MiB), $(ls "$dest/bin" | wc -l) programs, $n_tests gpu test executables, $(ls "$dest"/lib/*.so* 2>/dev/null | wc -l) + ${#packed[@]} packed libraries; see $dest/MANIFEST.txt"
