#!/bin/sh
# guest-failover.sh - guest script for run-fio-vm.sh --guest-script (busybox sh).
#
# Run by scripts/e2e-failover.sh against two pollux gateways exporting one namespace with
# ANA reporting: gateway 1 on NVMF_PORT, gateway 2 on P2 (baked into this copy by the host
# script). Connects to both (native NVMe multipath: one /dev/nvmeXnY with two paths),
# prints the paths' sysfs ana_state ("PATHS <label> p1=.. p2=.. c1=.. c2=.."), then runs
# one crc32c-verified fio job per case while the host acts: prints "READY-<case>" once fio
# runs, waits until the host's action shows in sysfs, and lets fio finish (first a baseline
# job with no action, for the pause the emulated guest shows anyway):
#   a  gateway 1 set inaccessible and gateway 2 optimized by RPC
#   b  gateway 2 (carrying the I/O) SIGKILLed: I/O moves to gateway 1
#   c  gateway 2 restarted from its saved config: the path reconnects and is optimized
# fio results go to RESULT_DIR (fio-<case>.json, iops logs). Fails on a fio error or
# verify mismatch, a path that does not reach the expected state, or I/O errors in dmesg.
# Steps print "=== [N] name"; step N failing exits with N.
ADDR=${NVMF_ADDR:-10.0.2.2}
P1=${NVMF_PORT:-4420}
P2=4421
RUNTIME=12
NQN=${NVMF_NQN:?NVMF_NQN is required}
RES=${RESULT_DIR:-/tmp}
N=0

fail() {
	echo "FAILED step $N: $*"
	dmesg | grep -i nvme | tail -30
	nvme disconnect -n "$NQN" >/dev/null 2>&1
	exit "$N"
}
step() { N=$((N + 1)); echo "=== [$N] $*"; }

# The controller connected to port $1.
ctrl_of() {
	for c in /sys/class/nvme/nvme*; do
		[ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$NQN" ] || continue
		case "$(cat "$c/address" 2>/dev/null)," in
		*trsvcid=$1,*) basename "$c"; return ;;
		esac
	done
}
# The path device (nvmeXcYnZ) of namespace 1 through the controller on port $1.
path_of() {
	c=$(ctrl_of "$1")
	[ -n "$c" ] || return
	for d in /sys/class/nvme/"$c"/nvme*c*n1; do
		[ -e "$d/ana_state" ] && basename "$d" && return
	done
}
path_state() {
	p=$(path_of "$1")
	if [ -n "$p" ]; then cat /sys/block/"$p"/ana_state 2>/dev/null || echo gone; else echo none; fi
}
ctrl_state() {
	c=$(ctrl_of "$1")
	if [ -n "$c" ]; then cat /sys/class/nvme/"$c"/state 2>/dev/null || echo gone; else echo none; fi
}
report() { echo "PATHS $1 p1=$(path_state "$P1") p2=$(path_state "$P2") c1=$(ctrl_state "$P1") c2=$(ctrl_state "$P2")"; }
# wait_until TENTHS CONDITION: polls the shell condition every 0.1 s.
wait_until() {
	i=0
	while [ $i -lt "$1" ]; do
		eval "$2" && return 0
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

step native-multipath
MP=$(cat /sys/module/nvme_core/parameters/multipath 2>/dev/null)
[ "$MP" = Y ] || fail "native NVMe multipath is off (nvme_core.multipath=$MP)"

step connect-both-gateways
for p in "$P1" "$P2"; do
	nvme connect -t tcp -a "$ADDR" -s "$p" -n "$NQN" -q "$HOSTNQN" -I "$HOSTID" \
		--ctrl-loss-tmo=60 --reconnect-delay=1 >"$RES/connect-$p.txt" 2>&1 ||
		fail "connect to port $p: $(cat "$RES/connect-$p.txt")"
done
wait_until 100 '[ -n "$(path_of "$P1")" ] && [ -n "$(path_of "$P2")" ]' ||
	fail "two paths did not appear: $(ls /sys/class/nvme/*/ 2>&1 | tr '\n' ' ')"
H1=$(path_of "$P1" | sed 's/c[0-9]*n/n/')
H2=$(path_of "$P2" | sed 's/c[0-9]*n/n/')
[ "$H1" = "$H2" ] || fail "the paths belong to different namespaces: $H1 and $H2 (no multipath)"
HEAD=/dev/$H1
wait_until 100 '[ -b "$HEAD" ]' || fail "no multipath block device $HEAD"
echo "multipath device $HEAD, paths $(path_of "$P1") (port $P1) and $(path_of "$P2") (port $P2)"
ls /sys/block/"$H1"/multipath/ 2>/dev/null
cat /sys/class/nvme-subsystem/nvme-subsys*/iopolicy 2>/dev/null

step initial-ana-states
wait_until 50 '[ "$(path_state "$P1")" = optimized ]' || true
report init

# run_case NAME CONDITION: fio in the background; READY-NAME; wait for CONDITION (the host's
# action seen in sysfs, at most 40 s); fio must end without error.
run_case() {
	fio --name="$1" --filename="$HEAD" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
		--iodepth=8 --size=16m --time_based --runtime=$RUNTIME --verify=crc32c \
		--verify_backlog=64 --verify_fatal=1 --write_iops_log="$RES/iops-$1" \
		--log_avg_msec=100 --output-format=json --output="$RES/fio-$1.json" \
		>"$RES/fio-$1.out" 2>&1 &
	FIO=$!
	sleep 3
	echo "READY-$1"
	wait_until 400 "$2" || { report "$1-timeout"; kill $FIO; fail "case $1: the host's action never showed"; }
	report "$1"
	wait $FIO || { cat "$RES/fio-$1.out"; tail -40 "$RES/fio-$1.json"; fail "fio failed in case $1"; }
	grep -E '"error"|"total_err"' "$RES/fio-$1.json" | head -4
}

step baseline-no-failover
run_case 0 true

step case-a-ana-change-by-rpc
run_case a '[ "$(path_state "$P1")" = inaccessible ] && [ "$(path_state "$P2")" = optimized ]'

step standby-back-to-non-optimized
wait_until 200 '[ "$(path_state "$P1")" = non-optimized ]' || fail "gateway 1 path not non-optimized: $(report x)"
report standby

step case-b-gateway-killed
run_case b '[ "$(ctrl_state "$P2")" != live ]'

step case-c-gateway-restarted
run_case c '[ "$(ctrl_state "$P2")" = live ] && [ "$(path_state "$P2")" = optimized ]'

step dmesg-shows-failover-not-io-errors
dmesg >"$RES/dmesg-guest.txt"
grep -iE "nvme.*(ana|reconnect|error recovery|Removing|failover)" "$RES/dmesg-guest.txt" | tail -20
if grep -iE "I/O error|blk_update_request|print_req_error|Buffer I/O" "$RES/dmesg-guest.txt"; then
	fail "I/O errors in dmesg"
fi

step disconnect
nvme disconnect -n "$NQN" >"$RES/disconnect.txt" 2>&1 || fail "$(cat "$RES/disconnect.txt")"
echo "ALL OK"
