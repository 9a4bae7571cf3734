//! pollux-top against the real binary under a pollux-perf load: `--once --json` checked
//! field by field; the terminal UI run in tmux (capture-pane) shows the reactors, the
//! subsystem with its controller and the bdev with non-zero IOPS, follows a resize, says
//! so when pollux goes away and recovers when it comes back, and quits on `q`.

mod common;

use common::target_proc::{load_result, TargetProc, BDEV, NQN};
use common::{have_tool, json_output, sock_path};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOP: &str = env!("CARGO_BIN_EXE_pollux-top");

fn once_json(sock: &Path) -> Value {
    json_output(
        Command::new(TOP)
            .arg("-r")
            .arg(sock)
            .args(["--once", "--json", "-d", "1"]),
    )
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} is not a number in {v}"))
}

#[test]
fn once_json_is_one_snapshot_field_by_field() {
    let t = TargetProc::start("top-once", &[]);
    let load = t.load(4, 32);
    std::thread::sleep(Duration::from_millis(800));
    let s = once_json(&t.sock);
    let perf = load_result(load);

    assert_eq!(
        keys(&s),
        ["bdevs", "interval_s", "pollers", "reactors", "subsystems"]
    );
    let interval = num(&s, "interval_s");
    assert!((0.9..3.0).contains(&interval), "{interval}");

    let reactors = s["reactors"].as_array().unwrap();
    assert_eq!(reactors.len(), 1);
    let r = &reactors[0];
    assert_eq!(
        keys(r),
        [
            "busy_pct",
            "busy_ticks",
            "idle_ticks",
            "in_interrupt",
            "lcore",
            "messages_per_s",
            "sleep_pct",
            "sleep_ticks",
            "state"
        ]
    );
    assert_eq!(r["lcore"], 0);
    let busy = num(r, "busy_pct");
    assert!(busy > 0.0 && busy <= 100.0, "{r}");
    assert!(num(r, "sleep_pct") <= 100.0 - busy + 1e-6, "{r}");
    assert!(["sleeping", "polling"].contains(&r["state"].as_str().unwrap()));
    assert_eq!(r["in_interrupt"], true);
    assert!(num(r, "busy_ticks") > 0.0 && num(r, "idle_ticks") >= num(r, "sleep_ticks"));

    let pollers = s["pollers"].as_array().unwrap();
    let group = pollers
        .iter()
        .find(|p| p["name"] == "nvmf_tcp_poll_group_0")
        .unwrap_or_else(|| panic!("no poll group poller in {pollers:?}"));
    assert_eq!(
        keys(group),
        [
            "busy_count",
            "busy_per_s",
            "id",
            "kind",
            "name",
            "period_ticks",
            "run_count",
            "runs_per_s",
            "thread"
        ]
    );
    assert_eq!(group["thread"], "reactor_0");
    assert_eq!(group["kind"], "active");
    assert!(num(group, "runs_per_s") > 0.0 && num(group, "busy_per_s") > 0.0);
    assert!(num(group, "busy_count") <= num(group, "run_count"));
    assert!(pollers
        .iter()
        .any(|p| p["name"] == "rpc_server" && p["thread"] == "reactor_0"));

    let subs = s["subsystems"].as_array().unwrap();
    let sub = subs
        .iter()
        .find(|x| x["nqn"] == NQN)
        .unwrap_or_else(|| panic!("no {NQN} in {subs:?}"));
    assert_eq!(
        keys(sub),
        [
            "controllers",
            "listeners",
            "namespaces",
            "nqn",
            "qpairs",
            "subtype"
        ]
    );
    assert_eq!(sub["subtype"], "NVMe");
    assert_eq!(sub["namespaces"], 1);
    assert_eq!(sub["listeners"], 1);
    assert_eq!(sub["qpairs"], 2, "an admin and an I/O queue: {sub}");
    let ctrl = &sub["controllers"][0];
    assert_eq!(keys(ctrl), ["cntlid", "hostnqn", "num_io_qpairs"]);
    assert!(ctrl["cntlid"].as_u64().unwrap() >= 1);
    assert!(ctrl["hostnqn"].as_str().unwrap().starts_with("nqn."));
    assert_eq!(ctrl["num_io_qpairs"], 1);
    assert!(subs
        .iter()
        .any(|x| x["subtype"] == "Discovery" && x["controllers"].as_array().unwrap().is_empty()));

    let b = s["bdevs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == BDEV)
        .unwrap()
        .clone();
    assert_eq!(
        keys(&b),
        [
            "iops",
            "mib_s",
            "name",
            "num_read_ops",
            "num_write_ops",
            "read_iops",
            "read_mib_s",
            "read_p50_us",
            "read_p99_us",
            "write_iops",
            "write_mib_s",
            "write_p50_us",
            "write_p99_us"
        ]
    );
    let (iops, r, w) = (num(&b, "iops"), num(&b, "read_iops"), num(&b, "write_iops"));
    assert!(r > 0.0 && w > 0.0, "{b}");
    assert!((iops - (r + w)).abs() < 1e-6);
    // 4 KiB I/O: MiB/s is IOPS / 256.
    assert!(
        (num(&b, "mib_s") - iops / 256.0).abs() < 1e-6 * iops.max(1.0),
        "{b}"
    );
    assert!(
        (num(&b, "read_mib_s") - r / 256.0).abs() < 1e-6 * r.max(1.0),
        "{b}"
    );
    assert!(num(&b, "read_p50_us") <= num(&b, "read_p99_us"));
    assert!(num(&b, "write_p50_us") <= num(&b, "write_p99_us"));
    assert!(num(&b, "num_read_ops") >= r * interval * 0.5);
    // The same order of magnitude as what the load generator measured (both share 2 cores).
    let perf_iops = perf["total"]["iops"].as_f64().unwrap();
    assert!(
        iops > perf_iops / 5.0 && iops < perf_iops * 5.0,
        "pollux-top {iops} vs pollux-perf {perf_iops}"
    );
    assert!(t.stop().success());
}

#[test]
fn once_without_pollux_is_one_line_and_status_1() {
    let sock = sock_path("top-absent");
    let out = Command::new(TOP)
        .arg("-r")
        .arg(&sock)
        .args(["--once", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("pollux-top: cannot connect to ") && err.lines().count() == 1,
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// A tmux server of this test's own (`-L`), killed when dropped.
struct Tmux {
    name: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux")
    }

    fn capture(&self) -> String {
        let out = self.cmd(&["capture-pane", "-p", "-t", "top"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (bounded) until the pane satisfies `ok`; returns the last capture.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.capture();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{what}; the pane shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// The IOPS column of the bdev's row on the Bdevs tab.
fn bdev_iops(screen: &str) -> Option<f64> {
    screen.lines().find_map(|l| {
        let mut f = l
            .split(|c: char| c.is_whitespace() || c == '│')
            .filter(|s| !s.is_empty());
        (f.next()? == BDEV).then(|| f.next()?.parse().ok())?
    })
}

#[test]
fn tui_in_tmux_shows_a_loaded_pollux_and_survives_its_restart() {
    if !have_tool(
        "tmux",
        "tui_in_tmux_shows_a_loaded_pollux_and_survives_its_restart",
        "tmux is not installed (apt-get install tmux)",
    ) {
        return;
    }
    let t = TargetProc::start("top-tui", &[]);
    let sock = t.sock.clone();
    let tmux = Tmux {
        name: format!("pollux-top-test-{}", std::process::id()),
    };
    let command = format!("{TOP} -r {}", sock.display());
    let out = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "150",
        "-y",
        "40",
        &command,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let load = t.load(8, 32);

    // Reactors (the first tab): core 0 with its busy %.
    let screen = tmux.wait_for("reactor 0 busy under load", |s| {
        s.contains("Reactors")
            && s.contains("Busy %")
            && s.lines().any(|l| {
                let f: Vec<&str> = l
                    .split(|c: char| c.is_whitespace() || c == '│')
                    .filter(|s| !s.is_empty())
                    .collect();
                f.len() > 2 && f[0] == "0" && f[1].parse::<f64>().is_ok_and(|b| b > 0.0)
            })
    });
    assert!(screen.contains("connected"), "{screen}");

    // Subsystems: the NQN and the host's controller.
    tmux.cmd(&["send-keys", "-t", "top", "3"]);
    tmux.wait_for("the subsystem with its controller", |s| {
        s.contains(NQN) && s.contains("controller 1, 1 I/O qpairs, host nqn.")
    });

    // Bdevs: Malloc0 with non-zero IOPS.
    tmux.cmd(&["send-keys", "-t", "top", "4"]);
    tmux.wait_for("Malloc0 with IOPS", |s| {
        bdev_iops(s).is_some_and(|iops| iops > 0.0)
    });

    // Pollers via Tab from Bdevs (wraps to Reactors, then Pollers), sorted by `s`.
    tmux.cmd(&["send-keys", "-t", "top", "Tab", "Tab"]);
    tmux.wait_for("the pollers tab", |s| {
        s.contains("nvmf_tcp_poll_group_0") && s.contains("Runs/s v")
    });
    tmux.cmd(&["send-keys", "-t", "top", "s"]);
    tmux.wait_for("sorted by busy/s", |s| s.contains("Busy/s v"));

    // A resize redraws to the new size.
    tmux.cmd(&["send-keys", "-t", "top", "4"]);
    let out = tmux.cmd(&["resize-window", "-t", "top", "-x", "100", "-y", "24"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let screen = tmux.wait_for("the bdev table at 100x24", |s| {
        bdev_iops(s).is_some() && s.lines().count() <= 24
    });
    assert!(screen.lines().all(|l| l.chars().count() <= 100), "{screen}");
    let _ = load_result(load);

    // pollux goes away: the screen says so; it comes back on the same socket: shown again.
    assert!(t.stop().success());
    tmux.wait_for("pollux gone", |s| s.contains("pollux is not answering"));
    let again = TargetProc::start_on(sock.clone(), &[]);
    tmux.wait_for("pollux back", |s| {
        !s.contains("pollux is not answering") && bdev_iops(s).is_some()
    });

    tmux.cmd(&["send-keys", "-t", "top", "q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.cmd(&["has-session", "-t", "top"]).status.success() {
        assert!(Instant::now() < deadline, "pollux-top did not quit on q");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(again.stop().success());
}
