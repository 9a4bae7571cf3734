#!/bin/sh
# guest-digests-queues-ns.sh - guest script for run-fio-vm.sh --guest-script (busybox sh).
#
# Run by scripts/e2e-linux-host.sh against pollux: connects with header and data digests
# and 2 I/O queues (CONNECT_OPTS='-g -G -i 2'), checks that the kernel negotiated both
# digests and created 2 I/O queues, runs a short crc32c-verified fio job on both queues,
# then prints NS-ADD-READY and polls `nvme list-ns` until the host side has added
# namespace 2 live (AEN -> rescan), reads from the new namespace, and disconnects. Fails
# when the guest's dmesg shows nvme errors. Steps print "=== [N] name"; step N failing
# exits with N.
ADDR=${NVMF_ADDR:-10.0.2.2}
PORT=${NVMF_PORT:-4420}
NQN=${NVMF_NQN:?NVMF_NQN is required}
RES=${RESULT_DIR:-/tmp}
N=0
CONNECTED=0

fail() {
	echo "FAILED step $N: $*"
	dmesg | grep -i nvme | tail -20
	[ "$CONNECTED" = 1 ] && nvme disconnect -n "$NQN" >/dev/null 2>&1
	exit "$N"
}
step() { N=$((N + 1)); echo "=== [$N] $*"; }

step connect-with-digests-and-2-queues
# shellcheck disable=SC2086
nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" -q "$HOSTNQN" -I "$HOSTID" \
	-l 10 -c 2 ${CONNECT_OPTS:--g -G -i 2} >"$RES/connect.txt" 2>&1 || fail "$(cat "$RES/connect.txt")"
CONNECTED=1
CTRL=""
for i in $(seq 1 100); do
	for c in /sys/class/nvme/nvme*; do
		[ -e "$c/subsysnqn" ] || continue
		[ "$(cat "$c/subsysnqn")" = "$NQN" ] && CTRL=$(basename "$c")
	done
	[ -n "$CTRL" ] && [ -b "/dev/${CTRL}n1" ] && break
	sleep 0.1
done
[ -b "/dev/${CTRL}n1" ] || fail "no namespace block device appeared"
echo "controller $CTRL"

step digests-and-queues-negotiated
dmesg | grep -i "nvme" | tail -5
QUEUES=$(cat /sys/class/nvme/"$CTRL"/queue_count 2>/dev/null || echo "?")
echo "queue_count=$QUEUES"
# queue_count counts the admin queue too (sysfs attribute of fabrics controllers).
if [ "$QUEUES" != "?" ] && [ "$QUEUES" -ne 3 ]; then fail "expected 2 I/O queues (queue_count 3), got $QUEUES"; fi
# sysfs exposes no digest flag; the kernel logs a digest error if either side is wrong,
# and fio verify below would fail on corruption.

step fio-verify-both-queues
fio --name=dq --filename="/dev/${CTRL}n1" --ioengine=libaio --direct=1 --rw=randwrite \
	--bssplit=4k/40:16k/30:64k/20:128k/10 --iodepth=16 --numjobs=2 --size=8m \
	--offset_increment=8m --verify=crc32c --verify_fatal=1 --group_reporting \
	>"$RES/fio-dq.txt" 2>&1 || { cat "$RES/fio-dq.txt"; fail "fio verify failed"; }
grep -E "WRITE:|READ:|err=" "$RES/fio-dq.txt"

step live-namespace-add
echo "NS-ADD-READY"
FOUND=0
for i in $(seq 1 600); do
	if nvme list-ns "/dev/$CTRL" 2>/dev/null | grep -qE '(\]|:)[[:space:]]*0x2$'; then FOUND=1; break; fi
	sleep 0.1
done
nvme list-ns "/dev/$CTRL"
[ "$FOUND" = 1 ] || fail "namespace 2 never appeared in list-ns"
for i in $(seq 1 100); do [ -b "/dev/${CTRL}n2" ] && break; sleep 0.1; done
[ -b "/dev/${CTRL}n2" ] || fail "no block device for namespace 2 (AEN not handled?)"
dd if="/dev/${CTRL}n2" of=/dev/null bs=4096 count=16 iflag=direct 2>&1 || fail "read from namespace 2 failed"

step dmesg-clean
dmesg >"$RES/dmesg-guest.txt"
if grep -iE "nvme.*(error|timeout|reset|failed|digest)" "$RES/dmesg-guest.txt" ; then
	fail "nvme errors in dmesg"
fi

step disconnect
nvme disconnect -n "$NQN" >"$RES/disconnect.txt" 2>&1 || fail "$(cat "$RES/disconnect.txt")"
CONNECTED=0
echo "ALL OK"
