//! The statistics methods: I/O statistics (`bdev_get_iostat`, `bdev_reset_iostat`), the
//! channels open per reactor (`thread_get_io_channels`) and latency histograms.
//!
//! Statistics live per reactor; each method gathers them with a fan-out to every reactor and
//! answers back on the main reactor.

use super::{to_rpc, NameParam};
use crate::bdev::{self, histogram, iostat, BdevError, BdevHandle, IoType};
use crate::reactor;
use crate::rpc::{self, parse_params, Responder, RpcError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnableHistogram {
    name: String,
    enable: bool,
    opc: Option<String>,
    granularity: Option<u32>,
    min_nsec: Option<u64>,
    max_nsec: Option<u64>,
}

/// `bdev_enable_histogram`: starts (from zero) or stops the bdev's latency histogram.
pub(super) fn bdev_enable_histogram(params: Option<Value>, responder: Responder) {
    let p: EnableHistogram = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    let Some(h) = bdev::lookup(&p.name) else {
        return responder.err(to_rpc(BdevError::NotFound(p.name)));
    };
    let cfg = if p.enable {
        match histogram_config(&p) {
            Ok(c) => Some(c),
            Err(e) => return responder.err(RpcError::invalid_params(e)),
        }
    } else {
        None
    };
    bdev::set_histogram(&h, cfg, move || responder.ok(json!(true)));
}

fn histogram_config(p: &EnableHistogram) -> Result<histogram::HistConfig, String> {
    let d = histogram::HistConfig::default();
    let granularity = p.granularity.unwrap_or(d.granularity);
    if !(1..=histogram::MAX_GRANULARITY).contains(&granularity) {
        return Err(format!(
            "invalid params: granularity: {granularity} is not within 1..={}",
            histogram::MAX_GRANULARITY
        ));
    }
    let opc = match p.opc.as_deref() {
        None => None,
        Some(name) => Some(
            IoType::ALL
                .iter()
                .copied()
                .find(|t| t.name() == name)
                .ok_or_else(|| format!("invalid params: opc: unknown I/O type {name:?}"))?,
        ),
    };
    let (min_ns, max_ns) = (p.min_nsec.unwrap_or(0), p.max_nsec.unwrap_or(u64::MAX));
    if min_ns > max_ns {
        return Err(format!(
            "invalid params: min_nsec: {min_ns} is above max_nsec {max_ns}"
        ));
    }
    Ok(histogram::HistConfig {
        granularity,
        opc,
        min_ns,
        max_ns,
    })
}

/// `bdev_get_histogram`: the merged histogram in SPDK's encoded form.
pub(super) fn bdev_get_histogram(params: Option<Value>, responder: Responder) {
    let p: NameParam = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    let Some(h) = bdev::lookup(&p.name) else {
        return responder.err(to_rpc(BdevError::NotFound(p.name)));
    };
    let name = p.name;
    bdev::collect_histogram(&h, move |hist| match hist {
        None => responder.err(RpcError::errno(
            libc::EFAULT,
            format!("the histogram of bdev {name} is not enabled (bdev_enable_histogram)"),
        )),
        Some(hist) => {
            let g = hist.config().granularity;
            responder.ok(json!({
                "histogram": hist.encode(),
                "bucket_shift": g,
                "granularity": g,
                "min_range": 0,
                "max_range": hist.ranges(),
                "tsc_rate": iostat::TICK_RATE,
            }))
        }
    });
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetIostat {
    name: Option<String>,
    names: Option<Vec<String>>,
    #[serde(default)]
    per_channel: bool,
    #[serde(default)]
    reset_mode: iostat::ResetMode,
}

fn ticks_now() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// Looks up each named bdev (all of them when none is named); -ENODEV names a missing one.
fn bdevs_named(names: &[String]) -> Result<Vec<BdevHandle>, RpcError> {
    if names.is_empty() {
        return Ok(bdev::list());
    }
    names
        .iter()
        .map(|n| {
            bdev::lookup(n).ok_or_else(|| {
                RpcError::errno(libc::ENODEV, format!("No such device: bdev {n} not found"))
            })
        })
        .collect()
}

/// The SPDK thread id of this reactor (as `thread_get_stats` numbers them).
fn thread_id_here() -> usize {
    let core = reactor::current_core().unwrap_or(0);
    reactor::cores()
        .iter()
        .position(|c| *c == core)
        .unwrap_or(0)
        + 1
}

/// `bdev_get_iostat`: the statistics of the bdevs named (all when none is), merged over
/// every reactor, or per channel with `per_channel`.
pub(super) fn bdev_get_iostat(params: Option<Value>, responder: Responder) {
    let p: GetIostat = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    let mut wanted: Vec<String> = p.names.unwrap_or_default();
    wanted.extend(p.name);
    if p.per_channel && wanted.len() != 1 {
        return responder.err(RpcError::invalid_params(
            "invalid params: per_channel: name exactly one bdev (name)",
        ));
    }
    let bdevs = match bdevs_named(&wanted) {
        Ok(b) => b,
        Err(e) => return responder.err(e),
    };
    let mode = p.reset_mode;
    if p.per_channel {
        return per_channel_iostat(bdevs[0].clone(), mode, responder);
    }
    gather_iostats(bdevs, mode, move |stats| {
        let list: Vec<Value> = stats.iter().map(|(b, s)| s.to_json(b.name())).collect();
        responder.ok(json!({
            "tick_rate": iostat::TICK_RATE,
            "ticks": ticks_now(),
            "bdevs": list,
        }))
    });
}

/// Merges the statistics of each of `bdevs` over every reactor (and of its closed
/// channels), resetting what `mode` names as it reads, and hands them to `done` on the
/// calling (main) reactor. `bdev_get_iostat` and the metrics endpoint read them this way.
pub fn gather_iostats(
    bdevs: Vec<BdevHandle>,
    mode: iostat::ResetMode,
    done: impl FnOnce(Vec<(BdevHandle, iostat::IoStats)>) + Send + 'static,
) {
    let totals: Arc<Mutex<Vec<iostat::IoStats>>> = Arc::new(Mutex::new(
        bdevs
            .iter()
            .map(|b| {
                let mut s = iostat::IoStats::new();
                bdev::collect_closed_stats(b, &mut s);
                bdev::reset_closed_stats(b, mode);
                s
            })
            .collect(),
    ));
    let each_bdevs = bdevs.clone();
    let each_totals = totals.clone();
    reactor::for_each_reactor(
        move || {
            let mut t = each_totals.lock().unwrap_or_else(|e| e.into_inner());
            for (b, s) in each_bdevs.iter().zip(t.iter_mut()) {
                bdev::collect_local_stats(b, s);
                bdev::reset_local_stats(b, mode);
            }
        },
        move || {
            let t = std::mem::take(&mut *totals.lock().unwrap_or_else(|e| e.into_inner()));
            done(bdevs.into_iter().zip(t).collect())
        },
    );
}

/// `bdev_get_iostat` with `per_channel`: one entry per reactor that has a channel open,
/// in SPDK's shape (`name`, `channels` with `thread_id`).
fn per_channel_iostat(bdev: BdevHandle, mode: iostat::ResetMode, responder: Responder) {
    let channels: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(Vec::new()));
    let each = channels.clone();
    let each_bdev = bdev.clone();
    reactor::for_each_reactor(
        move || {
            let mut s = iostat::IoStats::new();
            if bdev::collect_local_channel_stats(&each_bdev, &mut s) {
                bdev::reset_local_stats(&each_bdev, mode);
                let mut v = s.to_json(each_bdev.name());
                if let Some(m) = v.as_object_mut() {
                    m.remove("name");
                    m.insert("thread_id".into(), json!(thread_id_here()));
                }
                each.lock().unwrap_or_else(|e| e.into_inner()).push(v);
            }
        },
        move || {
            let c = channels.lock().unwrap_or_else(|e| e.into_inner()).clone();
            responder.ok(json!({
                "tick_rate": iostat::TICK_RATE,
                "ticks": ticks_now(),
                "name": bdev.name(),
                "channels": c,
            }))
        },
    );
}

/// `thread_get_io_channels`: per reactor ("thread"), the bdev I/O channels open there, in
/// SPDK's shape (`name` of the I/O device — here the bdev — and `ref`, its channel count).
pub(super) fn thread_get_io_channels(params: Option<Value>, responder: Responder) {
    if let Err(e) = rpc::no_params(&params) {
        return responder.err(e);
    }
    let threads: Arc<Mutex<Vec<(usize, Value)>>> = Arc::new(Mutex::new(Vec::new()));
    let each = threads.clone();
    reactor::for_each_reactor(
        move || {
            let channels: Vec<Value> = bdev::local_channel_counts()
                .into_iter()
                .map(|(name, n)| json!({"name": name, "ref": n}))
                .collect();
            let core = reactor::current_core().unwrap_or(0);
            let thread = json!({"name": format!("reactor_{core}"), "io_channels": channels});
            let mut t = each.lock().unwrap_or_else(|e| e.into_inner());
            t.push((thread_id_here(), thread));
        },
        move || {
            let mut t = threads.lock().unwrap_or_else(|e| e.into_inner()).clone();
            t.sort_by_key(|(id, _)| *id);
            let list: Vec<Value> = t.into_iter().map(|(_, v)| v).collect();
            responder.ok(json!({"tick_rate": iostat::TICK_RATE, "threads": list}))
        },
    );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetIostat {
    name: Option<String>,
    mode: Option<iostat::ResetMode>,
}

/// `bdev_reset_iostat`: clears the statistics of one bdev or of all (`mode`: all, maxmin,
/// error, none).
pub(super) fn bdev_reset_iostat(params: Option<Value>, responder: Responder) {
    let p: ResetIostat = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    let mode = p.mode.unwrap_or(iostat::ResetMode::All);
    let bdevs = match bdevs_named(&p.name.into_iter().collect::<Vec<_>>()) {
        Ok(b) => b,
        Err(e) => return responder.err(e),
    };
    for b in &bdevs {
        bdev::reset_closed_stats(b, mode);
    }
    reactor::for_each_reactor(
        move || {
            for b in &bdevs {
                bdev::reset_local_stats(b, mode);
            }
        },
        move || responder.ok(json!(true)),
    );
}
