#!/bin/sh
# A rank's view of its Slurm task for tests/slurm (METATRAIN=this script): appends host, rank,
# local id, GPUs, NCCL and thread settings and CPU binding to $RANK_ENV_LOG, then execs $RANK_ENV_EXEC.
cpus=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status)
echo "rank=${SLURM_PROCID:-?} host=$(hostname) localid=${SLURM_LOCALID:-?}" \
  "cuda_visible_devices=${CUDA_VISIBLE_DEVICES-unset} nccl_debug=${NCCL_DEBUG-unset}" \
  "omp_num_threads=${OMP_NUM_THREADS-unset} cpus_per_task=${SLURM_CPUS_PER_TASK-unset}" \
  "cpus=$cpus" >>"${RANK_ENV_LOG:?RANK_ENV_LOG is not set}"
exec "${RANK_ENV_EXEC:?RANK_ENV_EXEC is not set}" "$@"
