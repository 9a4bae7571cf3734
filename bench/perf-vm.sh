#!/usr/bin/env bash
# pollux-perf against the Linux kernel NVMe/TCP target served by the VM harness
# (../shared/nvmf-vm/run-fio-vm.sh --serve, nvmet-tcp on a RAM disk inside a qemu guest).
# Runs a small matrix (4 KiB randread QD1/QD32, 4 KiB randwrite QD32, 128 KiB randrw 70/30
# QD8; posix and uring; digests off and on) and prints one table. The guest runs under TCG
# (software CPU emulation), so the ABSOLUTE NUMBERS ARE MEANINGLESS as target performance:
# they only show that the host works end to end and give coarse relative figures.
# Usage: bench/perf-vm.sh [seconds per run, default 3]
#        PERF_VM_TARGET=PORT:NQN bench/perf-vm.sh   # reuse a running --serve VM
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-3}"
HARNESS="../shared/nvmf-vm/run-fio-vm.sh"
if [ ! -x "$HARNESS" ]; then
  echo "perf-vm.sh: VM harness $HARNESS not found; nothing to measure" >&2
  exit 2
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet --bin pollux-perf
BIN="$CARGO_TARGET_DIR/release/pollux-perf"

if [ -n "${PERF_VM_TARGET:-}" ]; then
  # An already running --serve VM: PERF_VM_TARGET=PORT:NQN
  PORT="${PERF_VM_TARGET%%:*}"
  NQN="${PERF_VM_TARGET#*:}"
else
  PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  OUT="$(mktemp -d)"
  VM_LOG="$OUT/vm.log"
  # Its own process group, so the whole harness (and qemu) can be stopped at the end.
  SELFTEST_BACKEND=ram setsid "$HARNESS" --serve -s "$PORT" -t 900 -o "$OUT/vm" >"$VM_LOG" 2>&1 &
  VM_PID=$!
  cleanup() { kill -TERM -- "-$VM_PID" 2>/dev/null || true; wait "$VM_PID" 2>/dev/null || true; rm -rf "$OUT"; }
  trap cleanup EXIT
  for _ in $(seq 1 300); do
    [ -e "$OUT/vm/ready" ] && break
    kill -0 "$VM_PID" 2>/dev/null || { cat "$VM_LOG" >&2; echo "perf-vm.sh: the VM harness exited" >&2; exit 1; }
    sleep 1
  done
  [ -e "$OUT/vm/ready" ] || { echo "perf-vm.sh: the kernel target did not come up" >&2; exit 1; }
  NQN="$(sed -n 's/.*kernel target ready on host .* nqn=\([^ ]*\).*/\1/p' "$VM_LOG" | head -1)"
fi
TRID="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$PORT subnqn:$NQN"
echo "kernel target (TCG guest) at 127.0.0.1:$PORT nqn=$NQN; $SECS s per run; commit $(git rev-parse --short HEAD); $(date -u +%FT%TZ)"
echo "NOTE: the target runs in a software-emulated VM: absolute numbers are not target performance."
printf '%-10s %-6s %-4s %-8s %-5s %10s %9s %10s %10s %10s\n' workload size qd sock dgst IOPS MiB/s avg_us p99_us p99.9_us
ROW_PY="$(cat <<'PY'
import json, sys
t = json.load(sys.stdin)["total"]
p = t["percentiles"]
w, o, q, s, d = sys.argv[1:]
row = (w, o, q, s, d, t["iops"], t["mib_s"], t["avg_us"], p["p99_us"], p["p99.9_us"])
print("%-10s %-6s %-4s %-8s %-5s %10.0f %9.2f %10.1f %10.1f %10.1f" % row)
PY
)"
run() { # workload size qd sock digests(0|1) [extra args]
  local w=$1 o=$2 q=$3 s=$4 d=$5; shift 5
  local dg=(); [ "$d" = 1 ] && dg=(-H -I)
  local json
  if ! json="$("$BIN" -r "$TRID" -w "$w" -o "$o" -q "$q" -S "$s" -t "$SECS" "${dg[@]}" --no-pin --json "$@" 2>/dev/null)"; then
    printf '%-10s %-6s %-4s %-8s %-5s %10s\n' "$w" "$o" "$q" "$s" "$d" FAILED
    return
  fi
  printf '%s' "$json" | python3 -c "$ROW_PY" "$w" "$o" "$q" "$s" "$d"
}
for sock in posix uring; do
  for dig in 0 1; do
    run randread 4096 1 "$sock" "$dig"
    run randread 4096 32 "$sock" "$dig"
    run randwrite 4096 32 "$sock" "$dig"
    run randrw 131072 8 "$sock" "$dig" -M 70
  done
done
