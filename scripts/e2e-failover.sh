#!/usr/bin/env bash
# e2e-failover.sh - the real Linux host failing over between two pollux gateways (ANA).
#
# Two pollux processes export one volume: the same subsystem NQN, serial number and
# namespace UUID/NGUID, disjoint controller id ranges, each its own port; the backend is one
# file opened by a uring bdev in each (BDEV=aio for the aio bdev), or with BDEV=rbd one RBD
# image (layering only, no exclusive lock) of a throw-away Ceph cluster
# (scripts/ceph-dev-cluster.sh) opened by an rbd bdev in each. Gateway 1 starts
# optimized, gateway 2 non-optimized, and each refers to the other in its discovery log.
# The ../shared/nvmf-vm guest (Linux 6.1, native NVMe multipath) connects to both and runs
# scripts/e2e/guest-failover.sh: one /dev/nvmeXnY with two paths, a crc32c-verified fio job
# per case while this script acts when the guest prints READY-<case>:
#   a  gateway 1 inaccessible, gateway 2 optimized (nvmf_subsystem_listener_set_ana_state)
#   b  gateway 2, now carrying the I/O, SIGKILLed (gateway 1 was put back to non-optimized)
#   c  gateway 2 restarted from the config it saved before (save_config -> --json)
# It checks that the paths' sysfs ana_state matches the states the RPCs report, that fio
# ends without errors, that the guest's dmesg shows no I/O errors, and prints the longest
# I/O pause of each case (fio's completion latency max, and the longest gap in its 100 ms
# IOPS log), with a baseline job without failover for comparison. Skips (exit 0) when the harness is absent. Env: PROFILE=release|dev (default
# dev), KEEP=1 keeps logs, BDEV=uring|aio|rbd, RBD_FEATURES (default layering; e.g.
# layering,exclusive-lock to see the lock pass between the gateways).
set -u
. "$(dirname "$0")/e2e/lib.sh"
e2e_init e2e-failover
nqn=nqn.2016-06.io.pollux:e2e-ha
p1=$(e2e_free_port)
p2=$(e2e_free_port)
while [ "$p2" = "$p1" ]; do p2=$(e2e_free_port); done
declare -A gw_pid port
port[1]=$p1
port[2]=$p2
rpc() { # gateway method args...
	local g=$1
	shift
	python3 "$root/scripts/rpc.py" -s "$work/gw$g.sock" "$@"
}
vm=
e2e_cleanup_hook() {
	[ -n "$vm" ] && kill "$vm" 2>/dev/null && wait "$vm" 2>/dev/null
}

start_gw() { # gateway [extra args]
	local g=$1
	shift
	e2e_start_pollux "gateway $g" "$work/gw$g.sock" "$work/gw$g.log" -m 0x1 "$@"
	gw_pid[$g]=$pid
}

bdev=${BDEV:-uring}
case $bdev in
uring | aio) truncate -s 64M "$work/volume.img" ;;
rbd)
	e2e_require_ceph BDEV=rbd
	e2e_start_ceph
	rbd -c "$conf" create --size 64M --image-feature "${RBD_FEATURES:-layering}" rbd/ha || exit 1
	;;
