//! pollux-bdevperf end to end: a clean verify run passes; an error bdev corrupting written
//! data (armed from the JSON config through `bdev_error_inject_error`) makes verify fail
//! with the offset reported; a bad config fails cleanly. Short runs (1 s), one core, no
//! pinning, no timing thresholds.

use std::process::Command;

fn run(tag: &str, config: &str, args: &[&str]) -> (i32, String) {
    let path =
        std::env::temp_dir().join(format!("pollux-bdevperf-{tag}-{}.json", std::process::id()));
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pollux-bdevperf"))
        .arg("--json")
        .arg(&path)
        .args(["-m", "0x1", "--no-pin", "-t", "1"])
        .args(args)
        .output()
        .expect("run pollux-bdevperf");
    let _ = std::fs::remove_file(&path);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

const MALLOC: &str = r#"{"method":"bdev_malloc_create","params":{"name":"Malloc0","num_blocks":4096,"block_size":512}}"#;

#[test]
fn verify_passes_on_malloc() {
    let cfg = format!(r#"{{"subsystems":[{{"subsystem":"bdev","config":[{MALLOC}]}}]}}"#);
    let (code, out) = run("ok", &cfg, &["-q", "8", "-o", "4096", "-w", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Malloc0"), "{out}");
    assert!(out.contains("IOPS"), "{out}");
    assert!(!out.contains("FAILED"), "{out}");
}

#[test]
fn verify_catches_corrupt_data_from_error_bdev() {
    let cfg = format!(
        r#"{{"subsystems":[{{"subsystem":"bdev","config":[{MALLOC},
        {{"method":"bdev_error_create","params":{{"base_name":"Malloc0"}}}},
        {{"method":"bdev_error_inject_error","params":{{"name":"EE_Malloc0","io_type":"write",
          "error_type":"corrupt_data","num":1,"corrupt_offset":100,"corrupt_value":255}}}}]}}]}}"#
    );
    let (code, out) = run("corrupt", &cfg, &["-q", "4", "-o", "4096", "-w", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("EE_Malloc0"),
        "runs on the unclaimed error bdev: {out}"
    );
    assert!(
        out.contains("verify mismatch on EE_Malloc0 at offset_blocks"),
        "{out}"
    );
    assert!(out.contains("byte offset"), "{out}");
}

#[test]
fn bad_config_fails_cleanly() {
    let cfg = r#"{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_malloc_create","params":{"name":"M","num_blocks":0,"block_size":512}}]}]}"#;
    let (code, out) = run("bad", cfg, &["-w", "randread"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bdev_malloc_create"), "{out}");
    let (code, out) = run(
        "badw",
        &cfg.replace("\"num_blocks\":0", "\"num_blocks\":64"),
        &["-w", "sideways"],
    );
    // clap refuses the value and lists the workloads (its usage-error status, 2).
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("invalid value 'sideways'") && out.contains("randread"),
        "{out}"
    );
    let (code, out) = run("badm", cfg, &["-w", "randrw", "-M", "101"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("-M"), "{out}");
}
