#!/usr/bin/env bash
# multinode_test.sh BIN_DIR [case...]: metatrain under mpirun across 2-4 "hosts" (network
# namespaces on one machine, tests/dist/netns_hosts.sh): starts, same bits on any host layout,
# elastic resume, a killed host, a cut link, a bad host name. Exit 0 iff all pass, 77 = skipped.
#
# Cases: starts bits elastic kill link badhost (default: all). Needs root, `ip netns`, mpirun,
# and BIN_DIR's metatrain, metaeval, ckpt_state (checkpoint comparison) and mpi_probe (starts).
# MT_KEEP=1 keeps the work folder (${TMPDIR:-/tmp}/mt-multinode, removed by the next run);
# MT_LONG_STEPS sets the steps of the kill/link runs; MT_NETNS_* see netns_hosts.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/dist/netns_hosts.sh
source "$HERE/netns_hosts.sh"

usage() { sed -n '2,9p' "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
for p in metatrain metaeval ckpt_state mpi_probe; do
  [ -x "$1/$p" ] || { echo "no $p in $1 (build first)" >&2; exit 2; }
done
BIN=$(cd "$1" && pwd)
shift
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(starts bits elastic kill link badhost)
for c in "${CASES[@]}"; do
  case "$c" in starts | bits | elastic | kill | link | badhost) ;; *) usage ;; esac
done

# The small job of tests/launch/distributed_test.cpp: adaptive UFOM (q_min 0.5: exact tasks
# occur), the exact reduction, one thread per rank.
SMALL=(model.filters=8 meta_batch=8 task.queries=2 eval.episodes=4 threads=1 log.every=1
  dist.check_every=1 algo=ufom ufom.q=adaptive ufom.q_min=0.5 dist.reduce=exact)
# The kill/link runs: ~10 s on two hosts unless stopped, a checkpoint every 10 steps.
LONG=(model.filters=8 meta_batch=8 task.queries=2 eval.episodes=4 threads=1 log.every=10
  algo=ufom ufom.q=adaptive ufom.q_min=0.5 dist.reduce=exact eval.every=0 checkpoint.every=10
  "steps=${MT_LONG_STEPS:-300}")
JOB_LIMIT=300   # a safety net: no single command of a case runs longer
LOSS_LIMIT=60   # a lost host or link must end the job within this many seconds
HANG_LIMIT=90   # ... and after this many the job counts as hung and is killed

WORK=""
CASE_PID=""
JOBS=()          # background commands of the running case (timeout wrappers)
MPIRUN_OPTS=()   # extra mpirun options of the next start_mpi

# --- setup and cleanup -----------------------------------------------------------------------

# Ends the running case (its commands get SIGTERM, which timeout passes on), then removes every
# process, namespace and file of the harness.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$CASE_PID" ] && kill -0 "$CASE_PID" 2>/dev/null; then
    kill -TERM "$CASE_PID" 2>/dev/null || true
    timeout 10 tail --pid="$CASE_PID" -f /dev/null || kill -9 "$CASE_PID" 2>/dev/null || true
  fi
  netns_down
  if [ -n "$WORK" ]; then
    if [ "${MT_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
  fi
  exit "$rc"
}

skip() { echo "SKIP: $*"; exit 77; }

setup() {
  local why
  why=$(netns_available) || skip "multinode tests: $why"
  netns_lock  # first: the cleanup below removes the hosts of whoever holds the lock
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  WORK="${TMPDIR:-/tmp}/mt-multinode"  # a fixed name (under the lock): a rerun removes it
  netns_down  # the leftovers of a killed run
  rm -rf "$WORK"
  mkdir -p "$WORK"
}

now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }

# --- running commands (all in the background, so that a signal ends the case at once) --------

# spawn LOG CMD...: CMD in the background (bounded by $JOB_LIMIT, without the lock's fd 9);
# sets JOB.
spawn() {
  local log=$1
  shift
  timeout -s KILL $JOB_LIMIT "$@" >"$log" 2>&1 9>&- &
  JOB=$!
  JOBS+=("$JOB")
}

# wait_end PID LIMIT: waits until PID has ended or LIMIT seconds have passed; sets WAITED (s)
# and RC (mpirun's status, or "hung").
wait_end() {
  local pid=$1 limit=$2 t
  t=$(now)
  while kill -0 "$pid" 2>/dev/null && ! at_least "$(since "$t")" "$limit"; do sleep 0.1; done
  WAITED=$(since "$t")
  if kill -0 "$pid" 2>/dev/null; then RC=hung; return 0; fi
  RC=0
  wait "$pid" 2>/dev/null || RC=$?
}

