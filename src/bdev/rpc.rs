//! JSON-RPC methods of the bdev layer, with SPDK's names, parameters and result shapes.
//!
//! The create/delete calls of every module, `bdev_null_resize`, `bdev_delay_update_latency`,
//! `bdev_error_inject_error`, `bdev_get_bdevs`, `bdev_get_iostat`, `bdev_wait_for_examine` and
//! `bdev_set_options`, plus the `bdev` framework subsystem whose config writer replays the
//! options and every bdev in creation order (bases before the bdevs stacked on them).
//!
//! Deletes answer once the hot remove finished (every user closed the bdev).

#![forbid(unsafe_code)]

use super::{
    aio, delay, error, histogram, iostat, malloc, null, passthru, split, uring, BdevError,
    BdevHandle, IoType,
};
use crate::reactor;
use crate::rpc::{self, parse_params, Allowed, Responder, RpcError, RpcResult};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};

fn to_rpc(e: BdevError) -> RpcError {
    match e {
        BdevError::Invalid(m) => RpcError::invalid_params(m),
        e => RpcError::errno(e.errno(), e.to_string()),
    }
}

fn answer_name(responder: Responder) -> impl FnOnce(Result<BdevHandle, BdevError>) + Send {
    move |r| match r {
        Ok(h) => responder.ok(json!(h.name())),
        Err(e) => responder.err(to_rpc(e)),
    }
}

fn answer_true(responder: Responder) -> impl FnOnce(Result<(), BdevError>) + Send {
    move |r| match r {
        Ok(()) => responder.ok(json!(true)),
        Err(e) => responder.err(to_rpc(e)),
    }
}

/// Unregisters `name` if it belongs to the module with `product_name`.
fn delete_of(product_name: &'static str, name: &str, responder: Responder) {
    match super::lookup(name) {
        Some(h) if h.info.product_name == product_name => {
            super::unregister(name, answer_true(responder))
        }
        _ => responder.err(RpcError::errno(
            libc::ENODEV,
            format!("No such device: {product_name} bdev {name} not found"),
        )),
    }
}

/// Registers `<module>_delete`: `{"name"}` of a bdev of that module; answers `true` once
/// the bdev is gone.
fn register_delete(method: &str, product_name: &'static str) {
    rpc::register_async(
        method,
        Allowed::RuntimeOnly,
        move |p, r| match parse_params::<NameParam>(p) {
            Ok(p) => delete_of(product_name, &p.name, r),
            Err(e) => r.err(e),
        },
    );
}

/// Refuses metadata/DIF parameters we do not implement unless they hold their defaults.
fn no_metadata(
    md_size: Option<u32>,
    dif_type: Option<u32>,
    dif_pi_format: Option<u32>,
) -> Result<(), RpcError> {
    if md_size.unwrap_or(0) != 0 || dif_type.unwrap_or(0) != 0 || dif_pi_format.unwrap_or(0) != 0 {
        return Err(RpcError::invalid_params(
            "metadata (md_size, dif_type, dif_pi_format) is not supported",
        ));
    }
    Ok(())
}

/// Refuses the metadata layout flags when set, and a physical block size other than the
/// logical one (pollux reports one block size).
fn plain_layout(
    block_size: u32,
    physical_block_size: Option<u32>,
    flags: &[(&str, Option<bool>)],
) -> Result<(), RpcError> {
    let flags: Vec<(&str, Option<i64>)> =
        flags.iter().map(|(n, v)| (*n, v.map(i64::from))).collect();
    refuse_set(&flags, "metadata layouts are not supported (false = none)")?;
    match physical_block_size {
        Some(p) if p != 0 && p != block_size => Err(RpcError::invalid_params(format!(
            "invalid params: physical_block_size: {p} differs from block_size {block_size} \
             (pollux reports one block size)"
        ))),
        _ => Ok(()),
    }
}

