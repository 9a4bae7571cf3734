#!/bin/sh
# guest-compare.sh - guest script (run-fio-vm.sh --guest-script, busybox sh; run after
# guest-lib.sh, see e2e_guest_script) for
# scripts/e2e-compare.sh: `nvme compare` (nvme-cli 2.3) against pollux must succeed on the
# data just written and fail with Compare Failure on other data, for one block (in-capsule)
# and for 32 KiB (R2T), and the failed compare must change nothing.
# Exit codes: 1 connect, 2 no namespace, 3 write, 4 a matching compare failed, 5 a
# differing compare succeeded, 6 its status was not Compare Failure (SCT 2h SC 85h: 0x285),
# 7 data changed.
ADDR=${NVMF_ADDR:-10.0.2.2}
PORT=${NVMF_PORT:-4420}
NQN=${NVMF_NQN:-}
RES=${RESULT_DIR:-/tmp}
echo "=== connect $ADDR:$PORT $NQN"
guest_connect
nvme id-ctrl "$dev" | grep -E '^(oncs|fuses|acwu) ' | tee "$RES/id-ctrl.txt"
fail() {
	nvme disconnect -n "$NQN" >/dev/null 2>&1
	exit "$1"
}
# nvme-cli counts blocks 0-based (-c) and takes the data size in bytes (-z).
for blocks in 1 8; do
	size=$((blocks * 4096))
	c=$((blocks - 1))
	dd if=/dev/urandom of=/tmp/data bs=4096 count=$blocks 2>/dev/null
	dd if=/dev/urandom of=/tmp/other bs=4096 count=$blocks 2>/dev/null
	echo "=== $blocks block(s): write, compare equal, compare different"
	nvme write "$dev" -s 16 -c $c -z $size -d /tmp/data || fail 3
	nvme compare "$dev" -s 16 -c $c -z $size -d /tmp/data >"$RES/cmp-eq-$blocks.txt" 2>&1
	rc=$?
	cat "$RES/cmp-eq-$blocks.txt"
	[ $rc -eq 0 ] || fail 4
	nvme compare "$dev" -s 16 -c $c -z $size -d /tmp/other >"$RES/cmp-ne-$blocks.txt" 2>&1
	rc=$?
	cat "$RES/cmp-ne-$blocks.txt"
	echo "(nvme compare exit code $rc)"
	[ $rc -ne 0 ] || fail 5
	grep -q "(0x285)" "$RES/cmp-ne-$blocks.txt" || fail 6
	nvme read "$dev" -s 16 -c $c -z $size -d /tmp/back >/dev/null 2>&1 || fail 7
	cmp /tmp/data /tmp/back || fail 7
done
nvme disconnect -n "$NQN" >/dev/null 2>&1
echo "=== compare ok"
