# In-guest part of scripts/e2e-reservations.sh (busybox sh; the host prepends H1, ID1, H2, ID2:
# two host NQNs and host ids, and PORT2: a second listener of the subsystem, since nvme-cli
# 2.3 refuses a second connect to the same address and subsystem as "already connected",
# whatever the host NQN and even with --duplicate-connect). Each step prints a header; the
# first failing step exits with its number.
#
# Addressing one controller: the guest kernel (6.1) runs native NVMe multipath, so both
# controllers' namespace 1 sits behind one /dev/nvmeXnY head that routes I/O through either
# path. Every command here goes to a controller's character device (/dev/nvmeN, with -n 1):
# the kernel sends an I/O passthrough on it through that controller's queues (it has one
# namespace), so the target sees the host id of that controller's Connect.
step() { echo "== step $1: $2"; }
conn() { # port hostnqn hostid
	nvme connect -t tcp -a "$NVMF_ADDR" -s "$1" -n "$NVMF_NQN" --hostnqn="$2" --hostid="$3"
}
ctrl_of() { # hostnqn: prints /dev/nvmeN of our subsystem connected with that host NQN
	for _ in $(seq 1 100); do
		for c in /sys/class/nvme/nvme*; do
			[ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$NVMF_NQN" ] || continue
			[ "$(cat "$c/hostnqn" 2>/dev/null)" = "$1" ] || continue
			[ "$(cat "$c/state" 2>/dev/null)" = live ] || continue
			echo "/dev/${c##*/}"
			return 0
		done
		sleep 0.1
	done
	return 1
}
# run NAME CMD...: runs, saves output in NAME.txt (shows its first 40 lines: not a read's
# hex dump), returns nvme's exit status.
run() {
	n=$1
	shift
	"$@" >"$n.txt" 2>&1
	rc=$?
	grep -v '^ *[0-9a-f]\{4\}: ' "$n.txt" | head -40 | sed 's/^/    /'
	return $rc
}
ok() { # step name cmd...: must succeed
	s=$1
	shift
	run "$@" || { echo "FAIL: $1 failed"; exit "$s"; }
}
conflict() { # step name cmd...: must fail with Reservation Conflict (status 0x83)
	s=$1
	shift
	if run "$@"; then
		echo "FAIL: $1 succeeded, a reservation conflict was expected"
		exit "$s"
	fi
	grep -qiE "reservation.?conflict|\(0x(40)?83\)" "$1.txt" || { echo "FAIL: $1: not a reservation conflict"; exit "$s"; }
	echo "    -> reservation conflict, as expected"
}
io() { # ctrl read|write
	if [ "$2" = read ]; then
		nvme io-passthru "$1" -n 1 -o 0x02 -l 4096 -r -4 16 -6 0
	else
		nvme io-passthru "$1" -n 1 -o 0x01 -l 4096 -w -p 0x5a -4 16 -6 0
	fi
}

step 1 "connect two hosts (two host NQNs and host ids) to one subsystem"
conn "$NVMF_PORT" "$H1" "$ID1" >conn1.log 2>&1 || { cat conn1.log; dmesg | tail; exit 1; }
conn "$PORT2" "$H2" "$ID2" >conn2.log 2>&1 || { cat conn2.log; dmesg | tail; exit 1; }
c1=$(ctrl_of "$H1") || { echo "no controller for host 1"; exit 1; }
c2=$(ctrl_of "$H2") || { echo "no controller for host 2"; exit 1; }
echo "host 1: $c1, host 2: $c2"
[ "$c1" != "$c2" ] || { echo "both hosts share one controller"; exit 1; }
ls /dev/nvme* | tr '\n' ' '
echo
nvme id-ns "$c1" -n 1 | grep -iE "^(nmic|rescap)" | sed 's/^/    /'
nvme id-ctrl "$c1" | grep -i "^oncs" | sed 's/^/    /'

step 2 "both hosts register (keys 0x1111, 0x2222); the report lists both"
ok 2 reg1 nvme resv-register "$c1" -n 1 -k 0x1111 -r 0
ok 2 reg2 nvme resv-register "$c2" -n 1 -k 0x2222 -r 0
conflict 2 reg2-again nvme resv-register "$c2" -n 1 -k 0x3333 -r 0
ok 2 report1 nvme resv-report "$c1" -n 1 -e -d 63 -o json
grep -q "0x1111\|4369" report1.txt && grep -q "0x2222\|8738" report1.txt || { echo "FAIL: both keys are not reported"; exit 2; }

step 3 "host 1 acquires Write Exclusive; host 2 reads but cannot write or acquire"
ok 3 acq1 nvme resv-acquire "$c1" -n 1 -c 0x1111 -t 1 -a 0
ok 3 read2 io "$c2" read
conflict 3 write2 io "$c2" write
ok 3 write1 io "$c1" write
conflict 3 acq2 nvme resv-acquire "$c2" -n 1 -c 0x2222 -t 1 -a 0
conflict 3 acq2-badkey nvme resv-acquire "$c2" -n 1 -c 0x9999 -t 1 -a 0

step 4 "host 2 preempts host 1 as Exclusive Access: host 1 is unregistered and cannot read"
ok 4 preempt2 nvme resv-acquire "$c2" -n 1 -c 0x2222 -p 0x1111 -t 2 -a 1
conflict 4 read1 io "$c1" read
ok 4 read2b io "$c2" read
ok 4 report2 nvme resv-report "$c1" -n 1 -e -d 63 -o json
grep -qE '"rtype" *: *2' report2.txt || { echo "FAIL: rtype is not 2"; exit 4; }
grep -q "0x1111\|4369" report2.txt && { echo "FAIL: host 1 is still registered"; exit 4; }
conflict 4 release1 nvme resv-release "$c1" -n 1 -c 0x1111 -t 2 -a 0

step 5 "a report without the extended structure: Host Identifier Inconsistent Format"
if run report-noeds nvme resv-report "$c1" -n 1 -d 63; then
	echo "FAIL: a report without EDS succeeded"
	exit 5
fi
grep -qiE "host.?id.*inconsistent|\(0x(40)?18\)" report-noeds.txt || { echo "FAIL: not Host Identifier Inconsistent Format"; exit 5; }

step 6 "host 2 releases and unregisters; host 1 writes again"
ok 6 release2 nvme resv-release "$c2" -n 1 -c 0x2222 -t 2 -a 0
ok 6 unreg2 nvme resv-register "$c2" -n 1 -c 0x2222 -r 1
ok 6 write1b io "$c1" write
ok 6 report3 nvme resv-report "$c2" -n 1 -e -d 63 -o json
grep -qE '"rtype" *: *0' report3.txt || { echo "FAIL: a reservation is still held"; exit 6; }

step 7 "disconnect"
nvme disconnect -n "$NVMF_NQN" >disconnect.txt || { cat disconnect.txt; exit 7; }
cat disconnect.txt
echo "reservations against pollux: all steps passed"
