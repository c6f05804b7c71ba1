#!/usr/bin/env bash
# Multi-rank CPU meta-training with Open MPI's mpirun, on one host or several: N ranks of
# build/bin/metatrain, each with THREADS worker threads pinned to its own cores, sharing one
# global meta-batch. Extra arguments are metatrain overrides (key=value, --config FILE).
#
#   N=4 THREADS=2 TASKS_PER_RANK=8 bash launch/mpirun/train_cpu.sh algo=fomaml steps=1000
#   HOSTS=node1:8,node2:8 N=16 THREADS=4 CKPT_DIR=/shared/runs/exp1 bash launch/mpirun/train_cpu.sh
#   RESUME=latest bash launch/mpirun/train_cpu.sh ...     # continue from CKPT_DIR/latest.h5
#
# Environment (defaults in brackets):
#   N               ranks [2]
#   THREADS         CPU worker threads per rank, metatrain's threads= [1]
#   TASKS_PER_RANK  tasks per rank per step; meta_batch = N x TASKS_PER_RANK [4]
#   META_BATCH      global meta_batch; overrides TASKS_PER_RANK (keep it fixed across resumes
#                   with a different N so the run stays the same run) []
#   CKPT_DIR        checkpoint.dir: checkpoints, latest.h5, metrics.jsonl [runs/mpirun]
#   RESUME          none | latest | auto (latest if CKPT_DIR/latest.h5 exists) | PATH [none]
#   HOSTS           mpirun --host list, e.g. node1:8,node2:8 (slots = ranks per host) []
#   HOSTFILE        mpirun --hostfile, instead of HOSTS []
#   MAP_BY          mpirun --map-by [slot:PE=$THREADS: each rank gets THREADS cores]
#   BIND_TO         mpirun --bind-to: core | none (none on a shared or oversubscribed box) [core]
#   MPIRUN          the launcher [mpirun]; MPIRUN_ARGS: extra launcher arguments []
#   METATRAIN       the program [build/bin/metatrain]
#   DRY_RUN=1       print the command instead of running it
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

N="${N:-2}"
THREADS="${THREADS:-1}"
TASKS_PER_RANK="${TASKS_PER_RANK:-4}"
META_BATCH="${META_BATCH:-$((N * TASKS_PER_RANK))}"
CKPT_DIR="${CKPT_DIR:-runs/mpirun}"
# A checkpoint.dir=... argument wins over CKPT_DIR (metatrain takes the last value given).
for arg in "$@"; do
  case "$arg" in checkpoint.dir=*) CKPT_DIR="${arg#checkpoint.dir=}" ;; esac
done
RESUME="${RESUME:-none}"
MAP_BY="${MAP_BY:-slot:PE=$THREADS}"
BIND_TO="${BIND_TO:-core}"
MPIRUN="${MPIRUN:-mpirun}"
METATRAIN="${METATRAIN:-build/bin/metatrain}"

[ -x "$METATRAIN" ] || { echo "train_cpu.sh: $METATRAIN not found; build first: bash launch/setup/build.sh" >&2; exit 2; }

# resume=latest is an error (exit 2) when there is no checkpoint yet; "auto" asks only then.
case "$RESUME" in
  auto) if [ -f "$CKPT_DIR/latest.h5" ]; then resume=latest; else resume=none; fi ;;
  *) resume="$RESUME" ;;
esac

# OpenBLAS runs single-threaded inside each task (metatrain sets it too); the parallelism is
# THREADS tasks at a time per rank. Exported to every rank with -x.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

launcher=("$MPIRUN" -np "$N" --map-by "$MAP_BY" --bind-to "$BIND_TO"
          -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS)
[ -n "${HOSTS:-}" ] && launcher+=(--host "$HOSTS")
[ -n "${HOSTFILE:-}" ] && launcher+=(--hostfile "$HOSTFILE")
# Across hosts: a host whose network goes away (no FIN, no RST) is noticed by Open MPI's daemon
# keepalive, 300 s + 9 probes of 20 s by default; 30 s + 3 of 10 ends the job about a minute
# after the cut, before dist.timeout (300 s) makes a rank abort, after which mpirun 4.1.4 would
# wait ~16 minutes for the unreachable daemon (README, "Across nodes"; tests/dist/).
if [ -n "${HOSTS:-}${HOSTFILE:-}" ]; then
  launcher+=(--mca oob_tcp_keepalive_time 30 --mca oob_tcp_keepalive_intvl 10
             --mca oob_tcp_keepalive_probes 3)
fi
# Open MPI refuses to start as root unless told twice; containers often run as root.
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# shellcheck disable=SC2206  # MPIRUN_ARGS is a word list by design
[ -n "${MPIRUN_ARGS:-}" ] && launcher+=(${MPIRUN_ARGS})

cmd=("${launcher[@]}" "$METATRAIN" dist.backend=mpi threads="$THREADS" meta_batch="$META_BATCH"
     checkpoint.dir="$CKPT_DIR" resume="$resume" "$@")
echo "+ ${cmd[*]}" >&2
[ "${DRY_RUN:-0}" = 1 ] && exit 0

# Graceful stop: mpirun (Open MPI 4.1.4) answers SIGTERM/SIGINT by passing SIGTERM to the ranks,
# killing them about 2 s later and exiting 1, so a longer step plus checkpoint is lost. So mpirun
# runs in its own process group (a terminal's Ctrl-C reaches only this script) and the script
# hands the signal to the local ranks (the children of mpirun) instead, once: a stop seen by any
# one rank stops every rank after the same step, rank 0 writes a checkpoint and all exit 0. A
# second signal falls through to mpirun (hard stop; metatrain ignores a repeat within 5 s of the
# first, so the end comes from mpirun's kill).
set -m
"${cmd[@]}" &
launcher_pid=$!
set +m
stops=0
# shellcheck disable=SC2317  # called by the trap
stop_ranks() {
  stops=$((stops + 1))
  if [ "$stops" -gt 1 ]; then
    echo "train_cpu.sh: second signal: killing the job" >&2
    kill -TERM "$launcher_pid" 2>/dev/null || true
    return
  fi
  echo "train_cpu.sh: stopping after the current step (rank 0 writes a checkpoint)" >&2
  for rank_pid in $(pgrep -P "$launcher_pid" || true); do kill -TERM "$rank_pid" 2>/dev/null || true; done
}
trap stop_ranks TERM INT
rc=0
wait "$launcher_pid" || rc=$?
# wait returns early (status > 128) when a trapped signal arrives: keep waiting for mpirun.
while kill -0 "$launcher_pid" 2>/dev/null; do
  rc=0
  wait "$launcher_pid" || rc=$?
done
exit "$rc"
