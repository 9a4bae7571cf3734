#!/bin/sh
# guest-digests-queues-ns.sh - guest script for run-fio-vm.sh --guest-script (busybox sh).
#
# Run by scripts/e2e-linux-host.sh against pollux: connects with header and data digests
# and 2 I/O queues (CONNECT_OPTS='-g -G -i 2'), checks that the kernel negotiated both
# digests and created 2 I/O queues, runs a short crc32c-verified fio job on both queues,
# then prints NS-ADD-READY and polls `nvme list-ns` until the host side has added
# namespace 2 live (AEN -> rescan), reads from the new namespace; then checks namespace
# masking (NS-MASK-READY, NS-MASK-CHECKED, NS-SHOWN: a no_auto_visible namespace 3 hidden,
# shown to this HOSTNQN, hidden again), and disconnects. Fails
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

# Namespace masking. The host adds namespace 3 with no_auto_visible, then namespace 4
# visible to all, in that order: once namespace 4 shows, namespace 3 exists and must stay
# hidden from this host NQN. Then the host lists this host for namespace 3 (it must
# appear, with a namespace-changed AEN, and be readable), then removes it (it must go).
has_ns() { nvme list-ns "/dev/$CTRL" 2>/dev/null | grep -qE "(\]|:)[[:space:]]*0x$1\$"; }
# The block device of namespace $1: the kernel names them by its own instance counter, not
# by NSID (with namespace 3 hidden, namespace 4 is ${CTRL}n3), so look at sysfs' nsid.
ns_dev() {
	for b in /sys/block/"${CTRL}"n*; do
		[ "$(cat "$b/nsid" 2>/dev/null)" = "$1" ] && { echo "/dev/$(basename "$b")"; return 0; }
	done
	return 1
}
wait_ns() { # nsid present|absent: polls list-ns and the block devices for up to 60 s
	for i in $(seq 1 600); do
		if [ "$2" = present ]; then
			has_ns "$1" && ns_dev "$1" >/dev/null && return 0
		else
			! has_ns "$1" && ! ns_dev "$1" >/dev/null && return 0
		fi
		sleep 0.1
	done
	return 1
}

step masked-namespace-hidden
echo "NS-MASK-READY"
wait_ns 4 present || fail "namespace 4 (the marker after the masked namespace 3) never appeared"
nvme list-ns "/dev/$CTRL"
has_ns 3 && fail "masked namespace 3 is in the active list of a host it was not shown to"
ns_dev 3 && fail "masked namespace 3 has a block device"
nvme id-ns "/dev/$CTRL" -n 3 -o json >"$RES/id-ns3-hidden.json" 2>&1
grep -q '"nsze" *: *0,' "$RES/id-ns3-hidden.json" || { cat "$RES/id-ns3-hidden.json"; fail "Identify Namespace of masked namespace 3 is not zeroed"; }

step masked-namespace-shown-to-this-host
echo "NS-MASK-CHECKED"
wait_ns 3 present || fail "namespace 3 did not appear after nvmf_ns_add_host for $HOSTNQN"
dd if="$(ns_dev 3)" of=/dev/null bs=4096 count=16 iflag=direct 2>&1 || fail "read from namespace 3 failed"

step masked-namespace-hidden-again
echo "NS-SHOWN"
wait_ns 3 absent || fail "namespace 3 stayed after nvmf_ns_remove_host for $HOSTNQN"
nvme list-ns "/dev/$CTRL"

step dmesg-clean
dmesg >"$RES/dmesg-guest.txt"
if grep -iE "nvme.*(error|timeout|reset|failed|digest)" "$RES/dmesg-guest.txt" ; then
	fail "nvme errors in dmesg"
fi

step disconnect
nvme disconnect -n "$NQN" >"$RES/disconnect.txt" 2>&1 || fail "$(cat "$RES/disconnect.txt")"
CONNECTED=0
echo "ALL OK"
