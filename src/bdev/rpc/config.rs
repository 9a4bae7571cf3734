//! The layer's settings and the `bdev` subsystem's config: `bdev_set_options`,
//! `bdev_wait_for_examine`, `bdev_set_qos_limit`, and the config writer that replays them
//! with every bdev in creation order (bases before the bdevs stacked on them).

use super::to_rpc;
use crate::bdev::{self, BdevError};
use crate::rpc::{self, parse_params, Responder, RpcError, RpcResult};
use serde::Deserialize;
use serde_json::{json, Value};
use std::cell::RefCell;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetQosLimit {
    name: String,
    rw_ios_per_sec: Option<u64>,
    rw_mbytes_per_sec: Option<u64>,
    r_mbytes_per_sec: Option<u64>,
    w_mbytes_per_sec: Option<u64>,
}

/// `bdev_set_qos_limit`: changes the limits given (0 removes one), keeps the others.
pub(super) fn bdev_set_qos_limit(params: Option<Value>, responder: Responder) {
    let p: SetQosLimit = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    if [
        p.rw_ios_per_sec,
        p.rw_mbytes_per_sec,
        p.r_mbytes_per_sec,
        p.w_mbytes_per_sec,
    ]
    .iter()
    .all(Option::is_none)
    {
        return responder.err(RpcError::invalid_params(
            "invalid params: give at least one of rw_ios_per_sec, rw_mbytes_per_sec, \
             r_mbytes_per_sec, w_mbytes_per_sec",
        ));
    }
    let Some(h) = bdev::lookup(&p.name) else {
        return responder.err(to_rpc(BdevError::NotFound(p.name)));
    };
    let mut l = h.qos_limits();
    l.rw_ios_per_sec = p.rw_ios_per_sec.unwrap_or(l.rw_ios_per_sec);
    l.rw_mbytes_per_sec = p.rw_mbytes_per_sec.unwrap_or(l.rw_mbytes_per_sec);
    l.r_mbytes_per_sec = p.r_mbytes_per_sec.unwrap_or(l.r_mbytes_per_sec);
    l.w_mbytes_per_sec = p.w_mbytes_per_sec.unwrap_or(l.w_mbytes_per_sec);
    bdev::set_qos(&h, l, move || responder.ok(json!(true)));
}

/// `bdev_set_options`: accepted and kept for the config (the layer has no fixed pools).
#[derive(Debug, Clone, Deserialize, serde::Serialize, Default)]
#[serde(deny_unknown_fields)]
struct BdevOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    bdev_io_pool_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bdev_io_cache_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bdev_auto_examine: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iobuf_small_cache_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iobuf_large_cache_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    small_buf_pool_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    large_buf_pool_size: Option<u64>,
}

thread_local! {
    static OPTIONS: RefCell<BdevOptions> = RefCell::new(BdevOptions::default());
}

pub(super) fn bdev_wait_for_examine(params: Option<Value>) -> RpcResult {
    rpc::no_params(&params)?;
    Ok(json!(true))
}

pub(super) fn bdev_set_options(params: Option<Value>) -> RpcResult {
    let o: BdevOptions = parse_params(params)?;
    OPTIONS.with(|cur| *cur.borrow_mut() = o);
    Ok(json!(true))
}

/// The `bdev` subsystem's config: options, every bdev in creation order, then the
/// examine barrier (as SPDK writes it).
pub fn write_config() -> Vec<Value> {
    let mut out = Vec::new();
    let opts = OPTIONS.with(|o| o.borrow().clone());
    out.push(rpc::config_entry(
        "bdev_set_options",
        serde_json::to_value(opts).unwrap_or_else(|_| json!({})),
    ));
    out.extend(bdev::rbd::rpc::config_entries());
    let bdevs = bdev::list();
    for h in &bdevs {
        if let Some(c) = h.module.config(&h.info) {
            out.push(c);
        }
    }
    // Limits after every bdev exists (a split part's limit needs its split).
    for h in bdevs.iter().filter(|h| !h.qos_limits().is_unlimited()) {
        let mut p = serde_json::to_value(h.qos_limits()).unwrap_or_else(|_| json!({}));
        p["name"] = json!(h.name());
        out.push(rpc::config_entry("bdev_set_qos_limit", p));
    }
    for h in &bdevs {
        if let Some(c) = h.histogram_config() {
            let mut p = json!({"name": h.name(), "enable": true, "granularity": c.granularity});
            if let Some(t) = c.opc {
                p["opc"] = json!(t.name());
            }
            if c.min_ns > 0 {
                p["min_nsec"] = json!(c.min_ns);
            }
            if c.max_ns < u64::MAX {
                p["max_nsec"] = json!(c.max_ns);
            }
            out.push(rpc::config_entry("bdev_enable_histogram", p));
        }
    }
    out.push(rpc::config_entry("bdev_wait_for_examine", Value::Null));
    out
}
