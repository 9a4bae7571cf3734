//! The real `pollux` binary and the Python clients: an idle pollux process uses well under
//! 5 % of a core (its own utime+stime from /proc/PID/stat) yet answers an RPC at once; SIGTERM
//! and `spdk_kill_instance` exit 0; `--json` and start-up errors; a second instance on the same
//! socket is refused; `scripts/rpc.py` (and SPDK's own client, when POLLUX_SPDK_RPC names it)
//! drive the server.

mod common;

use common::{sock_path, start_waiting_for_rpc, Client};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn pollux(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pollux"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Waits until the socket accepts connections (or the child dies).
fn wait_for_socket(child: &mut Child, path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("pollux exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("pollux never listened on {}", path.display());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("pollux did not exit");
}

fn stderr_of(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesized command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

#[test]
fn idle_pollux_sleeps_answers_at_once_and_exits_0_on_sigterm() {
    let path = sock_path("idle-bin");
    let mut child = pollux(&["-m", "0x1", "-r", path.to_str().unwrap()])
        .spawn()
        .unwrap();
    wait_for_socket(&mut child, &path);
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(300));
    let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let share = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
    eprintln!("idle pollux used {:.2}% of a core", share * 100.0);
    assert!(
        share < 0.05,
        "idle pollux used {:.1}% of a core",
        share * 100.0
    );
    // Asleep, it still answers at once.
    let mut c = Client::connect(&path);
    let t = Instant::now();
    let v = c.call("spdk_get_version", None);
    let latency = t.elapsed();
    eprintln!("first RPC to an idle pollux answered in {latency:?}");
    assert!(v["version"].is_string());
    assert!(latency < Duration::from_millis(250), "{latency:?}");
    // SAFETY: kill only sends a signal to our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(0), "{}", stderr_of(child));
    assert!(!path.exists(), "the socket file is removed on exit");
}

/// Writes a config file `file` whose log subsystem has the one entry `entry`.
fn write_log_config(file: &Path, entry: Value) {
    let config = json!({"subsystems": [{"subsystem": "log", "config": [entry]}]});
    std::fs::write(file, config.to_string()).unwrap();
}

/// pollux, unpinned, with its RPC socket at `sock` and the config file `config` given by
/// `flag` (`--json` or its short form `-c`).
fn pollux_with_config(sock: &Path, flag: &str, config: &Path) -> Command {
    let (sock, config) = (sock.to_str().unwrap(), config.to_str().unwrap());
    pollux(&["--no-pin", "-r", sock, flag, config])
}

/// What a pollux that must exit with status 1 wrote on stderr.
fn refused(out: Output) -> String {
    let msg = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{msg}");
    msg
}

#[test]
fn json_config_errors_and_the_socket_lock_with_the_binary() {
    let dir = std::env::temp_dir();
    let path = sock_path("json-bin");
    let config = dir.join(format!("pollux-bin-{}.json", std::process::id()));
    write_log_config(
        &config,
        json!({"method": "log_set_flag", "params": {"flag": "app"}}),
    );
    let mut child = pollux_with_config(&path, "--json", &config)
        .spawn()
        .unwrap();
    wait_for_socket(&mut child, &path);
    let mut c = Client::connect(&path);
    assert_eq!(c.call("log_get_flags", None)["app"], true);
    // A second instance on the same socket is refused with a clear message.
    let second = pollux(&["--no-pin", "-r", path.to_str().unwrap()])
        .spawn()
        .unwrap();
    let msg = refused(second.wait_with_output().unwrap());
    assert!(msg.contains("in use"), "{msg}");
    // log_set_flag changes the running filter: the RPC server's debug lines appear.
    assert_eq!(c.call("log_set_flag", Some(json!({"flag": "rpc"}))), true);
    let mut other = Client::connect(&path);
    assert!(other.call("spdk_get_version", None).is_object());
    drop(other);
    // The first one still serves, and stops by RPC with exit status 0.
    assert_eq!(
        c.call("spdk_kill_instance", Some(json!({"sig_name": "SIGINT"}))),
        true
    );
    assert_eq!(wait_exit(&mut child).code(), Some(0));
    let log = stderr_of(child);
    assert!(log.contains("RPC client connected"), "{log}");
    assert!(log.contains("JSON config applied"), "{log}");
    // A config whose method fails aborts start-up, naming the method.
    write_log_config(
        &config,
        json!({"method": "log_set_level", "params": {"level": "LOUD"}}),
    );
    let msg = refused(pollux_with_config(&path, "-c", &config).output().unwrap());
    assert!(
        msg.contains("log_set_level") && msg.contains("LOUD"),
        "{msg}"
    );
    let out = pollux(&["-m", "zz"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cpumask"));
    let out = pollux(&["-V"]).stdout(Stdio::piped()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let _ = std::fs::remove_file(config);
}

fn rpc_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rpc.py")
}

/// Runs a client command; returns (exit code, stdout, stderr).
fn run(program: &Path, sock: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(program)
        .arg("-s")
        .arg(sock)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_ok(program: &Path, sock: &Path, args: &[&str]) -> String {
    let (code, out, err) = run(program, sock, args);
    assert_eq!(code, 0, "{args:?} failed: {err}");
    out
}

#[test]
fn scripts_rpc_py_drives_the_server() {
    let app = start_waiting_for_rpc("rpcpy");
    let sock = app.rpc_socket().to_path_buf();
    let py = rpc_py();
    let methods = run_ok(&py, &sock, &["rpc_get_methods", "--current"]);
    let methods: Vec<String> = serde_json::from_str(&methods).unwrap();
    assert!(methods.contains(&"framework_start_init".to_string()));
    // A RUNTIME method in STARTUP: the error goes to stderr as JSON, exit 1.
    let (code, out, err) = run(&py, &sock, &["thread_get_stats"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    let err: Value = serde_json::from_str(&err).unwrap();
    assert_eq!(err["code"], -1);
    assert_eq!(run_ok(&py, &sock, &["framework_start_init"]), "");
    assert_eq!(run_ok(&py, &sock, &["framework_wait_init"]), "");
    let version: Value = serde_json::from_str(&run_ok(&py, &sock, &["spdk_get_version"])).unwrap();
    assert!(version["version"].as_str().unwrap().starts_with("pollux"));
    // A string result prints raw.
    let level = run_ok(&py, &sock, &["log_get_level"]);
    assert_eq!(level.trim(), level.trim().to_ascii_uppercase());
    run_ok(&py, &sock, &["log_set_flag", "sock"]);
    let flags: Value = serde_json::from_str(&run_ok(&py, &sock, &["log_get_flags"])).unwrap();
    assert_eq!(flags["sock"], true);
    run_ok(&py, &sock, &["log_clear_flag", "sock"]);
    let reactors: Value =
        serde_json::from_str(&run_ok(&py, &sock, &["framework_get_reactors"])).unwrap();
    assert_eq!(reactors["reactors"][0]["lcore"], 0);
    let pollers: Value =
        serde_json::from_str(&run_ok(&py, &sock, &["thread_get_pollers"])).unwrap();
    assert!(pollers["threads"][0]["active_pollers"].is_array());
    let config: Value = serde_json::from_str(&run_ok(&py, &sock, &["save_config"])).unwrap();
    assert!(config["subsystems"].is_array());
    // The generic call, with and without params; bad params name the field.
    let subs: Value =
        serde_json::from_str(&run_ok(&py, &sock, &["call", "framework_get_subsystems"])).unwrap();
    assert!(subs.is_array());
    let (code, _, err) = run(
        &py,
        &sock,
        &["call", "framework_get_config", r#"{"nam": "x"}"#],
    );
    assert_eq!(code, 1);
    assert!(err.contains("nam"), "{err}");
    let (code, _, err) = run(&py, &sock, &["framework_get_config", "nothing"]);
    assert_eq!(code, 1);
    assert!(err.contains("-32602"), "{err}");
    let (code, _, err) = run(&py, Path::new("/nonexistent/sock"), &["spdk_get_version"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect"), "{err}");
    assert_eq!(run_ok(&py, &sock, &["spdk_kill_instance", "SIGTERM"]), "");
    app.wait();
}

/// SPDK's own rpc.py, when the CI installed it (POLLUX_SPDK_RPC=path of `spdk-rpc`).
#[test]
fn spdk_rpc_py_drives_the_server() {
    let Some(spdk) = std::env::var_os("POLLUX_SPDK_RPC").map(PathBuf::from) else {
        common::skip(
            "spdk_rpc_py_drives_the_server",
            "POLLUX_SPDK_RPC is not set and .ci/venv/bin/spdk-rpc is absent (scripts/test.sh \
             sets it from there; .ci/run installs it): SPDK's rpc.py compatibility not checked",
        );
        return;
    };
    let app = start_waiting_for_rpc("spdkrpc");
    let sock = app.rpc_socket().to_path_buf();
    let methods: Vec<String> =
        serde_json::from_str(&run_ok(&spdk, &sock, &["rpc_get_methods", "--current"])).unwrap();
    assert!(methods.contains(&"framework_start_init".to_string()));
    run_ok(&spdk, &sock, &["framework_start_init"]);
    run_ok(&spdk, &sock, &["framework_wait_init"]);
    let version: Value =
        serde_json::from_str(&run_ok(&spdk, &sock, &["spdk_get_version"])).unwrap();
    assert!(version["fields"]["major"].is_u64());
    for method in [
        "framework_get_reactors",
        "thread_get_stats",
        "thread_get_pollers",
        "log_get_flags",
    ] {
        let v: Value = serde_json::from_str(&run_ok(&spdk, &sock, &[method])).unwrap();
        assert!(v.is_object(), "{method}: {v}");
    }
    run_ok(&spdk, &sock, &["log_set_flag", "nvmf"]);
    run_ok(&spdk, &sock, &["log_clear_flag", "nvmf"]);
    run_ok(&spdk, &sock, &["log_set_level", "INFO"]);
    // SPDK's client prints a string result as JSON.
    let level: Value = serde_json::from_str(&run_ok(&spdk, &sock, &["log_get_level"])).unwrap();
    assert_eq!(level, "INFO");
    run_ok(&spdk, &sock, &["log_set_level", "NOTICE"]);
    let config: Value = serde_json::from_str(&run_ok(&spdk, &sock, &["save_config"])).unwrap();
    assert!(config["subsystems"].is_array());
    let (code, out, err) = run(&spdk, &sock, &["framework_get_config", "nothing"]);
    assert_ne!(code, 0);
    assert!(
        out.contains("-32602") || err.contains("-32602"),
        "{out} {err}"
    );
    run_ok(&spdk, &sock, &["spdk_kill_instance", "SIGTERM"]);
    app.wait();
}

/// The application flags tools written for SPDK pass: accepted, the meaningless ones named
/// once on stderr; `--main-core` picks the main reactor and must be in the mask.
#[test]
fn spdk_app_flags_are_accepted() {
    let path = sock_path("spdk-flags");
    let mut child = pollux(&[
        "-m",
        "0x1",
        "-p",
        "0",
        "-u",
        "--no-huge",
        "-s",
        "1024",
        "-i",
        "0",
        "--disable-cpumask-locks",
        "--wait-for-rpc",
        "--interrupt-mode",
        "-r",
        path.to_str().unwrap(),
    ])
    .spawn()
    .unwrap();
    wait_for_socket(&mut child, &path);
    let mut c = Client::connect(&path);
    c.call("framework_start_init", None);
    let r = c.call("framework_get_reactors", None);
    assert_eq!(r["reactors"][0]["lcore"], 0);
    assert_eq!(r["reactors"][0]["in_interrupt"], true);
    c.call("spdk_kill_instance", Some(json!({"sig_name": "SIGTERM"})));
    assert!(wait_exit(&mut child).success());
    let err = stderr_of(child);
    assert!(
        err.contains("without effect")
            && [
                "--no-pci",
                "--no-huge",
                "--mem-size",
                "--shm-id",
                "--disable-cpumask-locks"
            ]
            .iter()
            .all(|f| err.contains(f)),
        "{err}"
    );
    let out = pollux(&[
        "-m",
        "0x1",
        "-p",
        "3",
        "-r",
        sock_path("spdk-flags-bad").to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--main-core"));
}