# run LOG CMD...: CMD to its end; returns its status.
run() {
  spawn "$@"
  wait_end "$JOB" $JOB_LIMIT
  [ "$RC" = 0 ]
}

# run_plain DIR ARGS...: one metatrain process, no mpirun (the reference).
run_plain() {
  local dir=$1
  shift
  run "$dir.log" env OMP_WAIT_POLICY=PASSIVE "$BIN/metatrain" "$@" "checkpoint.dir=$dir"
}

# start_mpi DIR HOSTS NP ARGS...: metatrain under mpirun from mt-h1 over HOSTS ("mt-h1:2 mt-h2":
# 2 slots on mt-h1, 1 on mt-h2; ranks fill them in that order) in the background, output in
# DIR.log; sets JOB.
start_mpi() {
  local dir=$1 hosts=$2 np=$3 hostfile=$1.hosts
  shift 3
  # shellcheck disable=SC2086
  netns_hostfile "$hostfile" $hosts
  spawn "$dir.log" bash "$HERE/netns_hosts.sh" mpirun --hostfile "$hostfile" "${MPIRUN_OPTS[@]}" \
    -np "$np" "$BIN/metatrain" "$@" "checkpoint.dir=$dir"
}

# run_mpi DIR HOSTS NP ARGS...: start_mpi and wait; returns mpirun's status.
run_mpi() {
  start_mpi "$@"
  wait_end "$JOB" $JOB_LIMIT
  [ "$RC" = 0 ]
}

# --- checkpoints -----------------------------------------------------------------------------

# state CKPT: the training state of a checkpoint as text (params, optimizer, run state).
state() { "$BIN/ckpt_state" "$1"; }
step_of() { "$BIN/ckpt_state" "$1" --step 2>/dev/null || echo -1; }

# same_state DIR REF: DIR/latest.h5 has the training state of REF/latest.h5, bit for bit.
same_state() {
  state "$1/latest.h5" >"$1.state" && state "$2/latest.h5" >"$2.state" &&
    cmp -s "$1.state" "$2.state"
}

# The metrics log without timings and the rank count (as tests/launch/reproducible_test.cpp).
metrics() {
  sed -E 's/, "(sec|tasks_per_s|elapsed|train_elapsed|ranks)": [^,}]*//g' "$1/metrics.jsonl"
}

# reference NAME ARGS...: sets REF to the uninterrupted one-process run NAME (run once per
# script run).
reference() {
  REF="$WORK/ref-$1"
  shift
  [ -f "$REF/latest.h5" ] || run_plain "$REF" "$@" || { quote "$REF.log" . 20; return 1; }
}

# wait_step DIR STEP LIMIT: waits until DIR/latest.h5 is at STEP or later while JOB runs.
wait_step() {
  local t
  t=$(now)
  while [ "$(step_of "$1/latest.h5")" -lt "$2" ]; do
    kill -0 "$JOB" 2>/dev/null && ! at_least "$(since "$t")" "$3" || return 1
    sleep 0.2
  done
}

# --- checks ----------------------------------------------------------------------------------

FAILED=0
fail() { echo "  FAILED CHECK: $*"; FAILED=1; }
check() {  # check WHAT CMD...
  local what=$1
  shift
  "$@" || fail "$what"
}
# expect_in LOG REGEX WHAT
expect_in() { grep -Eq "$2" "$1" || fail "$3: no /$2/ in $(basename "$1")"; }
quote() { grep -E "$2" "$1" | head -"${3:-8}" | sed 's/^/  | /' || true; }

# --- cases -----------------------------------------------------------------------------------

# 10 starts in a row of a 4-host job: every rank on its own host, every time. (With one shared
# /tmp and hostname for all hosts, 2 of 10 starts failed: orted crashed in
# hwloc_shmem_topology_write, or a session directory was missing or already there.)
case_starts() {
  netns_up 4
  local i t ok=0 log
  t=$(now)
  for i in $(seq 1 10); do
    log="$WORK/start$i.log"
    if run "$log" bash "$HERE/netns_hosts.sh" mpirun -np 4 "$BIN/mpi_probe" hello &&
      [ "$(grep -Ec '^rank [0-3] of 4 on mt-h[1-4]: sum 6$' "$log")" = 4 ] &&
      [ "$(grep -Eo 'on mt-h[1-4]' "$log" | sort -u | wc -l)" = 4 ]; then
      ok=$((ok + 1))
    else
      fail "start $i ($RC): $(grep -Eim1 'fault|error|unable|fail' "$log" || echo "see $log")"
    fi
  done
  echo "  $ok of 10 starts ran ranks 0-3 on mt-h1..mt-h4 ($(since "$t") s in all)"
}

