#!/usr/bin/env bash
# A throwaway Slurm cluster on this machine for tests/slurm: munged (own key and socket),
# slurmctld, and two slurmd "nodes" mt-s1, mt-s2, each in its own network and UTS namespace.
# Run `bash tests/slurm/slurm_cluster.sh [CMD...]` (CMD runs with SLURM_CONF set) or source it.

# Sourced, it defines slurm_cluster_start and slurm_cluster_stop. slurm_cluster_start (as root)
#   - removes what a killed earlier run left (daemons, namespaces, bridge, /tmp/mt-slurm.*);
#   - writes slurm.conf, gres.conf, cgroup.conf, a munge key into a fresh /tmp/mt-slurm.XXXXXX
#     ($SLURM_CLUSTER_DIR) and exports SLURM_CONF pointing at it (a system Slurm or munge is not
#     touched: own ports 16817/16818, own munge socket);
#   - starts munged, slurmctld and the slurmd(s) in the foreground (-F, -D) as background jobs of
#     the calling shell, and waits until sinfo shows every node idle.
# Nodes: SLURM_CLUSTER_NODES=2 (default) puts each slurmd in a network namespace (mt-s1, mt-s2:
# 198.18.1.11, .12 on the bridge mtsbr0, 198.18.1.1 = slurmctld) and a UTS namespace with its
# own hostname, so that a job's ranks run on two hosts as far as Slurm and MPI can tell; the
# file system is shared, like a cluster's shared file system. When namespaces cannot be made
# (no CAP_NET_ADMIN, a container), or with SLURM_CLUSTER_NODES=1, one node (this host's name,
# 127.0.0.1) with all CPUs. $SLURM_CLUSTER_NODE_NAMES lists the nodes, $SLURM_CLUSTER_MODE is
# netns or single. Each node: CPUs = nproc, 2 fake GPUs (gres gpu, files named nvidia0/1, so
# that Slurm sets CUDA_VISIBLE_DEVICES). Partitions: debug (default, low PriorityTier) and
# urgent (high PriorityTier; preempts debug jobs, PreemptMode=REQUEUE, GraceTime 60 s).
# slurm_cluster_stop cancels the jobs and tears everything down; the caller traps it on EXIT.
# One cluster at a time (flock on /tmp/mt-slurm.lock, kept; a second start waits up to
# SLURM_CLUSTER_LOCK_WAIT=600 s): the names are fixed so that leftovers can be found.

SLURM_CLUSTER_PREFIX=mt-s    # namespaces mt-s1, mt-s2, host ends of the veths mt-s1h, mt-s2h
SLURM_CLUSTER_BRIDGE=mtsbr0
SLURM_CLUSTER_NET=198.18.1   # .1 = slurmctld (bridge), .11, .12 = nodes
SLURM_CLUSTER_LOCK=/tmp/mt-slurm.lock
SLURM_CLUSTER_CTLD_PORT=16817
SLURM_CLUSTER_SLURMD_PORT=16818
SLURM_CLUSTER_DIR=""
SLURM_CLUSTER_MODE=""
SLURM_CLUSTER_NODE_NAMES=""
_sc_pids=()

_sc_log() { echo "slurm_cluster: $*" >&2; }

# Ids of this shell and its ancestors (never killed when matching markers).
_sc_ancestors() {
  local p=$BASHPID
  while [ -n "$p" ] && [ "$p" -gt 1 ]; do
    echo "$p"
    p=$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null)
  done
}

# Processes that belong to the cluster in $1: started with MT_SLURM_CLUSTER=$1 (the daemons,
# slurmstepd, which inherits slurmd's environment) or SLURM_CONF=$1/slurm.conf (job processes,
# client commands), except this shell and its ancestors.
_sc_marked_pids() {
  local dir=$1 p env_file mine
  mine=" $(_sc_ancestors | tr '\n' ' ') "
  for env_file in /proc/[0-9]*/environ; do
    p=${env_file#/proc/}
    p=${p%/environ}
    case "$mine" in *" $p "*) continue ;; esac
    if tr '\0' '\n' 2>/dev/null <"$env_file" |
      grep -qxF -e "MT_SLURM_CLUSTER=$dir" -e "SLURM_CONF=$dir/slurm.conf"; then
      echo "$p"
    fi
  done
}

# kill -TERM, up to 5 s, then -KILL: the given pids.
_sc_kill() {
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  local i
  for i in $(seq 50); do
    local alive=0 p
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
}

