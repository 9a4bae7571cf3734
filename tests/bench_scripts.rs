//! Every bench script runs as documented, in its shortest mode (seconds, debug binaries).
//!
//! The scripts are run with this test build's `pollux` and `pollux-perf` (`POLLUX_BIN_DIR`)
//! and, for `bench/run.sh`, the ceiling binary `cargo test --all-targets` built beside them
//! (`POLLUX_CEILING_BIN`), so no release build is needed. Each must exit 0 and print what
//! its mode promises; a missing tool (jq, bc, python3, io_uring) skips loudly with the
//! reason. The scripts that boot a VM or a Ceph cluster (minutes) are only checked for
//! syntax. No figure is judged: the numbers of a debug build on a shared machine mean
//! nothing, only that each documented command works as written.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_pollux"))
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

/// A tool the scripts need, or the reason it is missing.
fn missing_tool() -> Option<String> {
    for tool in ["jq", "bc", "python3", "bash"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// The ceiling bench binary of this build (target/debug/deps/ceiling-HASH), the newest.
fn ceiling_bin() -> Option<PathBuf> {
    let deps = bin_dir().join("deps");
    std::fs::read_dir(deps)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with("ceiling-") && !name.contains('.')
        })
        .filter(|e| {
            use std::os::unix::fs::PermissionsExt;
            e.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// Runs a bench script with a bound on its time; it must succeed. Returns its stdout.
fn run(script: &str, args: &[&str], env: &[(&str, &str)], limit: Duration) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(root().join(script))
        .args(args)
        .current_dir(root())
        .env("POLLUX_BIN_DIR", bin_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Its own process group, so that a script over its time is stopped with its children.
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let child = cmd.spawn().expect("start the script");
    let pid = child.id() as i32;
    let start = Instant::now();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    while !waiter.is_finished() {
        if start.elapsed() > limit {
            let _ = Command::new("kill")
                .args(["-9", &format!("-{pid}")])
                .status();
            let out = waiter.join().expect("waiter").expect("output");
            panic!(
                "{script} {args:?} ran over {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = waiter.join().expect("waiter").expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} {args:?} failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn uring_works() -> bool {
    io_uring::IoUring::new(2).is_ok()
}

/// Whether `test` cannot run here (reported as skipped): a tool the scripts need is
/// missing, or io_uring is unavailable where `uring_use` says what needs it.
fn cannot_run(test: &str, uring_use: Option<&str>) -> bool {
    if let Some(why) = missing_tool() {
        common::skip(test, &why);
        return true;
    }
    match uring_use {
        Some(what) if !uring_works() => {
            common::skip(test, &format!("io_uring is not available ({what})"));
            true
        }
        _ => false,
    }
}

#[test]
fn every_bench_script_parses() {
    for entry in std::fs::read_dir(root().join("bench")).expect("bench/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "sh") {
            let st = Command::new("bash")
                .arg("-n")
                .arg(&path)
                .status()
                .expect("bash -n");
            assert!(st.success(), "{} has a syntax error", path.display());
        }
    }
    common::skip(
        "every_bench_script_parses",
        "bench/perf-vm.sh (boots a qemu guest) and bench/rbd.sh (starts a Ceph cluster) take \
         minutes: only their syntax is checked here",
    );
}

#[test]
fn run_sh_ratio_only_prints_the_ratio_table() {
    if cannot_run("run_sh_ratio_only", Some("run.sh measures posix and uring")) {
        return;
    }
    let Some(ceiling) = ceiling_bin() else {
        return common::skip(
            "run_sh_ratio_only",
            "the ceiling bench binary is not built (cargo test --all-targets builds it)",
        );
    };
    let out = run(
        "bench/run.sh",
        &["--ratio-only", "--secs", "1", "--ratio-rounds", "1"],
        &[("POLLUX_CEILING_BIN", ceiling.to_str().unwrap())],
        Duration::from_secs(120),
    );
    assert!(out.contains("| posix | 1 |"), "no posix row: {out}");
    assert!(out.contains("| uring | 1 |"), "no uring row: {out}");
    assert!(out.contains("CPU steal"), "{out}");
}

#[test]
fn ab_sh_one_round_compares_two_builds() {
    if cannot_run("ab_sh_one_round", None) {
        return;
    }
    let dir = bin_dir();
    let dir = dir.to_str().unwrap();
    let out = run(
        "bench/ab.sh",
        &[dir, dir, "1", "1"],
        &[("AB_WORKLOADS", "randread 4096 4")],
        Duration::from_secs(60),
    );
    assert!(out.contains("randread") && out.contains("B/A"), "{out}");
}

#[test]
fn mem_startup_sh_one_run() {
    if cannot_run("mem_startup_sh_one_run", None) {
        return;
    }
    let out = run(
        "bench/mem-startup.sh",
        &["--runs", "1"],
        &[],
        Duration::from_secs(90),
    );
    assert!(out.contains("RSS after start-up"), "{out}");
}

#[test]
fn bdevperf_sh_shortest_run() {
    if cannot_run("bdevperf_sh_shortest_run", Some("the uring bdev runs")) {
        return;
    }
    let out = run(
        "bench/bdevperf.sh",
        &["1"],
        &[("BDEVPERF_FILE_MIB", "64")],
        Duration::from_secs(120),
    );
    assert!(
        out.contains("=== malloc") && out.contains("=== uring"),
        "{out}"
    );
}
#[test]
fn scale_sh_quick() {
    if cannot_run("scale_sh_quick", None) {
        return;
    }
    let out = run(
        "bench/scale.sh",
        &["--quick"],
        &[],
        Duration::from_secs(120),
    );
    assert!(out.contains("per change"), "{out}");
}
