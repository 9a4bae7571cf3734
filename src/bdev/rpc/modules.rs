//! The create, delete and tuning methods of each bdev module (malloc, null, uring, aio,
//! delay, error, passthru, split), with SPDK's parameters.
//!
//! Parameters SPDK knows and pollux does not implement (metadata, DIF, write hints, NUMA
//! placement, NVMe status injection) are refused by name unless they hold their defaults.
//! Deletes answer once the hot remove finished (every user closed the bdev).

use super::{answer_name, answer_true, to_rpc, NameParam};
use crate::bdev::{
    self, aio, delay, error, malloc, null, passthru, split, uring, BdevError, IoType,
};
use crate::rpc::{self, parse_params, Responder, RpcError, RpcResult};
use serde::Deserialize;
use serde_json::{json, Value};

/// `<module>_delete`: unregisters the bdev `{"name"}` if it belongs to the module with
/// `product_name`; answers `true` once the bdev is gone.
fn delete_of(product_name: &'static str, params: Option<Value>, responder: Responder) {
    let name = match parse_params::<NameParam>(params) {
        Ok(p) => p.name,
        Err(e) => return responder.err(e),
    };
    match bdev::lookup(&name) {
        Some(h) if h.info.product_name == product_name => {
            bdev::unregister(&name, answer_true(responder))
        }
        _ => responder.err(RpcError::errno(
            libc::ENODEV,
            format!("No such device: {product_name} bdev {name} not found"),
        )),
    }
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

fn next_malloc_name() -> String {
    (0..)
        .map(|i| format!("Malloc{i}"))
        .find(|n| bdev::lookup(n).is_none())
        .unwrap_or_else(|| "Malloc".into())
}

pub(super) fn bdev_malloc_create(params: Option<Value>, responder: Responder) {
    let p: MallocCreate = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    if let Err(e) = no_metadata(p.md_size, p.dif_type, p.dif_pi_format) {
        return responder.err(e);
    }
    if let Some(n) = p.numa_id.filter(|n| *n >= 0) {
        return responder.err(RpcError::invalid_params(format!(
            "invalid params: numa_id: {n}: placing memory on a NUMA node is not supported \
             (-1 = any)"
        )));
    }
    let flags = [
        ("md_interleave", p.md_interleave),
        ("dif_is_head_of_md", p.dif_is_head_of_md),
    ];
    if let Err(e) = plain_layout(p.block_size, p.physical_block_size, &flags) {
        return responder.err(e);
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
        answer_name(responder),
    )
}

pub(super) fn bdev_malloc_delete(params: Option<Value>, responder: Responder) {
    delete_of(malloc::PRODUCT_NAME, params, responder)
}

pub(super) fn bdev_null_create(params: Option<Value>, responder: Responder) {
    let p: NullCreate = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    if let Err(e) = no_metadata(p.md_size, p.dif_type, p.dif_pi_format) {
        return responder.err(e);
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
        return responder.err(e);
    }
    let flags = [("dif_is_head_of_md", p.dif_is_head_of_md)];
    if let Err(e) = plain_layout(p.block_size, p.physical_block_size, &flags) {
        return responder.err(e);
    }
    null::create(
        null::NullOpts {
            name: p.name,
            num_blocks: p.num_blocks,
            block_size: p.block_size,
            uuid: p.uuid,
        },
        answer_name(responder),
    )
}

pub(super) fn bdev_null_delete(params: Option<Value>, responder: Responder) {
    delete_of(null::PRODUCT_NAME, params, responder)
}

pub(super) fn bdev_null_resize(params: Option<Value>) -> RpcResult {
    let p: NullResize = parse_params(params)?;
    let h = bdev::lookup(&p.name).ok_or_else(|| to_rpc(BdevError::NotFound(p.name.clone())))?;
    null::resize(&h, p.new_size).map_err(to_rpc)?;
    Ok(json!(true))
}

pub(super) fn bdev_uring_create(params: Option<Value>, responder: Responder) {
    let p: UringCreate = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    uring::create(
        uring::UringOpts {
            name: p.name,
            filename: p.filename,
            block_size: p.block_size,
            uuid: p.uuid,
        },
        answer_name(responder),
    )
}

pub(super) fn bdev_uring_delete(params: Option<Value>, responder: Responder) {
    delete_of(uring::PRODUCT_NAME, params, responder)
}

pub(super) fn bdev_aio_create(params: Option<Value>, responder: Responder) {
    let p: AioCreate = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    if p.fallocate {
        rpc::without_effect(
            "bdev_aio_create",
            "fallocate",
            "the aio bdev always supports unmap and write zeroes",
        );
    }
    if p.nowait == Some(true) {
        return responder.err(RpcError::invalid_params(
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
        answer_name(responder),
    )
}

pub(super) fn bdev_aio_delete(params: Option<Value>, responder: Responder) {
    delete_of(aio::PRODUCT_NAME, params, responder)
}

pub(super) fn bdev_delay_create(params: Option<Value>, responder: Responder) {
    let p: DelayCreate = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
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
        answer_name(responder),
    )
}

pub(super) fn bdev_delay_delete(params: Option<Value>, responder: Responder) {
    delete_of(delay::PRODUCT_NAME, params, responder)
}

pub(super) fn bdev_delay_update_latency(params: Option<Value>) -> RpcResult {
    let p: DelayUpdate = parse_params(params)?;
    let kind = delay::LatencyKind::parse(&p.latency_type).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "invalid params: latency_type: {:?} is not avg_read, p99_read, avg_write or p99_write",
            p.latency_type
        ))
    })?;
    let h = bdev::lookup(&p.delay_bdev_name);
    let d = h
        .as_ref()
        .and_then(|h| h.module_as::<delay::DelayBdev>())
        .ok_or_else(|| to_rpc(BdevError::NotFound(p.delay_bdev_name.clone())))?;
    d.latencies().set(kind, p.latency_us);
    Ok(json!(true))
}

