//! pollux as a service: `dist/pollux.service` passes `systemd-analyze verify` (against a
//! scratch root holding the binaries where the unit names them); `READY=1` reaches a fake
//! `NOTIFY_SOCKET` only once the RPC socket, the NVMe/TCP listener and the metrics endpoint
//! answer (and `STOPPING=1` at SIGTERM; a failing config never says ready); the unit's
//! reload (`rpc.py reload_config`) applies what a config adds and refuses start-up-only
//! changes; the container recipe's entry point runs as an unprivileged user.

mod common;

use common::target_proc::{write_config, TargetProc, NQN};
use common::{free_port, have_tool, skip, sock_path, Client};
use serde_json::{json, Value};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(tag: &str) -> PathBuf {
    let dir = sock_path(tag).with_extension("d");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Copies `from` into `to` recursively, keeping symlinks as symlinks.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        let kind = e.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// `systemd-analyze verify` of `unit` installed in a scratch root with the system's own
/// units and the executables the unit names; (success, output).
fn verify(root: &Path, unit: &str) -> (bool, String) {
    let dest = root.join("etc/systemd/system/pollux.service");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(&dest, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--root"])
        .arg(root)
        .arg("/etc/systemd/system/pollux.service")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let test = "unit_file_passes_systemd_analyze_verify";
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        return skip(test, "systemd-analyze is absent (apt-get install systemd)");
    }
    let units = Path::new("/usr/lib/systemd/system");
    if !units.join("sysinit.target").exists() {
        return skip(
            test,
            "the system's units (/usr/lib/systemd/system) are absent",
        );
    }
    let root = scratch("unit-verify");
    copy_tree(units, &root.join("usr/lib/systemd/system"));
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    for (from, to) in [
        (
            PathBuf::from(env!("CARGO_BIN_EXE_pollux")),
            "usr/local/bin/pollux",
        ),
        (repo().join("scripts/rpc.py"), "usr/local/lib/pollux/rpc.py"),
    ] {
        let to = root.join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
    let unit = std::fs::read_to_string(repo().join("dist/pollux.service")).unwrap();
    let (ok, out) = verify(&root, &unit);
    assert!(ok, "systemd-analyze verify failed:\n{out}");
    // Unknown keys and bad values are only warnings: none may name the unit.
    assert!(!out.contains("pollux.service"), "warnings:\n{out}");
    // The check sees a misspelt option and a missing executable (it is not vacuous).
    let (_, out) = verify(&root, &unit.replace("ProtectClock=", "ProtectClok="));
    assert!(out.contains("Unknown key 'ProtectClok'"), "{out}");
    std::fs::remove_file(root.join("usr/local/bin/pollux")).unwrap();
    let (ok, out) = verify(&root, &unit);
    assert!(!ok && out.contains("/usr/local/bin/pollux"), "{out}");
    // The unit asks for what pollux must do to be ready.
    assert!(unit.contains("\nType=notify\n"));
    assert!(unit.contains("\nExecReload=") && unit.contains("reload_config"));
    let _ = std::fs::remove_dir_all(&root);
}

/// Reads datagrams until one contains `key` or `timeout` passes.
fn recv_until(rx: &UnixDatagram, key: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        rx.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        if let Ok(n) = rx.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.lines().any(|l| l == key) {
                return Some(msg);
            }
        }
    }
    None
}

