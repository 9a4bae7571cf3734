#!/usr/bin/env bash
# bench/ab.sh — interleaved A/B comparison of two builds (on a noisy shared machine a
# before/after pair must alternate, or the load of the moment decides the result).
# Starts pollux from DIR_A and from DIR_B (both pinned to core 0; the idle one sleeps),
# each with a 256 MiB malloc bdev on a posix listener, then runs pollux-perf (from DIR_B,
# core 1) against A, B, A, B, ... ROUNDS times per workload and prints the median IOPS of each.
# usage: bench/ab.sh DIR_A DIR_B [ROUNDS] [SECS] [NICE]
#   AB_SOCK=posix|uring   sock impl of the listener and of pollux-perf (default posix)
#   AB_WORKLOADS="randread 4096 32;randwrite 4096 32"   workloads (default: see below)
#   AB_PERF_ARGS="-H -I"  extra pollux-perf arguments (e.g. digests)
#   AB_OWN_PERF=1         drive each target with its own build's pollux-perf (whole-system
#                         comparison; by default DIR_B's pollux-perf drives both)
# Run it under `flock /tmp/pollux-bench.lock` when others may be benchmarking too.
set -euo pipefail
A="$1"; B="$2"; ROUNDS="${3:-3}"; SECS="${4:-2}"; NICE="${5:-0}"
SOCK="${AB_SOCK:-posix}"
IFS=';' read -r -a WORKLOADS <<<"${AB_WORKLOADS:-randread 4096 32;randread 131072 8;randwrite 4096 32}"
read -r -a PERF_ARGS <<<"${AB_PERF_ARGS:-}"
NQN=nqn.2016-06.io.pollux:ab
WORK="$(mktemp -d /tmp/pollux-ab.XXXXXX)"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$WORK"' EXIT
. "$(dirname "$0")/lib.sh"
start() { # dir name -> sets PORT
    local port; port=$(free_port)
    malloc_target_config "$NQN" "$port:$SOCK" >"$WORK/$2.json"
    nice -n "$NICE" "$1/pollux" -m '[0]' -r "$WORK/$2.sock" --json "$WORK/$2.json" --log-level ERROR \
        >/dev/null 2>"$WORK/$2.log" &
    PIDS+=($!)
    PORT=$port
}
start "$A" a; PA=$PORT; start "$B" b; PB=$PORT; sleep 1
# Write every block once (reads of never-written blocks come from the kernel's zero page).
for port in $PA $PB; do
    nice -n "$NICE" "$B/pollux-perf" -r "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$NQN" \
        -q 32 -o 131072 -w write -t 1 -c '[1]' -S "$SOCK" --poll-only --json >/dev/null 2>&1
done
for wl in "${WORKLOADS[@]}"; do
    read -r w size qd <<<"$wl"
    ra=(); rb=()
    for _ in $(seq "$ROUNDS"); do
        for side in a b; do
            port=$PA; [ $side = b ] && port=$PB
            perf_dir=$B; [ $side = a ] && [ "${AB_OWN_PERF:-0}" = 1 ] && perf_dir=$A
            iops=$(nice -n "$NICE" "$perf_dir/pollux-perf" -r "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$NQN" \
                -q "$qd" -o "$size" -w "$w" -t "$SECS" -c '[1]' -S "$SOCK" "${PERF_ARGS[@]}" --poll-only --json 2>/dev/null | jq '.total.iops|floor')
            if [ $side = a ]; then ra+=("$iops"); else rb+=("$iops"); fi
        done
    done
    med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    printf '%-10s %7s QD%-4s A: %8s  B: %8s  B/A %.3f   (A runs: %s; B runs: %s)\n' "$w" "$size" "$qd" \
        "$(med "${ra[@]}")" "$(med "${rb[@]}")" "$(echo "$(med "${rb[@]}") / $(med "${ra[@]}")" | bc -l)" "${ra[*]}" "${rb[*]}"
done
