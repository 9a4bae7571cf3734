#!/usr/bin/env bash
# e2e-reservations.sh - the real Linux host (6.1 guest, nvme-cli 2.3) using NVMe reservations
# on pollux from two host NQNs.
#
# pollux (two reactors) exports a malloc namespace to any host; the ../shared/nvmf-vm guest
# runs scripts/e2e/guest-reservations.sh: it connects twice to the subsystem (through its
# two listeners) with two host NQNs and host ids, then `nvme resv-register`, `resv-acquire` (acquire, preempt),
# `resv-report` (extended, and without EDS), `resv-release`, and I/O passthrough reads and
# writes through each controller, checking every Reservation Conflict the spec requires.
# Each host's commands go to its controller's character device (see the guest script for
# why). Skips (exit 0) when the harness is absent. Env: PROFILE, KEEP=1.
set -u
. "$(dirname "$0")/e2e/lib.sh"
e2e_init e2e-reservations
port2=$(e2e_free_port)
nqn=nqn.2016-06.io.pollux:e2e-resv
id1=$(python3 -c 'import uuid; print(uuid.uuid4())')
id2=$(python3 -c 'import uuid; print(uuid.uuid4())')
h1=nqn.2014-08.org.nvmexpress:uuid:$id1
h2=nqn.2014-08.org.nvmexpress:uuid:$id2

echo "== starting pollux on 127.0.0.1:$port and :$port2 (two reactors)"
e2e_start_pollux pollux "$sock" "$work/pollux.log" -m 0x3
set -e
e2e_export_malloc "$nqn" POLLUXRESV0001 "pollux resv" "$port" "$port2"
set +e

g="$work/guest.sh"
{
	echo "H1='$h1'; ID1='$id1'; H2='$h2'; ID2='$id2'; PORT2='$port2'"
	cat "$here/e2e/guest-reservations.sh"
} >"$g"
echo "== Linux guest: two hosts, reservations"
start=$(date +%s)
HOSTNQN=$h1 HOSTID=$id1 "$harness" --guest-script "$g" -n "$nqn" -s "$port" -t 300 \
	-o "$work/vm" >"$work/vm.log" 2>&1
rc=$?
grep -a "guest-script\]" "$work/vm.log" | sed 's/^/  /'
echo "VM run: $(($(date +%s) - start)) s"
if [ $rc -ne 0 ]; then
	echo "e2e-reservations: FAIL (harness rc=$rc)"
	tail -20 "$work/vm.log"
	tail -20 "$work/pollux.log"
	exit 1
fi
echo "e2e-reservations: all passed"
