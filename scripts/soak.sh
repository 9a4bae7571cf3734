#!/usr/bin/env bash
# Data-integrity soak of the NVMe-oF/TCP target (tests/nvmf_soak.rs): a verify workload
# through a real TCP connection with random disconnects (half abrupt, I/O in flight) and
# reconnects, for a bounded time, failing on any mismatch.
#
#   scripts/soak.sh [SECONDS] [--debug]
#
# SECONDS defaults to 120; the run also continues until at least POLLUX_SOAK_MIN_BYTES
# (default 1 GiB) were read back and verified (bounded at 3 x SECONDS + 60 s). Built in
# release mode unless --debug. POLLUX_SOAK_SEED=N replays a run (the seed is printed).
# Prints the test's `soak:` summary line (JSON: sessions, disconnects, bytes written and
# verified, uncertain writes resolved, mismatches) and exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=120
profile=(--release)
for a in "$@"; do
    case $a in
    --debug) profile=() ;;
    *[!0-9]* | '') echo "usage: $0 [SECONDS] [--debug]" >&2; exit 2 ;;
    *) secs=$a ;;
    esac
done
export POLLUX_SOAK_SECS=$secs
log=$(mktemp "${TMPDIR:-/tmp}/pollux-soak.XXXXXX.log")
echo "soak for ${secs}s (log $log)" >&2
status=0
cargo test "${profile[@]}" --test nvmf_soak -- --ignored --nocapture --test-threads=1 \
    >"$log" 2>&1 || status=$?
grep -oE 'soak: .*|MISMATCH.*|panicked.*|test result.*' "$log" || true
if [[ $status -ne 0 ]]; then
    echo "FAILED (status $status): see $log" >&2
fi
exit "$status"