*) echo "BDEV: $bdev is not uring, aio or rbd"; exit 2 ;;
esac
create_volume() { # gateway
	if [ "$bdev" = rbd ]; then
		rpc "$1" bdev_rbd_register_cluster ceph0 --config-file "$conf" >/dev/null &&
			rpc "$1" bdev_rbd_create -b Vol0 -c ceph0 rbd ha 4096 >/dev/null
	else
		rpc "$1" bdev_"${bdev}"_create "$work/volume.img" Vol0 4096 >/dev/null
	fi
}
for g in 1 2; do
	other=$((3 - g))
	echo "== gateway $g on 127.0.0.1:${port[$g]}"
	start_gw $g
	set -e
	create_volume $g
	rpc $g nvmf_create_transport -t TCP -u 16384 -m 4 -c 8192
	rpc $g nvmf_create_subsystem "$nqn" -a -s POLLUXHA0001 -d "pollux ha" -r -m 4 \
		-i $((g * 1000 - 999)) -I $((g * 1000))
	rpc $g nvmf_subsystem_add_ns "$nqn" Vol0 -n 1 -u 6d1f9a52-3c4e-4b8a-9f0e-1a2b3c4d5e6f \
		-g 6D1F9A523C4E4B8A9F0E1A2B3C4D5E6F >/dev/null
	state=optimized
	[ $g = 2 ] && state=non_optimized
	rpc $g nvmf_subsystem_add_listener "$nqn" -t tcp -a 127.0.0.1 -s "${port[$g]}" -f ipv4 -n $state
	rpc $g nvmf_discovery_add_referral -t tcp -a 127.0.0.1 -s "${port[$other]}" -f ipv4
	set +e
done

# The sysfs spelling of gateway $1's state for group 1, as its RPC reports it.
rpc_state() {
	rpc "$1" nvmf_subsystem_get_listeners "$nqn" 2>/dev/null |
		python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ana_states"][0]["ana_state"].replace("_","-"))' 2>/dev/null ||
		echo none
}
expect() { # label: what the guest must show at that checkpoint
	echo "$1 p1=$(rpc_state 1) p2=$(rpc_state 2)" >>"$work/expected.txt"
}
expect init

sed "s/^P2=.*/P2=${port[2]}/" "$root/scripts/e2e/guest-failover.sh" >"$work/guest-failover.sh"
echo "== booting the guest (Linux native multipath)"
t_start=$SECONDS
"$harness" --guest-script "$work/guest-failover.sh" -n "$nqn" -s "${port[1]}" -t 420 \
	-o "$work/vm" >"$work/vm.log" 2>&1 &
vm=$!