# 12 steps of adaptive UFOM: one process, 1 host x 2 ranks, 2 x 1, 4 x 1, 2 x 2 give the same
# bits (training state and metrics log but timings); mpirun's map shows the hosts used.
case_bits() {
  netns_up 4
  local layout hosts np dir t nodes
  reference small12 "${SMALL[@]}" steps=12 || { fail "one-process run: status $RC"; return 0; }
  MPIRUN_OPTS=(--display-map)
  for layout in "1x2:mt-h1:2" "2x1:mt-h1 mt-h2" "4x1:mt-h1 mt-h2 mt-h3 mt-h4" \
    "2x2:mt-h1:2 mt-h2:2"; do
    hosts=${layout#*:}
    np=$((${layout:0:1} * ${layout:2:1}))
    dir="$WORK/bits${layout%%:*}"
    t=$(now)
    if ! run_mpi "$dir" "$hosts" "$np" "${SMALL[@]}" steps=12; then
      fail "${layout%%:*}: mpirun status $RC"; quote "$dir.log" . 20; continue
    fi
    nodes=$(grep -Eo 'Data for node: mt-h[1-4]' "$dir.log" | sort -u | wc -l)
    [ "$nodes" = "${layout:0:1}" ] || fail "${layout%%:*}: mpirun mapped to $nodes hosts"
    check "${layout%%:*}: final training state differs from the one-process run" \
      same_state "$dir" "$REF"
    check "${layout%%:*}: metrics log differs from the one-process run" \
      cmp -s <(metrics "$dir") <(metrics "$REF")
    echo "  ${layout%%:*} (hosts x ranks): $(since "$t") s, state $(md5sum <"$dir.state" | cut -c1-12)"
  done
  MPIRUN_OPTS=()
  expect_in "$REF/metrics.jsonl" '"exact_tasks": [1-9]' "no exact UFOM task in 12 steps"
  echo "  one process: state $(md5sum <"$REF.state" | cut -c1-12)"
}

# 6 steps on 4 hosts, then resumed to 12 on 2 hosts = the straight 12-step run.
case_elastic() {
  netns_up 4
  local dir="$WORK/elastic"
  reference small12 "${SMALL[@]}" steps=12 || { fail "one-process run: status $RC"; return 0; }
  run_mpi "$dir" "mt-h1 mt-h2 mt-h3 mt-h4" 4 "${SMALL[@]}" steps=6 ||
    { fail "6 steps on 4 hosts: status $RC"; quote "$dir.log" . 20; return 0; }
  cp "$dir.log" "$dir.first.log"
  run_mpi "$dir" "mt-h1 mt-h2" 2 "${SMALL[@]}" steps=12 resume=latest ||
    { fail "resume on 2 hosts: status $RC"; quote "$dir.log" . 20; return 0; }
  expect_in "$dir.log" "at step 6 \(saved by 4 ranks, now 2\)" "resume message"
  quote "$dir.log" "resuming from" 1
  check "resumed run differs from the straight 12-step run" same_state "$dir" "$REF"
}

# lose_host CASE HOW: a 2-host run with checkpoints every 10 steps loses mt-h2 (HOW = kill: every
# process in its namespace gets SIGKILL; link: its switch port goes down) after step 30. The job
# must end within $LOSS_LIMIT s with a non-zero status naming the host and rank; the latest
# checkpoint is intact, and resumed on mt-h1 alone (2 ranks) it ends with the bits of the
# uninterrupted run.
lose_host() {
  local how=$2 dir="$WORK/$1" t pids left
  netns_up 2
  start_mpi "$dir" "mt-h1 mt-h2" 2 "${LONG[@]}" dist.timeout=15
  if ! wait_step "$dir" 30 60; then
    fail "no checkpoint at step 30 within 60 s"; quote "$dir.log" . 20; return 0
  fi
  case "$how" in
    kill) pids=$(netns_kill_host mt-h2); echo "  kill -9 of mt-h2's processes: $pids" ;;
    link) netns_link mt-h2 down; echo "  mt-h2's switch port (mt-h2-p in mt-sw) is down" ;;
  esac
  echo "  at step $(step_of "$dir/latest.h5") (latest checkpoint)"
  wait_end "$JOB" $HANG_LIMIT
  if [ "$RC" = hung ]; then
    fail "the job still ran $WAITED s after losing mt-h2; killed"
    netns_kill_host mt-h1 >/dev/null
    wait_end "$JOB" 10
  else
    echo "  the job ended $WAITED s after losing mt-h2, status $RC"
    at_least "$LOSS_LIMIT" "$WAITED" || fail "the job ended after more than $LOSS_LIMIT s"
    [ "$RC" != 0 ] || fail "the job exited with status 0"
  fi
  cp "$dir.log" "$dir.lost.log"  # the resume below writes $dir.log
  quote "$dir.lost.log" "mt-h2|rank [0-9]|[Ll]ost|[Ee]rror|abort|timed out|[Pp]eer" 16
  # mpirun names the host it lost; metatrain's start-up line, which ranks that host held.
  expect_in "$dir.lost.log" "(node|[Hh]ost:?|connection to) mt-h2" \
    "the launcher's message names the lost host"
  expect_in "$dir.lost.log" "^hosts: mt-h1 \(rank 0\), mt-h2 \(rank 1\)$" \
    "the start-up line names the lost host's rank"
  if [ "$how" = link ]; then
    pids=$(netns_pids mt-h2 | paste -sd, -)
    left=$([ -z "$pids" ] || ps -o comm= -p "$pids" | sort | uniq -c | xargs)
    echo "  still on mt-h2 after the job ended: ${left:-nothing}"
    netns_link mt-h2 up
  fi
  netns_kill_host mt-h2 >/dev/null

  run "$dir.eval.log" "$BIN/metaeval" "$dir/latest.h5" eval.episodes=2 threads=1 ||
    fail "metaeval of the latest checkpoint: status $RC: $(tail -2 "$dir.eval.log")"
  state "$dir/latest.h5" >/dev/null || fail "the latest checkpoint does not read back"
  echo "  latest checkpoint: step $(step_of "$dir/latest.h5"), metaeval status $RC"

  t=$(now)
  run_mpi "$dir" "mt-h1:2" 2 "${LONG[@]}" dist.timeout=15 resume=latest ||
    { fail "resume on mt-h1: status $RC"; quote "$dir.log" . 20; return 0; }
  echo "  resumed on mt-h1 (2 ranks) to the end: $(since "$t") s"
  t=$(now)
  if [ -f "$WORK/ref-long/latest.h5" ]; then t=""; fi  # made by the other case
  reference long "${LONG[@]}" dist.timeout=15 || { fail "uninterrupted run: $RC"; return 0; }
  if [ -n "$t" ]; then t="$(since "$t") s"; else t="made by the other case"; fi
  echo "  uninterrupted one-process run: $t"
  check "the resumed run differs from the uninterrupted run" same_state "$dir" "$REF"
}

