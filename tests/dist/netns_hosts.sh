#!/usr/bin/env bash
# A small cluster on one machine: "hosts" mt-h1 .. mt-hN are network namespaces on a bridge
# (198.18.0.0/24), each with its own address, hostname and hosts file, and mpirun launches
# across them through an agent that enters the target namespace (no ssh). Needs root.
#
# As a command:  netns_hosts.sh up N | down | status | hostfile FILE HOST[:SLOTS]... |
#   mpirun [--hostfile FILE] ARGS... | exec HOST CMD... | link HOST up|down | kill HOST
# As a library (source it): netns_up, netns_down, netns_mpirun, netns_exec, netns_link,
# netns_kill_host, netns_hostfile, netns_pids. `up` removes the leftovers of an earlier
# (killed) run first; the names are fixed, so a sourcing script holds $MT_NETNS_LOCK (flock)
# from netns_lock until it exits.
set -euo pipefail

MT_NETNS_MAX=4                                     # hosts mt-h1 .. mt-h4
MT_NETNS_SWITCH=mt-sw                              # namespace holding the bridge
MT_NETNS_BRIDGE=mt-br0
MT_NETNS_NET=198.18.0                              # host i is $MT_NETNS_NET.i, the bridge .254
MT_NETNS_STATE=${MT_NETNS_STATE:-/run/mt-netns}    # hostfiles, agent, hosts table, per-host /tmp
MT_NETNS_LOCK=${MT_NETNS_LOCK:-/run/lock/mt-netns.lock}
MT_NETNS_LOCK_FD=9

# The launch settings (see netns_mpirun and the agent):
#  - plm_rsh_agent: our agent instead of ssh; mpirun itself runs on mt-h1, the head node;
#  - TCP between hosts on the bridge network only (a host has no other link but lo), shared
#    memory (vader) between the ranks of one host;
#  - every host has its own hostname (UTS namespace) and its own TMPDIR, so Open MPI's session
#    directories (ompi.<hostname>.<uid>/..., with hwloc's topology file hwloc.sm and PMIx's
#    files) and vader's /dev/shm segments (named after the hostname) are per host, as on a real
#    cluster. With one /tmp and one hostname for all, 2 or 3 of 10 starts failed: the orteds
#    wrote the same .../jf.<job family>/hwloc.sm, each mapped at its own address, and one crashed
#    in hwloc_shmem_topology_write; with rtc_hwloc_vmhole=none (no topology file) they still
#    raced on the session directory itself (mkdir "File exists" / "No such file").
#  - oob_tcp_keepalive_* (MT_NETNS_KEEPALIVE): a daemon behind a dead link (no FIN, no RST)
#    is declared lost after about 5 + 2*3 = 11 s instead of 300 + 20*9 = 480 s, and mpirun
#    ends the job ("ORTE has lost communication with a remote daemon ... on node mt-h2").
#    This only works while the connection is idle: once mpirun has sent something to that
#    daemon (the kill order after a rank's MPI_Abort), only TCP's retransmission limit
#    (net.ipv4.tcp_retries2, per namespace: MT_NETNS_TCP_RETRIES2) ends mpirun's wait for it:
#    measured 960 s after the abort at the default 15, 15 s at 5;
#  - mpi_yield_when_idle: ranks waiting in a collective yield the CPU (a shared small machine).
# shellcheck disable=SC2054  # tcp,vader,self is one value
MT_NETNS_MCA=(
  --mca btl tcp,vader,self
  --mca btl_tcp_if_include "$MT_NETNS_NET.0/24"
  --mca oob_tcp_if_include "$MT_NETNS_NET.0/24"
  --mca mpi_yield_when_idle 1
)
# "TIME INTERVAL PROBES" of the OOB keepalive, or "default" (Open MPI's 300 20 9).
MT_NETNS_KEEPALIVE=${MT_NETNS_KEEPALIVE:-5 2 3}
if [ "$MT_NETNS_KEEPALIVE" != default ]; then
  read -r _t _i _p <<<"$MT_NETNS_KEEPALIVE"
  MT_NETNS_MCA+=(--mca oob_tcp_keepalive_time "$_t" --mca oob_tcp_keepalive_intvl "$_i"
    --mca oob_tcp_keepalive_probes "$_p")
  unset _t _i _p
fi
MT_NETNS_TCP_RETRIES2=${MT_NETNS_TCP_RETRIES2:-}   # empty: the kernel's default (15)

netns_die() { echo "netns_hosts: $*" >&2; exit 1; }
netns_name() { echo "mt-h$1"; }
netns_exists() { [ -e "/run/netns/$1" ]; }