# wait_for MARKER: until the guest printed it (or the VM ended).
wait_for() {
	for _ in $(seq 1 3000); do
		grep -qE "$1" "$work/vm.log" && return 0
		kill -0 "$vm" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
fails=0
act() { # case description commands...
	local c=$1 what=$2
	shift 2
	if ! wait_for "READY-$c\s*\$"; then
		echo "   the guest never reached case $c"
		fails=$((fails + 1))
		return 1
	fi
	echo "== case $c: $what"
	"$@"
}
# I/O commands gateway $1 completed so far.
io_of() {
	rpc "$1" nvmf_get_stats 2>/dev/null |
		python3 -c 'import json,sys; print(sum(g["completed_nvme_io"] for g in json.load(sys.stdin)["poll_groups"]))' 2>/dev/null ||
		echo 0
}
carrier() { # gateway: it completed I/O in the last second and the other did not
	local g=$1 o=$((3 - $1)) g0 o0 g1 o1
	g0=$(io_of "$g")
	o0=$(io_of "$o")
	sleep 1
	g1=$(io_of "$g")
	o1=$(io_of "$o")
	echo "   I/O completed in 1 s: gateway $g $((g1 - g0)), gateway $o $((o1 - o0))"
	if [ $((g1 - g0)) -le 0 ] || [ $((o1 - o0)) -ne 0 ]; then
		echo "   FAILED: gateway $g is not the one carrying the I/O"
		fails=$((fails + 1))
	fi
}
case_a() {
	carrier 1
	rpc 1 nvmf_subsystem_listener_set_ana_state "$nqn" -n inaccessible -t tcp -a 127.0.0.1 -s "${port[1]}" -f ipv4
	rpc 2 nvmf_subsystem_listener_set_ana_state "$nqn" -n optimized -t tcp -a 127.0.0.1 -s "${port[2]}" -f ipv4
	expect a
	rpc 2 save_config >"$work/gw2.json"
	wait_for "PATHS a " || return
	# Gateway 1 back as the standby path before gateway 2 is killed.
	rpc 1 nvmf_subsystem_listener_set_ana_state "$nqn" -n non_optimized -t tcp -a 127.0.0.1 -s "${port[1]}" -f ipv4
	expect standby
}
case_b() {
	carrier 2
	e2e_stop_pollux "${gw_pid[2]}" KILL
	gw_pid[2]=
}
case_c() {
	start_gw 2 --json "$work/gw2.json"
	expect c
	wait_for "PATHS c " && carrier 2
}
act a "gateway 1 inaccessible, gateway 2 optimized (RPC)" case_a
act b "SIGKILL gateway 2 (carrying the I/O)" case_b
act c "restart gateway 2 from its saved config" case_c
wait "$vm"
rc=$?
vm=
echo "== guest finished (rc=$rc, $((SECONDS - t_start)) s)"
grep -E "\[guest-script\] (===|PATHS|multipath|FAILED|ALL OK)" "$work/vm.log" | sed 's/^/   /'
if [ $rc -ne 0 ] || ! grep -q "ALL OK" "$work/vm.log"; then
	echo "   FAILED: the guest script failed"
	grep -E "guest-script|FAILED" "$work/vm.log" | tail -40
	fails=$((fails + 1))
fi

echo "== sysfs ana_state against the RPC states"
while read -r label want; do
	got=$(grep -oE "PATHS $label p1=[a-z-]+ p2=[a-z-]+" "$work/vm.log" | head -1 | cut -d' ' -f3-)
	if [ "$got" = "$want" ]; then
		echo "   $label: $got"
	else
		echo "   $label: FAILED: the guest saw '$got', the RPCs say '$want'"
		fails=$((fails + 1))
	fi
done <"$work/expected.txt"

echo "== longest I/O pause per case"
python3 - "$work/vm" <<'EOF' | tee "$work/pauses.txt" || fails=$((fails + 1))
import glob, json, os, sys
d = sys.argv[1]
names = {"0": "baseline, no failover", "a": "(a) ANA change by RPC",
         "b": "(b) gateway SIGKILL", "c": "(c) gateway restart"}
bad = 0
for c in ("0", "a", "b", "c"):
    try:
        j = json.load(open(os.path.join(d, f"fio-{c}.json")))
    except Exception as e:
        print(f"   {names[c]}: no fio result ({e})")
        bad += 1
        continue
    job = j["jobs"][0]
    lat = max(job[k]["lat_ns"]["max"] for k in ("read", "write")) / 1e6
    ios = job["write"]["total_ios"] + job["read"]["total_ios"]
    err = job.get("error", 0) + job.get("total_err", 0)
    # Longest stretch without a completion in the 100 ms IOPS log.
    times = []
    for f in glob.glob(os.path.join(d, f"iops-{c}_iops*.log")):
        for line in open(f):
            parts = [p.strip() for p in line.split(",")]
            if len(parts) > 1 and int(parts[1]) > 0:
                times.append(int(parts[0]))
    times.sort()
    # fio stops logging at the runtime: an I/O stalled past it shows as the job's overrun.
    times.append(max(job.get("job_runtime", 0), times[-1] if times else 0))
    gap = max((b - a for a, b in zip(times, times[1:])), default=0)
    gap = max(gap - 100, 0)
    print(f"   {names[c]}: longest I/O latency {lat:.0f} ms, longest gap in completions "
          f"{gap} ms, {ios} I/Os verified-written, errors {err}")
    bad += err != 0 or ios == 0
sys.exit(1 if bad else 0)
EOF
if grep -iE "panick" "$work"/gw*.log; then fails=$((fails + 1)); fi
if [ $fails -ne 0 ]; then
	KEEP=1
	echo "e2e-failover: $fails FAILED (logs kept in $work)"
	exit 1
fi
echo "e2e-failover: all passed"
