//! One snapshot of pollux's statistics, read from the reactors the way the stats RPCs read them.
//!
//! The caller (a metrics thread, never a reactor) sends one message to the main reactor.
//! There the reactor statistics and the bdev iostat are gathered with the same fan-out as
//! `framework_get_reactors` and `bdev_get_iostat`, and `nvmf_get_stats`,
//! `nvmf_get_subsystems` and `nvmf_subsystem_get_qpairs` run as in-process RPC calls. Each
//! part comes back over a channel; the caller waits for all of them, bounded by a deadline.
//! The reactors do what one client's stats RPCs would make them do, no more; decoding and
//! encoding happen on the caller's thread.

use crate::bdev::{self, iostat::IoStats, iostat::ResetMode};
use crate::reactor::{AppHandle, ReactorStats};
use crate::rpc::{self, framework, Responder, RpcResult};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// Statistics of one bdev, merged over every reactor.
#[derive(Debug, Clone)]
pub struct BdevStats {
    pub name: String,
    pub stats: IoStats,
}

/// Counters of one NVMe/TCP poll group (one per reactor), from `nvmf_get_stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollGroupStats {
    pub name: String,
    pub admin_qpairs: u64,
    pub io_qpairs: u64,
    pub current_admin_qpairs: u64,
    pub current_io_qpairs: u64,
    pub pending_bdev_io: u64,
    pub completed_nvme_io: u64,
    pub connections: u64,
    pub open_connections: u64,
    pub term_reqs_sent: u64,
    pub hdr_digest_errors: u64,
    pub data_digest_errors: u64,
}

impl PollGroupStats {
    /// Decodes one `poll_groups` entry of `nvmf_get_stats` (absent counters are 0).
    pub fn from_json(v: &Value) -> PollGroupStats {
        let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        let tcp = v
            .get("transports")
            .and_then(Value::as_array)
            .and_then(|t| t.iter().find(|t| t["trtype"] == "TCP"))
            .cloned()
            .unwrap_or(Value::Null);
        PollGroupStats {
            name: v["name"].as_str().unwrap_or("").to_string(),
            admin_qpairs: n(v, "admin_qpairs"),
            io_qpairs: n(v, "io_qpairs"),
            current_admin_qpairs: n(v, "current_admin_qpairs"),
            current_io_qpairs: n(v, "current_io_qpairs"),
            pending_bdev_io: n(v, "pending_bdev_io"),
            completed_nvme_io: n(v, "completed_nvme_io"),
            connections: n(&tcp, "connections"),
            open_connections: n(&tcp, "open_connections"),
            term_reqs_sent: n(&tcp, "term_reqs_sent"),
            hdr_digest_errors: n(&tcp, "hdr_digest_errors"),
            data_digest_errors: n(&tcp, "data_digest_errors"),
        }
    }
}

/// One NVMe-oF subsystem: what it holds and who is connected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubsystemStats {
    pub nqn: String,
    /// `NVMe` or `Discovery`.
    pub subtype: String,
    pub namespaces: u64,
    pub listeners: u64,
    /// Controllers (distinct controller ids among the queue pairs).
    pub controllers: u64,
    /// Queue pairs (admin and I/O), one connection each.
    pub qpairs: u64,
}

