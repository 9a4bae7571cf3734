#!/usr/bin/env bash
# bench/scale.sh — thousands of namespaces, subsystems, hosts and connections.
#
# Part 1, objects (through the RPC socket, one request at a time, as an orchestrator does):
# starts pollux (--no-default, one reactor on core 0 unless --cores), creates
# SUBSYSTEMS x NS null bdevs, then SUBSYSTEMS subsystems each with one allowed host, one
# listener (the same 127.0.0.1 port for all) and NS namespaces, then deletes them all. Prints
# the time per change around 10 %, 50 % and 100 % of the namespaces (1 K, 5 K and 10 K with
# the defaults), the total, RSS per null bdev and per namespace, and the latency and size of
# nvmf_get_subsystems, bdev_get_bdevs and nvmf_get_stats with everything in place.
#
# Part 2, connections (bench/scale_conns.rs, pollux's host library): CONNS controllers with
# QUEUES I/O queues each to the subsystems above (round-robin), kept alive; prints the
# connect rate and RSS per queue pair; then the busy-beside-idle ratio: QD32 4 KiB randread
# IOPS of one pollux-perf queue on a malloc namespace with and without the idle
# controllers connected (same target reactor), alternating ROUNDS times, medians.
#
# usage: bench/scale.sh [--quick] [--subsystems N] [--ns N] [--cores LIST] [--conns N]
#                       [--queues N] [--secs S] [--rounds N] [--no-conns] [--nice N] [--isolate-sched]
#   --quick  20 subsystems x 5 namespaces, 10 controllers x 2 queues, 1 s cells, 1 round
#            (seconds; the CI test of the bench scripts runs it)
#   defaults: 1000 subsystems x 10 namespaces, 1000 controllers x 4 queues, 3 s, 5 rounds
#   --nice N          run pollux, the RPC client, pollux-perf and scale-conns at nice level N
#   --isolate-sched   (root) as bench/run.sh: session autogroups off for the run (restored at
#                     exit), compilers kept in SCHED_IDLE, so others' builds do not decide
#                     the figures of a shared machine
#   POLLUX_BIN_DIR=DIR  use DIR/pollux, DIR/pollux-perf and DIR/scale-conns (else built)
set -euo pipefail
cd "$(dirname "$0")/.."

SUBS=1000; NS=10; CORES="[0]"; CONNS=1000; QUEUES=4; SECS=3; ROUNDS=5; DO_CONNS=1; NICE=0; ISOLATE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) SUBS=20; NS=5; CONNS=10; QUEUES=2; SECS=1; ROUNDS=1 ;;
        --subsystems) SUBS="$2"; shift ;;
        --ns) NS="$2"; shift ;;
        --cores) CORES="$2"; shift ;;
        --conns) CONNS="$2"; shift ;;
        --queues) QUEUES="$2"; shift ;;
        --secs) SECS="$2"; shift ;;
        --rounds) ROUNDS="$2"; shift ;;
        --no-conns) DO_CONNS=0 ;;
        --nice) NICE="$2"; shift ;;
        --isolate-sched) ISOLATE=1 ;;
        *) echo "usage: $0 [--quick] [--subsystems N] [--ns N] [--cores LIST] [--conns N] [--queues N] [--secs S] [--rounds N] [--no-conns]" >&2; exit 2 ;;
    esac
    shift
done

. bench/lib.sh
bench_bins pollux pollux-perf scale-conns
WORK="$(mktemp -d /tmp/pollux-scale.XXXXXX)"
cleanup() {
    isolate_sched_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
[ "$ISOLATE" = 1 ] && isolate_sched_start

nice -n "$NICE" python3 - "$BIN" "$WORK" "$SUBS" "$NS" "$CORES" "$CONNS" "$QUEUES" "$SECS" "$ROUNDS" "$DO_CONNS" <<'EOF'
import json, os, socket, statistics, subprocess, sys, time
bin_dir, work = sys.argv[1], sys.argv[2]
subs, nsper, cores = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
conns, queues, secs, rounds, do_conns = (int(x) for x in sys.argv[6:11])
HOST = "nqn.2014-08.org.nvmexpress:uuid:5ca1ab1e-0000-4000-8000-000000000001"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

class Rpc:
    def __init__(self, path):
        end = time.time() + 10
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX); self.s.connect(path); break
            except OSError:
                if time.time() > end: raise
                time.sleep(0.01)
        self.buf = b""; self.id = 0
    def call(self, method, params=None):
        """Returns (result, seconds to the answer's last byte, answer bytes); raises on an
        error answer. pollux ends each answer with a newline."""
        self.id += 1
        req = {"jsonrpc": "2.0", "id": self.id, "method": method}
        if params is not None: req["params"] = params
        t0 = time.perf_counter()
        self.s.sendall(json.dumps(req).encode())
        chunks = [self.buf]
        while b"\n" not in chunks[-1]:
            chunk = self.s.recv(1 << 20)
            if not chunk: raise RuntimeError("RPC socket closed")
            chunks.append(chunk)
        dt = time.perf_counter() - t0
        data = b"".join(chunks)
        line, _, self.buf = data.partition(b"\n")
        v = json.loads(line)
        if "error" in v: raise RuntimeError(f"{method}: {v['error']}")
        return v["result"], dt, len(line) + 1

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1])

