#!/usr/bin/env bash
# A throw-away Slurm cluster on this machine, for tests: munged, slurmctld and N slurmd ("nodes" n1…nN, each in its
# own UTS namespace with its own hostname), all inside one PID namespace, so that stopping the cluster ends every
# process it ever started (daemons, job scripts, mpirun, ranks), whatever state they are in.
#
#   slurm-cluster.sh install                     install slurmctld slurmd slurm-client munge iproute2 when missing
#   slurm-cluster.sh start DIR [NODES] [CPUS]    start in DIR (created; default 4 nodes of 4 CPUs); prints DIR/env
#   slurm-cluster.sh stop DIR                    stop everything started in DIR
#
# Clients talk to it with SLURM_CONF=DIR/slurm.conf (DIR/env sets it). Ports are picked free at random on
# 127.0.0.1; munge uses its own key and socket under DIR, so the cluster touches nothing of the machine's own.
# The cluster also stops by itself when the process that started it (or --owner PID) exits, or after
# SLURM_CLUSTER_MAX_SECONDS (default 1800), so a killed test cannot leave daemons behind.
set -euo pipefail

packages=(slurmctld slurmd slurm-client munge iproute2)
die() { echo "slurm-cluster: $*" >&2; exit 1; }

install_packages() {
    local missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "needs root to install ${missing[*]} (apt-get)"
    echo "slurm-cluster: installing ${missing[*]}" >&2
    apt-get update -qq >&2
    # Debian starts no services here (no systemd); policy-rc.d keeps the packages' own start attempts quiet.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Runs "$@" in the background in its own session, with only stdin/stdout/stderr: no descriptor of the caller
# (e.g. the pipe a test runner watches to see this script end) stays open in a daemon that outlives the script.
detach() {
    local log=$1; shift
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
        done
        exec setsid "$@"
    ) </dev/null >>"$log" 2>&1 &
}

free_port_base() {
    # A base port b with b..b+NODES+1 all unused on this machine.
    local used base ok i
    used=$( (ss -Htan 2>/dev/null || true) | awk '{print $4}' | sed 's/.*://' | sort -u)
    for _ in $(seq 1 50); do
        base=$(( 20000 + RANDOM % 30000 ))
        ok=1
        for i in $(seq 0 $(( $1 + 1 ))); do
            if grep -qx "$(( base + i ))" <<<"$used"; then ok=0; break; fi
        done
        [ $ok -eq 1 ] && { echo "$base"; return; }
    done
    die "no free port range found"
}

start() {
    local dir=$1 nodes=${2:-4} cpus=${3:-4} owner=${SLURM_CLUSTER_OWNER:-$PPID}
    local max=${SLURM_CLUSTER_MAX_SECONDS:-1800}
    install_packages
    [ "$(id -u)" -eq 0 ] || die "must run as root (slurmd launches jobs as their user)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    chmod 755 "$dir"
    [ -e "$dir/cluster.pid" ] && die "$dir already holds a cluster (stop it first)"
    mkdir -p "$dir/state" "$dir/log" "$dir/munge"
    for n in $(seq 1 "$nodes"); do mkdir -p "$dir/spool/n$n" "$dir/tmp/n$n"; done

    # munge: its own key and socket, owned by the munge user as munged requires.
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chown -R munge:munge "$dir/munge"
    chmod 755 "$dir/munge"             # munged wants its socket's folder open to all (clients connect)
    chmod 400 "$dir/munge/munge.key"

    local base; base=$(free_port_base "$nodes")
    cat > "$dir/slurm.conf" <<CONF
ClusterName=speechain$base
SlurmctldHost=localhost
SlurmctldPort=$base
SlurmdPort=$(( base + 1 ))
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
TmpFS=$dir/tmp/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=pmix
ReturnToService=2
SchedulerParameters=sched_interval=1
MinJobAge=600
KillWait=5
NodeName=n[1-$nodes] NodeHostname=localhost NodeAddr=127.0.0.1 Port=[$(( base + 2 ))-$(( base + 1 + nodes ))] CPUs=$cpus RealMemory=2000 State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
    echo "export SLURM_CONF=$dir/slurm.conf" > "$dir/env"

    # PID 1 of the namespace: starts the daemons in the foreground, then lives while the owner does.
    cat > "$dir/init.sh" <<INIT
#!/bin/sh
runuser -u munge -- munged --foreground --socket=$dir/munge/munge.socket --key-file=$dir/munge/munge.key \
    --pid-file=$dir/munge/munged.pid --log-file=$dir/munge/munged.log --seed-file=$dir/munge/munge.seed >/dev/null 2>&1 &
i=0; while [ ! -S $dir/munge/munge.socket ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i + 1)); done
slurmctld -D -f $dir/slurm.conf >>$dir/log/slurmctld.out 2>&1 &
for n in \$(seq 1 $nodes); do
    unshare --uts sh -c "hostname n\$n; exec slurmd -D -f $dir/slurm.conf -N n\$n" >>$dir/log/slurmd-n\$n.out 2>&1 &
