#!/usr/bin/env bash
# Simulated cluster nodes on one machine, for testing Cohort across hosts (needs root):
# network namespaces joined by veth pairs on a bridge act as hosts that reach each other only
# over TCP; OpenMPI starts its daemons in them through launch/netns-agent.sh instead of ssh.
#
#   launch/netns-hosts.sh up [N] [--rate R] [--delay D]
#                                         create N hosts (default 2) plus a head node for mpirun;
#                                         --rate shapes every host's link (tc tbf, e.g. 1gbit,
#                                         10gbit), --delay adds latency (tc netem, e.g. 100us;
#                                         needs the kernel's sch_netem)
#   launch/netns-hosts.sh mpirun ARGS...  run mpirun on the head node over those hosts
#   launch/netns-hosts.sh down            remove everything (also run on any failure by callers)
#
# Addresses 10.231.7.0/24 exist only inside the namespaces: head .1, hosts .2, .3, …; no default
# route, so nothing leaves the machine. Facts and pitfalls behind each step: docs/guide.md, "Across nodes".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state=/run/cohort-netns
subnet=10.231.7
bridge=cohort-br0

up() {
    local count=2 rate="" delay=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --rate) rate="$2"; shift 2 ;;
            --delay) delay="$2"; shift 2 ;;
            *) count="$1"; shift ;;
        esac
    done
    down 2>/dev/null || true
    mkdir -p "$state"
    ip link add "$bridge" type bridge
    ip link set "$bridge" up
    : > "$state/hosts"
    for index in $(seq 0 "$count"); do
        local name address
        if [ "$index" -eq 0 ]; then name=cohort-head; else name="cohort-host$index"; fi
        address="$subnet.$((index + 1))"
        ip netns add "$name"
        ip link add "veth-c$index" type veth peer name eth0 netns "$name"
        ip link set "veth-c$index" master "$bridge" up
        ip -n "$name" addr add "$address/24" dev eth0
        ip -n "$name" link set eth0 up
        ip -n "$name" link set lo up   # ranks reach their local daemon over 127.0.0.1
        echo "$address $name" >> "$state/hosts"
        # What a host sends leaves through its eth0: shaping each one's egress shapes every link.
        if [ -n "$delay" ]; then
            ip netns exec "$name" tc qdisc add dev eth0 root netem delay "$delay" ${rate:+rate "$rate"} 2>"$state/tc.err" || {
                echo "netns-hosts: --delay needs tc netem, which this kernel lacks ($(cat "$state/tc.err")); --rate alone works" >&2
                down; exit 1; }
        elif [ -n "$rate" ]; then
            # A token bucket at the rate, with a burst of about 1 ms of traffic (at least 64 KiB).
            local bits burst
            bits=$(echo "$rate" | awk '{ n = $1 + 0; u = tolower($1); if (u ~ /gbit/) n *= 1e9; else if (u ~ /mbit/) n *= 1e6; else if (u ~ /kbit/) n *= 1e3; printf "%d\n", n }')
            burst=$(( bits / 8 / 1000 > 65536 ? bits / 8 / 1000 : 65536 ))
            ip netns exec "$name" tc qdisc add dev eth0 root tbf rate "$rate" burst "$burst" latency 50ms
        fi
    done
    echo "netns-hosts: head $subnet.1, hosts $(awk 'NR > 1 { printf "%s ", $1 }' "$state/hosts")${rate:+, links shaped to $rate}${delay:+ with $delay delay}"
}

down() {
    for name in $(ip netns list 2>/dev/null | awk '/^cohort-/ { print $1 }'); do
        local pids
        pids=$(ip netns pids "$name" 2>/dev/null || true)
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    done
    for link in $(ip -o link show 2>/dev/null | awk -F': ' '{ print $2 }' | grep '^veth-c' | cut -d@ -f1); do
        ip link del "$link" 2>/dev/null || true
    done
    ip link del "$bridge" 2>/dev/null || true
    for name in $(ip netns list 2>/dev/null | awk '/^cohort-/ { print $1 }'); do ip netns del "$name" 2>/dev/null || true; done
    rm -rf "$state" /tmp/ompi.cohort-* 2>/dev/null || true
}

run_mpirun() {
    [ -f "$state/hosts" ] || { echo "netns-hosts: run 'up' first" >&2; exit 1; }
    local hosts=()
    # COHORT_SLOTS_PER_HOST ranks per host (default 1), placed by slot: ranks 0..k-1 on the first
    # host; a --hostfile among the arguments (launch/cohort-mpirun's) chooses the hosts instead.
    if ! printf '%s\n' "$@" | grep -qx -- '--hostfile'; then
        hosts=(--host "$(awk -v slots="${COHORT_SLOTS_PER_HOST:-1}" 'NR > 1 { printf "%s%s:%s", sep, $1, slots; sep = "," }' "$state/hosts")")
    fi
    # --bind-to none: each daemon would bind its rank to core 0, and single-rank hosts would share it.
    exec ip netns exec cohort-head unshare --uts sh -c 'hostname cohort-head; exec "$@"' sh \
        mpirun --allow-run-as-root "${hosts[@]}" \
        --mca plm_rsh_agent "$root/launch/netns-agent.sh" \
        --mca pml ob1 --mca btl self,tcp \
        --mca btl_tcp_if_include "$subnet.0/24" --mca oob_tcp_if_include "$subnet.0/24" \
        --mca odls_base_sigkill_timeout 1 \
        --bind-to none -x OPENBLAS_NUM_THREADS=1 -x COHORT_NETNS_HOSTS="$state/hosts" \
        "$@"
}

[ "$(id -u)" -eq 0 ] || { echo "netns-hosts: needs root (network namespaces)" >&2; exit 77; }
case "${1:-}" in
    up) shift; up "$@" ;;
    down) down ;;
    mpirun) shift; run_mpirun "$@" ;;
    *) echo "usage: $0 up [N] | mpirun ARGS... | down" >&2; exit 64 ;;
esac
