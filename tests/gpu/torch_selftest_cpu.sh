#!/usr/bin/env bash
# CPU check of the PyTorch benchmark reference (tests/bench/reference/torch_metastep.py) on a
# machine without a GPU: creates .venv-torch (pip install torch numpy, once), runs --selftest
# (float64 gradient checks) and a tiny benchmark (B=2, r=1, iters=1; all algos, both variants).
#   usage: bash tests/gpu/torch_selftest_cpu.sh        (env: MT_PYTHON to use another python)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
py="${MT_PYTHON:-$root/.venv-torch/bin/python}"
if [ -z "${MT_PYTHON:-}" ] && ! "$py" -c 'import torch' 2>/dev/null; then
  echo "torch_selftest_cpu: creating .venv-torch (pip install torch numpy; large download)" >&2
  python3 -m venv .venv-torch
  # The CPU-only index is tried first; plain PyPI (CUDA wheels, works on the CPU too) after it.
  .venv-torch/bin/pip install -q torch numpy --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
    || .venv-torch/bin/pip install -q torch numpy \
    || { echo "torch_selftest_cpu: error: could not pip install torch" >&2; exit 2; }
fi
ref=tests/bench/reference/torch_metastep.py
echo "== selftest (float64)" >&2
"$py" "$ref" --device cpu --selftest --threads "$(nproc)"
echo "== tiny benchmark on the CPU" >&2
"$py" "$ref" --device cpu --dataset omniglot --algo fomaml,maml,ufom --q 0.5 --r 1 --B 2 \
  --variant loop,vmap --iters 1 --warmup 0 --threads "$(nproc)" \
  > "${TMPDIR:-/tmp}/torch_smoke.$$.jsonl"
"$py" - "${TMPDIR:-/tmp}/torch_smoke.$$.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
bad = [r for r in rows if "error" in r]
for r in rows:
    head = "%-7s %-5s r=%d B=%d " % (r["algo"], r["variant"], r["r"], r["B"])
    print(head + ("ERROR " + r["error"] if "error" in r else
                  "%.3f s/iter, params %d, peak RSS %.0f MB" % (r["sec_per_iter"], r["params"], r["peak_rss_mb"])))
sys.exit(1 if bad or len(rows) != 6 else 0)
PY
rm -f "${TMPDIR:-/tmp}/torch_smoke.$$.jsonl"
echo "torch_selftest_cpu: OK" >&2
