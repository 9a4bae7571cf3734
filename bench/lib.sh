# bench/lib.sh — what the bench scripts share; source it, do not run it.

# free_port: prints a TCP port free on 127.0.0.1 now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# bench_bins BIN...: sets BIN to the directory of the binaries to run. With POLLUX_BIN_DIR
# (prebuilt binaries, e.g. a saved build of another commit) that directory as it is;
# otherwise $CARGO_TARGET_DIR/release (default ./target), after a release build of BIN...
bench_bins() {
    if [ -n "${POLLUX_BIN_DIR:-}" ]; then
        BIN=$POLLUX_BIN_DIR
        return
    fi
    local b args=()
    for b in "$@"; do args+=(--bin "$b"); done
    cargo build --release -q "${args[@]}"
    BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
}

# malloc_target_config NQN LISTENER...: prints a pollux JSON config that exports a 256 MiB
# malloc bdev (Malloc0, 4 KiB blocks) as namespace 1 of NQN, open to any host, over the TCP
# transport (max_queue_depth 256), with one 127.0.0.1 listener per LISTENER: PORT, or
# PORT:SOCK_IMPL (posix, uring).
malloc_target_config() {
    python3 - "$@" <<'PY'
import json, sys

nqn, listeners = sys.argv[1], sys.argv[2:]
nvmf = [
    {"method": "nvmf_create_transport", "params": {"trtype": "TCP", "max_queue_depth": 256}},
    {"method": "nvmf_create_subsystem", "params": {"nqn": nqn, "allow_any_host": True}},
    {"method": "nvmf_subsystem_add_ns",
     "params": {"nqn": nqn, "namespace": {"bdev_name": "Malloc0", "nsid": 1}}},
]
for listener in listeners:
    port, _, impl = listener.partition(":")
    params = {"nqn": nqn, "listen_address": {"trtype": "TCP", "adrfam": "IPv4",
                                              "traddr": "127.0.0.1", "trsvcid": port}}
    if impl:
        params["sock_impl"] = impl
    nvmf.append({"method": "nvmf_subsystem_add_listener", "params": params})
malloc = {"name": "Malloc0", "num_blocks": 65536, "block_size": 4096}
print(json.dumps({"subsystems": [
    {"subsystem": "bdev", "config": [{"method": "bdev_malloc_create", "params": malloc}]},
    {"subsystem": "nvmf", "config": nvmf},
]}, indent=1))
PY
}

# isolate_sched_start: what --isolate-sched does. Turns the kernel's session autogroups off
# (so nice values compare across sessions) and keeps compilers started during the run in
# SCHED_IDLE. isolate_sched_stop (from the exit trap) undoes both.
AUTOGROUP_FILE=/proc/sys/kernel/sched_autogroup_enabled
isolate_sched_start() {
    AUTOGROUP_BEFORE="$(cat "$AUTOGROUP_FILE" 2>/dev/null || echo n/a)"
    echo 0 >"$AUTOGROUP_FILE" || { echo "--isolate-sched needs root" >&2; exit 2; }
    ( while true; do
          for p in $(for n in rustc cc cc1 cc1plus ld ld.lld rust-lld collect2 as clippy-driver; do pgrep -x "$n"; done); do
              chrt -i -p 0 "$p" 2>/dev/null
          done
          sleep 0.3
      done ) &
    DEMOTER_PID=$!
}
isolate_sched_stop() {
    if [ -n "${DEMOTER_PID:-}" ]; then kill "$DEMOTER_PID" 2>/dev/null || true; fi
    if [ -n "${AUTOGROUP_BEFORE:-}" ] && [ "$AUTOGROUP_BEFORE" != n/a ]; then
        echo "$AUTOGROUP_BEFORE" >"$AUTOGROUP_FILE" 2>/dev/null || true
    fi
}
