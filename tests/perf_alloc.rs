//! The load generator's I/O path allocates nothing in steady state: runs the real
//! `pollux-perf` binary (whose global allocator counts allocations on its worker threads
//! after a warm-up) against an in-process target, for a 4 KiB 50/50 random mix at QD16 with
//! and without digests, on posix and (when available) uring, and checks the JSON report:
//! I/Os were counted and none of them allocated.

mod common;

use common::nvme::{add_uring_listener, start_exporting_malloc};
use common::target_proc::load_result;
use serde_json::Value;
use std::process::{Command, Stdio};

const NQN: &str = "nqn.2016-06.io.pollux:perf-alloc";

fn perf(port: u16, sock: &str, digests: bool) -> Value {
    let trid = format!("trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{port} subnqn:{NQN}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pollux-perf"));
    cmd.args([
        "-r", &trid, "-q", "16", "-o", "4096", "-w", "randrw", "-M", "50",
    ])
    .args(["-t", "2", "-c", "[0]", "-S", sock, "--no-pin", "--json"]);
    if digests {
        cmd.args(["-H", "-I"]);
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pollux-perf");
    load_result(child)
}

#[test]
fn pollux_perf_steady_state_allocates_nothing() {
    let (app, port) = start_exporting_malloc("perf-alloc", NQN);
    let mut runs = vec![("posix", port)];
    if let Ok(uport) = add_uring_listener(&app, NQN) {
        runs.push(("uring", uport));
    }
    for (sock, port) in runs {
        for digests in [false, true] {
            let r = perf(port, sock, digests);
            let steady = &r["steady_state"];
            eprintln!("{sock} digests={digests}: {steady}");
            assert_eq!(r["total"]["errors"], 0, "{r}");
            assert!(steady["ios"].as_u64().unwrap() > 0, "no steady state: {r}");
            assert_eq!(steady["allocs"], 0, "{sock} digests={digests}: {r}");
        }
    }
    app.shutdown_and_wait();
}
