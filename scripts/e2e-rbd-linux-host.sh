#!/usr/bin/env bash
# e2e-rbd-linux-host.sh - the real Linux NVMe/TCP host against an RBD-backed namespace, and
# the data outliving the pollux process.
#
# Starts a throw-away Ceph cluster (scripts/ceph-dev-cluster.sh) and pollux with an RBD bdev
# (layering-only 32 MiB image) exported on 127.0.0.1; boots the ../shared/nvmf-vm guest,
# which runs fio crc32c verify (write + read back, 16 MiB); saves the config (save_config),
# stops pollux, starts a NEW pollux from that config (--json), and boots the guest again for
# a verify-only pass that reads back what the first process wrote. Skips (exit 0) when the
# harness or the Ceph packages are absent. Env: PROFILE=release|dev (default dev), KEEP=1.
set -u
. "$(dirname "$0")/e2e/lib.sh"
e2e_init e2e-rbd-linux-host ceph
nqn=nqn.2016-06.io.pollux:e2e-rbd

e2e_start_ceph
rbd -c "$conf" create --size 32M --image-feature layering rbd/e2e || exit 1

port=$(e2e_free_port)
echo "== pollux #1 on 127.0.0.1:$port"
e2e_start_pollux pollux "$sock" "$work/pollux1.log" -m 0x1
set -e
rpc bdev_rbd_register_cluster ceph0 --config-file "$conf" >/dev/null
rpc bdev_rbd_create -b Rbd0 -c ceph0 rbd e2e 4096 >/dev/null
rpc nvmf_create_transport -t TCP -u 16384 -m 4 -c 8192
rpc nvmf_create_subsystem "$nqn" -a -s POLLUXRBD0001 -d "pollux rbd e2e"
rpc nvmf_subsystem_add_ns "$nqn" Rbd0 >/dev/null
rpc nvmf_subsystem_add_listener "$nqn" -t tcp -a 127.0.0.1 -s "$port" -f ipv4
set +e

fails=0
run_vm() { # name mode
	local name=$1 mode=$2 t0=$SECONDS rc
	echo "== [$name] fio $mode in the guest"
	# The harness passes only its own variables to the guest: bake the mode into a copy.
	e2e_guest_script "$root/scripts/e2e/guest-rbd-verify.sh" "$work/guest.sh"
	sed "s/^MODE=.*/MODE=$mode/" "$work/guest.sh" >"$work/guest-$mode.sh"
	"$harness" --guest-script "$work/guest-$mode.sh" \
		-n "$nqn" -s "$port" -t 300 -o "$work/$name" >"$work/$name.log" 2>&1
	rc=$?
	grep -q "=== $mode ok" "$work/$name.log" || rc=${rc/#0/98}
	if [ $rc -ne 0 ]; then
		echo "   FAILED (rc=$rc, $((SECONDS - t0)) s)"
		grep -E "guest-script|FAILED" "$work/$name.log" | tail -30
		fails=$((fails + 1))
	else
		echo "   ok ($((SECONDS - t0)) s)"
	fi
}

run_vm write write
echo "== save_config, stop pollux #1, start pollux #2 from the saved config"
rpc save_config >"$work/config.json" || fails=$((fails + 1))
e2e_stop_pollux "$pid"
e2e_start_pollux pollux "$sock" "$work/pollux2.log" -m 0x1 --json "$work/config.json"
rpc bdev_get_bdevs -b Rbd0 >/dev/null || { echo "   Rbd0 not recreated from the config"; fails=$((fails + 1)); }
run_vm verify verify
if grep -iE "panick" "$work"/pollux*.log; then fails=$((fails + 1)); fi
if [ $fails -ne 0 ]; then
	echo "e2e-rbd-linux-host: $fails FAILED (logs: KEEP=1)"
	exit 1
fi
echo "e2e-rbd-linux-host: all passed"
