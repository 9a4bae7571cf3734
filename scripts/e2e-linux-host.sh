#!/usr/bin/env bash
# e2e-linux-host.sh - pollux against the real Linux NVMe/TCP host.
#
# Builds pollux, starts it on 127.0.0.1 with a free port and RPC-configured malloc bdevs,
# then boots the ../shared/nvmf-vm guest (Linux kernel nvme-tcp, nvme-cli, fio) three times:
#   1. examples/nvme-cli-tour.sh   discover, connect, id-ctrl, id-ns, smart-log, error-log,
#                                  features, flush, write/read/compare, dsm, write-zeroes
#   2. examples/fio-verify.sh      64 MiB crc32c verify with mixed block sizes, verify-only
#                                  pass, trim pass
#   3. scripts/e2e/guest-digests-queues-ns.sh   -g -G digests, -i 2 queues, fio verify,
#                                  live namespace add (this script adds it via rpc.py while
#                                  the guest polls list-ns), namespace masking (a
#                                  no_auto_visible namespace hidden from the guest's host NQN,
#                                  shown by nvmf_ns_add_host, hidden by _remove_host), dmesg check
# and fails if any guest step fails or the guest dmesg shows nvme errors. Skips (exit 0)
# when the harness is absent. Env: PROFILE=release|dev (default dev), KEEP=1 keeps logs,
# CPUMASK (default 0x3: two reactors, so a controller's queues sit on both), SOCK_IMPL
# (posix or uring), ONLY=ns (only the third run).
set -u
. "$(dirname "$0")/e2e/lib.sh"
e2e_init e2e-linux-host
nqn=nqn.2016-06.io.pollux:e2e

echo "== starting pollux on 127.0.0.1:$port"
e2e_start_pollux pollux "$sock" "$work/pollux.log" -m "${CPUMASK:-0x3}"
set -e
rpc bdev_malloc_create -b Malloc0 128 4096 >/dev/null
rpc bdev_malloc_create -b Malloc1 32 512 >/dev/null
rpc bdev_malloc_create -b Malloc2 16 4096 >/dev/null
rpc bdev_malloc_create -b Malloc3 16 4096 >/dev/null
rpc nvmf_create_transport -t TCP -u 16384 -m 4 -c 8192
rpc nvmf_create_subsystem "$nqn" -a -s POLLUXE2E0001 -d "pollux e2e"
rpc nvmf_subsystem_add_ns "$nqn" Malloc0 >/dev/null
rpc nvmf_subsystem_add_listener "$nqn" -t tcp -a 127.0.0.1 -s "$port" -f ipv4 --sock-impl "${SOCK_IMPL:-posix}"
set +e

fails=0
boot_vm() { # name guest-script [extra env...]: one VM run; returns the harness's exit code
	local name=$1 script=$2
	shift 2
	env "$@" "$harness" --guest-script "$script" -n "$nqn" -s "$port" -t 200 \
		-o "$work/$name" >"$work/$name.log" 2>&1 &
	local vm=$!
	if [ "$name" = digests-queues-ns ]; then
		on_guest_mark NS-ADD-READY "adding namespace 2 (Malloc1) live" \
			rpc nvmf_subsystem_add_ns "$nqn" Malloc1 -n 2 &&
			on_guest_mark NS-MASK-READY "adding namespace 3 (Malloc2) masked, then namespace 4 (Malloc3)" \
				add_masked_then_marker &&
			on_guest_mark NS-MASK-CHECKED "showing namespace 3 to $guest_hostnqn" \
				rpc nvmf_ns_add_host "$nqn" 3 "$guest_hostnqn" &&
			on_guest_mark NS-SHOWN "hiding namespace 3 from $guest_hostnqn again" \
				rpc nvmf_ns_remove_host "$nqn" 3 "$guest_hostnqn"
	fi
	wait $vm
}

# on_guest_mark MARK what cmd...: waits (while the VM of boot_vm runs) for the guest script
# to print MARK, then runs cmd; fails when the guest never printed it or cmd failed.
on_guest_mark() {
	local mark=$1 what=$2
	shift 2
	for _ in $(seq 1 1200); do
		grep -q "$mark" "$work/$name.log" && break
		kill -0 "$vm" 2>/dev/null || break
		sleep 0.1
	done
	grep -q "$mark" "$work/$name.log" || return 1
	echo "   $what"
	"$@" >/dev/null || { echo "   FAILED: $*"; return 1; }
}

add_masked_then_marker() {
	rpc nvmf_subsystem_add_ns "$nqn" Malloc2 -n 3 --no-auto-visible &&
		rpc nvmf_subsystem_add_ns "$nqn" Malloc3 -n 4
}

run_vm() { # name guest-script [extra env...]
	local name=$1 script=$2
	shift 2
	echo "== [$name] $(basename "$script")"
	local t0=$SECONDS rc attempt
	# A guest that never reached its script (exit 4 with no script output) is the emulator
	# starving on a loaded machine, not a pollux failure: boot it once more.
	for attempt in 1 2; do
		boot_vm "$name" "$script" "$@"
		rc=$?
		[ $rc -eq 4 ] && ! grep -q "\[guest-script\]" "$work/$name.log" && [ $attempt -eq 1 ] || break
		echo "   the guest did not boot in time; retrying once"
	done
	if [ $rc -eq 0 ] && [ "$name" = digests-queues-ns ] &&
		! grep -q "controller created.*hdgst=true ddgst=true" "$work/pollux.log"; then
		echo "   the host did not negotiate header and data digests"
		rc=99
	fi
	local dmesg_bad=
	if [ -f "$work/$name/dmesg.txt" ]; then
		dmesg_bad=$(grep -iE "nvme.*(error|timeout|reset|failed|digest)" "$work/$name/dmesg.txt" || true)
	fi
	if [ $rc -ne 0 ] || [ -n "$dmesg_bad" ]; then
		echo "   FAILED (rc=$rc, $((SECONDS - t0)) s)"
		grep -E "guest-script|FAILED|===" "$work/$name.log" | tail -40
		[ -n "$dmesg_bad" ] && echo "   guest dmesg: $dmesg_bad"
		fails=$((fails + 1))
	else
		echo "   ok ($((SECONDS - t0)) s)"
	fi
}

[ "${ONLY:-}" = ns ] || run_vm tour "$hdir/examples/nvme-cli-tour.sh"
[ "${ONLY:-}" = ns ] || run_vm fio-verify "$hdir/examples/fio-verify.sh"
# The kernel creates at most one I/O queue per guest CPU: 2 vCPUs for -i 2.
# The guest's host identity is chosen here, so that namespace masking can name it.
guest_hostid=$(cat /proc/sys/kernel/random/uuid)
guest_hostnqn=nqn.2014-08.org.nvmexpress:uuid:$guest_hostid
run_vm digests-queues-ns "$root/scripts/e2e/guest-digests-queues-ns.sh" CONNECT_OPTS="-g -G -i 2" SMP=2 \
	HOSTID="$guest_hostid" HOSTNQN="$guest_hostnqn"

echo "== target side"
rpc nvmf_get_stats | python3 -c 'import json,sys; d=json.load(sys.stdin); print("poll groups:", [(g["name"], g["admin_qpairs"], g["io_qpairs"]) for g in d["poll_groups"]])'
if grep -iE "panick|panic" "$work/pollux.log"; then fails=$((fails + 1)); fi
if [ $fails -ne 0 ]; then
	KEEP=1
	echo "e2e-linux-host: $fails run(s) FAILED"
	exit 1
fi
echo "e2e-linux-host: all runs passed"
