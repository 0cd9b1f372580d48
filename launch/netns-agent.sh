#!/usr/bin/env bash
# OpenMPI remote-launch agent for the simulated hosts of launch/netns-hosts.sh: mpirun calls it
# as it would call ssh, `netns-agent.sh [ssh options] HOST COMMAND...`; it runs COMMAND inside
# the network namespace that plays HOST, with that host's own host name (UTS namespace).
set -euo pipefail
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do
    case "$1" in
        -o|-p|-l|-i|-F) shift 2 ;;   # ssh options with a value
        *) shift ;;
    esac
done
host="$1"; shift
namespace=$(awk -v host="$host" '$1 == host { print $2 }' "${COHORT_NETNS_HOSTS:-/run/cohort-netns/hosts}")
[ -n "$namespace" ] || { echo "netns-agent: unknown host $host" >&2; exit 255; }
# An ssh-style command string: run it through a shell, as sshd would.
exec ip netns exec "$namespace" unshare --uts sh -c "hostname $namespace; $*"
