//! pollux-perf end to end against the in-process fake controller: a short run prints a
//! JSON result with I/Os and no errors; a refused connection and a bad option are one line
//! on stderr and exit status 1.

use pollux::nvmf::host::fake::{FakeTarget, FAKE_NQN};
use std::process::Command;

fn perf(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pollux-perf"))
        .args(args)
        .output()
        .expect("run pollux-perf")
}

#[test]
fn short_run_reports_json_results() {
    let fake = FakeTarget::start();
    let trid = format!(
        "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{} subnqn:{FAKE_NQN}",
        fake.port()
    );
    let out = perf(&[
        "-r", &trid, "-q", "8", "-o", "4096", "-w", "randrw", "-M", "70", "-t", "1", "--no-pin",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let total = &v["total"];
    assert!(total["ios"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(total["errors"].as_u64(), Some(0));
    for p in ["p50_us", "p90_us", "p99_us", "p99.9_us", "p99.99_us"] {
        assert!(
            total["percentiles"][p].as_f64().unwrap() > 0.0,
            "{p} in {v}"
        );
    }
    assert!(
        stderr.contains("IOPS"),
        "progress lines go to stderr with --json: {stderr}"
    );
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn refused_connection_is_one_line_and_exit_1() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let trid = format!("trtype:TCP traddr:127.0.0.1 trsvcid:{port} subnqn:nqn.x");
    let out = perf(&["-r", &trid, "-t", "1", "--no-pin"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("pollux-perf: error:") && stderr.contains("refused"),
        "{stderr}"
    );
}

#[test]
fn bad_options_are_rejected() {
    let out = perf(&["-r", "trtype:TCP traddr:127.0.0.1 trsvcid:1", "-w", "bogus"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'bogus'") && stderr.contains("-w"),
        "{stderr}"
    );
    for bad in [
        ["-q", "0"],
        ["-q", "4097"],
        ["-M", "101"],
        ["-P", "0"],
        ["-t", "0"],
    ] {
        let out = perf(&[
            "-r",
            "trtype:TCP traddr:127.0.0.1 trsvcid:1",
            bad[0],
            bad[1],
        ]);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(bad[0]), "{bad:?}: {stderr}");
    }
    let out = perf(&["-r", "trtype:TCP traddr:127.0.0.1 trsvcid:1", "-S", "bogus"]);
    assert_eq!(out.status.code(), Some(1));
    let out = perf(&["-r", "trtype:RDMA traddr:127.0.0.1"]);
    assert_eq!(out.status.code(), Some(1));
}
