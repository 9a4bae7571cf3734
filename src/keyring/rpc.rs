//! The keyring's JSON-RPC methods and its `keyring` config subsystem, with SPDK's names, parameters and answers.
//!
//! `keyring_file_add_key` (`name`, `path`), `keyring_file_remove_key` (`name`) and
//! `keyring_get_keys` (each key's `name`, `module` "keyring_file", `removed`, `probed`,
//! `refcnt` and `path`; never the secret). Failures answer SPDK's negative errno as the
//! error code with the reason as the message.

use super::KeyringError;
use crate::rpc::{self, config_entry, parse_params, Allowed, MethodEntry, RpcError, RpcResult};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;

fn failed(e: KeyringError) -> RpcError {
    RpcError::errno(e.errno(), e.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddKey {
    name: String,
    path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveKey {
    name: String,
}

fn add_key(params: Option<Value>) -> RpcResult {
    let p: AddKey = parse_params(params)?;
    super::add_file_key(&p.name, &p.path).map_err(failed)?;
    Ok(Value::Bool(true))
}

fn remove_key(params: Option<Value>) -> RpcResult {
    let p: RemoveKey = parse_params(params)?;
    super::remove_key(&p.name).map_err(failed)?;
    Ok(Value::Bool(true))
}

fn get_keys(params: Option<Value>) -> RpcResult {
    rpc::no_params(&params)?;
    Ok(super::list()
        .into_iter()
        .map(|k| {
            // One reference: the keyring's own (nothing in pollux holds a key between uses).
            json!({"name": k.name, "module": "keyring_file", "removed": false,
                   "probed": false, "refcnt": 1, "path": k.path})
        })
        .collect())
}

/// The `keyring` subsystem's config: every key, by name and path.
fn write_config() -> Vec<Value> {
    super::list()
        .into_iter()
        .map(|k| {
            config_entry(
                "keyring_file_add_key",
                json!({"name": k.name, "path": k.path}),
            )
        })
        .collect()
}

/// The keyring methods (usable before and after `framework_start_init`, as in SPDK).
const METHODS: &[MethodEntry] = &[
    MethodEntry::sync("keyring_file_add_key", Allowed::Both, add_key),
    MethodEntry::sync("keyring_file_remove_key", Allowed::Both, remove_key),
    MethodEntry::sync("keyring_get_keys", Allowed::Both, get_keys),
];

/// Registers the keyring methods and the `keyring` subsystem (on the main reactor).
pub fn register() {
    rpc::register_table(METHODS);
    rpc::register_subsystem("keyring", &[], write_config);
    crate::reactor::register_shutdown_hook("keyring", |done| {
        super::clear();
        done();
    });
}
