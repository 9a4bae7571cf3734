//! JSON-RPC methods of the rbd module, with SPDK's names, parameters and result shapes.
//!
//! They are `bdev_rbd_register_cluster`, `bdev_rbd_unregister_cluster`,
//! `bdev_rbd_get_clusters_info`, `bdev_rbd_create`, `bdev_rbd_delete` and `bdev_rbd_resize`,
//! named handler functions in one table (`METHODS`); plus the config entries of the
//! registered clusters (written before the bdevs by the `bdev` subsystem).

#![forbid(unsafe_code)]

use super::{ConnectOpts, RbdOpts, DEFAULT_IO_TIMEOUT, PRODUCT_NAME};
use crate::bdev::rpc::{answer_name, answer_true, to_rpc, NameParam};
use crate::rpc::{self, parse_params, Allowed, MethodEntry, Responder, RpcError, RpcResult};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterCluster {
    name: String,
    user_id: Option<String>,
    config_param: Option<BTreeMap<String, String>>,
    config_file: Option<String>,
    key_file: Option<String>,
    core_mask: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptName {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    name: Option<String>,
    user_id: Option<String>,
    pool_name: String,
    rbd_name: String,
    block_size: u32,
    config: Option<BTreeMap<String, String>>,
    cluster_name: Option<String>,
    uuid: Option<String>,
    #[serde(default)]
    read_only: bool,
    /// pollux's own: seconds after which an I/O librbd has not completed is failed.
    timeout_s: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resize {
    name: String,
    new_size: u64,
}

fn cluster_json(c: &super::Cluster) -> Value {
    json!({
        "cluster_name": c.name,
        "user_id": c.user_id,
        "config_param": c.config_param,
        "config_file": c.config_file,
        "key_file": c.key_file,
        "core_mask": c.core_mask,
    })
}

fn next_name() -> String {
    (0..)
        .map(|i| format!("Ceph{i}"))
        .find(|n| crate::bdev::lookup(n).is_none())
        .unwrap_or_else(|| "Ceph".into())
}

fn bdev_rbd_register_cluster(params: Option<Value>, responder: Responder) {
    let (name, opts, core_mask) = match cluster_params(params) {
        Ok(c) => c,
        Err(e) => return responder.err(e),
    };
    super::register_cluster(name, opts, core_mask, move |res| match res {
        Ok(n) => responder.ok(json!(n)),
        Err(e) => responder.err(to_rpc(e)),
    })
}

/// The cluster `bdev_rbd_register_cluster` names, its connection options and its core mask
/// as given, checked.
fn cluster_params(
    params: Option<Value>,
) -> Result<(String, ConnectOpts, Option<String>), RpcError> {
    let p: RegisterCluster = parse_params(params)?;
    if p.name.is_empty() {
        return Err(RpcError::invalid_params("name: must not be empty"));
    }
    let cores = match p.core_mask.as_deref().map(crate::reactor::parse_core_mask) {
        Some(Ok(c)) if c.is_empty() => {
            return Err(RpcError::invalid_params("core_mask: selects no core"))
        }
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => return Err(RpcError::invalid_params(format!("core_mask: {e}"))),
        None => None,
    };
    let opts = ConnectOpts {
        user_id: p.user_id,
        config: p.config_param,
        config_file: p.config_file,
        key_file: p.key_file,
        core_mask: cores,
    };
    Ok((p.name, opts, p.core_mask))
}

fn bdev_rbd_unregister_cluster(params: Option<Value>) -> RpcResult {
    let p: NameParam = parse_params(params)?;
    super::unregister_cluster(&p.name).map_err(to_rpc)?;
    Ok(json!(true))
}

fn bdev_rbd_get_clusters_info(params: Option<Value>) -> RpcResult {
    let p: OptName = parse_params(params)?;
    match p.name {
        Some(n) => {
            let c = super::find_cluster(&n).ok_or_else(|| {
                RpcError::errno(
                    libc::ENOENT,
                    format!("No such file or directory: rbd cluster {n} not found"),
                )
            })?;
            Ok(cluster_json(&c))
        }
        None => Ok(Value::Array(
            super::clusters().iter().map(|c| cluster_json(c)).collect(),
        )),
    }
}

fn bdev_rbd_create(params: Option<Value>, responder: Responder) {
    match create_opts(params) {
        Ok(opts) => super::create(opts, answer_name(responder)),
        Err(e) => responder.err(e),
    }
}

/// The bdev `bdev_rbd_create` describes, checked (named `Ceph<n>` if it has no name).
fn create_opts(params: Option<Value>) -> Result<RbdOpts, RpcError> {
    let p: Create = parse_params(params)?;
    let uuid = match p.uuid.as_deref().map(crate::bdev::parse_uuid) {
        Some(Ok(u)) => Some(u),
        Some(Err(e)) => return Err(RpcError::invalid_params(format!("uuid: {e}"))),
        None => None,
    };
    if p.cluster_name.is_some() && (p.user_id.is_some() || p.config.is_some()) {
        return Err(RpcError::invalid_params(
            "cluster_name: user_id and config belong to the registered cluster; give either cluster_name or user_id/config",
        ));
    }
    if p.timeout_s == Some(0) {
        return Err(RpcError::invalid_params("timeout_s: must be at least 1"));
    }
    for (field, v) in [("pool_name", &p.pool_name), ("rbd_name", &p.rbd_name)] {
        if v.is_empty() {
            return Err(RpcError::invalid_params(format!(
                "{field}: must not be empty"
            )));
        }
    }
    Ok(RbdOpts {
        name: p.name.unwrap_or_else(next_name),
        pool_name: p.pool_name,
        rbd_name: p.rbd_name,
        block_size: p.block_size,
        user_id: p.user_id,
        config: p.config,
        cluster_name: p.cluster_name,
        uuid,
        read_only: p.read_only,
        io_timeout: p.timeout_s.map_or(DEFAULT_IO_TIMEOUT, Duration::from_secs),
    })
}

fn bdev_rbd_delete(params: Option<Value>, responder: Responder) {
    let p: NameParam = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    match crate::bdev::lookup(&p.name) {
        Some(h) if h.info.product_name == PRODUCT_NAME => {
            crate::bdev::unregister(&p.name, answer_true(responder))
        }
        _ => responder.err(RpcError::errno(
            libc::ENODEV,
            format!("No such device: rbd bdev {} not found", p.name),
        )),
    }
}

fn bdev_rbd_resize(params: Option<Value>, responder: Responder) {
    let p: Resize = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    super::resize(&p.name, p.new_size, answer_true(responder))
}

/// The rbd module's methods, in SPDK's names.
const METHODS: &[MethodEntry] = &[
    MethodEntry::with_responder(
        "bdev_rbd_register_cluster",
        Allowed::RuntimeOnly,
        bdev_rbd_register_cluster,
    ),
    MethodEntry::sync(
        "bdev_rbd_unregister_cluster",
        Allowed::RuntimeOnly,
        bdev_rbd_unregister_cluster,
    ),
    MethodEntry::sync(
        "bdev_rbd_get_clusters_info",
        Allowed::RuntimeOnly,
        bdev_rbd_get_clusters_info,
    ),
    MethodEntry::with_responder("bdev_rbd_create", Allowed::RuntimeOnly, bdev_rbd_create),
    MethodEntry::with_responder("bdev_rbd_delete", Allowed::RuntimeOnly, bdev_rbd_delete),
    MethodEntry::with_responder("bdev_rbd_resize", Allowed::RuntimeOnly, bdev_rbd_resize),
];

/// Registers the methods (main reactor, at start-up; called by `bdev::rpc::register`).
pub fn register() {
    rpc::register_table(METHODS);
}

/// `bdev_rbd_register_cluster` entries of the registered clusters (config writer).
pub fn config_entries() -> Vec<Value> {
    super::clusters()
        .iter()
        .map(|c| {
            let mut p = json!({ "name": c.name });
            if let Some(v) = &c.user_id {
                p["user_id"] = json!(v);
            }
            if let Some(v) = &c.config_param {
                p["config_param"] = json!(v);
            }
            if let Some(v) = &c.config_file {
                p["config_file"] = json!(v);
            }
            if let Some(v) = &c.key_file {
                p["key_file"] = json!(v);
            }
            if let Some(v) = &c.core_mask {
                p["core_mask"] = json!(v);
            }
            rpc::config_entry("bdev_rbd_register_cluster", p)
        })
        .collect()
}
