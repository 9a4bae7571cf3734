#!/bin/sh
# guest-lib.sh - functions the guest scripts share (busybox sh). The harness copies one file
# into the guest, so e2e_guest_script (lib.sh) writes this file and a guest script into one.

# guest_connect: connects to $NQN at $ADDR:$PORT and sets dev to its namespace's block
# device once it has a size; exits 1 when the connect fails, 2 when no namespace appears.
guest_connect() {
	nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" || exit 1
	dev=
	for _ in $(seq 1 100); do
		for b in /sys/block/nvme*n*; do
			[ -e "$b" ] || continue
			case ${b##*/} in nvme*c*n*) continue ;; esac
			[ "$(cat "$b/size" 2>/dev/null || echo 0)" -gt 0 ] && dev=/dev/${b##*/} && break
		done
		[ -n "$dev" ] && break
		sleep 0.1
	done
	[ -n "$dev" ] || { nvme disconnect -n "$NQN"; exit 2; }
}
