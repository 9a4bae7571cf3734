//! JSON-RPC methods of the bdev layer, with SPDK's names, parameters and result shapes.
//!
//! The methods are named handler functions listed in one table (`METHODS`), grouped by
//! concern: `modules` (each module's create/delete and tuning calls), `info`
//! (`bdev_get_bdevs`), `stats` (iostat, I/O channels, histograms) and `config` (the layer's
//! options, QoS limits and the `bdev` framework subsystem's config writer). The rbd module
//! registers its own methods (`bdev::rbd::rpc`).

#![forbid(unsafe_code)]

mod config;
mod info;
mod modules;
mod stats;

pub use config::write_config;
pub use info::bdev_json;
pub use stats::gather_iostats;

use super::{BdevError, BdevHandle};
use crate::reactor;
use crate::rpc::{self, Allowed, MethodEntry, Responder, RpcError, RpcResult};
use serde::Deserialize;
use serde_json::{json, Value};

pub(in crate::bdev) fn to_rpc(e: BdevError) -> RpcError {
    match e {
        BdevError::Invalid(m) => RpcError::invalid_params(m),
        e => RpcError::errno(e.errno(), e.to_string()),
    }
}

pub(in crate::bdev) fn answer_name(
    responder: Responder,
) -> impl FnOnce(Result<BdevHandle, BdevError>) + Send {
    move |r| match r {
        Ok(h) => responder.ok(json!(h.name())),
        Err(e) => responder.err(to_rpc(e)),
    }
}

pub(in crate::bdev) fn answer_true(
    responder: Responder,
) -> impl FnOnce(Result<(), BdevError>) + Send {
    move |r| match r {
        Ok(()) => responder.ok(json!(true)),
        Err(e) => responder.err(to_rpc(e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::bdev) struct NameParam {
    pub(in crate::bdev) name: String,
}

/// The bdev layer's methods, in SPDK's names.
const METHODS: &[MethodEntry] = &[
    MethodEntry::with_responder(
        "bdev_malloc_create",
        Allowed::RuntimeOnly,
        modules::bdev_malloc_create,
    ),
    MethodEntry::with_responder(
        "bdev_malloc_delete",
        Allowed::RuntimeOnly,
        modules::bdev_malloc_delete,
    ),
    MethodEntry::with_responder(
        "bdev_null_create",
        Allowed::RuntimeOnly,
        modules::bdev_null_create,
    ),
    MethodEntry::with_responder(
        "bdev_null_delete",
        Allowed::RuntimeOnly,
        modules::bdev_null_delete,
    ),
    MethodEntry::sync(
        "bdev_null_resize",
        Allowed::RuntimeOnly,
        modules::bdev_null_resize,
    ),
    MethodEntry::with_responder(
        "bdev_uring_create",
        Allowed::RuntimeOnly,
        modules::bdev_uring_create,
    ),
    MethodEntry::with_responder(
        "bdev_uring_delete",
        Allowed::RuntimeOnly,
        modules::bdev_uring_delete,
    ),
    MethodEntry::with_responder(
        "bdev_aio_create",
        Allowed::RuntimeOnly,
        modules::bdev_aio_create,
    ),
    MethodEntry::with_responder(
        "bdev_aio_delete",
        Allowed::RuntimeOnly,
        modules::bdev_aio_delete,
    ),
    MethodEntry::with_responder(
        "bdev_delay_create",
        Allowed::RuntimeOnly,
        modules::bdev_delay_create,
    ),
    MethodEntry::with_responder(
        "bdev_delay_delete",
        Allowed::RuntimeOnly,
        modules::bdev_delay_delete,
    ),
    MethodEntry::sync(
        "bdev_delay_update_latency",
        Allowed::RuntimeOnly,
        modules::bdev_delay_update_latency,
    ),
    MethodEntry::with_responder(
        "bdev_error_create",
        Allowed::RuntimeOnly,
        modules::bdev_error_create,
    ),
    MethodEntry::with_responder(
        "bdev_error_delete",
        Allowed::RuntimeOnly,
        modules::bdev_error_delete,
    ),
    MethodEntry::sync(
        "bdev_error_inject_error",
        Allowed::RuntimeOnly,
        modules::bdev_error_inject_error,
    ),
    MethodEntry::with_responder(
        "bdev_passthru_create",
        Allowed::RuntimeOnly,
        modules::bdev_passthru_create,
    ),
    MethodEntry::with_responder(
        "bdev_passthru_delete",
        Allowed::RuntimeOnly,
        modules::bdev_passthru_delete,
    ),
    MethodEntry::with_responder(
        "bdev_split_create",
        Allowed::RuntimeOnly,
        modules::bdev_split_create,
    ),
    MethodEntry::with_responder(
        "bdev_split_delete",
        Allowed::RuntimeOnly,
        modules::bdev_split_delete,
    ),
    MethodEntry::with_responder(
        "bdev_set_qos_limit",
        Allowed::RuntimeOnly,
        config::bdev_set_qos_limit,
    ),
    MethodEntry::with_responder(
        "bdev_enable_histogram",
        Allowed::RuntimeOnly,
        stats::bdev_enable_histogram,
    ),
    MethodEntry::with_responder(
        "bdev_get_histogram",
        Allowed::RuntimeOnly,
        stats::bdev_get_histogram,
    ),
    MethodEntry::serialized("bdev_get_bdevs", Allowed::RuntimeOnly, info::bdev_get_bdevs),
    MethodEntry::with_responder(
        "bdev_get_iostat",
        Allowed::RuntimeOnly,
        stats::bdev_get_iostat,
    ),
    MethodEntry::with_responder(
        "bdev_reset_iostat",
        Allowed::RuntimeOnly,
        stats::bdev_reset_iostat,
    ),
    MethodEntry::with_responder(
        "thread_get_io_channels",
        Allowed::RuntimeOnly,
        stats::thread_get_io_channels,
    ),
    MethodEntry::sync(
        "bdev_wait_for_examine",
        Allowed::Both,
        config::bdev_wait_for_examine,
    ),
    MethodEntry::sync("bdev_set_options", Allowed::Both, config::bdev_set_options),
];

/// Registers the bdev methods and the `bdev` subsystem (main reactor, at start-up).
pub fn register() {
    rpc::register_table(METHODS);
    super::rbd::rpc::register();
    rpc::register_subsystem("bdev", &[], write_config);
    reactor::register_shutdown_hook("bdev", super::clear_registry);
}

/// Runs an RPC in-process and hands its result to `done` (main reactor).
pub fn call(method: &str, params: Value, done: impl FnOnce(RpcResult) + Send + 'static) {
    rpc::call(method, Some(params), Responder::new(done));
}
