#!/usr/bin/env bash
# A throw-away single-node Ceph cluster entirely under DIR, for pollux's RBD tests and bench.
#
#   scripts/ceph-dev-cluster.sh start DIR   # prints the path of DIR/ceph.conf on success
#   scripts/ceph-dev-cluster.sh stop DIR    # stops exactly the daemons `start DIR` started
#
# One monitor and one memstore OSD bound to 127.0.0.1 (msgr2, a free port), cephx on,
# every path (conf, keyrings, data, logs, run dir, admin sockets, pid files) under DIR, and
# pool `rbd` created and initialised. No mgr: rbd and librbd I/O do not need one (health
# turns WARN after a while, which is harmless). Needs the Debian packages ceph-mon ceph-osd
# ceph-common (and librbd1 librados2 for pollux itself).
set -euo pipefail

usage() {
    echo "usage: $0 start DIR | stop DIR" >&2
    exit 2
}
[[ $# -eq 2 ]] || usage
cmd=$1
dir=$(realpath -m "$2")

stop_cluster() {
    # OSD before mon: a monitor that outlives its OSD answers at once; the other way round
    # the OSD waits ~5 s for a monitor to report to.
    local who pid
    for who in osd.0 mon.a; do
        [[ -f "$dir/run/$who.pid" ]] || continue
        pid=$(cat "$dir/run/$who.pid")
        # Only a process we started: its command line names our conf file.
        if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$dir/ceph.conf"; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.05
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/run/$who.pid"
    done
}

case "$cmd" in
stop)
    stop_cluster
    exit 0
    ;;
start) ;;
*) usage ;;
esac

for b in ceph-mon ceph-osd ceph ceph-authtool monmaptool rbd; do
    if ! command -v "$b" >/dev/null; then
        echo "$0: $b is not installed (apt-get install --no-install-recommends ceph-mon ceph-osd ceph-common librbd1 librados2)" >&2
        exit 3
    fi
done

mkdir -p "$dir"/{run,log,mon.a,osd.0}
trap 'echo "$0: start failed; logs in $dir/log" >&2; stop_cluster' ERR

# A free TCP port on 127.0.0.1 for the monitor (the OSD picks its own in 6800-7300).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fsid=$(uuidgen)
conf="$dir/ceph.conf"
cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.1/32
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/client.admin.keyring
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
crash dir = $dir/crash
exec dir = $dir/run
mon cluster log file = $dir/log/cluster.log
log to stderr = false
err to stderr = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon data avail warn = 1
mon data avail crit = 0
mon warn on pool no redundancy = false
paxos propose interval = 0.1

client mount timeout = 20
rados mon op timeout = 20
rados osd op timeout = 20

[mon]
mon data = $dir/mon.\$id
keyring = $dir/mon.\$id/keyring

[osd]
osd data = $dir/osd.\$id
keyring = $dir/osd.\$id/keyring
osd objectstore = memstore
memstore device bytes = 1073741824
memstore page size = 4096
osd max object name len = 256
osd max object namespace len = 64
EOF

ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$dir/client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/client.admin.keyring" >/dev/null
monmaptool --create --addv a "[v2:127.0.0.1:$port]" --fsid "$fsid" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring"
ceph-mon -c "$conf" -i a

osd_uuid=$(uuidgen)
ceph -c "$conf" osd new "$osd_uuid" >/dev/null
ceph-authtool --create-keyring "$dir/osd.0/keyring" --gen-key -n osd.0 >/dev/null
ceph -c "$conf" auth add osd.0 osd 'allow *' mon 'allow profile osd' -i "$dir/osd.0/keyring" >/dev/null 2>&1
ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" 2>/dev/null
ceph-osd -c "$conf" -i 0

ceph -c "$conf" osd pool create rbd 8 8 >/dev/null 2>&1
rbd -c "$conf" pool init rbd
trap - ERR
echo "$conf"
