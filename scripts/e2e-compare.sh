#!/usr/bin/env bash
# e2e-compare.sh - the real Linux host running `nvme compare` (nvme-cli 2.3) against pollux.
#
# pollux (two reactors) exports a 64 MiB malloc namespace (4 KiB blocks); the ../shared/nvmf-vm
# guest (Debian 12 kernel) runs scripts/e2e/guest-compare.sh: nvme write, then nvme compare
# of the same data (must succeed) and of other data (must fail with Compare Failure and
# change nothing), for one block (in-capsule data) and 8 blocks (R2T). Skips (exit 0) when
# the harness is absent. Env: PROFILE (dev|release), KEEP=1 keeps the logs.
set -u
. "$(dirname "$0")/e2e/lib.sh"
e2e_init e2e-compare
nqn=nqn.2016-06.io.pollux:e2e-compare

echo "== starting pollux on 127.0.0.1:$port"
e2e_start_pollux pollux "$sock" "$work/pollux.log" -m 0x3
set -e
e2e_export_malloc "$nqn" POLLUXCMP0001 "pollux compare" "$port"
set +e

echo "== Linux guest: nvme compare"
start=$(date +%s)
e2e_guest_script "$here/e2e/guest-compare.sh" "$work/guest-compare.sh"
"$harness" --guest-script "$work/guest-compare.sh" -n "$nqn" -s "$port" -t 240 \
	-o "$work/vm" >"$work/vm.log" 2>&1
rc=$?
grep -a "guest-script\]" "$work/vm.log" | sed 's/^/  /'
echo "== VM run: $(($(date +%s) - start)) s, harness rc=$rc"
if [ $rc -ne 0 ]; then
	tail -20 "$work/vm.log"
	echo "e2e-compare: FAILED"
	exit 1
fi
echo "e2e-compare: passed"