#[test]
fn ready_is_notified_once_rpc_listener_and_metrics_are_up() {
    let dir = scratch("notify");
    let notify = dir.join("notify.sock");
    let rx = UnixDatagram::bind(&notify).unwrap();
    let port = free_port();
    let mport = free_port();
    let config = write_config(&dir, port);
    let rpc = dir.join("rpc.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pollux"))
        .args(["-m", "[0]", "--no-pin", "-r"])
        .arg(&rpc)
        .arg("--json")
        .arg(&config)
        .args(["--metrics-addr", &format!("127.0.0.1:{mport}")])
        .env("NOTIFY_SOCKET", &notify)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let msg = recv_until(&rx, "READY=1", Duration::from_secs(30)).expect("READY=1");
    // At the moment it says ready, everything answers.
    assert!(
        std::os::unix::net::UnixStream::connect(&rpc).is_ok(),
        "RPC socket"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "NVMe/TCP listener"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", mport)).is_ok(),
        "metrics"
    );
    assert!(
        msg.lines().any(|l| l == format!("MAINPID={}", child.id())),
        "{msg}"
    );
    assert!(msg.lines().any(|l| l.starts_with("STATUS=")), "{msg}");
    let mut c = Client::connect(&rpc);
    let subs = c.call("nvmf_get_subsystems", None);
    assert!(subs.as_array().unwrap().iter().any(|s| s["nqn"] == NQN));
    drop(c);
    // Exactly once: nothing more until the shutdown, which says STOPPING=1.
    assert_eq!(recv_until(&rx, "READY=1", Duration::from_millis(300)), None);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(recv_until(&rx, "STOPPING=1", Duration::from_secs(20)).is_some());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());

    // A config that fails: pollux exits 1 naming the method, and never says ready.
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        json!({"subsystems": [{"subsystem": "bdev", "config": [
            {"method": "bdev_malloc_create", "params": {"name": "M", "num_blocks": 0, "block_size": 4096}}]}]})
        .to_string(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pollux"))
        .args(["-m", "[0]", "--no-pin", "-r"])
        .arg(dir.join("rpc2.sock"))
        .arg("--json")
        .arg(&bad)
        .env("NOTIFY_SOCKET", &notify)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bdev_malloc_create"));
    assert_eq!(recv_until(&rx, "READY=1", Duration::from_millis(300)), None);
    let _ = std::fs::remove_dir_all(&dir);
}

fn rpc_py(sock: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("python3")
        .arg(repo().join("scripts/rpc.py"))
        .arg("-s")
        .arg(sock)
        .args(args)
        .output()
        .expect("python3");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn reload_config_applies_additions_and_refuses_restart_only_changes() {
    if !have_tool(
        "python3",
        "reload_config_applies_additions_and_refuses_restart_only_changes",
        "python3 is absent",
    ) {
        return;
    }
    let t = TargetProc::start("reload", &[]);
    let file = t.dir.join("pollux.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let path = file.to_str().unwrap().to_string();

    // The file it started from: nothing to do.
    let (code, out, err) = rpc_py(&t.sock, &["reload_config", &path]);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["applied"], json!([]));
    assert_eq!(r["unchanged"], 5);
    assert_eq!(r["not_removed"], json!([]), "{r}");

    // A new bdev and namespace: applied in file order, the rest left alone.
    config["subsystems"][0]["config"]
        .as_array_mut()
        .unwrap()
        .push(json!({"method": "bdev_malloc_create",
                     "params": {"name": "Malloc1", "num_blocks": 256, "block_size": 4096}}));
    config["subsystems"][1]["config"]
        .as_array_mut()
        .unwrap()
        .push(json!({"method": "nvmf_subsystem_add_ns",
                     "params": {"nqn": NQN, "namespace": {"bdev_name": "Malloc1"}}}));
    std::fs::write(&file, config.to_string()).unwrap();
    let (code, out, err) = rpc_py(&t.sock, &["reload_config", &path]);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let applied: Vec<&str> = r["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["method"].as_str().unwrap())
        .collect();
    assert_eq!(applied, ["bdev_malloc_create", "nvmf_subsystem_add_ns"]);
    let mut c = Client::connect(&t.sock);
    let subs = c.call("nvmf_get_subsystems", Some(json!({"nqn": NQN})));
    assert_eq!(subs[0]["namespaces"].as_array().unwrap().len(), 2, "{subs}");
    // Again: idempotent.
    let (code, out, _) = rpc_py(&t.sock, &["reload_config", &path]);
    assert_eq!(code, 0);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["applied"].clone(), r["unchanged"].clone()),
        (json!([]), json!(7))
    );

    // Dropping the namespace from the file removes nothing; it is reported.
    let mut fewer = config.clone();
    fewer["subsystems"][1]["config"]
        .as_array_mut()
        .unwrap()
        .pop();
    std::fs::write(&file, fewer.to_string()).unwrap();
    let (code, out, _) = rpc_py(&t.sock, &["reload_config", &path]);
    assert_eq!(code, 0);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        r["not_removed"][0]["method"], "nvmf_subsystem_add_ns",
        "{r}"
    );

    // A start-up-only option changed beside an addition: nothing is applied, status 1.
    let mut restart = config.clone();
    restart["subsystems"][1]["config"]
        .as_array_mut()
        .unwrap()
        .insert(
            0,
            json!({"method": "nvmf_set_max_subsystems", "params": {"max_subsystems": 7}}),
        );
    restart["subsystems"][0]["config"]
        .as_array_mut()
        .unwrap()
        .push(json!({"method": "bdev_malloc_create",
                     "params": {"name": "Malloc2", "num_blocks": 256, "block_size": 4096}}));
    std::fs::write(&file, restart.to_string()).unwrap();
    let (code, _, err) = rpc_py(&t.sock, &["reload_config", &path]);
    assert_eq!(code, 1);
    assert!(
        err.contains("need a restart") && err.contains("nvmf_set_max_subsystems"),
        "{err}"
    );
    let (code, _, _) = rpc_py(&t.sock, &["bdev_get_bdevs", "-b", "Malloc2"]);
    assert_ne!(code, 0, "Malloc2 must not have been created");
    drop(c);
    assert!(t.stop().success());
}

