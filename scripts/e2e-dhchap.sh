#!/usr/bin/env bash
# e2e-dhchap.sh - the real Linux host (6.12 guest) authenticating to pollux with DH-HMAC-CHAP.
#
# pollux exports a malloc namespace to one host NQN with a host key (and a controller key
# for the bidirectional cases) from its keyring; the ../shared/nvmf-vm guest (GUEST_KERNEL=6.12,
# nvme-cli 2.3) runs scripts/e2e/guest-dhchap.sh: no key and a wrong key must be refused
# (dmesg: authentication failed), the right key connects (one-way, then bidirectional) and a
# short crc32c-verified fio job runs on each connection. Each VM run is one CASE
# "dhgroup:digest" (default "null:sha256 ffdhe2048:sha384 ffdhe3072:sha512"): each case starts
# pollux --wait-for-rpc and sets nvmf_set_config dhchap_dhgroups / dhchap_digests (a STARTUP
# method) to that one group and digest before framework_start_init, so the host
# must use them (it offers null and sha256 first). Skips (exit 0) when the harness is absent.
# Env: PROFILE, KEEP=1, CASES.
set -u
. "$(dirname "$0")/e2e/lib.sh"
e2e_init e2e-dhchap
nqn=nqn.2016-06.io.pollux:e2e-auth
hostid=$(python3 -c 'import uuid; print(uuid.uuid4())')
hostnqn=nqn.2014-08.org.nvmexpress:uuid:$hostid
# DHHC-1 secret: hash id, random key of the hash's length, CRC-32 (LE) appended, base64.
gen_key() { # hmac-id
	python3 -c 'import base64,os,sys,zlib
h=int(sys.argv[1]); k=os.urandom({0:32,1:32,2:48,3:64}[h])
print("DHHC-1:%02x:%s:" % (h, base64.b64encode(k+zlib.crc32(k).to_bytes(4,"little")).decode()))' "$1"
}

hkey=$(gen_key 1)
ckey=$(gen_key 2)
wkey=$(gen_key 1)
umask 077
echo "$hkey" >"$work/host.key"
echo "$ckey" >"$work/ctrl.key"

# nvmf_set_config is a STARTUP method (as in SPDK): each case starts its own pollux with
# --wait-for-rpc, sets the one group and digest, then framework_start_init.
start_case() { # group digest
	echo "== starting pollux on 127.0.0.1:$port (DH group $1, digest $2)"
	e2e_start_pollux pollux "$sock" "$work/pollux.log" -m 0x1 --wait-for-rpc
	rpc call nvmf_set_config "{\"dhchap_dhgroups\": [\"$1\"], \"dhchap_digests\": [\"$2\"]}" >/dev/null &&
		rpc framework_start_init &&
		rpc call keyring_file_add_key "{\"name\": \"hkey\", \"path\": \"$work/host.key\"}" >/dev/null &&
		rpc call keyring_file_add_key "{\"name\": \"ckey\", \"path\": \"$work/ctrl.key\"}" >/dev/null &&
		rpc bdev_malloc_create -b Malloc0 64 4096 >/dev/null &&
		rpc nvmf_create_transport -t TCP -u 16384 -m 4 -c 8192 &&
		rpc nvmf_create_subsystem "$nqn" -s POLLUXAUTH0001 -d "pollux auth" &&
		rpc nvmf_subsystem_add_ns "$nqn" Malloc0 >/dev/null &&
		rpc nvmf_subsystem_add_listener "$nqn" -t tcp -a 127.0.0.1 -s "$port" -f ipv4 &&
		rpc call nvmf_subsystem_add_host "{\"nqn\": \"$nqn\", \"host\": \"$hostnqn\", \"dhchap_key\": \"hkey\", \"dhchap_ctrlr_key\": \"ckey\"}" >/dev/null
}

fails=0
for case in ${CASES:-null:sha256 ffdhe2048:sha384 ffdhe3072:sha512}; do
	group=${case%%:*}
	digest=${case#*:}
	if ! start_case "$group" "$digest"; then
		echo "FAIL: pollux setup for group $group, digest $digest refused"
		e2e_stop_pollux "$pid"
		fails=$((fails + 1))
		continue
	fi
	g="$work/guest-$group.sh"
	{
		echo "HKEY='$hkey'; CKEY='$ckey'; WKEY='$wkey'"
		cat "$here/e2e/guest-dhchap.sh"
	} >"$g"
	echo "== Linux 6.12 guest, DH group $group, digest $digest"
	GUEST_KERNEL=6.12 HOSTNQN=$hostnqn HOSTID=$hostid "$harness" --guest-script "$g" -n "$nqn" -s "$port" -t 240 \
		-o "$work/vm-$group" >"$work/vm-$group.log" 2>&1
	rc=$?
	# Exit 3 is the harness failing to install what it needs; for the 6.12 guest that is
	# fetching Debian 13's kernel from the host's mirror: a missing dependency, said loudly.
	if [ $rc -eq 3 ] && grep -aqE "ERROR: (GUEST_KERNEL=6.12|apt-get update for trixie|no trixie|download of .* failed|unpacking .* failed)" "$work/vm-$group.log"; then
		echo "e2e-dhchap: SKIPPED: the Linux 6.12 guest kernel is not available: $(grep -a 'ERROR:' "$work/vm-$group.log" | tail -1)"
		exit 0
	fi
	grep -a "guest-script\]" "$work/vm-$group.log" | sed 's/^/  /'
	if [ $rc -ne 0 ]; then
		echo "FAIL: group $group, digest $digest (harness rc=$rc)"
		tail -20 "$work/vm-$group.log"
		fails=$((fails + 1))
	else
		echo "ok: group $group, digest $digest"
	fi
	e2e_stop_pollux "$pid"
done
grep -a -i "auth" "$work/pollux.log" | tail -20 | sed 's/^/  pollux: /'
[ $fails -eq 0 ] && echo "e2e-dhchap: all passed" || echo "e2e-dhchap: $fails failed"
[ $fails -eq 0 ]
