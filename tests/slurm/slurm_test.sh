#!/usr/bin/env bash
# Slurm tests (CTest label slurm): launch/slurm's batch scripts and srun on a real Slurm, a
# throwaway cluster of two slurmd nodes on this machine (slurm_cluster.sh; root, Debian's Slurm).
# Usage: bash tests/slurm/slurm_test.sh BUILD_DIR [case...]; exit 0: all passed, 77: cannot run.
#
# Cases (all by default):
#   srun       srun -N2 -n2 metatrain dist.backend=mpi: ranks on two hosts, the bits of mpirun -np 2
#   srun_auto  the same without dist.backend (README's `srun build/bin/metatrain ...`): 2 ranks
#   sbatch     sbatch train_cpu.sbatch, 2 nodes x 1 task: the bits of mpirun -np 2
#   preempt    a job in partition urgent preempts it (PreemptMode=REQUEUE, GraceTime): checkpoint,
#              requeue, resume; the final parameters equal the uninterrupted run's
#   timelimit  --time=2 --signal=B:USR1@115: the time-limit signal: checkpoint, requeue, resume,
#              equal to the uninterrupted run
#   usr1       scancel --batch --signal=USR1 (stop by hand, as at the time limit): the same
#   stepterm   scancel --signal=TERM (the steps only): checkpoint, the job ends without requeue;
#              a new job with CKPT_DIR=<its folder> continues it to the uninterrupted run's bits
#   gpu        train_gpu.sbatch with device=cpu dist.backend=mpi on 2 fake GPUs per node: every
#              rank sees all GPUs of its node, local ids 0,1, NCCL_DEBUG set, mpirun's bits; as
#              written (device=cuda) on a node without a real GPU: exit 2, no requeue
# Each job trains the small synthetic-data job of tests/launch/distributed_test.cpp on 2 ranks
# with 1 thread each. Training states are compared bit for bit (BUILD_DIR/bin/ckpt_state).
# Needs root. Without Slurm: in CI (CI=true) it installs Debian's packages with apt-get; elsewhere
# it exits 77 saying how to install them. SLURM_CLUSTER_NODES=1 forces the one-node cluster;
# SLURM_TEST_KEEP=1 keeps the work folder (jobs' output, cluster logs) also when all pass;
# SLURM_TEST_CPU=N runs the mpirun reference runs on CPU N only.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
all_cases=(srun srun_auto sbatch preempt timelimit usr1 stepterm gpu)

if [ $# -lt 1 ]; then
  echo "usage: $0 BUILD_DIR [case...]   cases: ${all_cases[*]}" >&2
  exit 2
fi
build="$(cd "$1" && pwd)" || exit 2
shift
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=("${all_cases[@]}")
for c in "${cases[@]}"; do
  case " ${all_cases[*]} " in *" $c "*) ;; *) echo "unknown case '$c' (cases: ${all_cases[*]})" >&2; exit 2 ;; esac
done
metatrain="$build/bin/metatrain"
[ -x "$metatrain" ] || { echo "no $metatrain: build first" >&2; exit 2; }

skip() { echo "SKIP: $*"; exit 77; }
in_ci() { [ -n "${CI:-}" ] && [ "${CI:-}" != false ] && [ "${CI:-}" != 0 ]; }

[ "$(id -u)" = 0 ] || skip "the Slurm tests run munged, slurmctld and slurmd as root; run them as root"
packages=(slurmctld slurmd slurm-client munge)
missing=()
for cmd in slurmctld slurmd sbatch srun scontrol scancel sinfo munged; do
  command -v "$cmd" >/dev/null || missing+=("$cmd")