/// The `ENTRYPOINT` array of the container recipe.
fn containerfile_entrypoint() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("dist/Containerfile")).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT line");
    serde_json::from_str(line).expect("ENTRYPOINT in exec (JSON) form")
}

#[test]
fn container_entrypoint_runs_unprivileged_with_a_mounted_config() {
    let test = "container_entrypoint_runs_unprivileged_with_a_mounted_config";
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n");
    if !root.unwrap_or(false) || Command::new("setpriv").arg("--version").output().is_err() {
        return skip(
            test,
            "needs root and setpriv to drop to an unprivileged user",
        );
    }
    let entry = containerfile_entrypoint();
    assert_eq!(entry[0], "/usr/local/bin/pollux");
    // The container's paths, mapped to scratch ones: the config (read-only, as mounted),
    // the socket, the metrics address on loopback with a free port.
    let dir = scratch("container");
    let port = free_port();
    let mport = free_port();
    let config = write_config(&dir, port);
    let mut perms = std::fs::metadata(&config).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(&config, perms).unwrap();
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    // Owned by the unprivileged user, as the image's /var/tmp is writable to it.
    let _ = Command::new("chown")
        .args(["65534:65534"])
        .arg(&run)
        .status();
    let sock = run.join("pollux.sock");
    let args: Vec<String> = entry[1..]
        .iter()
        .map(|a| match a.as_str() {
            "/etc/pollux/pollux.json" => config.to_str().unwrap().to_string(),
            "/var/tmp/pollux.sock" => sock.to_str().unwrap().to_string(),
            "0.0.0.0:9464" => format!("127.0.0.1:{mport}"),
            other => other.to_string(),
        })
        .collect();
    // The test binary's directory must be reachable by that user.
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
        ])
        .arg(env!("CARGO_BIN_EXE_pollux"))
        .args(&args)
        .args(["-m", "[0]"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        if let Some(s) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "pollux exited as an unprivileged user ({s}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "no RPC socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid_line}"
    );
    let cap_eff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert!(cap_eff.ends_with("0000000000000000"), "{cap_eff}");
    let mut c = Client::connect(&sock);
    let subs = c.call("nvmf_get_subsystems", None);
    assert!(subs.as_array().unwrap().iter().any(|s| s["nqn"] == NQN));
    drop(c);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(std::net::TcpStream::connect(("127.0.0.1", mport)).is_ok());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}
