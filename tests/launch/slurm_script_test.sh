#!/usr/bin/env bash
# The Slurm batch scripts' stop / requeue / checkpoint-folder logic, without Slurm: each script
# runs with faked SLURM_* variables and stubs for srun (a fake step that logs each signal it
# gets and, on SIGTERM, writes latest.h5 and exits 0, as metatrain does), scancel (logs the call
# and signals the step) and scontrol (logs the call). Checked, for train_cpu.sbatch and
# train_gpu.sbatch: the time-limit signal (SIGUSR1 to the batch shell alone) reaches the step
# exactly once and the job is requeued; a preemption (SIGTERM to the batch shell and the step at
# once) is not forwarded a second time and the job is requeued; a requeue of the same job id
# resumes from its folder, a new job id with the same name starts afresh, an array task gets
# its own folder; a failing step ends the job without requeueing.
# Usage: slurm_script_test.sh [scratch folder]
set -euo pipefail
src="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-$(mktemp -d)}"
rm -rf "$work" && mkdir -p "$work/bin" "$work/submit"
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

cat > "$work/bin/srun" <<'STUB'
#!/usr/bin/env bash
# Fake job step: records its arguments, then waits for signals like metatrain.
dir=; for a in "$@"; do case "$a" in checkpoint.dir=*) dir="${a#checkpoint.dir=}" ;; esac; done
echo "srun $*" >> "$FAKE_LOG"
[ "${FAKE_STEP_FAILS:-0}" = 1 ] && exit 3
stop=0
trap 'echo "step got TERM" >> "$FAKE_LOG"; stop=1' TERM
trap 'echo "step got USR1" >> "$FAKE_LOG"; stop=1' USR1
echo $$ > "$FAKE_STEP_PID"
while [ "$stop" = 0 ]; do sleep 0.05; done
sleep 0.3  # "the step in flight", during which a duplicate signal would arrive and be logged
mkdir -p "$dir" && echo ckpt > "$dir/latest.h5"
exit 0
STUB
cat > "$work/bin/scancel" <<'STUB'
#!/usr/bin/env bash
echo "scancel $*" >> "$FAKE_LOG"
case " $* " in *" --signal=TERM "*) kill -TERM "$(cat "$FAKE_STEP_PID")" ;; esac
STUB
cat > "$work/bin/scontrol" <<'STUB'
#!/usr/bin/env bash
echo "scontrol $*" >> "$FAKE_LOG"
STUB
chmod +x "$work/bin/"*

count() { grep -c -- "$1" "$FAKE_LOG" || true; }

# run_job SCRIPT SIGNAL(USR1 | TERM-both | none) [VAR=value ...]: one start of the batch script
# in $work/submit; sets rc.
run_job() {
  local script="$1" how="$2"; shift 2
  : > "$FAKE_LOG"; rm -f "$FAKE_STEP_PID"
  env PATH="$work/bin:$PATH" SLURM_SUBMIT_DIR="$work/submit" SLURM_NTASKS=2 \
    SLURM_CPUS_PER_TASK=1 SLURM_JOB_NAME=exp "$@" \
    bash "$src/launch/slurm/$script" model.filters=8 >> "$work/batch.out" 2>&1 &
  local batch=$!
  if [ "$how" != none ]; then
    for _ in $(seq 200); do [ -s "$FAKE_STEP_PID" ] && break; sleep 0.05; done
    [ -s "$FAKE_STEP_PID" ] || fail "$script: the step did not start"
    case "$how" in
      USR1) kill -USR1 "$batch" ;;
      TERM-both) kill -TERM "$batch"; kill -TERM "$(cat "$FAKE_STEP_PID")" ;;
    esac
  fi
  rc=0
  wait "$batch" || rc=$?
}