done
if [ ${#missing[@]} -gt 0 ]; then
  if in_ci && command -v apt-get >/dev/null; then
    command -v ip >/dev/null || packages+=(iproute2)  # for the two namespace nodes
    echo "installing ${packages[*]} (missing: ${missing[*]})"
    t0=$(date +%s)
    if ! DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null ||
      ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}" >/dev/null; then
      echo "FAIL: apt-get install ${packages[*]}"
      exit 1
    fi
    echo "installed in $(($(date +%s) - t0)) s"
  else
    skip "Slurm is not installed (missing: ${missing[*]}); as root: apt-get install -y ${packages[*]}" \
      "(with CI=true this test installs them itself)"
  fi
fi
for cmd in mpirun; do
  command -v "$cmd" >/dev/null || { echo "FAIL: $cmd is missing (a build dependency)"; exit 1; }
done

# shellcheck source=tests/slurm/slurm_cluster.sh
. "$here/slurm_cluster.sh"

work=$(mktemp -d /tmp/mt-slurm-test.XXXXXX)
chmod 0755 "$work"
failed=()
finish() {
  trap - EXIT INT TERM
  if [ ${#failed[@]} -gt 0 ] || [ -n "${SLURM_TEST_KEEP:-}" ]; then
    SLURM_CLUSTER_KEEP="$work/cluster" slurm_cluster_stop
    : >"$work/KEPT"
    echo "work folder kept: $work (jobs' output; cluster logs in $work/cluster)"
  else
    slurm_cluster_stop
    rm -rf "$work"
  fi
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The rank wrapper, executable wherever the checkout's file modes went.
cp "$here/rank_env.sh" "$work/rank_env.sh" && chmod 0755 "$work/rank_env.sh"
slurm_cluster_start || { failed+=(cluster); echo "FAIL: the cluster did not start"; exit 1; }
# Holding the cluster's lock: work folders of killed runs (not those kept on purpose: KEPT) go.
for old in /tmp/mt-slurm-test.*; do
  [ -d "$old" ] && [ "$old" != "$work" ] && [ ! -e "$old/KEPT" ] && rm -rf "$old"
done
echo "Slurm $(sinfo --version | awk '{print $2}'), $SLURM_CLUSTER_MODE cluster: nodes $SLURM_CLUSTER_NODE_NAMES"
cpus_per_node=$(nproc)
nodes=2
[ "$SLURM_CLUSTER_MODE" = netns ] || nodes=1

# The job: tests/launch/distributed_test.cpp's, 2 ranks x 1 thread, meta_batch 4 in all.
job_args=(model.filters=8 task.queries=2 eval.episodes=4 log.every=1 dist.check_every=1)
mpi_env=(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1)
# Two tasks over the nodes: 2 nodes x 1 task, or 1 node x 2 tasks.
two_tasks=("--nodes=$nodes" "--ntasks-per-node=$((2 / nodes))" --cpus-per-task=1)

say() { echo "  $*"; }
bad() { say "$*"; return 1; }

# digest CHECKPOINT: a hash of its training state (parameters, optimizer, run state).
digest() {
  local out
  if [ -s "$1" ] && out=$("$build/bin/ckpt_state" "$1" 2>/dev/null | sha256sum); then
    echo "${out%% *}"
  else
    echo "unreadable:$1"
  fi
}

# ref STEPS: digest of the uninterrupted run, mpirun -np 2 (computed once per STEPS).
ref() {
  local steps=$1 dir="$work/ref-$1"
  if [ ! -s "$dir.sha" ]; then
    local pin=()
    [ -n "${SLURM_TEST_CPU:-}" ] && pin=(taskset -c "$SLURM_TEST_CPU")
    env "${mpi_env[@]}" "${pin[@]}" mpirun --oversubscribe --bind-to none -np 2 "$metatrain" \
      dist.backend=mpi threads=1 meta_batch=4 "${job_args[@]}" steps="$steps" \
      checkpoint.dir="$dir" >"$dir.out" 2>&1 || { say "mpirun -np 2 failed: $dir.out" >&2; return 1; }
    digest "$dir/latest.h5" >"$dir.sha"
  fi
  cat "$dir.sha"
}

# same_bits CHECKPOINT STEPS: its parameters equal the mpirun run's of STEPS steps.
same_bits() {
  local got want
  got=$(digest "$1")
  want=$(ref "$2") || return 1
  [ "$got" = "$want" ] || bad "parameters of $1 ($got) differ from mpirun -np 2, $2 steps ($want)"
}

field() {  # field JOBID NAME: the value of NAME in scontrol show job
  scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

# wait_done JOBID SECONDS: until the job has ended (state in $state).
wait_done() {
  local id=$1 t=$(($(date +%s) + $2))
  while [ "$(date +%s)" -lt "$t" ]; do
    state=$(field "$id" JobState)
    case "$state" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | BOOT_FAIL | DEADLINE | \
      OUT_OF_MEMORY | PREEMPTED) return 0 ;; esac
    sleep 0.5
  done
  bad "job $id not done after $2 s (state $state)"
}

# submit SCRIPT OUT_VAR SBATCH_OPTION... -- SCRIPT_ARG...: sbatch from $work (the submit folder:
# the job's output and its runs/ folder land there) with the rank wrapper and $submit_env in
# its environment; sets OUT_VAR=job id.
submit_env=()
submit() {
  local script=$1 var=$2 opts=() _sid
  shift 2
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift
  _sid=$(cd "$work" && env "${submit_env[@]}" META_BATCH=4 METATRAIN="$work/rank_env.sh" RANK_ENV_EXEC="$metatrain" \
    RANK_ENV_LOG="$work/ranks-$script.log" \
    sbatch --parsable "${opts[@]}" "$repo/launch/slurm/$script" "${job_args[@]}" "$@") ||
    { bad "sbatch $script failed"; return 1; }
  printf -v "$var" '%s' "${_sid%%;*}"
}

out_of() { echo "$work/slurm-$(field "$1" JobName)-$1.out"; }

# wait_training JOBID STEP SECONDS: until the job's output shows training step STEP.
wait_training() {
  local id=$1 step=$2 t=$(($(date +%s) + $3)) last
  while [ "$(date +%s)" -lt "$t" ]; do
    last=$(grep -o '^step [0-9]*/' "$(out_of "$id")" 2>/dev/null | tail -n 1 | tr -dc 0-9)
    [ -n "$last" ] && [ "$last" -ge "$step" ] && return 0
    sleep 0.2
  done
  bad "job $id: no training step $step within $3 s"
}

has() { grep -qF -- "$2" "$1" || bad "no '$2' in $1"; }

# The common end of the stop cases: job ID stopped once with a checkpoint, was requeued (one
# restart), resumed from that checkpoint and finished equal to the uninterrupted run.
check_requeued_run() {
  local id=$1 steps=$2 why=$3 out folder
  wait_done "$id" 120 || return 1
  out=$(out_of "$id")
  folder="$work/runs/$(field "$id" JobName)-$id"
  [ "$state" = COMPLETED ] || bad "job $id ended $state (exit $(field "$id" ExitCode))" || return 1
  [ "$(field "$id" Restarts)" = 1 ] || bad "job $id restarts: $(field "$id" Restarts), want 1" || return 1
  has "$out" "$why" && has "$out" "requeueing job $id to continue" &&
    has "$out" "restart 1: " && has "$out" "resume=latest" || return 1
  local at
  at=$(sed -n "s|^resuming from runs/[^ ]*/latest.h5 at step \([0-9]*\).*|\1|p" "$out")
  [ -n "$at" ] && [ "$at" -gt 0 ] && [ "$at" -lt "$steps" ] ||
    bad "job $id did not resume from a step in 1..$((steps - 1)) (got '$at')" || return 1
  has "$out" "all steps = $steps done" || return 1
  say "stopped at step $at, requeued, resumed, finished $steps steps"
  same_bits "$folder/latest.h5" "$steps"
}

case_srun() {
  : >"$work/ranks-srun.log"
  (cd "$work" && env RANK_ENV_LOG="$work/ranks-srun.log" RANK_ENV_EXEC="$metatrain" \
    srun "${two_tasks[@]}" --kill-on-bad-exit=1 "$work/rank_env.sh" dist.backend=mpi threads=1 \
    meta_batch=4 "${job_args[@]}" steps=20 checkpoint.dir="$work/srun20" >"$work/srun20.out" 2>&1) ||
    bad "srun exit $? (see $work/srun20.out)" || return 1
  local hosts
  hosts=$(sed -n 's/.* host=\([^ ]*\).*/\1/p' "$work/ranks-srun.log" | sort -u | tr '\n' ' ')
  say "ranks on: $hosts"
  [ "$(echo "$hosts" | wc -w)" = "$nodes" ] || bad "want $nodes hosts" || return 1
  has "$work/srun20.out" "mpi backend, 2 ranks" && same_bits "$work/srun20/latest.h5" 20
}

case_srun_auto() {
  local rc=0
  (cd "$work" && srun "${two_tasks[@]}" --kill-on-bad-exit=1 "$metatrain" threads=1 meta_batch=4 \
    "${job_args[@]}" steps=20 checkpoint.dir="$work/auto20" >"$work/auto20.out" 2>&1) || rc=$?
  local seen
  seen=$(grep -o '[a-z]* backend, [0-9]* ranks\?' "$work/auto20.out" | sort | uniq -c | tr -s ' ' |
    tr '\n' ';')
  grep -qF "mpi backend, 2 ranks" "$work/auto20.out" ||
    bad "dist.backend=auto did not see the 2 ranks srun started (srun exit $rc):$seen" || return 1
  [ "$rc" = 0 ] || bad "srun exit $rc (see $work/auto20.out)" || return 1
  same_bits "$work/auto20/latest.h5" 20
}

case_sbatch() {
  local id out
  submit train_cpu.sbatch id "${two_tasks[@]}" --time=5 -- steps=20 || return 1
  wait_done "$id" 90 || return 1
  out=$(out_of "$id")
  [ "$state" = COMPLETED ] || bad "job $id ended $state (exit $(field "$id" ExitCode)); $out" || return 1
  [ "$(field "$id" Restarts)" = 0 ] || bad "job $id was requeued" || return 1
  has "$out" "checkpoint.dir=runs/metatrain-cpu-$id resume=none" && has "$out" "mpi backend, 2 ranks" ||
    return 1
  say "ranks: $(sed -n 's/^rank=\([0-9]*\) host=\([^ ]*\).* cpus=\(.*\)/\1@\2(cpu \3)/p' \
    "$work/ranks-train_cpu.sbatch.log" | sort -n | tr '\n' ' ')"
  same_bits "$work/runs/metatrain-cpu-$id/latest.h5" 20
}

case_preempt() {
  local id uid steps=300
  ref $steps >/dev/null || return 1
  submit train_cpu.sbatch id "${two_tasks[@]}" --time=5 -- steps=$steps || return 1
  wait_training "$id" 10 60 || return 1
  # Every CPU of every node: only by preempting the training job (partition debug).
  uid=$(sbatch --parsable -p urgent --nodes="$nodes" --ntasks-per-node="$cpus_per_node" --time=1 \
    -o "$work/urgent-%j.out" --wrap "sleep 1") || bad "sbatch -p urgent failed" || return 1
  check_requeued_run "$id" $steps "preempted (SIGTERM to the ranks)" || return 1
  say "after the restart: $(scontrol show job "$id" | grep -o -e 'StartTime=[^ ]*' -e 'PreemptTime=[^ ]*' | tr '\n' ' ')"
  [ "$(field "$uid" JobState)" = COMPLETED ] || bad "the preempting job $uid: $(field "$uid" JobState)"
}

# Seconds (epoch, fractional) of slurmctld's next time-limit pass: every 30 s, logged at debug2.
next_timelimit_pass() {
  local log="$SLURM_CLUSTER_DIR/slurmctld.log" last t
  for t in $(seq 70); do
    last=$(grep -a 'Testing job time limits' "$log" | tail -n 1 | sed 's/^\[\([^]]*\)\].*/\1/')
    [ -n "$last" ] && break
    sleep 0.5
  done
  [ -n "$last" ] || { bad "no time-limit pass in $log (SlurmctldDebug=debug2?)"; return 1; }
  awk -v t="$(date -d "$last" +%s.%N)" 'BEGIN { printf "%.3f\n", t + 30 }'
}

case_timelimit() {
  local id steps=600 next now lead=8 ref_pid
  # The reference run meanwhile.
  ref $steps >/dev/null &
  ref_pid=$!
  # slurmctld sends --signal's signal at a time-limit pass (every 30 s) once the job is within
  # 115 s of its limit (2 min), i.e. at the first pass from 5 s into the job: submit 8 s before
  # a pass, so that it comes about 7 s into the job, while the 600 steps are being trained.
  next=$(next_timelimit_pass) || return 1
  now=$(date +%s.%N)
  sleep "$(awk -v n="$next" -v t="$now" -v l=$lead 'BEGIN { while (n - t < l + 1) n += 30; printf "%.3f\n", n - t - l }')"
  submit train_cpu.sbatch id "${two_tasks[@]}" --time=2 --signal=B:USR1@115 -- steps=$steps || return 1
  # Once requeued, give the job time: the restarted run must not get the signal again.
  local t=$(($(date +%s) + 90))
  until [ "$(field "$id" Restarts)" = 1 ] || [ "$(date +%s)" -gt "$t" ]; do
    case "$(field "$id" JobState)" in COMPLETED | FAILED | CANCELLED | TIMEOUT) break ;; esac
    sleep 0.3
  done
  scontrol update JobId="$id" TimeLimit=10 || bad "scontrol update JobId=$id TimeLimit=10 failed"
  wait "$ref_pid"
  check_requeued_run "$id" $steps "SIGUSR1 before the time limit"
}

case_usr1() {
  local id steps=300
  ref $steps >/dev/null || return 1
  submit train_cpu.sbatch id "${two_tasks[@]}" --time=5 -- steps=$steps || return 1
  wait_training "$id" 10 60 || return 1
  scancel --batch --signal=USR1 "$id" || bad "scancel --batch --signal=USR1 failed" || return 1
  check_requeued_run "$id" $steps "SIGUSR1 before the time limit"
}

case_stepterm() {
  local id id2 steps=300 out folder at
  ref $steps >/dev/null || return 1
  submit train_cpu.sbatch id "${two_tasks[@]}" --time=5 -- steps=$steps || return 1
  wait_training "$id" 10 60 || return 1
  scancel --signal=TERM "$id" || bad "scancel --signal=TERM failed" || return 1
  wait_done "$id" 60 || return 1
  out=$(out_of "$id")
  folder="runs/metatrain-cpu-$id"
  [ "$state" = COMPLETED ] && [ "$(field "$id" Restarts)" = 0 ] ||
    bad "job $id: $state, restarts $(field "$id" Restarts); want COMPLETED without requeue" || return 1
  at=$(sed -n 's/^stopped by signal after step \([0-9]*\) .*/\1/p' "$out")
  [ -n "$at" ] && [ -f "$work/$folder/latest.h5" ] || bad "job $id: no checkpoint at a stop" || return 1
  say "stopped at step $at with a checkpoint, not requeued; continuing with CKPT_DIR=$folder"
  submit_env=(CKPT_DIR="$folder")
  submit train_cpu.sbatch id2 "${two_tasks[@]}" --time=5 -- steps=$steps || return 1
  submit_env=()
  wait_done "$id2" 90 || return 1
  [ "$state" = COMPLETED ] || bad "job $id2 ended $state" || return 1
  has "$(out_of "$id2")" "resuming from $folder/latest.h5 at step $at" || return 1
  same_bits "$work/$folder/latest.h5" $steps
}

# gpu_ranks LOG: "rank@host:localid:gpus ..." sorted by rank.
gpu_ranks() {
  local re='^rank=\([0-9]*\) host=\([^ ]*\) localid=\([^ ]*\)'
  re+=' cuda_visible_devices=\([^ ]*\) nccl_debug=\([^ ]*\).*'
  sed -n "s/$re/\\1@\\2:local\\3:gpus\\4:nccl\\5/p" "$1" |
    sort -n | tr '\n' ' '
}

case_gpu() {
  local id log="$work/ranks-train_gpu.sbatch.log" got want
  # 1 node x 2 ranks: both see GPUs 0,1 (the node's), local ids 0 and 1 pick GPUs 0 and 1.
  : >"$log"
  submit train_gpu.sbatch id --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=2 \
    --time=5 -- device=cpu dist.backend=mpi steps=20 || return 1
  wait_done "$id" 90 || return 1
  [ "$state" = COMPLETED ] || bad "job $id ended $state (exit $(field "$id" ExitCode))" || return 1
  got=$(gpu_ranks "$log")
  say "1 node: $got"
  [[ "$got" =~ ^0@([^:]*):local0:gpus0,1:ncclWARN\ 1@([^:]*):local1:gpus0,1:ncclWARN\ $ ]] &&
    [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ] ||
    bad "want ranks 0 and 1 on one node, local ids 0 and 1, each seeing GPUs 0,1, NCCL_DEBUG=WARN" ||
    return 1
  same_bits "$work/runs/metatrain-gpu-$id/latest.h5" 20 || return 1
  if [ "$nodes" = 2 ]; then  # 2 nodes x 1 rank: local id 0 on each, each sees its node's GPUs
    : >"$log"
    submit train_gpu.sbatch id --nodes=2 --ntasks-per-node=1 --cpus-per-task=1 --gpus-per-node=2 \
      --time=5 -- device=cpu dist.backend=mpi steps=20 || return 1
    wait_done "$id" 90 || return 1
    [ "$state" = COMPLETED ] || bad "job $id ended $state" || return 1
    got=$(gpu_ranks "$log")
    say "2 nodes: $got"
    [[ "$got" =~ ^0@([^:]*):local0:gpus0,1:ncclWARN\ 1@([^:]*):local0:gpus0,1:ncclWARN\ $ ]] &&
      [ "${BASH_REMATCH[1]}" != "${BASH_REMATCH[2]}" ] ||
      bad "want one rank per node, local id 0, each seeing GPUs 0,1" || return 1
    same_bits "$work/runs/metatrain-gpu-$id/latest.h5" 20 || return 1
  fi
  # As written (device=cuda dist.backend=nccl) on a node without a GPU: a usage error, exit 2,
  # and the job is not requeued.
  submit train_gpu.sbatch id --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=2 \
    --time=5 -- steps=20 || return 1
  wait_done "$id" 90 || return 1
  got="$state $(field "$id" ExitCode) restarts $(field "$id" Restarts)"
  say "device=cuda without a GPU: $got; $(grep -m 1 '^metatrain: error:' "$(out_of "$id")" | head -c 160)..."
  [ "$got" = "FAILED 2:0 restarts 0" ] || bad "want FAILED 2:0 restarts 0" || return 1
  grep -q '^metatrain: error: device' "$(out_of "$id")" || bad "no error naming device" || return 1
  has "$(out_of "$id")" "metatrain failed (exit 2); not requeueing"
}

for c in "${cases[@]}"; do
  echo "== $c"
  t0=$(date +%s.%N)
  if "case_$c"; then result=PASS; else result=FAIL; failed+=("$c"); fi
  printf '%s %s (%s s)\n' "$result" "$c" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all ${#cases[@]} Slurm cases passed"
