#!/usr/bin/env bash
# e2e-compare.sh - the real Linux host running `nvme compare` (nvme-cli 2.3) against pollux.
#
# pollux (two reactors) exports a 64 MiB malloc namespace (4 KiB blocks); the ../shared/nvmf-vm
# guest (Debian 12 kernel) runs scripts/e2e/guest-compare.sh: nvme write, then nvme compare
# of the same data (must succeed) and of other data (must fail with Compare Failure and
# change nothing), for one block (in-capsule data) and 8 blocks (R2T). Skips (exit 0) when
# the harness is absent. Env: PROFILE (dev|release), KEEP=1 keeps the logs.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
harness=${HARNESS:-$root/../shared/nvmf-vm/run-fio-vm.sh}
if [ ! -x "$harness" ]; then
	echo "e2e-compare: SKIPPED: $harness not found (the nvmf-vm harness is not installed)"
	exit 0
fi
profile=${PROFILE:-dev}
if [ "$profile" = release ]; then build_flag=--release; sub=release; else build_flag=; sub=debug; fi
tdir=${CARGO_TARGET_DIR:-$root/target}
echo "== building pollux ($profile)"
(cd "$root" && cargo build $build_flag --bin pollux) || exit 1
bin=$tdir/$sub/pollux

work=$(mktemp -d /tmp/pollux-e2e-compare.XXXXXX)
sock=$work/rpc.sock
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nqn=nqn.2016-06.io.pollux:e2e-compare
rpc() { python3 "$root/scripts/rpc.py" -s "$sock" "$@"; }
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "== starting pollux on 127.0.0.1:$port"
"$bin" -m 0x3 -r "$sock" --no-default --no-pin >"$work/pollux.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { echo "pollux did not start"; cat "$work/pollux.log"; exit 1; }
set -e
rpc bdev_malloc_create -b Malloc0 64 4096 >/dev/null
rpc nvmf_create_transport -t TCP -u 16384 -m 4 -c 8192
rpc nvmf_create_subsystem "$nqn" -a -s POLLUXCMP0001 -d "pollux compare"
rpc nvmf_subsystem_add_ns "$nqn" Malloc0 >/dev/null
rpc nvmf_subsystem_add_listener "$nqn" -t tcp -a 127.0.0.1 -s "$port" -f ipv4
set +e

echo "== Linux guest: nvme compare"
start=$(date +%s)
"$harness" --guest-script "$here/e2e/guest-compare.sh" -n "$nqn" -s "$port" -t 240 \
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