case_kill() { lose_host kill kill; }
case_link() { lose_host link link; }

# A hostfile naming a host that does not exist: the job ends within $LOSS_LIMIT s, non-zero,
# naming the host.
case_badhost() {
  netns_up 2
  local dir="$WORK/badhost"
  start_mpi "$dir" "mt-h1 mt-nohost" 2 "${SMALL[@]}" steps=12
  wait_end "$JOB" $HANG_LIMIT
  echo "  the job ended $WAITED s after its start, status $RC"
  quote "$dir.log" "mt-nohost|ORTE|unable" 6
  [ "$RC" != hung ] || { fail "the job still ran after $HANG_LIMIT s"; return 0; }
  at_least "$LOSS_LIMIT" "$WAITED" || fail "the job ended after more than $LOSS_LIMIT s"
  [ "$RC" != 0 ] || fail "the job exited with status 0"
  expect_in "$dir.log" "mt-nohost" "the output names the host"
}

# --- main ------------------------------------------------------------------------------------

# run_case NAME: the case in a background subshell (a signal to this script ends it at once:
# its commands get SIGTERM); prints PASS/FAIL with the seconds; removes the hosts after it.
run_case() {
  local name=$1 t rc=0
  t=$(now)
  echo "== $name"
  (
    trap 'kill -TERM "${JOBS[@]}" 2>/dev/null; exit 143' TERM
    set -E
    trap 'echo "  stopped by an error at line $LINENO: $BASH_COMMAND"' ERR
    "case_$name"
    exit $FAILED
  ) &
  CASE_PID=$!
  wait "$CASE_PID" || rc=$?
  CASE_PID=""
  netns_down
  if [ "$rc" = 0 ]; then echo "PASS $name ($(since "$t") s)"; else echo "FAIL $name ($(since "$t") s)"; fi
  return "$rc"
}

setup
failures=0
for c in "${CASES[@]}"; do run_case "$c" || failures=$((failures + 1)); done
echo "$((${#CASES[@]} - failures)) of ${#CASES[@]} cases passed"
[ "$failures" = 0 ]
