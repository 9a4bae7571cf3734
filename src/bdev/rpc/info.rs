//! `bdev_get_bdevs`: each bdev as SPDK shows it, serialized straight to JSON text.

use crate::bdev::{self, BdevHandle, IoType};
use crate::rpc::{parse_params, RawValue, RpcError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBdevs {
    name: Option<String>,
    timeout: Option<u64>,
}

/// `bdev_get_bdevs`: one bdev (`name`) or all of them.
pub(super) fn bdev_get_bdevs(params: Option<Value>) -> Result<Box<RawValue>, RpcError> {
    let p: GetBdevs = parse_params(params)?;
    let _ = p.timeout;
    let list = match &p.name {
        Some(n) => vec![bdev::lookup(n).ok_or_else(|| {
            RpcError::errno(libc::ENODEV, format!("No such device: bdev {n} not found"))
        })?],
        None => bdev::list(),
    };
    // Serialized straight from the bdevs: 10,000 of them make a 5 MiB answer, whose
    // `Value` tree cost more to build and free than the text itself.
    let shown: Vec<BdevJson> = list.iter().map(BdevJson::of).collect();
    let text = serde_json::to_string(&shown)
        .map_err(|e| RpcError::internal(format!("bdev_get_bdevs: {e}")))?;
    RawValue::from_string(text).map_err(|e| RpcError::internal(format!("bdev_get_bdevs: {e}")))
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
    assigned_rate_limits: bdev::qos::QosLimits,
    claimed: bool,
    zoned: bool,
    optimal_io_boundary: u32,
    md_size: u32,
    supported_io_types: IoTypesJson,
    driver_specific: Value,
}

/// The I/O types SPDK lists for a bdev: what the module does natively (the layer emulates
/// compare and compare-and-write for the others, as SPDK does; the last three pollux never
/// supports).
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
                compare: h.supports(IoType::Compare),
                compare_and_write: h.supports(IoType::CompareAndWrite),
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