# Everything a cluster in $1 (or an earlier, killed one) may have left.
_sc_teardown() {
  local dir=$1 ns i pids
  for i in 1 2; do
    ns="$SLURM_CLUSTER_PREFIX$i"
    if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns"; then
      # shellcheck disable=SC2046
      _sc_kill $(ip netns pids "$ns" 2>/dev/null)
      ip netns del "$ns" 2>/dev/null || true
    fi
    ip link del "${ns}h" 2>/dev/null || true
  done
  ip link del "$SLURM_CLUSTER_BRIDGE" 2>/dev/null || true
  if [ -n "$dir" ]; then
    # shellcheck disable=SC2046
    pids=$(_sc_marked_pids "$dir")
    # shellcheck disable=SC2086
    _sc_kill $pids
    rm -rf "$dir"
  fi
}

_sc_clean_leftovers() {
  local d
  for d in /tmp/mt-slurm.*/; do
    [ -d "$d" ] || continue
    d=${d%/}
    _sc_log "removing leftovers of an earlier run: $d"
    _sc_teardown "$d"
  done
  _sc_teardown ""
}

# _sc_in_node NODE CMD...: CMD as node NODE: in its network namespace, with its own hostname
# (UTS namespace) and /etc/hosts (a mount namespace; everything else is this host's file
# system). Not `ip netns exec`: it remounts /sys, which hides /sys/fs/cgroup, and slurmd 22.05
# initialises its cgroup plugin whatever ProctrackType and TaskPlugin say.
_sc_in_node() {
  local node=$1
  shift
  # shellcheck disable=SC2016  # $0, $1, $@ are the inner shell's
  nsenter --net="/run/netns/$node" unshare --mount --uts \
    sh -c 'hostname "$0" && mount --bind "$1" /etc/hosts && shift && exec "$@"' \
    "$node" "$SLURM_CLUSTER_DIR/hosts" "$@"
}

# Two namespace nodes; returns non-zero (after undoing what it made) when that is impossible.
_sc_make_netns_steps() {
  local i ns
  ip link add "$SLURM_CLUSTER_BRIDGE" type bridge || return 1
  ip addr add "$SLURM_CLUSTER_NET.1/24" dev "$SLURM_CLUSTER_BRIDGE" || return 1
  ip link set "$SLURM_CLUSTER_BRIDGE" up || return 1
  for i in 1 2; do
    ns="$SLURM_CLUSTER_PREFIX$i"
    ip netns add "$ns" || return 1
    ip link add "${ns}h" type veth peer name eth0 netns "$ns" || return 1
    ip link set "${ns}h" master "$SLURM_CLUSTER_BRIDGE" up || return 1
    ip -n "$ns" addr add "$SLURM_CLUSTER_NET.1$i/24" dev eth0 || return 1
    ip -n "$ns" link set eth0 up || return 1
    ip -n "$ns" link set lo up || return 1
  done
  printf '127.0.0.1 localhost\n%s.1 %s\n%s.11 %s1\n%s.12 %s2\n' \
    "$SLURM_CLUSTER_NET" "$(hostname -s)" "$SLURM_CLUSTER_NET" "$SLURM_CLUSTER_PREFIX" \
    "$SLURM_CLUSTER_NET" "$SLURM_CLUSTER_PREFIX" >"$SLURM_CLUSTER_DIR/hosts" || return 1
  _sc_in_node "${SLURM_CLUSTER_PREFIX}1" true
}
_sc_make_netns() {
  if ! command -v ip >/dev/null || ! command -v nsenter >/dev/null; then
    _sc_log "no ip or nsenter: one node"
    return 1
  fi
  _sc_make_netns_steps 2>"$SLURM_CLUSTER_DIR/netns.err" && return 0
  _sc_log "network namespaces unavailable ($(tr '\n' ' ' <"$SLURM_CLUSTER_DIR/netns.err")): one node"
  _sc_teardown ""
  return 1
}

