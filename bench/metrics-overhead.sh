#!/usr/bin/env bash
# bench/metrics-overhead.sh — does a Prometheus scrape slow the data path? QD32 4 KiB
# random-read IOPS against one pollux (pinned to core 0, --metrics-addr on) with a scrape of
# /metrics every second vs without, alternating ROUNDS pairs of SECS-second runs in one
# invocation (pollux-perf on core 1), then the median IOPS of each and the median of the
# paired ratios.
# usage: bench/metrics-overhead.sh [ROUNDS] [SECS]
#   METRICS_SCRAPE_PERIOD=1   seconds between scrapes in the "with" runs
# Run it under `flock /tmp/pollux-bench.lock` when others may be benchmarking too.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"; SECS="${2:-5}"; PERIOD="${METRICS_SCRAPE_PERIOD:-1}"
NQN=nqn.2016-06.io.pollux:metrics-bench
WORK="$(mktemp -d /tmp/pollux-metrics-bench.XXXXXX)"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
. bench/lib.sh
bench_bins pollux pollux-perf
PORT=$(free_port); MPORT=$(free_port)
malloc_target_config "$NQN" "$PORT" >"$WORK/c.json"
"$BIN/pollux" -m '[0]' -r "$WORK/p.sock" --json "$WORK/c.json" --log-level ERROR \
    --metrics-addr "127.0.0.1:$MPORT" >/dev/null 2>"$WORK/p.log" &
PIDS+=($!)
for _ in $(seq 100); do [[ -S "$WORK/p.sock" ]] && break; sleep 0.1; done
TRID="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$PORT subnqn:$NQN"
perf() { "$BIN/pollux-perf" -c '[1]' -r "$TRID" "$@" --json 2>/dev/null; }
# Reads of written blocks (a never-written malloc block is the kernel's zero page).
perf -q 32 -o 131072 -w write -t 2 >/dev/null
iops() { perf -q 32 -o 4096 -w randread -t "$SECS" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["total"]["iops"]))'; }
scrapes=0
without=(); with=()
for r in $(seq "$ROUNDS"); do
    without+=("$(iops)")
    ( while :; do
          curl -sf -o /dev/null "http://127.0.0.1:$MPORT/metrics" && echo >>"$WORK/scrapes"
          sleep "$PERIOD"
      done ) &
    loop=$!
    with+=("$(iops)")
    kill "$loop"; wait "$loop" 2>/dev/null || true
    echo "round $r: without ${without[-1]} IOPS, with a scrape every ${PERIOD}s ${with[-1]} IOPS"
done
scrapes=$(wc -l <"$WORK/scrapes")
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mw=$(median "${without[@]}"); mm=$(median "${with[@]}")
echo "median QD32 randread IOPS: without scrapes $mw, with $mm ($scrapes scrapes answered)"
# Each round's pair ran back to back: the median of the paired ratios is the least
# sensitive to the machine's load drifting between rounds.
ratios=(); for i in "${!with[@]}"; do ratios+=("$(python3 -c "print(${with[$i]}/${without[$i]})")"); done
echo "median of the paired ratios with/without: $(median "${ratios[@]}" | xargs printf '%.3f')"