pub(super) fn bdev_error_create(params: Option<Value>, responder: Responder) {
    let p: ErrorCreate = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    error::create(
        error::ErrorOpts {
            base_name: p.base_name,
            uuid: p.uuid,
        },
        move |res| match res {
            Ok(_) => responder.ok(json!(true)),
            Err(e) => responder.err(to_rpc(e)),
        },
    )
}

pub(super) fn bdev_error_delete(params: Option<Value>, responder: Responder) {
    delete_of(error::PRODUCT_NAME, params, responder)
}

pub(super) fn bdev_error_inject_error(params: Option<Value>) -> RpcResult {
    let p: ErrorInject = parse_params(params)?;
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
    let h = bdev::lookup(&p.name);
    let e = h
        .as_ref()
        .and_then(|h| h.module_as::<error::ErrorBdev>())
        .ok_or_else(|| to_rpc(BdevError::NotFound(p.name.clone())))?;
    e.injections()
        .arm(&types, kind, p.num, p.corrupt_offset, p.corrupt_value);
    Ok(json!(true))
}

pub(super) fn bdev_passthru_create(params: Option<Value>, responder: Responder) {
    let p: PassthruCreate = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    passthru::create(
        passthru::PassthruOpts {
            name: p.name,
            base_bdev_name: p.base_bdev_name,
            uuid: p.uuid,
        },
        answer_name(responder),
    )
}

pub(super) fn bdev_passthru_delete(params: Option<Value>, responder: Responder) {
    delete_of(passthru::PRODUCT_NAME, params, responder)
}

pub(super) fn bdev_split_create(params: Option<Value>, responder: Responder) {
    let p: SplitCreate = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    split::create(
        split::SplitOpts {
            base_bdev: p.base_bdev,
            split_count: p.split_count,
            split_size_mb: p.split_size_mb.unwrap_or(0),
        },
        move |res| match res {
            Ok(names) => responder.ok(json!(names)),
            Err(e) => responder.err(to_rpc(e)),
        },
    )
}

pub(super) fn bdev_split_delete(params: Option<Value>, responder: Responder) {
    let p: SplitDelete = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    split::delete(&p.base_bdev, answer_true(responder))
}
