//! JSON-RPC methods of the NVMe-oF target, with SPDK's names, parameters and result shapes.
//!
//! The methods are named handler functions listed in one table (`METHODS`), grouped by
//! concern: `transport` (`nvmf_create_transport`, accepting and ignoring the keys SPDK's
//! rpc.py sends for other transports, and `nvmf_get_transports`), `subsystem` (create and
//! delete, listeners, `_allow_any_host`, `nvmf_set_max_subsystems`), `namespace`
//! (namespaces and the hosts that see them), `hosts` (allowed hosts with their TLS PSK and
//! DH-HMAC-CHAP keys, resolved in the keyring, and `nvmf_set_config`'s DH-HMAC-CHAP lists),
//! `ana_state` (a listener's ANA state, a namespace's ANA group), `referrals` (the discovery
//! referrals), `info` (`nvmf_get_subsystems`, a subsystem's listeners, controllers and
//! qpairs, `nvmf_get_stats`) and `config` (the `nvmf` framework subsystem's config writer,
//! which recreates the transport and every subsystem, and the embedded default
//! configuration). Mutations answer once the new target view reached every reactor.

use super::subsystem::{ListenAddr, Subsystem};
use super::target::{self, publish, with_target};
use crate::rpc::{self, parse_params, Allowed, MethodEntry, Responder, RpcError};
use serde::Deserialize;
use serde_json::{json, Value};

/// Decodes a with-responder method's params, or answers the decoding error and returns.
macro_rules! params {
    ($p:expr, $r:expr) => {
        match crate::rpc::parse_params($p) {
            Ok(v) => v,
            Err(e) => return $r.err(e),
        }
    };
}

mod ana_state;
mod config;
mod hosts;
mod info;
mod namespace;
mod referrals;
mod subsystem;
mod transport;

pub use config::{apply_calls, default_config, write_config, DEFAULT_NQN, DEFAULT_PORT};

/// SPDK's `tgt_name`: which NVMe-oF target a method acts on. pollux has one, named as SPDK's
/// application names its own (`nvmf_tgt`); any other name fails to decode, naming the field.
#[derive(Debug)]
struct TargetName;

impl<'de> Deserialize<'de> for TargetName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if name == TARGET_NAME {
            Ok(TargetName)
        } else {
            Err(serde::de::Error::custom(format!(
                "Unable to find a target named {name:?} (pollux has one NVMe-oF target, {TARGET_NAME:?})"
            )))
        }
    }
}

/// The name of pollux's one NVMe-oF target (SPDK's nvmf_tgt application uses the same).
const TARGET_NAME: &str = "nvmf_tgt";

fn failed(msg: String) -> RpcError {
    RpcError::invalid_params(msg)
}

/// Publishes the registry and answers `value` once every reactor has it.
fn publish_then(responder: Responder, value: Value) {
    publish(move || responder.ok(value));
}

/// Applies a registry change; on success publishes it and answers `true`.
fn mutate(responder: Responder, change: impl FnOnce(&mut target::Target) -> Result<(), String>) {
    match with_target(change) {
        Ok(()) => publish_then(responder, json!(true)),
        Err(e) => responder.err(failed(e)),
    }
}

/// Runs `f` on the subsystem named by the params' `nqn` (inspection methods).
fn inspect(p: Option<Value>, f: impl FnOnce(&Subsystem) -> Value) -> Result<Value, RpcError> {
    let p: NqnOnly = parse_params(p)?;
    let _ = p.tgt_name;
    with_target(|t| {
        t.subsystem(&p.nqn)
            .map(f)
            .ok_or_else(|| failed(format!("nqn: subsystem {} not found", p.nqn)))
    })
}

