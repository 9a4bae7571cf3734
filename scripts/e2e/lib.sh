# scripts/e2e/lib.sh - the preamble every scripts/e2e-*.sh shares; source it, do not run it.
#
# It finds the ../shared/nvmf-vm harness (a loud SKIPPED and exit 0 when it is absent),
# builds pollux, makes the work directory, finds free loopback ports, starts pollux processes
# and cleans up on exit (pollux processes, the dev Ceph cluster, the work directory unless
# KEEP=1). A new e2e script starts like this:
#
#     set -u
#     . "$(dirname "$0")/e2e/lib.sh"
#     e2e_init e2e-NAME                     # skips without harness; builds; sets here, root,
#                                           # harness, hdir, bin, work, sock, port; exit trap
#     e2e_start_pollux pollux "$sock" "$work/pollux.log" -m 0x1   # sets pid
#     rpc bdev_malloc_create -b Malloc0 64 4096                   # rpc.py on $sock
#
# Extra clean-up (a VM still running, ...) goes in a function named e2e_cleanup_hook, which
# the exit trap calls after stopping the pollux processes and the Ceph cluster.

e2e_ceph_install="apt-get install --no-install-recommends ceph-mon ceph-osd ceph-common librbd1 librados2"
e2e_pids=()
e2e_ceph_dir=
work=

# e2e_init NAME [ceph]: skips (exit 0) when the harness (HARNESS, default
# ../shared/nvmf-vm/run-fio-vm.sh) is not there, or with `ceph` when the dev Ceph cluster's
# commands are not installed; then builds pollux and makes the work directory. Sets here
# (scripts/), root, harness, hdir, bin, work (/tmp/pollux-NAME.XXXXXX, removed by the exit
# trap), sock ($work/rpc.sock, the first pollux's RPC socket) and port (a free TCP port).
e2e_init() {
	e2e_name=$1
	here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
	root=$(cd "$here/.." && pwd)
	harness=${HARNESS:-$root/../shared/nvmf-vm/run-fio-vm.sh}
	if [ ! -x "$harness" ]; then
		echo "$e2e_name: SKIPPED: $harness not found (the nvmf-vm harness is not installed)"
		exit 0
	fi
	hdir=$(cd "$(dirname "$harness")" && pwd)
	[ "${2:-}" = ceph ] && e2e_require_ceph
	e2e_build
	work=$(mktemp -d "/tmp/pollux-$e2e_name.XXXXXX")
	trap e2e_cleanup EXIT
	sock=$work/rpc.sock
	port=$(e2e_free_port)
}

# e2e_guest_script SCRIPT OUT: writes guest-lib.sh and then the guest script SCRIPT into
# OUT (the harness copies a single file into the guest).
e2e_guest_script() {
	cat "$here/e2e/guest-lib.sh" "$1" >"$2"
}

# e2e_require_ceph [WHAT]: skips (exit 0) unless the dev Ceph cluster's commands are
# installed; WHAT says what needs them ("BDEV=rbd") when not the whole script.
e2e_require_ceph() {
	local b
	for b in ceph-mon ceph-osd rbd; do
		command -v "$b" >/dev/null && continue
		if [ -n "${1:-}" ]; then
			echo "$e2e_name: SKIPPED: $1 needs $b ($e2e_ceph_install)"
		else
			echo "$e2e_name: SKIPPED: $b is not installed ($e2e_ceph_install)"
		fi
		exit 0
	done
}

# e2e_build: builds the pollux binary (PROFILE=release|dev, default dev) and sets bin.
e2e_build() {
	local profile=${PROFILE:-dev} build_flag= sub=debug
	if [ "$profile" = release ]; then build_flag=--release; sub=release; fi
	echo "== building pollux ($profile)"
	(cd "$root" && cargo build $build_flag --bin pollux) || exit 1
	bin=${CARGO_TARGET_DIR:-$root/target}/$sub/pollux
}

# e2e_free_port: prints a TCP port free on 127.0.0.1 now.
e2e_free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# rpc ARGS...: scripts/rpc.py on the RPC socket $sock (scripts with several pollux
# processes define their own rpc).
rpc() { python3 "$root/scripts/rpc.py" -s "$sock" "$@"; }

# e2e_export_malloc NQN SERIAL MODEL PORT...: a 64 MiB malloc bdev (4 KiB blocks) as the
# namespace of NQN, open to any host, over TCP (16 KiB I/O unit, 8 KiB in-capsule data) on
# 127.0.0.1 at each PORT.
e2e_export_malloc() {
	local nqn=$1 serial=$2 model=$3 p
	shift 3
	rpc bdev_malloc_create -b Malloc0 64 4096 >/dev/null
	rpc nvmf_create_transport -t TCP -u 16384 -m 4 -c 8192
	rpc nvmf_create_subsystem "$nqn" -a -s "$serial" -d "$model"
	rpc nvmf_subsystem_add_ns "$nqn" Malloc0 >/dev/null
	for p in "$@"; do
		rpc nvmf_subsystem_add_listener "$nqn" -t tcp -a 127.0.0.1 -s "$p" -f ipv4
	done
}

# e2e_start_pollux LABEL SOCK LOG ARGS...: starts pollux (--no-default --no-pin, RPC on
# SOCK, output appended to LOG, ARGS such as -m 0x1 or --json) and waits for its socket;
# sets pid. Exits (1) with "LABEL did not start" and the log when the socket never shows.
e2e_start_pollux() {
	local label=$1 rpc_sock=$2 log=$3
	shift 3
	rm -f "$rpc_sock"
	"$bin" -r "$rpc_sock" --no-default --no-pin "$@" >>"$log" 2>&1 &
	pid=$!
	e2e_pids+=("$pid")
	for _ in $(seq 1 200); do [ -S "$rpc_sock" ] && break; sleep 0.05; done
	[ -S "$rpc_sock" ] || { echo "$label did not start"; cat "$log"; exit 1; }
}

# e2e_stop_pollux PID [SIGNAL]: stops a pollux e2e_start_pollux started (SIGTERM, or SIGNAL
# such as KILL) and waits for it; the exit trap then leaves it alone.
e2e_stop_pollux() {
	local p kept=()
	kill -"${2:-TERM}" "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	for p in "${e2e_pids[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
	e2e_pids=("${kept[@]}")
}

# e2e_start_ceph: starts a throw-away Ceph cluster in $work/ceph (stopped on exit) and sets
# conf to its ceph.conf.
e2e_start_ceph() {
	echo "== starting a dev Ceph cluster"
	e2e_ceph_dir=$work/ceph
	conf=$("$root/scripts/ceph-dev-cluster.sh" start "$e2e_ceph_dir") || exit 1
}

# The exit trap: stops what the script started, then removes the work directory (kept,
# and said so, with KEEP=1).
e2e_cleanup() {
	local p
	for p in "${e2e_pids[@]}"; do
		kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	declare -F e2e_cleanup_hook >/dev/null && e2e_cleanup_hook
	[ -n "$e2e_ceph_dir" ] && "$root/scripts/ceph-dev-cluster.sh" stop "$e2e_ceph_dir" >/dev/null 2>&1
	if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $work"; else rm -rf "$work"; fi
}
