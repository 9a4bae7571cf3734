//! The real `pollux` binary as a separate process exporting one malloc namespace over
//! NVMe/TCP on a free port of 127.0.0.1 (a `--json` config the helper writes), and
//! `pollux-perf` processes as its load: what the operability tests (metrics, pollux-top)
//! look at from the outside.

use super::{free_port, sock_path};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NQN: &str = "nqn.2016-06.io.pollux:ops";
pub const BDEV: &str = "Malloc0";

/// A running pollux process; killed when dropped.
pub struct TargetProc {
    pub child: Child,
    pub sock: PathBuf,
    pub port: u16,
    pub dir: PathBuf,
}

/// The config file of a target with `Malloc0` (64 MiB) as namespace 1 of `NQN` on `port`.
pub fn write_config(dir: &Path, port: u16) -> PathBuf {
    let config = json!({"subsystems": [
        {"subsystem": "bdev", "config": [
            {"method": "bdev_malloc_create",
             "params": {"name": BDEV, "num_blocks": 16384, "block_size": 4096}}]},
        {"subsystem": "nvmf", "config": [
            {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
            {"method": "nvmf_create_subsystem",
             "params": {"nqn": NQN, "allow_any_host": true, "serial_number": "OPS0001"}},
            {"method": "nvmf_subsystem_add_ns",
             "params": {"nqn": NQN, "namespace": {"bdev_name": BDEV}}},
            {"method": "nvmf_subsystem_add_listener",
             "params": {"nqn": NQN, "listen_address": {"trtype": "TCP", "adrfam": "IPv4",
                        "traddr": "127.0.0.1", "trsvcid": port.to_string()}}}]}
    ]});
    let path = dir.join("pollux.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    path
}

/// Spawns the pollux binary with `flags`, its RPC socket at `sock`, the config file `config`
/// and then `extra`; its stderr goes to `dir`/pollux.log.
pub fn spawn_pollux(
    flags: &[&str],
    sock: &Path,
    config: &Path,
    extra: &[&str],
    dir: &Path,
) -> Child {
    let log = std::fs::File::create(dir.join("pollux.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_pollux"))
        .args(flags)
        .arg("-r")
        .arg(sock)
        .arg("--json")
        .arg(config)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn pollux")
}

/// Kills `child` and reaps it, unless it has exited already.
pub fn kill_if_running(child: &mut Child) {
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl TargetProc {
    /// Starts pollux (one unpinned reactor on core 0, the config above) with `extra` flags
    /// and waits until its RPC socket answers.
    pub fn start(tag: &str, extra: &[&str]) -> TargetProc {
        Self::start_on(sock_path(tag), extra)
    }

    /// As `start`, with the RPC socket at `sock`.
    pub fn start_on(sock: PathBuf, extra: &[&str]) -> TargetProc {
        let dir = sock.with_extension("d");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let config = write_config(&dir, port);
        let child = spawn_pollux(&["-m", "[0]", "--no-pin"], &sock, &config, extra, &dir);
        let mut t = TargetProc {
            child,
            sock,
            port,
            dir,
        };
        t.wait_for_socket();
        t
    }

    fn wait_for_socket(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.sock).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("pollux exited early ({status}): {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("pollux never listened on {}", self.sock.display());
    }

    /// What pollux wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pollux.log")).unwrap_or_default()
    }

    /// The transport id pollux-perf takes.
    pub fn trid(&self) -> String {
        format!(
            "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{} subnqn:{NQN}",
            self.port
        )
    }

    /// Starts a pollux-perf run of `seconds` at queue depth `qd` (random 4 KiB reads and
    /// writes, half each) against this target; its JSON result is on the child's stdout.
    pub fn load(&self, seconds: u64, qd: u16) -> Child {
        Command::new(env!("CARGO_BIN_EXE_pollux-perf"))
            .args(["-r", &self.trid(), "-o", "4096", "-w", "randrw", "-M", "50"])
            .args(["-q", &qd.to_string(), "-t", &seconds.to_string()])
            .args(["--no-pin", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pollux-perf")
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("pollux did not exit on SIGTERM: {}", self.log());
    }
}

impl Drop for TargetProc {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
        let _ = std::fs::remove_file(&self.sock);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits (bounded) for a pollux-perf child and returns its JSON result.
pub fn load_result(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().expect("pollux-perf result");
    assert!(
        out.status.success(),
        "pollux-perf failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("pollux-perf prints one JSON object")
}