def start(extra_cfg=None):
    sock = os.path.join(work, f"rpc{time.time_ns()}.sock")
    args = [os.path.join(bin_dir, "pollux"), "-m", cores, "-r", sock, "--no-default", "--log-level", "ERROR"]
    p = subprocess.Popen(args, stderr=open(os.path.join(work, "pollux.log"), "a"))
    return p, Rpc(sock)

def stop(proc):
    """SIGTERM, then SIGKILL if it has not exited within 10 s (its sockets close either way)."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill(); proc.wait(10)

p, rpc = start()
port = free_port()
rpc.call("nvmf_create_transport", {"trtype": "TCP"})
time.sleep(0.2)
rss0 = rss_kib(p.pid)
total_ns = subs * nsper
# Phase 1: the null bdevs.
t0 = time.perf_counter()
for i in range(total_ns):
    rpc.call("bdev_null_create", {"name": f"Null{i}", "num_blocks": 262144, "block_size": 4096})
bdev_secs = time.perf_counter() - t0
rss1 = rss_kib(p.pid)
# Phase 2: subsystems with a host, a listener and NS namespaces; every change timed.
lat = []          # (namespaces so far, seconds) per change
t0 = time.perf_counter()
n = 0
for s in range(subs):
    nqn = f"nqn.2016-06.io.pollux:scale{s}"
    for m, prm in (("nvmf_create_subsystem", {"nqn": nqn, "serial_number": f"SCALE{s:06d}"}),
                   ("nvmf_subsystem_add_host", {"nqn": nqn, "host": HOST}),
                   ("nvmf_subsystem_add_listener", {"nqn": nqn, "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": str(port)}})):
        _, dt, _ = rpc.call(m, prm); lat.append((n, dt))
    for j in range(nsper):
        _, dt, _ = rpc.call("nvmf_subsystem_add_ns", {"nqn": nqn, "namespace": {"bdev_name": f"Null{n}"}})
        n += 1; lat.append((n, dt))
ns_secs = time.perf_counter() - t0
time.sleep(0.2)
rss2 = rss_kib(p.pid)

def window(upto):
    """Mean time per change over the changes made while the namespace count went from
    upto - 10 % of the total to upto."""
    lo = upto - max(total_ns // 10, 1)
    xs = [dt for (k, dt) in lat if lo < k <= upto or (k == lo and False)]
    return statistics.mean(xs) * 1e3 if xs else float("nan")

marks = sorted({max(total_ns // 10, 1), max(total_ns // 2, 1), total_ns})
print(f"== objects: {subs} subsystems x {nsper} namespaces (null bdevs), 1 host and 1 listener each, reactors {cores}")
print(f"bdev_null_create x {total_ns}: {bdev_secs:.2f} s ({bdev_secs / total_ns * 1e3:.3f} ms per change)")
print(f"subsystems, hosts, listeners and namespaces ({len(lat)} changes): {ns_secs:.2f} s; with the bdevs {bdev_secs + ns_secs:.2f} s")
for m in marks:
    print(f"time per change at {m} namespaces: {window(m):.3f} ms")
print(f"per change at {marks[-1]} / at {marks[0]}: {window(marks[-1]) / window(marks[0]):.2f}")
print(f"RSS: start {rss0 / 1024:.1f} MiB, with the bdevs {rss1 / 1024:.1f} MiB, with the namespaces {rss2 / 1024:.1f} MiB")
print(f"RSS per null bdev: {(rss1 - rss0) / total_ns:.2f} KiB; per namespace (with its share of subsystem, host, listener): {(rss2 - rss1) / total_ns:.2f} KiB")

reads = {}
for m, prm in (("nvmf_get_subsystems", None), ("bdev_get_bdevs", None), ("nvmf_get_stats", None)):
    ts = []; size = 0
    for _ in range(5):
        _, dt, size = rpc.call(m, prm); ts.append(dt)
    reads[m] = (statistics.median(ts) * 1e3, max(ts) * 1e3, size)
    print(f"{m}: median {reads[m][0]:.1f} ms, max {reads[m][1]:.1f} ms, answer {size / 1024:.0f} KiB")

def demote(proc):
    """Once connected, the holder (on the load generator's core) goes to SCHED_IDLE (nice 19
    without chrt): it runs only when pollux-perf leaves the core, so the ratio measures the
    target's reactor, not two clients fighting over one core. Its keep-alives (every 5 s,
    10 s timeout) wait at most one cell."""
    r = subprocess.run(["chrt", "-a", "-i", "-p", "0", str(proc.pid)], capture_output=True)
    if r.returncode != 0:
        subprocess.run(["renice", "-n", "19", "-p", str(proc.pid)], capture_output=True)

def conn_phase():
    """Idle controllers to the subsystems above, then busy-beside-idle."""
    exe = os.path.join(bin_dir, "scale-conns")
    # A busy namespace: a 256 MiB malloc bdev in its own subsystem (any host).
    rpc.call("bdev_malloc_create", {"name": "Busy0", "num_blocks": 65536, "block_size": 4096})
    busy = "nqn.2016-06.io.pollux:busy"
    rpc.call("nvmf_create_subsystem", {"nqn": busy, "allow_any_host": True})
    rpc.call("nvmf_subsystem_add_ns", {"nqn": busy, "namespace": {"bdev_name": "Busy0"}})
    rpc.call("nvmf_subsystem_add_listener", {"nqn": busy, "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": str(port)}})
    trid = f"trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{port} subnqn:{busy}"
    subprocess.run([os.path.join(bin_dir, "pollux-perf"), "-r", trid, "-q", "32", "-o", "131072", "-w", "write",
                    "-t", "1", "-c", "[1]", "--json"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def perf():
        out = subprocess.run([os.path.join(bin_dir, "pollux-perf"), "-r", trid, "-q", "32", "-o", "4096", "-w", "randread",
                              "-t", str(secs), "-c", "[1]", "--json"], check=True, capture_output=True)
        return json.loads(out.stdout)["total"]["iops"]
    rss_before = rss_kib(p.pid)
    qpairs = conns * (queues + 1)
    holder = subprocess.Popen([exe, "--port", str(port), "--subnqn-prefix", "nqn.2016-06.io.pollux:scale",
                               "--subsystems", str(subs), "--hostnqn", HOST, "--ctrlrs", str(conns),
                               "--queues", str(queues), "--core", "1"],
                              stdout=subprocess.PIPE, stderr=open(os.path.join(work, "conns.log"), "w"), text=True)
    line = holder.stdout.readline()
    if not line:
        holder.wait(); sys.exit("scale-conns failed: " + open(os.path.join(work, "conns.log")).read())
    info = json.loads(line)
    demote(holder)
    time.sleep(0.5)
    rss_conn = rss_kib(p.pid)
    print(f"== connections: {conns} controllers x {queues} I/O queues ({qpairs} queue pairs with the admin queues) over {min(conns, subs)} subsystems")
    print(f"connected in {info['secs']:.2f} s: {conns / info['secs']:.0f} controllers/s, {qpairs / info['secs']:.0f} queue pairs/s")
    print(f"target RSS: {rss_before / 1024:.1f} MiB before, {rss_conn / 1024:.1f} MiB connected: {(rss_conn - rss_before) / qpairs:.2f} KiB per queue pair")
    # Busy beside idle, alternating: with the holder's controllers connected, then alone
    # (holder stopped, its connections closed), then the holder reconnects.
    with_idle, without = [], []
    for r in range(rounds):
        with_idle.append(perf())
        stop(holder)
        time.sleep(0.5)
        without.append(perf())
        if r + 1 < rounds:
            holder = subprocess.Popen(holder.args, stdout=subprocess.PIPE,
                                      stderr=open(os.path.join(work, "conns.log"), "a"), text=True)
            if not holder.stdout.readline():
                sys.exit("scale-conns failed: " + open(os.path.join(work, "conns.log")).read())
            demote(holder)
            time.sleep(0.5)
    ratios = [w / o if o else 0.0 for w, o in zip(with_idle, without)]
    mw, mo = statistics.median(with_idle), statistics.median(without)
    print(f"busy QD32 4 KiB randread beside the idle controllers / alone: {statistics.median(ratios):.3f} "
          f"(median of the rounds' ratios; goal >= 0.95); medians {mw:,.0f} / {mo:,.0f} IOPS")
    print(f"  per round: {', '.join(f'{x:.3f}' for x in ratios)}; beside: {', '.join(f'{x:,.0f}' for x in with_idle)}; alone: {', '.join(f'{x:,.0f}' for x in without)}")

if do_conns:
    try:
        conn_phase()
    except BaseException:
        stop(p)
        raise

# Delete everything, timed.
t0 = time.perf_counter()
for s in range(subs):
    rpc.call("nvmf_delete_subsystem", {"nqn": f"nqn.2016-06.io.pollux:scale{s}"})
del_subs = time.perf_counter() - t0
t0 = time.perf_counter()
for i in range(total_ns):
    rpc.call("bdev_null_delete", {"name": f"Null{i}"})
del_bdevs = time.perf_counter() - t0
print(f"delete: {subs} subsystems in {del_subs:.2f} s ({del_subs / subs * 1e3:.3f} ms per change), {total_ns} bdevs in {del_bdevs:.2f} s ({del_bdevs / total_ns * 1e3:.3f} ms per change)")
stop(p)
EOF
