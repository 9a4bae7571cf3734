#!/usr/bin/env bash
# pollux-bdevperf on malloc and on uring (a temp file), 4 KiB random reads at QD1 and QD32,
# one core. Prints each run's result table; no thresholds — numbers to compare, not to gate.
# Usage: bench/bdevperf.sh [seconds per run, default 3] [core mask, default 0x1]
#   POLLUX_BIN_DIR=DIR   run DIR/pollux-bdevperf instead of building the release one
#   BDEVPERF_FILE_MIB=N  size of the uring bdev's file (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-3}"
MASK="${2:-0x1}"
MIB="${BDEVPERF_FILE_MIB:-1024}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
if [ -n "${POLLUX_BIN_DIR:-}" ]; then
  BIN="$POLLUX_BIN_DIR/pollux-bdevperf"
else
  cargo build --release --quiet --bin pollux-bdevperf
  BIN="$CARGO_TARGET_DIR/release/pollux-bdevperf"
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
FILE="$WORK/uring.img"
truncate -s "${MIB}M" "$FILE"
# Fill the file so reads hit allocated blocks rather than holes.
dd if=/dev/zero of="$FILE" bs=1M count="$MIB" conv=notrunc status=none

cat >"$WORK/malloc.json" <<JSON
{"subsystems":[{"subsystem":"bdev","config":[
  {"method":"bdev_malloc_create","params":{"name":"Malloc0","num_blocks":262144,"block_size":4096}}]}]}
JSON
cat >"$WORK/uring.json" <<JSON
{"subsystems":[{"subsystem":"bdev","config":[
  {"method":"bdev_uring_create","params":{"name":"Uring0","filename":"$FILE","block_size":4096}}]}]}
JSON

for target in malloc uring; do
  for qd in 1 32; do
    for w in randread randwrite; do
      echo "=== $target  -w $w  -q $qd  -o 4096  -t $SECS  -m $MASK"
      "$BIN" --json "$WORK/$target.json" -q "$qd" -o 4096 -w "$w" -t "$SECS" -m "$MASK" | sed -n '/^Device/,$p'
    done
  done
done
