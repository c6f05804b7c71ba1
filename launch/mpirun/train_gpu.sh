#!/usr/bin/env bash
# Multi-GPU meta-training with Open MPI's mpirun: one rank per GPU on one host or several,
# device=cuda with the NCCL allreduce (dist.backend=nccl, bootstrapped over MPI).
#
# NOT YET RUN ON A GPU: the CUDA backend is built and its logic tested on the CPU (README,
# Status), but no GPU has run it yet; train_cpu.sh is the tested multi-rank form.
#
#   GPUS_PER_NODE=8 bash launch/mpirun/train_gpu.sh algo=ufom steps=10000
#   HOSTS=node1:8,node2:8 GPUS_PER_NODE=8 CKPT_DIR=/shared/runs/g16 bash launch/mpirun/train_gpu.sh
#
# Environment (defaults in brackets):
#   GPUS_PER_NODE   ranks (= GPUs) per host [number of GPUs nvidia-smi lists, else 1]
#   NODES           hosts [1]; N = NODES x GPUS_PER_NODE ranks in all
#   TASKS_PER_RANK  tasks per GPU per step; meta_batch = N x TASKS_PER_RANK [8]
#   META_BATCH      global meta_batch; overrides TASKS_PER_RANK []
#   THREADS         CPU threads per rank (episode preparation) [4]
#   CKPT_DIR        checkpoint.dir [runs/mpirun_gpu]
#   RESUME          none | latest | auto (latest if CKPT_DIR/latest.h5 exists) | PATH [none]
#   HOSTS, HOSTFILE mpirun --host / --hostfile []
#   MPIRUN, MPIRUN_ARGS, METATRAIN, DRY_RUN=1   as in train_cpu.sh
# Each rank picks its GPU by its local rank on the host (MPI_Comm_split_type), so leave
# CUDA_VISIBLE_DEVICES listing all of the host's GPUs. Two ranks on one GPU are not supported
# by NCCL ("Duplicate GPU").
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

if [ -z "${GPUS_PER_NODE:-}" ]; then
  GPUS_PER_NODE=$(nvidia-smi --list-gpus 2>/dev/null | grep -c '^GPU' || true)
  [ "$GPUS_PER_NODE" -ge 1 ] 2>/dev/null || GPUS_PER_NODE=1
fi
NODES="${NODES:-1}"
N=$((NODES * GPUS_PER_NODE))
TASKS_PER_RANK="${TASKS_PER_RANK:-8}"
META_BATCH="${META_BATCH:-$((N * TASKS_PER_RANK))}"
THREADS="${THREADS:-4}"
CKPT_DIR="${CKPT_DIR:-runs/mpirun_gpu}"
# A checkpoint.dir=... argument wins over CKPT_DIR (metatrain takes the last value given).
for arg in "$@"; do
  case "$arg" in checkpoint.dir=*) CKPT_DIR="${arg#checkpoint.dir=}" ;; esac
done
RESUME="${RESUME:-none}"
MPIRUN="${MPIRUN:-mpirun}"
METATRAIN="${METATRAIN:-build/bin/metatrain}"

[ -x "$METATRAIN" ] || { echo "train_gpu.sh: $METATRAIN not found; build first: bash launch/setup/build.sh" >&2; exit 2; }
case "$RESUME" in
  auto) if [ -f "$CKPT_DIR/latest.h5" ]; then resume=latest; else resume=none; fi ;;
  *) resume="$RESUME" ;;
esac
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# NCCL_DEBUG=WARN reports transport problems (which network, which GPU) without flooding.
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"

# GPUS_PER_NODE ranks per host, each bound to THREADS cores near its GPU's socket.
launcher=("$MPIRUN" -np "$N" --map-by "ppr:${GPUS_PER_NODE}:node:PE=${THREADS}" --bind-to core
          -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x NCCL_DEBUG)
[ -n "${HOSTS:-}" ] && launcher+=(--host "$HOSTS")
[ -n "${HOSTFILE:-}" ] && launcher+=(--hostfile "$HOSTFILE")
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# shellcheck disable=SC2206  # MPIRUN_ARGS is a word list by design
[ -n "${MPIRUN_ARGS:-}" ] && launcher+=(${MPIRUN_ARGS})

cmd=("${launcher[@]}" "$METATRAIN" device=cuda dist.backend=nccl threads="$THREADS"
     meta_batch="$META_BATCH" checkpoint.dir="$CKPT_DIR" resume="$resume" "$@")
echo "+ ${cmd[*]}" >&2
[ "${DRY_RUN:-0}" = 1 ] && exit 0

# Graceful stop as in train_cpu.sh: the signal goes to the local ranks, not to mpirun (which
# would kill them mid-step); any rank's stop stops all after the same step, with a checkpoint.
set -m
"${cmd[@]}" &
launcher_pid=$!
set +m
stops=0
# shellcheck disable=SC2317  # called by the trap
stop_ranks() {
  stops=$((stops + 1))
  if [ "$stops" -gt 1 ]; then
    kill -TERM "$launcher_pid" 2>/dev/null || true
    return
  fi
  echo "train_gpu.sh: stopping after the current step (rank 0 writes a checkpoint)" >&2
  for rank_pid in $(pgrep -P "$launcher_pid" || true); do kill -TERM "$rank_pid" 2>/dev/null || true; done
}
trap stop_ranks TERM INT
rc=0
wait "$launcher_pid" || rc=$?
while kill -0 "$launcher_pid" 2>/dev/null; do
  rc=0
  wait "$launcher_pid" || rc=$?
done
exit "$rc"
