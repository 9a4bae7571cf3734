#!/bin/sh
# guest-rbd-verify.sh - guest script (run-fio-vm.sh --guest-script, busybox sh; run after
# guest-lib.sh, see e2e_guest_script) for
# scripts/e2e-rbd-linux-host.sh: fio crc32c verify on an RBD-backed namespace.
#   MODE=write       16 MiB of random writes (bs 4k..64k) with verify=crc32c: fio writes,
#                    then reads everything back and checks it
#   MODE=verify     the same job with verify_only=1: only reads and checks what a
#                    previous run (a previous pollux process) wrote
# (scripts/e2e-rbd-linux-host.sh bakes MODE into a copy; the harness forwards no env.)
# Exit codes: 1 connect, 2 no namespace, 3 fio failed, 4 verify problem, 5 short verify.
ADDR=${NVMF_ADDR:-10.0.2.2}
PORT=${NVMF_PORT:-4420}
NQN=${NVMF_NQN:-}
RES=${RESULT_DIR:-/tmp}
MODE=${RBD_MODE:-write}
SIZE=16m
echo "=== connect $ADDR:$PORT $NQN ($MODE)"
guest_connect
echo "=== $dev: fio $MODE"
extra=
[ "$MODE" = verify ] && extra="--verify_only=1"
fio --eta=never --name=rbd --filename="$dev" --ioengine=libaio --direct=1 --iodepth=16 \
	--rw=randwrite --bssplit=4k/40:16k/30:64k/30 --size=$SIZE --verify=crc32c \
	--verify_fatal=1 --randseed=4242 $extra --output="$RES/fio-$MODE.txt" 2>"$RES/fio-$MODE.stderr"
rc=$?
cat "$RES/fio-$MODE.txt" "$RES/fio-$MODE.stderr"
nvme disconnect -n "$NQN" >/dev/null 2>&1
[ $rc -eq 0 ] || exit 3
! grep -Eqi 'verify|bad magic|crc' "$RES/fio-$MODE.stderr" || exit 4
# The verify pass read back all 16 MiB.
grep -Eq 'READ: bw=.*io=1[0-9](\.[0-9]+)?MiB' "$RES/fio-$MODE.txt" || exit 5
echo "=== $MODE ok"