/// Numbers of the process itself, from `/proc/self`.
#[derive(Debug, Clone, Default)]
pub struct ProcessStats {
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub threads: Option<u64>,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    pub cpu_seconds: f64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// Everything one scrape reports.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub reactors: Vec<ReactorStats>,
    pub poll_groups: Vec<PollGroupStats>,
    pub subsystems: Vec<SubsystemStats>,
    pub bdevs: Vec<BdevStats>,
    pub process: ProcessStats,
    /// Parts that could not be read (e.g. the nvmf methods before `framework_start_init`),
    /// with the reason.
    pub failed: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GatherError {
    #[error("pollux is shutting down")]
    Stopping,
    #[error("the reactors did not answer within {0:?}")]
    Timeout(Duration),
}

enum Part {
    Reactors(Vec<ReactorStats>),
    Bdevs(Vec<BdevStats>),
    PollGroups(RpcResult),
    /// The subsystem list and how many `Qpairs` parts follow.
    Subsystems(RpcResult, usize),
    Qpairs(String, RpcResult),
}

/// Reads one snapshot; waits at most `timeout` for the reactors. Call from any thread but
/// a reactor's (it blocks while waiting).
pub fn gather(app: &AppHandle, timeout: Duration) -> Result<Snapshot, GatherError> {
    let deadline = Instant::now() + timeout;
    let (tx, rx) = mpsc::channel::<Part>();
    let on_main = app.clone();
    app.send_to(app.main_core(), move || start_on_main(on_main, tx))
        .map_err(|_| GatherError::Stopping)?;
    let mut snap = Snapshot {
        process: process_stats(),
        ..Default::default()
    };
    let mut subsystems: Vec<SubsystemStats> = Vec::new();
    let mut qpairs: Vec<(String, RpcResult)> = Vec::new();
    let mut expected = 4usize;
    let mut received = 0usize;
    while received < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let part = match rx.recv_timeout(left) {
            Ok(p) => p,
            Err(RecvTimeoutError::Timeout) => return Err(GatherError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => return Err(GatherError::Stopping),
        };
        received += 1;
        match part {
            Part::Reactors(r) => snap.reactors = r,
            Part::Bdevs(b) => snap.bdevs = b,
            Part::PollGroups(Ok(v)) => {
                snap.poll_groups = v["poll_groups"]
                    .as_array()
                    .map(|g| g.iter().map(PollGroupStats::from_json).collect())
                    .unwrap_or_default();
            }
            Part::PollGroups(Err(e)) => snap.failed.push(("nvmf_get_stats".into(), e.message)),
            Part::Subsystems(Ok(v), n) => {
                expected += n;
                subsystems = v
                    .as_array()
                    .map(|l| l.iter().map(subsystem_from_json).collect())
                    .unwrap_or_default();
            }
            Part::Subsystems(Err(e), _) => {
                snap.failed.push(("nvmf_get_subsystems".into(), e.message))
            }
            Part::Qpairs(nqn, r) => qpairs.push((nqn, r)),
        }
    }
    for (nqn, r) in qpairs {
        let Some(s) = subsystems.iter_mut().find(|s| s.nqn == nqn) else {
            continue;
        };
        match r {
            Ok(v) => {
                let list = v.as_array().cloned().unwrap_or_default();
                let ids: BTreeSet<u64> = list.iter().filter_map(|q| q["cntlid"].as_u64()).collect();
                s.controllers = ids.len() as u64;
                s.qpairs = list.len() as u64;
            }
            // Deleted between the two calls: report it without connections.
            Err(e) => snap
                .failed
                .push((format!("nvmf_subsystem_get_qpairs {nqn}"), e.message)),
        }
    }
    snap.subsystems = subsystems;
    Ok(snap)
}

fn subsystem_from_json(v: &Value) -> SubsystemStats {
    let len = |k: &str| {
        v.get(k)
            .and_then(Value::as_array)
            .map_or(0, |a| a.len() as u64)
    };
    SubsystemStats {
        nqn: v["nqn"].as_str().unwrap_or("").to_string(),
        subtype: v["subtype"].as_str().unwrap_or("").to_string(),
        namespaces: len("namespaces"),
        listeners: len("listen_addresses"),
        controllers: 0,
        qpairs: 0,
    }
}

/// Runs on the main reactor: starts every part; each answers through `tx` when done.
fn start_on_main(app: AppHandle, tx: Sender<Part>) {
    let t = tx.clone();
    framework::gather_stats(move |r| {
        let _ = t.send(Part::Reactors(r));
    });
    let t = tx.clone();
    bdev::rpc::gather_iostats(bdev::list(), ResetMode::None, move |all| {
        let list = all
            .into_iter()
            .map(|(b, stats)| BdevStats {
                name: b.name().to_string(),
                stats,
            })
            .collect();
        let _ = t.send(Part::Bdevs(list));
    });
    let t = tx.clone();
    rpc::call(
        "nvmf_get_stats",
        None,
        Responder::new(move |r| {
            let _ = t.send(Part::PollGroups(r));
        }),
    );
    rpc::call(
        "nvmf_get_subsystems",
        None,
        Responder::new(move |r| {
            let nqns: Vec<String> = match &r {
                Ok(v) => v
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .filter_map(|s| s["nqn"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            let _ = tx.send(Part::Subsystems(r, nqns.len()));
            // The qpairs are read in a message of their own, whichever thread this answer
            // came from.
            let main = app.main_core();
            let _ = app.send_to(main, move || {
                for nqn in nqns {
                    let t = tx.clone();
                    let params = json!({ "nqn": nqn });
                    rpc::call(
                        "nvmf_subsystem_get_qpairs",
                        Some(params),
                        Responder::new(move |r| {
                            let _ = t.send(Part::Qpairs(nqn, r));
                        }),
                    );
                }
            });
        }),
    );
}

/// The process's own numbers from `/proc/self` (what is unreadable stays `None`).
pub fn process_stats() -> ProcessStats {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| status_field(&status, key).map(|v| v * 1024);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| boot_time(&s));
    let start = start_ticks(&stat).zip(boot).map(|(ticks, boot)| {
        boot as f64 + ticks as f64 / crate::sys::process::clock_ticks_per_second() as f64
    });
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    ProcessStats {
        resident_bytes: kib("VmRSS:"),
        virtual_bytes: kib("VmSize:"),
        threads: status_field(&status, "Threads:"),
        start_time_seconds: start,
        cpu_seconds: crate::sys::process::process_cpu_time().as_secs_f64(),
        open_fds,
        max_fds: max_open_files(&limits),
    }
}

/// The number after `key` on its line of `/proc/self/status` (`VmRSS:   1234 kB`).
fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Field 22 of `/proc/self/stat` (start time in clock ticks after boot). The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn start_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After ")" come field 3 (state) onwards: field 22 is the 20th of them.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// `btime` of `/proc/stat`: boot time in seconds since the epoch.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of open files in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_parse() {
        let status = "Name:\tpollux\nVmSize:\t  20000 kB\nVmRSS:\t    1234 kB\nThreads:\t3\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(1234));
        assert_eq!(status_field(status, "Threads:"), Some(3));
        assert_eq!(status_field(status, "VmSwap:"), None);
        let stat = "4242 (a b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19 20";
        assert_eq!(start_ticks(stat), Some(777));
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\nprocesses 5\n"),
            Some(1700000000)
        );
        let limits = "Limit Soft Hard Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn this_process_has_rss_and_a_start_time() {
        let p = process_stats();
        assert!(p.resident_bytes.unwrap() > 0);
        let start = p.start_time_seconds.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Started within the last day, not in the future (clock tick rounding aside).
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
        assert!(p.open_fds.unwrap() >= 3);
    }

    #[test]
    fn poll_group_decodes_the_tcp_transport() {
        let v = json!({"name": "nvmf_tgt_poll_group_0", "admin_qpairs": 2, "io_qpairs": 3,
            "current_admin_qpairs": 1, "current_io_qpairs": 1, "pending_bdev_io": 0,
            "completed_nvme_io": 99, "transports": [{"trtype": "TCP", "connections": 5,
            "open_connections": 2, "term_reqs_sent": 1, "hdr_digest_errors": 1,
            "data_digest_errors": 4}]});
        let g = PollGroupStats::from_json(&v);
        assert_eq!(g.name, "nvmf_tgt_poll_group_0");
        assert_eq!(
            (g.io_qpairs, g.completed_nvme_io, g.connections),
            (3, 99, 5)
        );
        assert_eq!(
            (g.term_reqs_sent, g.hdr_digest_errors, g.data_digest_errors),
            (1, 1, 4)
        );
    }
}
