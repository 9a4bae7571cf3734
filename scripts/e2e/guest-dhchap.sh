# In-guest part of scripts/e2e-dhchap.sh (busybox sh; the host prepends HKEY, CKEY, WKEY).
# Each step prints a header; the first failing step exits with its number.
step() { echo "== step $1: $2"; }
conn() { nvme connect -t tcp -a "$NVMF_ADDR" -s "$NVMF_PORT" -n "$NVMF_NQN" --hostnqn="$HOSTNQN" --hostid="$HOSTID" "$@"; }
dev_wait() { # prints /dev/nvmeXnY of $NVMF_NQN once it has a size (the multipath head)
	for _ in $(seq 1 100); do
		for b in /sys/block/nvme*n*; do
			n=${b##*/}
			case $n in nvme*c*n*) continue ;; esac
			sn=$(cat "$b/device/subsysnqn" 2>/dev/null || cat "$b/device/device/subsysnqn" 2>/dev/null)
			[ "$sn" = "$NVMF_NQN" ] && [ "$(cat "$b/size" 2>/dev/null || echo 0)" -gt 0 ] && { echo "/dev/$n"; return 0; }
		done
		sleep 0.1
	done
	return 1
}
verify() { # device
	fio --name=v --filename="$1" --rw=randwrite --bs=4k --size=8M --ioengine=libaio --direct=1 \
		--iodepth=8 --verify=crc32c --do_verify=1 --output="fio-$2.txt" || return 1
	grep -q "err= 0" "fio-$2.txt"
}
step 1 "connect without a key: refused"
conn >no-key.log 2>&1 && { echo "connected without a key"; nvme disconnect -n "$NVMF_NQN"; exit 1; }
cat no-key.log
step 2 "connect with a wrong key: refused"
conn --dhchap-secret="$WKEY" >wrong-key.log 2>&1 && { echo "connected with a wrong key"; nvme disconnect -n "$NVMF_NQN"; exit 2; }
cat wrong-key.log
dmesg | grep -i "auth" | tail -3
step 3 "connect with the host key (one-way): authenticated, fio verify"
conn --dhchap-secret="$HKEY" >with-key.log 2>&1 || { cat with-key.log; dmesg | tail -10; exit 3; }
dev=$(dev_wait) || { echo "no namespace"; dmesg | tail -10; exit 3; }
dmesg | grep -i "authenticated" | tail -2
verify "$dev" oneway || { cat fio-oneway.txt; exit 3; }
nvme disconnect -n "$NVMF_NQN" >/dev/null
step 4 "bidirectional: the controller proves itself too, fio verify"
conn --dhchap-secret="$HKEY" --dhchap-ctrl-secret="$CKEY" >bidir.log 2>&1 || { cat bidir.log; dmesg | tail -10; exit 4; }
dev=$(dev_wait) || { echo "no namespace"; dmesg | tail -10; exit 4; }
dmesg | grep -i "authenticated" | tail -2
verify "$dev" bidir || { cat fio-bidir.txt; exit 4; }
nvme disconnect -n "$NVMF_NQN" >/dev/null
step 5 "bidirectional with a wrong controller key: refused"
conn --dhchap-secret="$HKEY" --dhchap-ctrl-secret="$WKEY" >wrong-ctrl.log 2>&1 && { echo "accepted a wrong controller key"; nvme disconnect -n "$NVMF_NQN"; exit 5; }
dmesg | grep -i "auth" | tail -3
echo "DH-HMAC-CHAP against pollux: all steps passed"