done
while [ ! -e $dir/stop ]; do sleep 1; done
INIT
    chmod +x "$dir/init.sh"
    # --kill-child: when unshare ends, PID 1 of the namespace gets SIGKILL and the kernel ends every process in it.
    detach "$dir/log/init.out" unshare --pid --fork --kill-child --mount-proc "$dir/init.sh"
    local pid=$!
    echo $pid > "$dir/cluster.pid"
    # The watchdog (outside the namespace, where the owner is visible) ends the cluster with its owner or on time.
    # (Alive means: its command line still names this cluster; a zombie or a reused pid does not.)
    local alive="grep -qF $dir/init.sh /proc/$pid/cmdline 2>/dev/null"
    detach /dev/null sh -c "end=\$(( \$(date +%s) + $max )); while kill -0 $owner 2>/dev/null && $alive && [ \$(date +%s) -lt \$end ]; do sleep 1; done; $alive && kill -KILL $pid"
    echo $! > "$dir/watchdog.pid"

    # Ready when every node is idle (bounded).
    export SLURM_CONF="$dir/slurm.conf"
    local deadline=$(( $(date +%s) + 60 )) states=""
    while [ "$(date +%s)" -lt $deadline ]; do
        states=$(sinfo -h -N -o "%N %T" 2>/dev/null | sort -u || true)
        if [ "$(grep -c " idle$" <<<"$states")" -eq "$nodes" ]; then cat "$dir/env"; return 0; fi
        kill -0 "$(cat "$dir/cluster.pid")" 2>/dev/null || break
        sleep 0.3
    done
    echo "slurm-cluster: the nodes did not become idle within 60 s: ${states:-no answer from slurmctld}" >&2
    tail -n 3 "$dir"/munge/munged.log "$dir"/log/slurmctld.log "$dir"/log/slurmd-n1.log >&2 2>/dev/null || true
    stop "$dir"
    exit 1
}

stop() {
    local dir=$1 pid
    [ -e "$dir/cluster.pid" ] || return 0
    pid=$(cat "$dir/cluster.pid")
    touch "$dir/stop"
    if [ -e "$dir/watchdog.pid" ]; then
        kill "$(cat "$dir/watchdog.pid")" 2>/dev/null || true
        rm -f "$dir/watchdog.pid"
    fi
    grep -qF "$dir/init.sh" "/proc/$pid/cmdline" 2>/dev/null || { rm -f "$dir/cluster.pid"; return 0; }
    # unshare --fork ignores TERM while its child runs; KILL ends it, and --kill-child then SIGKILLs the namespace's
    # PID 1, which takes every process of the namespace with it.
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        [ -n "$(ps -eo pid,cmd | grep -F "$dir/" | grep -E 'slurm|munge|init.sh' | grep -v grep)" ] || break
        sleep 0.1
    done
    rm -f "$dir/cluster.pid"
}

case "${1:-}" in
    install) install_packages ;;
    start) [ $# -ge 2 ] || die "usage: $0 start DIR [NODES] [CPUS]"; start "$2" "${3:-4}" "${4:-4}" ;;
    stop) [ $# -ge 2 ] || die "usage: $0 stop DIR"; stop "$2" ;;
    *) die "usage: $0 install | start DIR [NODES] [CPUS] | stop DIR" ;;
esac
