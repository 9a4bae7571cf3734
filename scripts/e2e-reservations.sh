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
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
harness=${HARNESS:-$root/../shared/nvmf-vm/run-fio-vm.sh}
if [ ! -x "$harness" ]; then
	echo "e2e-reservations: SKIPPED: $harness not found (the nvmf-vm harness is not installed)"
	exit 0
fi
profile=${PROFILE:-dev}
if [ "$profile" = release ]; then build_flag=--release; sub=release; else build_flag=; sub=debug; fi
tdir=${CARGO_TARGET_DIR:-$root/target}
echo "== building pollux ($profile)"
(cd "$root" && cargo build $build_flag --bin pollux) || exit 1
bin=$tdir/$sub/pollux

work=$(mktemp -d /tmp/pollux-e2e-resv.XXXXXX)
sock=$work/rpc.sock
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
port2=$(free_port)
nqn=nqn.2016-06.io.pollux:e2e-resv
id1=$(python3 -c 'import uuid; print(uuid.uuid4())')
id2=$(python3 -c 'import uuid; print(uuid.uuid4())')
h1=nqn.2014-08.org.nvmexpress:uuid:$id1
h2=nqn.2014-08.org.nvmexpress:uuid:$id2
rpc() { python3 "$root/scripts/rpc.py" -s "$sock" "$@"; }
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "== starting pollux on 127.0.0.1:$port and :$port2 (two reactors)"
"$bin" -m 0x3 -r "$sock" --no-default --no-pin >"$work/pollux.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { echo "pollux did not start"; cat "$work/pollux.log"; exit 1; }
set -e
rpc bdev_malloc_create -b Malloc0 64 4096 >/dev/null
rpc nvmf_create_transport -t TCP -u 16384 -m 4 -c 8192
rpc nvmf_create_subsystem "$nqn" -a -s POLLUXRESV0001 -d "pollux resv"
rpc nvmf_subsystem_add_ns "$nqn" Malloc0 >/dev/null
rpc nvmf_subsystem_add_listener "$nqn" -t tcp -a 127.0.0.1 -s "$port" -f ipv4
rpc nvmf_subsystem_add_listener "$nqn" -t tcp -a 127.0.0.1 -s "$port2" -f ipv4
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
