//! What pollux-top shows, computed from two samples of the stats RPCs taken an interval
//! apart: rates (busy %, IOPS, MiB/s, poller runs per second) are the differences of the
//! counters over the time between the samples; latency percentiles are the bdev iostat's
//! (since start or the last iostat reset).

use crate::client::RpcClient;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Instant;

/// The answers of one round of RPC calls.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub reactors: Value,
    pub pollers: Value,
    pub iostat: Value,
    pub subsystems: Value,
    /// Per subsystem NQN: its controllers and queue pairs.
    pub controllers: HashMap<String, Value>,
    pub qpairs: HashMap<String, Value>,
}

impl Sample {
    /// One round of calls. A subsystem that vanished between the list and its details is
    /// shown without controllers.
    pub fn take(c: &mut RpcClient) -> Result<Sample, String> {
        let reactors = c.call("framework_get_reactors", None)?;
        let pollers = c.call("thread_get_pollers", None)?;
        let iostat = c.call("bdev_get_iostat", None)?;
        let subsystems = c.call("nvmf_get_subsystems", None)?;
        let mut controllers = HashMap::new();
        let mut qpairs = HashMap::new();
        for s in subsystems.as_array().into_iter().flatten() {
            let Some(nqn) = s["nqn"].as_str() else {
                continue;
            };
            let p = Some(json!({ "nqn": nqn }));
            if let Ok(v) = c.call("nvmf_subsystem_get_controllers", p.clone()) {
                controllers.insert(nqn.to_string(), v);
            }
            if let Ok(v) = c.call("nvmf_subsystem_get_qpairs", p) {
                qpairs.insert(nqn.to_string(), v);
            }
        }
        Ok(Sample {
            at: Instant::now(),
            reactors,
            pollers,
            iostat,
            subsystems,
            controllers,
            qpairs,
        })
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReactorRow {
    pub lcore: u64,
    pub busy_pct: f64,
    /// `sleeping` when the reactor slept most of the interval, else `polling`.
    pub state: String,
    pub in_interrupt: bool,
    pub sleep_pct: f64,
    pub busy_ticks: u64,
    pub idle_ticks: u64,
    pub sleep_ticks: u64,
    pub messages_per_s: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PollerRow {
    pub thread: String,
    pub name: String,
    pub id: u64,
    /// `active`, `timed` or `paused`.
    pub kind: String,
    pub period_ticks: u64,
    pub run_count: u64,
    pub busy_count: u64,
    pub runs_per_s: f64,
    pub busy_per_s: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ControllerRow {
    pub cntlid: u64,
    pub hostnqn: String,
    pub num_io_qpairs: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SubsystemRow {
    pub nqn: String,
    pub subtype: String,
    pub namespaces: u64,
    pub listeners: u64,
    pub controllers: Vec<ControllerRow>,
    pub qpairs: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BdevRow {
    pub name: String,
    pub iops: f64,
    pub read_iops: f64,
    pub write_iops: f64,
    pub mib_s: f64,
    pub read_mib_s: f64,
    pub write_mib_s: f64,
    pub read_p50_us: f64,
    pub read_p99_us: f64,
    pub write_p50_us: f64,
    pub write_p99_us: f64,
    pub num_read_ops: u64,
    pub num_write_ops: u64,
}

/// One screen's worth (and the `--once --json` document).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Snapshot {
    pub interval_s: f64,
    pub reactors: Vec<ReactorRow>,
    pub pollers: Vec<PollerRow>,
    pub subsystems: Vec<SubsystemRow>,
    pub bdevs: Vec<BdevRow>,
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Ticks per second of a stats answer (1e9 when absent).
fn tick_rate(v: &Value) -> f64 {
    v.get("tick_rate")
        .and_then(Value::as_u64)
        .filter(|r| *r > 0)
        .unwrap_or(1_000_000_000) as f64
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

impl Snapshot {
    /// The rates between `prev` and `cur` (the same sample twice gives zero rates).
    pub fn between(prev: &Sample, cur: &Sample) -> Snapshot {
        let dt = cur.at.saturating_duration_since(prev.at).as_secs_f64();
        let per_s = |d: u64| if dt > 0.0 { d as f64 / dt } else { 0.0 };
        let by = |v: &Value, k: &str, id: &Value| -> Option<Value> {
            list(&v["reactors"]).iter().find(|r| r[k] == *id).cloned()
        };
        let reactors = list(&cur.reactors["reactors"])
            .iter()
            .map(|r| {
                let before = by(&prev.reactors, "lcore", &r["lcore"]).unwrap_or(Value::Null);
                let d = |k: &str| u(r, k).saturating_sub(u(&before, k));
                let (busy, idle, sleep) = (d("busy"), d("idle"), d("sleep"));
                let sleep_pct = pct(sleep, busy + idle);
                ReactorRow {
                    lcore: u(r, "lcore"),
                    busy_pct: pct(busy, busy + idle),
                    state: if sleep_pct > 50.0 {
                        "sleeping"
                    } else {
                        "polling"
                    }
                    .to_string(),
                    in_interrupt: r["in_interrupt"].as_bool().unwrap_or(false),
                    sleep_pct,
                    busy_ticks: u(r, "busy"),
                    idle_ticks: u(r, "idle"),
                    sleep_ticks: u(r, "sleep"),
                    messages_per_s: per_s(d("messages")),
                }
            })
            .collect();

        let mut prev_pollers: HashMap<(String, u64), (u64, u64)> = HashMap::new();
        for t in list(&prev.pollers["threads"]) {
            for kind in ["active_pollers", "timed_pollers", "paused_pollers"] {
                for p in list(&t[kind]) {
                    let key = (t["name"].as_str().unwrap_or("").to_string(), u(p, "id"));
                    prev_pollers.insert(key, (u(p, "run_count"), u(p, "busy_count")));
                }
            }
        }
        let mut pollers = Vec::new();
        for t in list(&cur.pollers["threads"]) {
            let thread = t["name"].as_str().unwrap_or("").to_string();
            for (kind, field) in [
                ("active", "active_pollers"),
                ("timed", "timed_pollers"),
                ("paused", "paused_pollers"),
            ] {
                for p in list(&t[field]) {
                    let (runs, busy) = (u(p, "run_count"), u(p, "busy_count"));
                    let (r0, b0) = prev_pollers
                        .get(&(thread.clone(), u(p, "id")))
                        .copied()
                        .unwrap_or((runs, busy));
                    pollers.push(PollerRow {
                        thread: thread.clone(),
                        name: p["name"].as_str().unwrap_or("").to_string(),
                        id: u(p, "id"),
                        kind: kind.to_string(),
                        period_ticks: u(p, "period_ticks"),
                        run_count: runs,
                        busy_count: busy,
                        runs_per_s: per_s(runs.saturating_sub(r0)),
                        busy_per_s: per_s(busy.saturating_sub(b0)),
                    });
                }
            }
        }

        let subsystems = list(&cur.subsystems)
            .iter()
            .map(|s| {
                let nqn = s["nqn"].as_str().unwrap_or("").to_string();
                let controllers = cur
                    .controllers
                    .get(&nqn)
                    .map(|c| {
                        list(c)
                            .iter()
                            .map(|c| ControllerRow {
                                cntlid: u(c, "cntlid"),
                                hostnqn: c["hostnqn"].as_str().unwrap_or("").to_string(),
                                num_io_qpairs: u(c, "num_io_qpairs"),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                SubsystemRow {
                    subtype: s["subtype"].as_str().unwrap_or("").to_string(),
                    namespaces: list(&s["namespaces"]).len() as u64,
                    listeners: list(&s["listen_addresses"]).len() as u64,
                    qpairs: cur.qpairs.get(&nqn).map_or(0, |q| list(q).len() as u64),
                    controllers,
                    nqn,
                }
            })
            .collect();

        let ticks_us = 1e6 / tick_rate(&cur.iostat);
        let bdevs = list(&cur.iostat["bdevs"])
            .iter()
            .map(|b| {
                let before = list(&prev.iostat["bdevs"])
                    .iter()
                    .find(|p| p["name"] == b["name"])
                    .cloned()
                    .unwrap_or_else(|| b.clone());
                let d = |k: &str| u(b, k).saturating_sub(u(&before, k));
                let mib = |bytes: u64| per_s(bytes) / (1024.0 * 1024.0);
                let (r, w) = (per_s(d("num_read_ops")), per_s(d("num_write_ops")));
                let (rb, wb) = (d("bytes_read"), d("bytes_written"));
                let us = |k: &str| u(b, k) as f64 * ticks_us;
                BdevRow {
                    name: b["name"].as_str().unwrap_or("").to_string(),
                    iops: r + w,
                    read_iops: r,
                    write_iops: w,
                    mib_s: mib(rb + wb),
                    read_mib_s: mib(rb),
                    write_mib_s: mib(wb),
                    read_p50_us: us("read_latency_p50_ticks"),
                    read_p99_us: us("read_latency_p99_ticks"),
                    write_p50_us: us("write_latency_p50_ticks"),
                    write_p99_us: us("write_latency_p99_ticks"),
                    num_read_ops: u(b, "num_read_ops"),
                    num_write_ops: u(b, "num_write_ops"),
                }
            })
            .collect();
        Snapshot {
            interval_s: dt,
            reactors,
            pollers,
            subsystems,
            bdevs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample(at: Instant, busy: u64, idle: u64, sleep: u64, reads: u64, runs: u64) -> Sample {
        Sample {
            at,
            reactors: json!({"tick_rate": 1_000_000_000u64, "reactors": [
                {"lcore": 0, "busy": busy, "idle": idle, "sleep": sleep, "messages": runs,
                 "in_interrupt": true}]}),
            pollers: json!({"threads": [{"name": "reactor_0", "active_pollers": [
                {"name": "nvmf_tcp_poll_group_0", "id": 2, "run_count": runs, "busy_count": runs / 2}],
                "timed_pollers": [], "paused_pollers": []}]}),
            iostat: json!({"tick_rate": 1_000_000_000u64, "bdevs": [
                {"name": "Malloc0", "num_read_ops": reads, "bytes_read": reads * 4096,
                 "num_write_ops": 0, "bytes_written": 0,
                 "read_latency_p50_ticks": 20_000, "read_latency_p99_ticks": 90_000}]}),
            subsystems: json!([{"nqn": "nqn.x", "subtype": "NVMe", "namespaces": [{"nsid": 1}],
                "listen_addresses": [{}]}]),
            controllers: HashMap::from([(
                "nqn.x".to_string(),
                json!([{"cntlid": 1, "hostnqn": "nqn.h", "num_io_qpairs": 1}]),
            )]),
            qpairs: HashMap::from([("nqn.x".to_string(), json!([{}, {}]))]),
        }
    }

    #[test]
    fn rates_are_differences_over_the_interval() {
        let t0 = Instant::now();
        let a = sample(t0, 100, 900, 0, 1000, 10);
        let b = sample(
            t0 + Duration::from_secs(2),
            100 + 500,
            900 + 1500,
            1200,
            1000 + 20_000,
            10 + 4000,
        );
        let s = Snapshot::between(&a, &b);
        assert_eq!(s.interval_s, 2.0);
        let r = &s.reactors[0];
        assert_eq!(r.busy_pct, 25.0);
        assert_eq!(r.state, "sleeping");
        assert_eq!(s.bdevs[0].iops, 10_000.0);
        assert_eq!(s.bdevs[0].read_iops, 10_000.0);
        assert!((s.bdevs[0].mib_s - 10_000.0 * 4096.0 / 1048576.0).abs() < 1e-9);
        assert_eq!(s.bdevs[0].read_p50_us, 20.0);
        assert_eq!(s.bdevs[0].read_p99_us, 90.0);
        assert_eq!(s.pollers[0].runs_per_s, 2000.0);
        assert_eq!(s.pollers[0].kind, "active");
        assert_eq!(s.subsystems[0].controllers.len(), 1);
        assert_eq!(s.subsystems[0].qpairs, 2);
        assert_eq!(s.subsystems[0].namespaces, 1);
        // The same sample twice: no time, no rates.
        let z = Snapshot::between(&b, &b);
        assert_eq!(z.bdevs[0].iops, 0.0);
        assert_eq!(z.reactors[0].busy_pct, 0.0);
    }
}
