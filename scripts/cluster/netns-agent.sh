#!/bin/sh
# ssh stand-in for Open MPI's launcher (`--mca plm_rsh_agent` or OMPI_MCA_plm_rsh_agent) across the namespace hosts
# of netns-hosts.sh: drops ssh options, takes the host, and runs the remaining words through `sh -c` inside that
# host's namespace with that host's name, as ssh would on a real node. NETNS_HOSTS maps addresses to namespaces
# ("10.231.0.1=NAME-a 10.231.0.2=NAME-b"); NETNS_AGENT_LOG, when set, gets one line per launch.
while [ $# -gt 0 ]; do
    case "$1" in
        -o|-p|-l|-i|-F|-E|-b|-c|-m|-S|-W|-w) shift 2 ;;
        -*) shift ;;
        *) break ;;
    esac
done
host=$1
shift
ns=""
for pair in $NETNS_HOSTS; do
    [ "${pair%%=*}" = "$host" ] && ns=${pair#*=}
done
[ -n "$ns" ] || { echo "netns-agent: no namespace for host '$host' in NETNS_HOSTS" >&2; exit 255; }
[ -n "${NETNS_AGENT_LOG:-}" ] && echo "$host $ns" >> "$NETNS_AGENT_LOG"
exec ip netns exec "$ns" unshare --uts sh -c "hostname host-${ns##*-}; $*"
