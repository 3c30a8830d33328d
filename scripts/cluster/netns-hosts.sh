#!/usr/bin/env bash
# Two "hosts" on this machine for multi-node Open MPI tests: network namespaces NAME-a and NAME-b joined by a veth
# pair, with the addresses SUBNET.1 and SUBNET.2 (a /24 that exists only inside the two namespaces) and loopback up.
#
#   netns-hosts.sh up NAME [SUBNET]     create (SUBNET default 10.231.0); NAME should end in the owner's pid
#   netns-hosts.sh down NAME            remove both namespaces (the veth pair goes with them)
#   netns-hosts.sh reap PREFIX          remove PREFIX<pid>-a/-b namespaces whose <pid> no longer runs
#
# Pair it with scripts/cluster/netns-agent.sh as mpirun's launch agent (instead of ssh). Needs root and iproute2
# (installed with apt-get when missing).
set -euo pipefail
die() { echo "netns-hosts: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (ip netns)"
if ! command -v ip >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
fi

up() {
    local name=$1 subnet=${2:-10.231.0} short
    short=$(echo "$name" | tr -cd '0-9' | tail -c 9)
    ip netns add "$name-a"
    ip netns add "$name-b"
    ip link add "va$short" type veth peer name "vb$short"
    ip link set "va$short" netns "$name-a"
    ip link set "vb$short" netns "$name-b"
    ip -n "$name-a" addr add "$subnet.1/24" dev "va$short"
    ip -n "$name-b" addr add "$subnet.2/24" dev "vb$short"
    for h in a b; do
        ip -n "$name-$h" link set lo up
        ip -n "$name-$h" link set "v$h$short" up
    done
    echo "$name-a $subnet.1 va$short"
    echo "$name-b $subnet.2 vb$short"
}

down() {
    local name=$1
    for h in a b; do ip netns del "$name-$h" 2>/dev/null || true; done
}

reap() {
    local prefix=$1 ns pid
    for ns in $(ip netns list | awk '{print $1}' | grep "^$prefix[0-9]*-[ab]$" || true); do
        pid=${ns#"$prefix"}; pid=${pid%-*}
        kill -0 "$pid" 2>/dev/null || ip netns del "$ns" 2>/dev/null || true
    done
}

case "${1:-}" in
    up) [ $# -ge 2 ] || die "usage: $0 up NAME [SUBNET]"; up "$2" "${3:-10.231.0}" ;;
    down) [ $# -ge 2 ] || die "usage: $0 down NAME"; down "$2" ;;
    reap) [ $# -ge 2 ] || die "usage: $0 reap PREFIX"; reap "$2" ;;
    *) die "usage: $0 up NAME [SUBNET] | down NAME | reap PREFIX" ;;
esac
