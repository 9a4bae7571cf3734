//! Helpers shared by the integration tests: unique socket paths, an in-process application
//! on one unpinned, sleeping reactor, and a tiny JSON-RPC client that reads the server's
//! newline-terminated answers with a timeout.

#![allow(dead_code)]

pub mod nvme;
pub mod target_proc;

use pollux::app::{self, AppOptions, RunningApp};
use pollux::reactor::{self, IdleStrategy, ReactorConfig};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP port on 127.0.0.1 that was free a moment ago (for a listener a test names).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// A socket path no other test (or test process) uses.
pub fn sock_path(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("pollux-test-{}-{tag}-{n}.sock", std::process::id()))
}

/// Options for a small in-process app: core 0 unpinned, sleeping when idle, no default.
pub fn test_options(tag: &str) -> AppOptions {
    AppOptions {
        cores: vec![0],
        rpc_socket: sock_path(tag),
        pin: false,
        idle: IdleStrategy::SpinThenSleep(Duration::from_micros(100)),
        no_default: true,
        ..Default::default()
    }
}

/// Reports that (part of) a test cannot run on this machine, with the exact reason: one
/// `SKIPPED: <test>: <reason>` line written straight to the process's stderr, which the test
/// harness does not capture, so it shows in every run (an `eprintln!` of a passing test is
/// swallowed). With `POLLUX_NO_SKIP` set (a machine that must have every dependency) the
/// test fails instead.
pub fn skip(test: &str, reason: &str) {
    if std::env::var_os("POLLUX_NO_SKIP").is_some() {
        panic!("{test}: {reason} (POLLUX_NO_SKIP is set, so this is a failure)");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
}

/// Runs an RPC client `cmd` (an rpc.py) against the socket `sock` with `args`; returns
/// whether it succeeded, its stdout and its stderr.
pub fn run_rpc_client(cmd: &mut Command, sock: &Path, args: &[&str]) -> (bool, String, String) {
    let out = cmd
        .arg("-s")
        .arg(sock)
        .args(args)
        .output()
        .expect("the rpc client runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether `tool` runs (as `tool -V`); where it does not, reports `test` skipped for
/// `reason`.
pub fn have_tool(tool: &str, test: &str, reason: &str) -> bool {
    let found = Command::new(tool).arg("-V").output().is_ok();
    if !found {
        skip(test, reason);
    }
    found
}

/// Runs `cmd` to its end and returns what it printed on stdout, one JSON document; panics,
/// showing its stderr, unless it succeeded.
pub fn json_output(cmd: &mut Command) -> Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

/// Starts an app with `test_options(tag)` that waits in STARTUP for framework_start_init.
pub fn start_waiting_for_rpc(tag: &str) -> RunningApp {
    let mut opts = test_options(tag);
    opts.wait_for_rpc = true;
    start(opts)
}

/// Starts one unpinned reactor on `core` (sleeping when idle) and runs `init` there with the
/// sender of a channel; waits up to `timeout` for what is sent on it, stops the reactor and
/// returns that.
pub fn run_on_one_reactor<T: Send + 'static>(
    core: u32,
    timeout: Duration,
    init: impl FnOnce(mpsc::Sender<T>) + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let config = ReactorConfig {
        cores: vec![core],
        idle: IdleStrategy::SpinThenSleep(Duration::from_micros(50)),
        pin: false,
    };
    let app = reactor::start(config, move || init(tx)).unwrap();
    let result = rx
        .recv_timeout(timeout)
        .expect("the reactor sent its result");
    app.shutdown();
    app.wait();
    result
}

/// Starts an app with `test_options(tag)` and connects a client to its RPC socket.
pub fn start_with_client(tag: &str) -> (RunningApp, Client) {
    let app = start(test_options(tag));
    let client = Client::connect(app.rpc_socket());
    (app, client)
}

pub fn start(opts: AppOptions) -> RunningApp {
    app::start(opts).expect("start the app")
}

pub struct Client {
    pub stream: UnixStream,
    pending: Vec<u8>,
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        let stream = UnixStream::connect(path).expect("connect to the RPC socket");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .expect("write to the RPC socket");
    }

    /// Reads one answer (a line). Panics on timeout or EOF.
    pub fn read(&mut self) -> Value {
        self.try_read().expect("an answer, not end of stream")
    }

    /// Reads one answer; `None` at end of stream.
    pub fn try_read(&mut self) -> Option<Value> {
        loop {
            if let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                return Some(serde_json::from_slice(&line).expect("answers are JSON"));
            }
            let mut buf = [0u8; 65536];
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                // Closed by the server while our unread request bytes were still queued.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) => panic!("reading an answer: {e}"),
            }
        }
    }

    /// Sends one request and returns its answer (the whole response object).
    pub fn request(&mut self, id: u64, method: &str, params: Option<Value>) -> Value {
        let mut req = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(p) = params {
            req["params"] = p;
        }
        self.send(req.to_string().as_bytes());
        let answer = self.read();
        assert_eq!(
            answer["id"],
            json!(id),
            "answer to another request: {answer}"
        );
        answer
    }

    /// Calls a method that must succeed; returns its result.
    pub fn call(&mut self, method: &str, params: Option<Value>) -> Value {
        let answer = self.request(1, method, params);
        assert!(answer.get("error").is_none(), "{method} failed: {answer}");
        answer["result"].clone()
    }

    /// Calls a method that must fail; returns (code, message).
    pub fn call_err(&mut self, method: &str, params: Option<Value>) -> (i64, String) {
        let answer = self.request(1, method, params);
        let error = &answer["error"];
        assert!(error.is_object(), "{method} should fail: {answer}");
        (
            error["code"].as_i64().unwrap(),
            error["message"].as_str().unwrap().to_string(),
        )
    }
}