# Takes the lock on the fixed names for the rest of this shell's life (waits up to 10 minutes
# for another run). Commands launched through this library do not inherit the lock's fd.
netns_lock() {
  mkdir -p "$(dirname "$MT_NETNS_LOCK")"
  eval "exec $MT_NETNS_LOCK_FD>>\"\$MT_NETNS_LOCK\""
  flock -w 600 "$MT_NETNS_LOCK_FD" || netns_die "another run holds $MT_NETNS_LOCK"
}

# Checks that this machine can run the harness; prints why not and returns 1 otherwise.
netns_available() {
  if [ "$(id -u)" -ne 0 ]; then echo "needs root (network namespaces)"; return 1; fi
  local tool
  for tool in ip unshare flock mpirun; do
    command -v "$tool" >/dev/null || { echo "$tool not found"; return 1; }
  done
  local probe=mt-probe$$
  if ! ip netns add "$probe" 2>/dev/null; then echo "ip netns add fails here"; return 1; fi
  ip netns del "$probe"
}

# PIDs of the processes in HOST's network namespace (HOST = mt-hI or mt-sw).
netns_pids() { netns_exists "$1" && ip netns pids "$1" 2>/dev/null || true; }

# Removes everything `up` creates, also the leftovers of a killed run: processes still in the
# namespaces (orted, ranks: started by an earlier run of this harness), the namespaces (their
# veths and the bridge go with them), /etc/netns/<ns>, the state folder.
netns_down() {
  local i ns _
  for ns in $(for i in $(seq 1 $MT_NETNS_MAX); do netns_name "$i"; done) "$MT_NETNS_SWITCH"; do
    for _ in 1 2 3 4 5; do  # again if a dying daemon had just started a process
      [ -n "$(netns_kill_host "$ns")" ] || break
      sleep 0.2
    done
    if netns_exists "$ns"; then ip netns del "$ns" 2>/dev/null || true; fi
    rm -rf "/etc/netns/$ns"
  done
  rmdir /etc/netns 2>/dev/null || true   # only if empty: it may hold other namespaces' files
  rm -rf "$MT_NETNS_STATE"
}

# Creates hosts mt-h1 .. mt-hN: namespace, veth "eth0" with 198.18.0.i/24 whose peer mt-hI-p is
# a port of bridge mt-br0 (198.18.0.254/24) in namespace mt-sw, lo up, /etc/netns/mt-hI/hosts
# naming every host, a per-host TMPDIR; writes the agent and a default hostfile.
netns_up() {
  local n=${1:-2} i ns
  [[ "$n" =~ ^[1-9]$ ]] && [ "$n" -le $MT_NETNS_MAX ] || netns_die "up: 1 to $MT_NETNS_MAX hosts"
  netns_down
  mkdir -p "$MT_NETNS_STATE"
  ip netns add "$MT_NETNS_SWITCH"
  ip -n "$MT_NETNS_SWITCH" link set lo up
  ip -n "$MT_NETNS_SWITCH" link add "$MT_NETNS_BRIDGE" type bridge
  ip -n "$MT_NETNS_SWITCH" addr add "$MT_NETNS_NET.254/24" dev "$MT_NETNS_BRIDGE"
  ip -n "$MT_NETNS_SWITCH" link set "$MT_NETNS_BRIDGE" up
  {
    echo "127.0.0.1 localhost"
    for i in $(seq 1 "$n"); do echo "$MT_NETNS_NET.$i $(netns_name "$i")"; done
  } >"$MT_NETNS_STATE/hosts"
  for i in $(seq 1 "$n"); do
    ns=$(netns_name "$i")
    ip netns add "$ns"
    ip -n "$MT_NETNS_SWITCH" link add "$ns-p" type veth peer name eth0 netns "$ns"
    ip -n "$MT_NETNS_SWITCH" link set "$ns-p" master "$MT_NETNS_BRIDGE" up
    ip -n "$ns" addr add "$MT_NETNS_NET.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    if [ -n "$MT_NETNS_TCP_RETRIES2" ]; then
      ip netns exec "$ns" sysctl -q -w "net.ipv4.tcp_retries2=$MT_NETNS_TCP_RETRIES2"
    fi
    mkdir -p "/etc/netns/$ns" "$MT_NETNS_STATE/tmp/$ns"
    cp "$MT_NETNS_STATE/hosts" "/etc/netns/$ns/hosts"
  done
  netns_write_agent
  # shellcheck disable=SC2046  # one word per host
  netns_hostfile "$MT_NETNS_STATE/hostfile" $(for i in $(seq 1 "$n"); do netns_name "$i"; done)
}

