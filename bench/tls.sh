#!/usr/bin/env bash
# bench/tls.sh — the cost of NVMe/TCP TLS (issue 17): 4 KiB randread at QD32, plaintext and
# TLS 1.3 PSK, one run each against the same pollux (same binary, same malloc bdev, two
# listeners: a plaintext one and a secure-channel one), and their ratio.
#
# usage: bench/tls.sh [--secs S] [--nice N] [--target-core N] [--perf-core N] [--suite 128|256]
#   --suite  128: a SHA-256 PSK (TLS_AES_128_GCM_SHA256, default); 256: a SHA-384 PSK
#            (TLS_AES_256_GCM_SHA384)
# Prints one markdown table row per run and the ratio. POLLUX_BIN_DIR: prebuilt binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=5; NICE=0; TCORE=0; PCORE=1; SUITE=128
while [ $# -gt 0 ]; do
    case "$1" in
        --secs) SECS="$2"; shift 2 ;;
        --nice) NICE="$2"; shift 2 ;;
        --target-core) TCORE="$2"; shift 2 ;;
        --perf-core) PCORE="$2"; shift 2 ;;
        --suite) SUITE="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
. bench/lib.sh
bench_bins pollux pollux-perf

WORK="$(mktemp -d /tmp/pollux-tls-bench.XXXXXX)"
POLLUX_PID=""
cleanup() { [ -n "$POLLUX_PID" ] && kill "$POLLUX_PID" 2>/dev/null && wait "$POLLUX_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

NQN=nqn.2016-06.io.pollux:tls-bench
HOST_PLAIN=nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000a1
HOST_TLS=nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000a2
# A configured PSK in the interchange format: random bytes, their CRC-32 (little-endian).
python3 - "$SUITE" >"$WORK/psk" <<'EOF'
import base64, os, sys, zlib
n, h = (32, 1) if sys.argv[1] == "128" else (48, 2)
k = os.urandom(n)
sys.stdout.write("NVMeTLSkey-1:%02d:%s:" % (h, base64.b64encode(k + zlib.crc32(k).to_bytes(4, "little")).decode()))
EOF
chmod 600 "$WORK/psk"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PLAIN=$(port); SECURE=$(port); while [ "$SECURE" = "$PLAIN" ]; do SECURE=$(port); done
cat >"$WORK/config.json" <<EOF
{"subsystems": [
 {"subsystem": "keyring", "config": [
  {"method": "keyring_file_add_key", "params": {"name": "psk0", "path": "$WORK/psk"}}]},
 {"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 65536, "block_size": 4096}}]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP", "max_queue_depth": 256}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$NQN", "allow_any_host": false, "serial_number": "POLLUXTLS0001"}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN", "namespace": {"bdev_name": "Malloc0", "nsid": 1}}},
  {"method": "nvmf_subsystem_add_host", "params": {"nqn": "$NQN", "host": "$HOST_PLAIN"}},
  {"method": "nvmf_subsystem_add_host", "params": {"nqn": "$NQN", "host": "$HOST_TLS", "psk": "psk0"}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$NQN", "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "$PLAIN"}, "sock_impl": "posix"}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$NQN", "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "$SECURE"}, "secure_channel": true}}]}
]}
EOF
nice -n "$NICE" "$BIN/pollux" -m "[$TCORE]" -r "$WORK/rpc.sock" --json "$WORK/config.json" --log-level ERROR 2>"$WORK/pollux.log" &
POLLUX_PID=$!
for _ in $(seq 200); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $SECURE), 0.2).close()" 2>/dev/null && break
    sleep 0.05
done

perf() { # port hostnqn [extra args]
    local port="$1" host="$2"; shift 2
    nice -n "$NICE" "$BIN/pollux-perf" -r "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$NQN hostnqn:$host" \
        -c "[$PCORE]" --poll-only --json "$@"
}
# Every block written once (reads of never-written malloc blocks come from the zero page).
perf "$PLAIN" "$HOST_PLAIN" -q 32 -o 131072 -w write -t 2 >/dev/null
plain="$(perf "$PLAIN" "$HOST_PLAIN" -q 32 -o 4096 -w randread -t "$SECS")"
tls="$(perf "$SECURE" "$HOST_TLS" -q 32 -o 4096 -w randread -t "$SECS" --psk "$WORK/psk")"
python3 - "$plain" "$tls" "$SUITE" <<'EOF'
import json, sys
p, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
suite = "TLS_AES_128_GCM_SHA256" if sys.argv[3] == "128" else "TLS_AES_256_GCM_SHA384"
pi, ti = p["total"]["iops"], t["total"]["iops"]
print("| run | IOPS | avg latency (us) | errors |")
print("|---|---|---|---|")
for name, r in (("plaintext (posix)", p), ("TLS 1.3 PSK, %s (ssl)" % suite, t)):
    print("| %s | %.0f | %.1f | %d |" % (name, r["total"]["iops"], r["total"].get("avg_us", float("nan")), r["total"]["errors"]))
print()
print("TLS / plaintext IOPS ratio: %.2f" % (ti / pi))
EOF
