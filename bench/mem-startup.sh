#!/usr/bin/env bash
# bench/mem-startup.sh — start-up time and memory of pollux with a 256 MiB malloc bdev.
#
# Starts pollux (one reactor on core 0) with a JSON config creating a 256 MiB malloc bdev
# exported over NVMe/TCP on an ephemeral 127.0.0.1 port, and reports:
#   - start-up to "listening": from the exec to the first accepted TCP connection (median of
#     --runs starts; the port is polled every 0.2 ms, so the figure includes up to that much);
#   - RSS right after start-up (the malloc region is zeroed lazily by the kernel), and RSS and
#     peak RSS (VmHWM) after pollux-perf has written every block of the bdev (sequential
#     128 KiB writes), i.e. with the whole RAM disk resident. The goal: under 256 + 32 MiB.
# usage: bench/mem-startup.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=5
[ "${1:-}" = "--runs" ] && RUNS="$2"
. bench/lib.sh
bench_bins
WORK="$(mktemp -d /tmp/pollux-mem.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
exec python3 - "$BIN" "$WORK" "$RUNS" <<'EOF'
import json, os, socket, statistics, subprocess, sys, time
bin_dir, work, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
nqn = "nqn.2016-06.io.pollux:mem"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def config(port):
    path = os.path.join(work, "config.json")
    json.dump({"subsystems": [
        {"subsystem": "bdev", "config": [{"method": "bdev_malloc_create",
            "params": {"name": "Malloc0", "num_blocks": 65536, "block_size": 4096}}]},
        {"subsystem": "nvmf", "config": [
            {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
            {"method": "nvmf_create_subsystem", "params": {"nqn": nqn, "allow_any_host": True}},
            {"method": "nvmf_subsystem_add_ns", "params": {"nqn": nqn, "namespace": {"bdev_name": "Malloc0"}}},
            {"method": "nvmf_subsystem_add_listener", "params": {"nqn": nqn, "listen_address": {
                "trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": str(port)}}}]}]},
        open(path, "w"))
    return path

def status(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) / 1024.0
    return out

def start():
    port = free_port()
    cfg = config(port)
    t0 = time.perf_counter()
    p = subprocess.Popen([os.path.join(bin_dir, "pollux"), "-m", "[0]", "-r", os.path.join(work, "rpc.sock"),
                          "--json", cfg, "--log-level", "ERROR"], stderr=subprocess.DEVNULL)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.05).close()
            return p, port, (time.perf_counter() - t0) * 1000.0
        except OSError:
            if p.poll() is not None or time.perf_counter() - t0 > 10:
                p.kill(); sys.exit("pollux did not start")
            time.sleep(0.0002)

def stop(p):
    p.terminate(); p.wait(5)

times = []
for _ in range(runs):
    p, port, ms = start(); times.append(ms); stop(p)
p, port, ms = start()
time.sleep(0.2)
idle = status(p.pid)
trid = f"trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{port} subnqn:{nqn}"
subprocess.run([os.path.join(bin_dir, "pollux-perf"), "-r", trid, "-q", "8", "-o", "131072", "-w", "write",
                "-t", "3", "-c", "[1]", "--json"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
full = status(p.pid)
stop(p)
print(f"start-up to listening: median {statistics.median(times):.1f} ms (runs: {', '.join(f'{t:.1f}' for t in times)})")
print(f"RSS after start-up: {idle['VmRSS']:.1f} MiB")
print(f"RSS after writing all 256 MiB: {full['VmRSS']:.1f} MiB (peak {full['VmHWM']:.1f} MiB; goal < 288 MiB)")
EOF