_sc_write_config() {
  local dir=$SLURM_CLUSTER_DIR ctl_host ctl_addr hw node
  # This machine's CPUs as slurmd sees them (CPUs=.. Boards=.. SocketsPerBoard=.. ...).
  hw=$(slurmd -C | head -n 1 | tr ' ' '\n' |
    grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')
  ctl_host=$(hostname -s)
  if [ "$SLURM_CLUSTER_MODE" = netns ]; then ctl_addr="$SLURM_CLUSTER_NET.1"; else ctl_addr=127.0.0.1; fi
  mkdir -p "$dir/ctld" "$dir/dev"
  # Fake GPUs: character devices like /dev/null, named as NVIDIA's so Slurm numbers them 0, 1.
  mknod "$dir/dev/nvidia0" c 1 3 2>/dev/null || : >"$dir/dev/nvidia0"
  mknod "$dir/dev/nvidia1" c 1 3 2>/dev/null || : >"$dir/dev/nvidia1"
  cat >"$dir/slurm.conf" <<EOF
# Written by tests/slurm/slurm_cluster.sh: a throwaway cluster; everything lives in $dir.
ClusterName=mttest
SlurmctldHost=$ctl_host($ctl_addr)
SlurmctldPort=$SLURM_CLUSTER_CTLD_PORT
SlurmdPort=$SLURM_CLUSTER_SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays a requeued job's next start (default 120 s).
AuthInfo=socket=$dir/munge/munge.socket.2,cred_expire=10
StateSaveLocation=$dir/ctld
SlurmctldPidFile=$dir/slurmctld.pid
SlurmctldLogFile=$dir/slurmctld.log
# debug2 logs each time-limit pass ("Testing job time limits", every 30 s): slurm_test.sh times
# its time-limit case by them.
SlurmctldDebug=debug2
SlurmdSpoolDir=$dir/%n/spool
SlurmdPidFile=$dir/%n/slurmd.pid
SlurmdLogFile=$dir/%n/slurmd.log
SlurmdDebug=info
# Per node: srun --mpi=pmix makes <TmpFS>/spmix_appdir_<uid>_<job>.<step> on every node, and
# the nodes share /tmp here.
TmpFS=$dir/%n/tmp
SlurmdParameters=config_overrides
PlugStackConfig=$dir/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SwitchType=switch/none
MpiDefault=pmix
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
InactiveLimit=0
KillWait=5
MinJobAge=600
# Start a requeued job as soon as its BeginTime (requeue + cred_expire + 1 s) has passed.
SchedulerParameters=sched_interval=2,bf_interval=2
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
GresTypes=gpu
EOF
  if [ "$SLURM_CLUSTER_MODE" = netns ]; then
    for node in 1 2; do
      echo "NodeName=$SLURM_CLUSTER_PREFIX$node NodeAddr=$SLURM_CLUSTER_NET.1$node ${hw}Gres=gpu:2 State=UNKNOWN" >>"$dir/slurm.conf"
    done
    SLURM_CLUSTER_NODE_NAMES="${SLURM_CLUSTER_PREFIX}1 ${SLURM_CLUSTER_PREFIX}2"
  else
    echo "NodeName=$ctl_host NodeAddr=127.0.0.1 ${hw}Gres=gpu:2 State=UNKNOWN" >>"$dir/slurm.conf"
    SLURM_CLUSTER_NODE_NAMES="$ctl_host"
  fi
  cat >>"$dir/slurm.conf" <<EOF
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=60
PartitionName=urgent Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=10
EOF
  cat >"$dir/gres.conf" <<EOF
AutoDetect=off
Name=gpu File=$dir/dev/nvidia[0-1]
EOF
  # No cgroups are used (proctrack/linuxproc, task/affinity); the file keeps slurmd from
  # reading a system one.
  cat >"$dir/cgroup.conf" <<EOF
CgroupPlugin=autodetect
ConstrainCores=no
ConstrainDevices=no
ConstrainRAMSpace=no
EOF
  : >"$dir/plugstack.conf"
}

# Runs "$@" in the background, marked as this cluster's, with its output in $log.
_sc_daemon() {
  local log=$1
  shift
  MT_SLURM_CLUSTER="$SLURM_CLUSTER_DIR" "$@" </dev/null >>"$log" 2>&1 9>&- &
  _sc_pids+=($!)
}

# _sc_wait SECONDS WHAT CMD...: polls CMD every 0.2 s; fails early when a daemon has died.
_sc_wait() {
  local seconds=$1 what=$2 i p
  shift 2
  for i in $(seq $((seconds * 5))); do
    "$@" >/dev/null 2>&1 && return 0
    for p in "${_sc_pids[@]}"; do
      kill -0 "$p" 2>/dev/null || { _sc_log "a daemon exited while waiting for $what"; return 1; }
    done
    sleep 0.2
  done
  _sc_log "timed out after ${seconds}s waiting for $what"
  return 1
}

_sc_nodes_idle() {
  local states
  states=$(sinfo -h -N -p debug -o '%T' 2>/dev/null) || return 1
  [ -n "$states" ] && ! echo "$states" | grep -qv '^idle$'
}

slurm_cluster_start() {
  if [ "$(id -u)" != 0 ]; then
    _sc_log "needs root (munged, slurmctld and slurmd run as root)"
    return 1
  fi
  local cmd
  for cmd in munged munge slurmctld slurmd sinfo srun sbatch scontrol scancel unshare flock; do
    command -v "$cmd" >/dev/null || { _sc_log "missing command: $cmd"; return 1; }
  done
  exec 9>>"$SLURM_CLUSTER_LOCK"
  if ! flock -n 9; then
    _sc_log "another cluster is running (lock $SLURM_CLUSTER_LOCK); waiting up to ${SLURM_CLUSTER_LOCK_WAIT:-600} s"
    flock -w "${SLURM_CLUSTER_LOCK_WAIT:-600}" 9 || { _sc_log "still locked"; return 1; }
  fi
  _sc_clean_leftovers
  SLURM_CLUSTER_DIR=$(mktemp -d /tmp/mt-slurm.XXXXXX)
  chmod 0755 "$SLURM_CLUSTER_DIR"  # jobs and their logs live here too
  SLURM_CLUSTER_MODE=single
  if [ "${SLURM_CLUSTER_NODES:-2}" = 2 ] && _sc_make_netns; then SLURM_CLUSTER_MODE=netns; fi
  _sc_write_config
  export SLURM_CONF="$SLURM_CLUSTER_DIR/slurm.conf"
  local dir=$SLURM_CLUSTER_DIR node i

  mkdir -m 0700 "$dir/munge"
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 0400 "$dir/munge/munge.key"
  _sc_daemon "$dir/munged.out" munged -F --force --socket="$dir/munge/munge.socket.2" \
    --key-file="$dir/munge/munge.key" --log-file="$dir/munge/munged.log" \
    --pid-file="$dir/munge/munged.pid" --seed-file="$dir/munge/munged.seed"
  _sc_wait 20 munged sh -c "munge -n -S '$dir/munge/munge.socket.2' | unmunge -S '$dir/munge/munge.socket.2'" ||
    { cat "$dir/munged.out" "$dir/munge/munged.log" >&2 2>/dev/null; return 1; }

  _sc_daemon "$dir/slurmctld.out" slurmctld -D -i -f "$SLURM_CONF"
  _sc_wait 30 slurmctld scontrol ping ||
    { tail -n 30 "$dir/slurmctld.out" "$dir/slurmctld.log" >&2; return 1; }

  if [ "$SLURM_CLUSTER_MODE" = netns ]; then
    for i in 1 2; do
      node="$SLURM_CLUSTER_PREFIX$i"
      mkdir -p "$dir/$node/spool" "$dir/$node/tmp"
      _sc_daemon "$dir/$node/slurmd.out" _sc_in_node "$node" slurmd -D -f "$SLURM_CONF"
    done
  else
    node=$(hostname -s)
    mkdir -p "$dir/$node/spool" "$dir/$node/tmp"
    _sc_daemon "$dir/$node/slurmd.out" slurmd -D -f "$SLURM_CONF"
  fi
  if ! _sc_wait 60 "the nodes to be idle" _sc_nodes_idle; then
    sinfo -N >&2 || true
    for node in $SLURM_CLUSTER_NODE_NAMES; do tail -n 20 "$dir/$node/slurmd.out" "$dir/$node/slurmd.log" >&2; done
    tail -n 20 "$dir/slurmctld.log" >&2
    return 1
  fi
  _sc_log "up ($SLURM_CLUSTER_MODE): nodes $SLURM_CLUSTER_NODE_NAMES, SLURM_CONF=$SLURM_CONF"
}

slurm_cluster_stop() {
  [ -n "$SLURM_CLUSTER_DIR" ] || return 0
  local dir=$SLURM_CLUSTER_DIR
  if [ -n "${SLURM_CLUSTER_KEEP:-}" ]; then
    mkdir -p "$SLURM_CLUSTER_KEEP" && { cp -r "$dir/." "$SLURM_CLUSTER_KEEP/" 2>/dev/null || true; }
  fi
  # Jobs first, so that slurmstepd and the tasks end by Slurm's own means.
  scancel --quiet --user=root 2>/dev/null || true
  _sc_kill "${_sc_pids[@]}"
  _sc_teardown "$dir"
  _sc_pids=()
  SLURM_CLUSTER_DIR=""
  unset SLURM_CONF
  flock -u 9 2>/dev/null || true
  exec 9>&-
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -u
  trap slurm_cluster_stop EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  slurm_cluster_start || exit 1
  if [ $# -gt 0 ]; then
    "$@" &  # in the background, so that a TERM ends it and the cluster at once
    cmd_pid=$!
    trap 'kill -TERM "$cmd_pid" 2>/dev/null; exit 143' TERM
    trap 'kill -INT "$cmd_pid" 2>/dev/null; exit 130' INT
    rc=0
    wait "$cmd_pid" || rc=$?
    exit "$rc"
  else
    echo "Cluster up; SLURM_CONF=$SLURM_CONF. Ctrl-D or exit ends it."
    bash -i
  fi
fi