export FAKE_LOG="$work/calls.log" FAKE_STEP_PID="$work/step.pid"
for script in train_cpu.sbatch train_gpu.sbatch; do
  name="${script%.sbatch}"
  folder="$work/submit/runs/exp-101"

  # Time limit: SIGUSR1 to the batch shell only.
  run_job "$script" USR1 SLURM_JOB_ID=101
  [ "$rc" = 0 ] || fail "$name time limit: exit $rc"
  [ "$(count 'checkpoint.dir=runs/exp-101 resume=none')" = 1 ] || fail "$name: first start not in runs/exp-101 with resume=none"
  [ "$(count 'step got TERM')" = 1 ] || fail "$name time limit: the step got $(count 'step got') signals, want one TERM"
  [ "$(count 'scancel --signal=TERM 101')" = 1 ] || fail "$name time limit: scancel calls: $(count scancel)"
  [ "$(count 'scontrol requeue 101')" = 1 ] || fail "$name time limit: no requeue"
  [ -f "$folder/latest.h5" ] || fail "$name: no checkpoint in $folder"

  # The requeued job (same id) resumes from its folder; this time it is preempted: SIGTERM to
  # the batch shell and to the step at once. The script must not add a second signal.
  run_job "$script" TERM-both SLURM_JOB_ID=101 SLURM_RESTART_COUNT=1
  [ "$rc" = 0 ] || fail "$name preemption: exit $rc"
  [ "$(count 'checkpoint.dir=runs/exp-101 resume=latest')" = 1 ] || fail "$name: requeue did not resume from runs/exp-101"
  [ "$(count 'step got')" = 1 ] || fail "$name preemption: the step got $(count 'step got') signals, want one"
  [ "$(count scancel)" = 0 ] || fail "$name preemption: the trap forwarded the signal again"
  [ "$(count 'scontrol requeue 101')" = 1 ] || fail "$name preemption: no requeue"

  # A requeue of a job stopped before its first checkpoint (its folder holds no latest.h5)
  # starts afresh over its own earlier attempt's files.
  run_job "$script" USR1 SLURM_JOB_ID=106 SLURM_RESTART_COUNT=1
  [ "$(count 'checkpoint.dir=runs/exp-106 checkpoint.overwrite=true')" = 1 ] || fail "$name: a requeue without a checkpoint did not start afresh with checkpoint.overwrite=true"

  # A new submission with the same job name starts afresh in its own folder.
  run_job "$script" USR1 SLURM_JOB_ID=102
  [ "$(count 'checkpoint.dir=runs/exp-102 resume=none')" = 1 ] || fail "$name: job 102 did not start afresh in runs/exp-102"

  # An array task: its folder names the array job and the task.
  run_job "$script" USR1 SLURM_JOB_ID=203 SLURM_ARRAY_JOB_ID=200 SLURM_ARRAY_TASK_ID=3
  [ "$(count 'checkpoint.dir=runs/exp-200_3 resume=none')" = 1 ] || fail "$name: array task not in runs/exp-200_3"
  [ "$(count 'scontrol requeue 203')" = 1 ] || fail "$name array: no requeue of job 203"

  # An explicit CKPT_DIR is kept (continuing an earlier job's run on purpose).
  run_job "$script" USR1 SLURM_JOB_ID=104 CKPT_DIR=runs/exp-101
  [ "$(count 'checkpoint.dir=runs/exp-101 resume=latest')" = 1 ] || fail "$name: CKPT_DIR not honoured"

  # A failing step ends the job with its exit code, no requeue.
  run_job "$script" none SLURM_JOB_ID=105 FAKE_STEP_FAILS=1
  [ "$rc" = 3 ] || fail "$name failing step: exit $rc, want 3"
  [ "$(count scontrol)" = 0 ] || fail "$name failing step: requeued"

  rm -rf "$work/submit/runs"
done

if [ "$failures" -gt 0 ]; then
  echo "--- batch script output:" >&2; cat "$work/batch.out" >&2
  exit 1
fi
echo "slurm_script_test: all checks passed"