/// Decodes params whose fields are all optional; no params at all is the default.
fn parse_or_empty<T: serde::de::DeserializeOwned + Default>(
    p: Option<Value>,
) -> Result<T, RpcError> {
    match p {
        None | Some(Value::Null) => Ok(T::default()),
        p => parse_params(p),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NqnOnly {
    nqn: String,
    tgt_name: Option<TargetName>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenAddress {
    trtype: String,
    adrfam: Option<String>,
    traddr: String,
    trsvcid: Option<String>,
}

impl ListenAddress {
    fn into_addr(self) -> ListenAddr {
        // SPDK spells the families IPv4 / IPv6 whatever the caller wrote.
        let adrfam = match self.adrfam {
            Some(f) if f.eq_ignore_ascii_case("ipv4") => "IPv4".into(),
            Some(f) if f.eq_ignore_ascii_case("ipv6") => "IPv6".into(),
            Some(f) => f,
            None if self.traddr.contains(':') => "IPv6".into(),
            None => "IPv4".into(),
        };
        ListenAddr {
            trtype: self.trtype,
            adrfam,
            traddr: self.traddr,
            trsvcid: self.trsvcid.unwrap_or_else(|| "4420".into()),
        }
    }
}

/// The NVMe-oF target's methods, in SPDK's names.
const METHODS: &[MethodEntry] = &[
    MethodEntry::with_responder(
        "nvmf_create_transport",
        Allowed::Both,
        transport::nvmf_create_transport,
    ),
    MethodEntry::sync(
        "nvmf_get_transports",
        Allowed::RuntimeOnly,
        transport::nvmf_get_transports,
    ),
    MethodEntry::sync(
        "nvmf_set_max_subsystems",
        Allowed::StartupOnly,
        subsystem::nvmf_set_max_subsystems,
    ),
    MethodEntry::with_responder(
        "nvmf_create_subsystem",
        Allowed::RuntimeOnly,
        subsystem::nvmf_create_subsystem,
    ),
    MethodEntry::with_responder(
        "nvmf_delete_subsystem",
        Allowed::RuntimeOnly,
        subsystem::nvmf_delete_subsystem,
    ),
    MethodEntry::with_responder(
        "nvmf_subsystem_add_listener",
        Allowed::RuntimeOnly,
        subsystem::nvmf_subsystem_add_listener,
    ),
    MethodEntry::with_responder(
        "nvmf_subsystem_remove_listener",
        Allowed::RuntimeOnly,
        subsystem::nvmf_subsystem_remove_listener,
    ),
    MethodEntry::with_responder(
        "nvmf_subsystem_allow_any_host",
        Allowed::RuntimeOnly,
        subsystem::nvmf_subsystem_allow_any_host,
    ),
    MethodEntry::with_responder(
        "nvmf_subsystem_add_ns",
        Allowed::RuntimeOnly,
        namespace::nvmf_subsystem_add_ns,
    ),
    MethodEntry::with_responder(
        "nvmf_subsystem_remove_ns",
        Allowed::RuntimeOnly,
        namespace::nvmf_subsystem_remove_ns,
    ),
    MethodEntry::with_responder(
        "nvmf_ns_add_host",
        Allowed::RuntimeOnly,
        namespace::nvmf_ns_add_host,
    ),
    MethodEntry::with_responder(
        "nvmf_ns_remove_host",
        Allowed::RuntimeOnly,
        namespace::nvmf_ns_remove_host,
    ),
    MethodEntry::with_responder(
        "nvmf_subsystem_add_host",
        Allowed::RuntimeOnly,
        hosts::nvmf_subsystem_add_host,
    ),
    MethodEntry::with_responder(
        "nvmf_subsystem_remove_host",
        Allowed::RuntimeOnly,
        hosts::nvmf_subsystem_remove_host,
    ),
    MethodEntry::with_responder(
        "nvmf_subsystem_set_keys",
        Allowed::RuntimeOnly,
        hosts::nvmf_subsystem_set_keys,
    ),
    MethodEntry::with_responder(
        "nvmf_set_config",
        Allowed::StartupOnly,
        hosts::nvmf_set_config,
    ),
    MethodEntry::with_responder(
        "nvmf_subsystem_listener_set_ana_state",
        Allowed::RuntimeOnly,
        ana_state::nvmf_subsystem_listener_set_ana_state,
    ),
    MethodEntry::with_responder(
        "nvmf_subsystem_set_ns_ana_group",
        Allowed::RuntimeOnly,
        ana_state::nvmf_subsystem_set_ns_ana_group,
    ),
    MethodEntry::with_responder(
        "nvmf_discovery_add_referral",
        Allowed::RuntimeOnly,
        referrals::nvmf_discovery_add_referral,
    ),
    MethodEntry::with_responder(
        "nvmf_discovery_remove_referral",
        Allowed::RuntimeOnly,
        referrals::nvmf_discovery_remove_referral,
    ),
    MethodEntry::sync(
        "nvmf_discovery_get_referrals",
        Allowed::RuntimeOnly,
        referrals::nvmf_discovery_get_referrals,
    ),
    MethodEntry::sync(
        "nvmf_get_subsystems",
        Allowed::RuntimeOnly,
        info::nvmf_get_subsystems,
    ),
    MethodEntry::sync(
        "nvmf_subsystem_get_listeners",
        Allowed::RuntimeOnly,
        info::nvmf_subsystem_get_listeners,
    ),
    MethodEntry::sync(
        "nvmf_subsystem_get_controllers",
        Allowed::RuntimeOnly,
        info::nvmf_subsystem_get_controllers,
    ),
    MethodEntry::sync(
        "nvmf_subsystem_get_qpairs",
        Allowed::RuntimeOnly,
        info::nvmf_subsystem_get_qpairs,
    ),
    MethodEntry::with_responder("nvmf_get_stats", Allowed::RuntimeOnly, info::nvmf_get_stats),
];

/// Registers the methods and the `nvmf` framework subsystem (main reactor).
pub fn register() {
    target::register_shutdown();
    rpc::register_table(METHODS);
    rpc::register_subsystem("nvmf", &["bdev", "sock", "keyring"], write_config);
}
