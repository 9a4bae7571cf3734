//! The `iobuf` methods: SPDK's buffer-pool options and statistics, mapped onto pollux's buffers.
//!
//! SPDK carves its I/O buffers out of two global pools (small and large) sized at start-up,
//! and every module keeps a per-thread cache of them. pollux has no global pool: each reactor
//! keeps its freed buffers per size class (4 KiB to 1 MiB) and allocates from the process
//! allocator when that cache is empty (`crate::buf`), so no count bounds them and no I/O ever
//! waits for a buffer. The methods keep SPDK's names, parameters and answers:
//!
//! - `iobuf_set_options` (STARTUP only, as in SPDK): validated as SPDK validates it (at least
//!   64 small and 8 large buffers; buffer sizes below 4096 / 8192 bytes raised to those with a
//!   warning) and saved in the `iobuf` subsystem's config. `small_bufsize` is where pollux's
//!   statistics split small from large buffers; the pool counts, `large_bufsize` and
//!   `enable_numa` have no effect and are logged once as such.
//! - `iobuf_get_stats`: one entry, module `pollux` (pollux's buffers are not owned per
//!   module), with SPDK's `small_pool` / `large_pool` objects: `cache` counts buffers handed
//!   out from a reactor's cache, `main` buffers allocated fresh, `retry` waits for a buffer
//!   (always 0: allocation falls back to the allocator instead of waiting).

use super::{config_entry, parse_params, Allowed, MethodEntry, RpcError, RpcResult};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::cell::RefCell;

const MIN_SMALL_POOL_COUNT: u64 = 64;
const MIN_LARGE_POOL_COUNT: u64 = 8;
const MIN_SMALL_BUFSIZE: u32 = 4096;
const MIN_LARGE_BUFSIZE: u32 = 8192;

/// SPDK's iobuf options, with SPDK's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct IobufOptions {
    small_pool_count: u64,
    large_pool_count: u64,
    small_bufsize: u32,
    large_bufsize: u32,
    enable_numa: bool,
}

impl Default for IobufOptions {
    fn default() -> Self {
        Self {
            small_pool_count: 8192,
            large_pool_count: 1024,
            small_bufsize: 8 * 1024,
            large_bufsize: 132 * 1024,
            enable_numa: false,
        }
    }
}

thread_local! {
    static OPTIONS: RefCell<IobufOptions> = RefCell::new(IobufOptions::default());
}

/// The parameters as sent: every one optional, the rest keep their current values.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetParams {
    small_pool_count: Option<u64>,
    large_pool_count: Option<u64>,
    small_bufsize: Option<u32>,
    large_bufsize: Option<u32>,
    enable_numa: Option<bool>,
}

fn set_options(params: Option<Value>) -> RpcResult {
    let p: SetParams = parse_params(params)?;
    let mut o = OPTIONS.with(|o| o.borrow().clone());
    if let Some(n) = p.small_pool_count {
        if n < MIN_SMALL_POOL_COUNT {
            return Err(RpcError::invalid_params(format!(
                "invalid params: small_pool_count: must be at least {MIN_SMALL_POOL_COUNT}"
            )));
        }
        o.small_pool_count = n;
        super::without_effect(
            "iobuf_set_options",
            "small_pool_count",
            "pollux has no global buffer pool to size",
        );
    }
    if let Some(n) = p.large_pool_count {
        if n < MIN_LARGE_POOL_COUNT {
            return Err(RpcError::invalid_params(format!(
                "invalid params: large_pool_count: must be at least {MIN_LARGE_POOL_COUNT}"
            )));
        }
        o.large_pool_count = n;
        super::without_effect(
            "iobuf_set_options",
            "large_pool_count",
            "pollux has no global buffer pool to size",
        );
    }
    if let Some(size) = p.small_bufsize {
        if size < MIN_SMALL_BUFSIZE {
            tracing::warn!(
                "iobuf_set_options: small_bufsize must be at least {MIN_SMALL_BUFSIZE}; raised to it"
            );
        }
        o.small_bufsize = size.max(MIN_SMALL_BUFSIZE);
    }
    if let Some(size) = p.large_bufsize {
        if size < MIN_LARGE_BUFSIZE {
            tracing::warn!(
                "iobuf_set_options: large_bufsize must be at least {MIN_LARGE_BUFSIZE}; raised to it"
            );
        }
        o.large_bufsize = size.max(MIN_LARGE_BUFSIZE);
        super::without_effect(
            "iobuf_set_options",
            "large_bufsize",
            "pollux's buffers are sized per I/O (4 KiB classes up to 1 MiB, larger on demand)",
        );
    }
    if let Some(numa) = p.enable_numa {
        o.enable_numa = numa;
        if numa {
            super::without_effect(
                "iobuf_set_options",
                "enable_numa",
                "each reactor's buffers come from its own thread's cache already",
            );
        }
    }
    OPTIONS.with(|cur| *cur.borrow_mut() = o);
    Ok(Value::Bool(true))
}

/// SPDK's per-pool statistics object.
fn pool_stats(cache: u64, main: u64) -> Value {
    json!({ "cache": cache, "main": main, "retry": 0 })
}

fn get_stats(params: Option<Value>) -> RpcResult {
    super::no_params(&params)?;
    let small_bufsize = OPTIONS.with(|o| o.borrow().small_bufsize) as usize;
    let (mut small, mut large) = ((0, 0), (0, 0));
    for class in crate::buf::alloc_counts() {
        let pool = match class.capacity {
            Some(cap) if cap <= small_bufsize => &mut small,
            _ => &mut large,
        };
        pool.0 += class.from_cache;
        pool.1 += class.fresh;
    }
    Ok(json!([{
        "module": "pollux",
        "small_pool": pool_stats(small.0, small.1),
        "large_pool": pool_stats(large.0, large.1),
    }]))
}

/// The `iobuf` subsystem's config: the options, as SPDK writes them.
fn write_config() -> Vec<Value> {
    let o = OPTIONS.with(|o| o.borrow().clone());
    vec![config_entry(
        "iobuf_set_options",
        serde_json::to_value(o).unwrap_or_else(|_| json!({})),
    )]
}

/// The iobuf methods.
const METHODS: &[MethodEntry] = &[
    MethodEntry::sync("iobuf_set_options", Allowed::StartupOnly, set_options),
    MethodEntry::sync("iobuf_get_stats", Allowed::RuntimeOnly, get_stats),
];

/// Registers the iobuf methods and the `iobuf` subsystem (on the main reactor).
pub fn register() {
    super::register_table(METHODS);
    super::register_subsystem("iobuf", &[], write_config);
}