/// Refuses each named parameter that is set to anything but its default (`0` / unset):
/// known to SPDK, not implemented by pollux.
fn refuse_set(fields: &[(&str, Option<i64>)], why: &str) -> Result<(), RpcError> {
    match fields.iter().find(|(_, v)| v.unwrap_or(0) != 0) {
        Some((name, _)) => Err(RpcError::invalid_params(format!(
            "invalid params: {name}: {why}"
        ))),
        None => Ok(()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameParam {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MallocCreate {
    name: Option<String>,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<String>,
    #[serde(default)]
    optimal_io_boundary: u32,
    md_size: Option<u32>,
    md_interleave: Option<bool>,
    dif_type: Option<u32>,
    dif_is_head_of_md: Option<bool>,
    dif_pi_format: Option<u32>,
    physical_block_size: Option<u32>,
    /// SPDK 26.1+: the NUMA node of the memory (-1: any).
    numa_id: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NullCreate {
    name: String,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<String>,
    md_size: Option<u32>,
    dif_type: Option<u32>,
    dif_is_head_of_md: Option<bool>,
    dif_pi_format: Option<u32>,
    physical_block_size: Option<u32>,
    // SPDK 25.9+ write/unmap hints.
    optimal_write_size: Option<u32>,
    preferred_write_alignment: Option<u32>,
    preferred_write_granularity: Option<u32>,
    preferred_unmap_alignment: Option<u32>,
    preferred_unmap_granularity: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NullResize {
    name: String,
    new_size: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UringCreate {
    name: String,
    filename: String,
    block_size: Option<u32>,
    uuid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AioCreate {
    name: String,
    filename: String,
    block_size: Option<u32>,
    #[serde(default)]
    readonly: bool,
    #[serde(default)]
    fallocate: bool,
    uuid: Option<String>,
    /// SPDK 26.1+ (sent as `false`): submit with RWF_NOWAIT.
    nowait: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelayCreate {
    name: String,
    base_bdev_name: String,
    avg_read_latency: u64,
    p99_read_latency: u64,
    avg_write_latency: u64,
    p99_write_latency: u64,
    uuid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelayUpdate {
    delay_bdev_name: String,
    latency_type: String,
    latency_us: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorCreate {
    base_name: String,
    uuid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorInject {
    name: String,
    io_type: String,
    error_type: String,
    #[serde(default = "one")]
    num: u64,
    queue_depth: Option<u64>,
    #[serde(default)]
    corrupt_offset: u64,
    #[serde(default)]
    corrupt_value: u8,
    /// SPDK 26.5+: the NVMe status of the `nvme_failure` error type.
    nvme_sct: Option<u8>,
    nvme_sc: Option<u8>,
}

fn one() -> u64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PassthruCreate {
    name: String,
    base_bdev_name: String,
    uuid: Option<String>,
}

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
fn enable_histogram(params: Option<Value>, responder: Responder) {
    let p: EnableHistogram = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    let Some(h) = super::lookup(&p.name) else {
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
    super::set_histogram(&h, cfg, move || responder.ok(json!(true)));
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
fn get_histogram(params: Option<Value>, responder: Responder) {
    let p: NameParam = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    let Some(h) = super::lookup(&p.name) else {
        return responder.err(to_rpc(BdevError::NotFound(p.name)));
    };
    let name = p.name;
    super::collect_histogram(&h, move |hist| match hist {
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
struct SetQosLimit {
    name: String,
    rw_ios_per_sec: Option<u64>,
    rw_mbytes_per_sec: Option<u64>,
    r_mbytes_per_sec: Option<u64>,
    w_mbytes_per_sec: Option<u64>,
}

/// `bdev_set_qos_limit`: changes the limits given (0 removes one), keeps the others.
fn set_qos_limit(params: Option<Value>, responder: Responder) {
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
    let Some(h) = super::lookup(&p.name) else {
        return responder.err(to_rpc(BdevError::NotFound(p.name)));
    };
    let mut l = h.qos_limits();
    l.rw_ios_per_sec = p.rw_ios_per_sec.unwrap_or(l.rw_ios_per_sec);
    l.rw_mbytes_per_sec = p.rw_mbytes_per_sec.unwrap_or(l.rw_mbytes_per_sec);
    l.r_mbytes_per_sec = p.r_mbytes_per_sec.unwrap_or(l.r_mbytes_per_sec);
    l.w_mbytes_per_sec = p.w_mbytes_per_sec.unwrap_or(l.w_mbytes_per_sec);
    super::set_qos(&h, l, move || responder.ok(json!(true)));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitCreate {
    base_bdev: String,
    split_count: u32,
    split_size_mb: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitDelete {
    base_bdev: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBdevs {
    name: Option<String>,
    timeout: Option<u64>,
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

/// Registers the bdev methods and the `bdev` subsystem (main reactor, at start-up).
pub fn register() {
    rpc::register_async("bdev_malloc_create", Allowed::RuntimeOnly, |p, r| {
        let p: MallocCreate = match parse_params(p) {
            Ok(p) => p,
            Err(e) => return r.err(e),
        };
        if let Err(e) = no_metadata(p.md_size, p.dif_type, p.dif_pi_format) {
            return r.err(e);
        }
        if let Some(n) = p.numa_id.filter(|n| *n >= 0) {
            return r.err(RpcError::invalid_params(format!(
                "invalid params: numa_id: {n}: placing memory on a NUMA node is not supported \
                 (-1 = any)"
            )));
        }
        let flags = [
            ("md_interleave", p.md_interleave),
            ("dif_is_head_of_md", p.dif_is_head_of_md),
        ];
        if let Err(e) = plain_layout(p.block_size, p.physical_block_size, &flags) {
            return r.err(e);
        }
        let name = p.name.unwrap_or_else(next_malloc_name);
        malloc::create(
            malloc::MallocOpts {
                name,
                num_blocks: p.num_blocks,
                block_size: p.block_size,
                uuid: p.uuid,
                optimal_io_boundary: p.optimal_io_boundary,
            },
            answer_name(r),
        )
    });
    register_delete("bdev_malloc_delete", malloc::PRODUCT_NAME);
    rpc::register_async("bdev_null_create", Allowed::RuntimeOnly, |p, r| {
        let p: NullCreate = match parse_params(p) {
            Ok(p) => p,
            Err(e) => return r.err(e),
        };
        if let Err(e) = no_metadata(p.md_size, p.dif_type, p.dif_pi_format) {
            return r.err(e);
        }
        let hints = [
            ("optimal_write_size", p.optimal_write_size),
            ("preferred_write_alignment", p.preferred_write_alignment),
            ("preferred_write_granularity", p.preferred_write_granularity),
            ("preferred_unmap_alignment", p.preferred_unmap_alignment),
            ("preferred_unmap_granularity", p.preferred_unmap_granularity),
        ]
        .map(|(n, v)| (n, v.map(i64::from)));
        if let Err(e) = refuse_set(&hints, "write/unmap hints are not supported (0 = none)") {
            return r.err(e);
        }
        let flags = [("dif_is_head_of_md", p.dif_is_head_of_md)];
        if let Err(e) = plain_layout(p.block_size, p.physical_block_size, &flags) {
            return r.err(e);
        }
        null::create(
            null::NullOpts {
                name: p.name,
                num_blocks: p.num_blocks,
                block_size: p.block_size,
                uuid: p.uuid,
            },
            answer_name(r),
        )
    });
    register_delete("bdev_null_delete", null::PRODUCT_NAME);
    rpc::register("bdev_null_resize", Allowed::RuntimeOnly, |p| {
        let p: NullResize = parse_params(p)?;
        let h =
            super::lookup(&p.name).ok_or_else(|| to_rpc(BdevError::NotFound(p.name.clone())))?;
        null::resize(&h, p.new_size).map_err(to_rpc)?;
        Ok(json!(true))
    });
    rpc::register_async("bdev_uring_create", Allowed::RuntimeOnly, |p, r| {
        let p: UringCreate = match parse_params(p) {
            Ok(p) => p,
            Err(e) => return r.err(e),
        };
        uring::create(
            uring::UringOpts {
                name: p.name,
                filename: p.filename,
                block_size: p.block_size,
                uuid: p.uuid,
            },
            answer_name(r),
        )
    });
    register_delete("bdev_uring_delete", uring::PRODUCT_NAME);
    rpc::register_async("bdev_aio_create", Allowed::RuntimeOnly, |p, r| {
        let p: AioCreate = match parse_params(p) {
            Ok(p) => p,
            Err(e) => return r.err(e),
        };
        if p.fallocate {
            rpc::without_effect(
                "bdev_aio_create",
                "fallocate",
                "the aio bdev always supports unmap and write zeroes",
            );
        }
        if p.nowait == Some(true) {
            return r.err(RpcError::invalid_params(
                "invalid params: nowait: RWF_NOWAIT submission is not supported",
            ));
        }
        aio::create(
            aio::AioOpts {
                name: p.name,
                filename: p.filename,
                block_size: p.block_size,
                readonly: p.readonly,
                uuid: p.uuid,
            },
            answer_name(r),
        )
    });
    register_delete("bdev_aio_delete", aio::PRODUCT_NAME);
    rpc::register_async("bdev_delay_create", Allowed::RuntimeOnly, |p, r| {
        let p: DelayCreate = match parse_params(p) {
            Ok(p) => p,
            Err(e) => return r.err(e),
        };
        delay::create(
            delay::DelayOpts {
                name: p.name,
                base_bdev_name: p.base_bdev_name,
                avg_read_latency: p.avg_read_latency,
                p99_read_latency: p.p99_read_latency,
                avg_write_latency: p.avg_write_latency,
                p99_write_latency: p.p99_write_latency,
                uuid: p.uuid,
            },
            answer_name(r),
        )
    });
    register_delete("bdev_delay_delete", delay::PRODUCT_NAME);
    rpc::register("bdev_delay_update_latency", Allowed::RuntimeOnly, |p| {
        let p: DelayUpdate = parse_params(p)?;
        let kind = delay::LatencyKind::parse(&p.latency_type).ok_or_else(|| {
            RpcError::invalid_params(format!(
                "invalid params: latency_type: {:?} is not avg_read, p99_read, avg_write or p99_write",
                p.latency_type
            ))
        })?;
        let h = super::lookup(&p.delay_bdev_name);
        let d = h
            .as_ref()
            .and_then(|h| h.module_as::<delay::DelayBdev>())
            .ok_or_else(|| to_rpc(BdevError::NotFound(p.delay_bdev_name.clone())))?;
        d.latencies().set(kind, p.latency_us);
        Ok(json!(true))
    });
    rpc::register_async("bdev_error_create", Allowed::RuntimeOnly, |p, r| {
        let p: ErrorCreate = match parse_params(p) {
            Ok(p) => p,
            Err(e) => return r.err(e),
        };
        error::create(
            error::ErrorOpts {
                base_name: p.base_name,
                uuid: p.uuid,
            },
            move |res| match res {
                Ok(_) => r.ok(json!(true)),
                Err(e) => r.err(to_rpc(e)),
            },
        )
    });
    register_delete("bdev_error_delete", error::PRODUCT_NAME);
    rpc::register("bdev_error_inject_error", Allowed::RuntimeOnly, |p| {
        let p: ErrorInject = parse_params(p)?;
        let depth = p.queue_depth.map(|q| q.min(i64::MAX as u64) as i64);
        refuse_set(
            &[("queue_depth", depth)],
            "injecting only above a queue depth is not supported",
        )?;
        refuse_set(
            &[
                ("nvme_sct", p.nvme_sct.map(i64::from)),
                ("nvme_sc", p.nvme_sc.map(i64::from)),
            ],
            "injecting an NVMe status (nvme_failure) is not supported",
        )?;
        let types: Vec<IoType> = match p.io_type.as_str() {
            "all" | "clear" => IoType::ALL.to_vec(),
            other => match IoType::ALL.iter().find(|t| t.name() == other) {
                Some(t) => vec![*t],
                None => {
                    return Err(RpcError::invalid_params(format!(
                        "invalid params: io_type: unknown I/O type {other:?}"
                    )))
                }
            },
        };
        let kind = if p.io_type == "clear" {
            error::ErrorKind::None
        } else {
            error::ErrorKind::parse(&p.error_type).ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "invalid params: error_type: {:?} is not failure, nomem or corrupt_data",
                    p.error_type
                ))
            })?
        };
        let h = super::lookup(&p.name);
        let e = h
            .as_ref()
            .and_then(|h| h.module_as::<error::ErrorBdev>())
            .ok_or_else(|| to_rpc(BdevError::NotFound(p.name.clone())))?;
        e.injections()
            .arm(&types, kind, p.num, p.corrupt_offset, p.corrupt_value);
        Ok(json!(true))
    });
    rpc::register_async("bdev_passthru_create", Allowed::RuntimeOnly, |p, r| {
        let p: PassthruCreate = match parse_params(p) {
            Ok(p) => p,
            Err(e) => return r.err(e),
        };
        passthru::create(
            passthru::PassthruOpts {
                name: p.name,
                base_bdev_name: p.base_bdev_name,
                uuid: p.uuid,
            },
            answer_name(r),
        )
    });
    register_delete("bdev_passthru_delete", passthru::PRODUCT_NAME);
    rpc::register_async("bdev_set_qos_limit", Allowed::RuntimeOnly, set_qos_limit);
    rpc::register_async(
        "bdev_enable_histogram",
        Allowed::RuntimeOnly,
        enable_histogram,
    );
    rpc::register_async("bdev_get_histogram", Allowed::RuntimeOnly, get_histogram);
    rpc::register_async("bdev_split_create", Allowed::RuntimeOnly, |p, r| {
        let p: SplitCreate = match parse_params(p) {
            Ok(p) => p,
            Err(e) => return r.err(e),
        };
        split::create(
            split::SplitOpts {
                base_bdev: p.base_bdev,
                split_count: p.split_count,
                split_size_mb: p.split_size_mb.unwrap_or(0),
            },
            move |res| match res {
                Ok(names) => r.ok(json!(names)),
                Err(e) => r.err(to_rpc(e)),
            },
        )
    });
    rpc::register_async("bdev_split_delete", Allowed::RuntimeOnly, |p, r| {
        let p: SplitDelete = match parse_params(p) {
            Ok(p) => p,
            Err(e) => return r.err(e),
        };
        split::delete(&p.base_bdev, answer_true(r))
    });
    rpc::register_serialized("bdev_get_bdevs", Allowed::RuntimeOnly, |p| {
        let p: GetBdevs = parse_params(p)?;
        let _ = p.timeout;
        let list = match &p.name {
            Some(n) => vec![super::lookup(n).ok_or_else(|| {
                RpcError::errno(libc::ENODEV, format!("No such device: bdev {n} not found"))
            })?],
            None => super::list(),
        };
        // Serialized straight from the bdevs: 10,000 of them make a 5 MiB answer, whose
        // `Value` tree cost more to build and free than the text itself.
        let shown: Vec<BdevJson> = list.iter().map(BdevJson::of).collect();
        let text = serde_json::to_string(&shown)
            .map_err(|e| RpcError::internal(format!("bdev_get_bdevs: {e}")))?;
        serde_json::value::RawValue::from_string(text)
            .map_err(|e| RpcError::internal(format!("bdev_get_bdevs: {e}")))
    });
    rpc::register_async("bdev_get_iostat", Allowed::RuntimeOnly, get_iostat);
    rpc::register_async("bdev_reset_iostat", Allowed::RuntimeOnly, reset_iostat);
    rpc::register_async("thread_get_io_channels", Allowed::RuntimeOnly, io_channels);
    rpc::register("bdev_wait_for_examine", Allowed::Both, |p| {
        rpc::no_params(&p)?;
        Ok(json!(true))
    });
    rpc::register("bdev_set_options", Allowed::Both, |p| {
        let o: BdevOptions = parse_params(p)?;
        OPTIONS.with(|cur| *cur.borrow_mut() = o);
        Ok(json!(true))
    });
    super::rbd::rpc::register();
    rpc::register_subsystem("bdev", &[], write_config);
    reactor::register_shutdown_hook("bdev", super::clear_registry);
}

fn next_malloc_name() -> String {
    (0..)
        .map(|i| format!("Malloc{i}"))
        .find(|n| super::lookup(n).is_none())
        .unwrap_or_else(|| "Malloc".into())
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
    out.extend(super::rbd::rpc::config_entries());
    let bdevs = super::list();
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

/// One element of `bdev_get_bdevs`, as SPDK shows a bdev.
#[derive(Serialize)]
struct BdevJson<'a> {
    name: &'a str,
    aliases: &'a [String],
    product_name: &'a str,
    block_size: u32,
    num_blocks: u64,
    uuid: uuid::Uuid,
    assigned_rate_limits: super::qos::QosLimits,
    claimed: bool,
    zoned: bool,
    optimal_io_boundary: u32,
    md_size: u32,
    supported_io_types: IoTypesJson,
    driver_specific: Value,
}

/// The I/O types SPDK lists for a bdev (the last five pollux never supports).
#[derive(Serialize)]
struct IoTypesJson {
    read: bool,
    write: bool,
    unmap: bool,
    write_zeroes: bool,
    flush: bool,
    reset: bool,
    compare: bool,
    compare_and_write: bool,
    abort: bool,
    nvme_admin: bool,
    nvme_io: bool,
}

impl<'a> BdevJson<'a> {
    fn of(h: &'a BdevHandle) -> Self {
        Self {
            name: h.name(),
            aliases: &h.info.aliases,
            product_name: h.info.product_name,
            block_size: h.block_size(),
            num_blocks: h.num_blocks(),
            uuid: h.info.uuid,
            assigned_rate_limits: h.qos_limits(),
            claimed: h.claimed_by().is_some(),
            zoned: false,
            optimal_io_boundary: h.info.optimal_io_boundary,
            md_size: 0,
            supported_io_types: IoTypesJson {
                read: h.supports(IoType::Read),
                write: h.supports(IoType::Write),
                unmap: h.supports(IoType::Unmap),
                write_zeroes: h.supports(IoType::WriteZeroes),
                flush: h.supports(IoType::Flush),
                reset: h.supports(IoType::Reset),
                compare: false,
                compare_and_write: false,
                abort: false,
                nvme_admin: false,
                nvme_io: false,
            },
            driver_specific: h.module.driver_specific(),
        }
    }
}

/// One element of `bdev_get_bdevs` as a `Value`.
pub fn bdev_json(h: &BdevHandle) -> Value {
    serde_json::to_value(BdevJson::of(h)).unwrap_or(Value::Null)
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
        return Ok(super::list());
    }
    names
        .iter()
        .map(|n| {
            super::lookup(n).ok_or_else(|| {
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

fn get_iostat(params: Option<Value>, responder: Responder) {
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
                super::collect_closed_stats(b, &mut s);
                super::reset_closed_stats(b, mode);
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
                super::collect_local_stats(b, s);
                super::reset_local_stats(b, mode);
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
            if super::collect_local_channel_stats(&each_bdev, &mut s) {
                super::reset_local_stats(&each_bdev, mode);
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
fn io_channels(params: Option<Value>, responder: Responder) {
    if let Err(e) = rpc::no_params(&params) {
        return responder.err(e);
    }
    let threads: Arc<Mutex<Vec<(usize, Value)>>> = Arc::new(Mutex::new(Vec::new()));
    let each = threads.clone();
    reactor::for_each_reactor(
        move || {
            let channels: Vec<Value> = super::local_channel_counts()
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
fn reset_iostat(params: Option<Value>, responder: Responder) {
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
        super::reset_closed_stats(b, mode);
    }
    reactor::for_each_reactor(
        move || {
            for b in &bdevs {
                super::reset_local_stats(b, mode);
            }
        },
        move || responder.ok(json!(true)),
    );
}

/// Runs an RPC in-process and hands its result to `done` (main reactor).
pub fn call(method: &str, params: Value, done: impl FnOnce(RpcResult) + Send + 'static) {
    rpc::call(method, Some(params), Responder::new(done));
}
