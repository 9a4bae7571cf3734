#!/usr/bin/env bash
# bench/rbd.sh - pollux-perf -> pollux (NVMe/TCP) -> RBD against fio's own ioengine=rbd on
# the same throw-away Ceph cluster, same image, QD and block size, in one run; prints the
# IOPS ratio (goal >= 0.9 at 4 KiB QD32 randread and randwrite) and the target core's busy
# share during pollux's run. Needs the Ceph packages and fio (Debian's fio has the rbd
# engine). Env: SECS (default 10), QD (32), BS (4096), TCORE (target core, 0), PCORE
# (pollux-perf core, 1), WORKLOADS ("randread randwrite"), POLLUX_ARGS (default
# "--idle-spin-us 0": the Ceph daemons and librbd's threads share the cores; a reactor that
# spins 200 us after each burst takes the CPU the OSD needs and halved randread here).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
SECS=${SECS:-10}
QD=${QD:-32}
BS=${BS:-4096}
TCORE=${TCORE:-0}
PCORE=${PCORE:-1}
WORKLOADS=${WORKLOADS:-"randread randwrite"}
command -v jq >/dev/null || { echo "bench/rbd.sh needs jq"; exit 1; }
fio --enghelp 2>/dev/null | grep -qw rbd || { echo "bench/rbd.sh: this fio has no rbd engine"; exit 1; }
(cd "$root" && cargo build -q --release --bin pollux --bin pollux-perf)
BIN=${CARGO_TARGET_DIR:-$root/target}/release
work=$(mktemp -d /tmp/pollux-bench-rbd.XXXXXX)
pid=
cleanup() {
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    "$root/scripts/ceph-dev-cluster.sh" stop "$work/ceph" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
conf=$("$root/scripts/ceph-dev-cluster.sh" start "$work/ceph")
rbd -c "$conf" create --size 256M --image-feature layering rbd/bench
# Fill the image so reads hit written objects on both sides.
fio --name=fill --ioengine=rbd --clientname=admin --pool=rbd --rbdname=bench --rw=write --bs=1M \
    --iodepth=8 --size=256M --eta=never --output=/dev/null --conf="$conf" 2>/dev/null ||
    CEPH_CONF=$conf fio --name=fill --ioengine=rbd --clientname=admin --pool=rbd --rbdname=bench \
        --rw=write --bs=1M --iodepth=8 --size=256M --eta=never --output=/dev/null
sock=$work/rpc.sock
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nqn=nqn.2016-06.io.pollux:bench-rbd
"$BIN/pollux" -m "[$TCORE]" -r "$sock" --no-default --log-level ERROR ${POLLUX_ARGS---idle-spin-us 0} >"$work/pollux.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do [[ -S "$sock" ]] && break; sleep 0.05; done
rpc() { python3 "$root/scripts/rpc.py" -s "$sock" "$@"; }
rpc bdev_rbd_register_cluster c0 --config-file "$conf" >/dev/null
rpc bdev_rbd_create -b Rbd0 -c c0 rbd bench 4096 >/dev/null
rpc nvmf_create_transport -t TCP >/dev/null
rpc nvmf_create_subsystem "$nqn" -a -s BENCHRBD >/dev/null
rpc nvmf_subsystem_add_ns "$nqn" Rbd0 >/dev/null
rpc nvmf_subsystem_add_listener "$nqn" -t tcp -a 127.0.0.1 -s "$port" -f ipv4 >/dev/null
busy_idle() { rpc framework_get_reactors | jq -r '[.reactors[0].busy, .reactors[0].idle] | @tsv'; }
printf "%-10s %5s %3s %12s %12s %7s %10s\n" workload bs qd pollux_iops fio_rbd_iops ratio core_busy
for w in $WORKLOADS; do
    read -r b0 i0 < <(busy_idle)
    p=$("$BIN/pollux-perf" -r "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$nqn" \
        -q "$QD" -o "$BS" -w "$w" -t "$SECS" -c "[$PCORE]" --json 2>>"$work/perf.log" | jq '.total.iops')
    read -r b1 i1 < <(busy_idle)
    busy=$(awk -v b=$((b1 - b0)) -v i=$((i1 - i0)) 'BEGIN { printf "%.0f%%", 100 * b / (b + i) }')
    f=$(CEPH_CONF=$conf taskset -c "$PCORE" fio --name=rbd --ioengine=rbd --clientname=admin --pool=rbd \
        --rbdname=bench --rw="$w" --bs="$BS" --iodepth="$QD" --size=256M --time_based \
        --runtime="$SECS" --eta=never --output-format=json 2>>"$work/fio.log" |
        jq "[.jobs[0].read.iops, .jobs[0].write.iops] | add")
    ratio=$(awk -v p="$p" -v f="$f" 'BEGIN { printf "%.2f", p / f }')
    printf "%-10s %5s %3s %12.0f %12.0f %7s %10s\n" "$w" "$BS" "$QD" "$p" "$f" "$ratio" "$busy"
done