# The plm_rsh agent: `agent.sh [-opts] HOST COMMAND...` runs COMMAND (one shell line, as ssh
# would) as HOST: in its namespace, with its hostname and TMPDIR. Like ssh, the agent itself
# stays on the calling host (mpirun waits for it), passes on TERM/INT/HUP, and names HOST when
# HOST's side dies (ssh: "Connection to HOST closed by remote host."); exit 255 then, and when
# there is no such host (ssh's status when it cannot connect).
netns_write_agent() {
  cat >"$MT_NETNS_STATE/agent.sh" <<EOF
#!/bin/sh
# Open MPI plm_rsh agent for the netns hosts (written by tests/dist/netns_hosts.sh).
while [ \$# -gt 0 ]; do case "\$1" in -*) shift ;; *) break ;; esac; done
host=\$1; shift
ns=\$(awk -v h="\$host" '\$1 == h || \$2 == h { print \$2; exit }' "$MT_NETNS_STATE/hosts")
if [ -z "\$ns" ] || [ ! -e "/run/netns/\$ns" ]; then
  echo "netns agent: \$host: no such host" >&2
  exit 255
fi
ip netns exec "\$ns" unshare --uts /bin/sh -c \\
  'hostname "\$1" && TMPDIR="$MT_NETNS_STATE/tmp/\$1" && export TMPDIR && exec /bin/sh -c "\$2"' \\
  agent "\$ns" "\$*" &
pid=\$!
trap 'kill -TERM \$pid 2>/dev/null' TERM INT HUP
while :; do
  wait \$pid
  rc=\$?
  kill -0 \$pid 2>/dev/null || break  # else a signal ended the wait, not the command
done
if [ \$rc -gt 128 ]; then
  echo "netns agent: connection to \$host closed: the command there died of signal \$((rc - 128))" >&2
  exit 255
fi
exit \$rc
EOF
  chmod +x "$MT_NETNS_STATE/agent.sh"
}

# netns_hostfile FILE HOST[:SLOTS] ...: an Open MPI hostfile (default 1 slot per host).
netns_hostfile() {
  local file=$1 spec
  shift
  : >"$file"
  for spec in "$@"; do
    echo "${spec%%:*} slots=$([[ "$spec" == *:* ]] && echo "${spec#*:}" || echo 1)" >>"$file"
  done
}

# netns_exec HOST CMD...: replaces this (sub)shell by CMD run as HOST (its namespace, hostname
# and TMPDIR), without the lock's fd.
netns_exec() {
  local host=$1
  shift
  netns_exists "$host" || netns_die "exec: no host $host"
  eval "exec $MT_NETNS_LOCK_FD>&-"
  exec ip netns exec "$host" unshare --uts /bin/sh -c \
    'hostname "$1" && TMPDIR="$2" && export TMPDIR && shift 2 && exec "$@"' \
    netns "$host" "$MT_NETNS_STATE/tmp/$host" "$@"
}

# netns_mpirun [--hostfile FILE] ARGS...: mpirun on the head node mt-h1 with the agent and
# MT_NETNS_MCA (default hostfile: every host, 1 slot each). Replaces the calling (sub)shell:
# call it as `(netns_mpirun ...)` or in the background.
netns_mpirun() {
  local hostfile="$MT_NETNS_STATE/hostfile"
  if [ "${1:-}" = --hostfile ]; then hostfile=$2; shift 2; fi
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=PASSIVE
  netns_exec "$(netns_name 1)" mpirun --hostfile "$hostfile" --oversubscribe \
    --mca plm_rsh_agent "$MT_NETNS_STATE/agent.sh" "${MT_NETNS_MCA[@]}" \
    -x OMP_WAIT_POLICY "$@"
}

# netns_link HOST up|down: HOST's switch port (its peer of eth0 in mt-sw): down = cable cut;
# nothing inside HOST changes, its packets are dropped silently.
netns_link() { ip -n "$MT_NETNS_SWITCH" link set "$1-p" "$2"; }

# netns_kill_host HOST: kill -9 every process in HOST's network namespace; prints their PIDs.
netns_kill_host() {
  local pids
  pids=$(netns_pids "$1")
  # shellcheck disable=SC2086
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
  echo "$pids" | paste -sd' ' -
}

netns_status() {
  ip netns list | grep -E "^(mt-h[0-9]|$MT_NETNS_SWITCH)( |$)" || echo "no mt namespaces"
  [ -d "$MT_NETNS_STATE" ] && echo "state: $MT_NETNS_STATE" || true
}

netns_main() {
  local cmd=${1:-}
  shift || true
  case "$cmd" in
    up) netns_lock; netns_up "$@" ;;
    down) netns_lock; netns_down ;;
    hostfile) netns_hostfile "$@" ;;
    mpirun) netns_mpirun "$@" ;;
    exec) netns_exec "$@" ;;
    link) netns_link "$@" ;;
    kill) netns_kill_host "$@" ;;
    status) netns_status ;;
    *) sed -n '2,11p' "$0" >&2; exit 2 ;;
  esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then netns_main "$@"; fi
