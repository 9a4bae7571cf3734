//! Host methods: the hosts a subsystem allows, with their TLS PSK and DH-HMAC-CHAP keys.
//!
//! Key names are resolved in the keyring and their secrets read here, on the main reactor,
//! so handshakes and authentication read no file. `nvmf_set_config` sets the DH-HMAC-CHAP
//! digests and groups the target offers.

use super::{failed, mutate, TargetName};
use crate::nvmf::secret::{DhchapSecret, Hash};
use crate::nvmf::subsystem;
use crate::nvmf::target::{self, with_target};
use crate::rpc::{self, Responder, RpcError};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostParams {
    nqn: String,
    host: String,
    tgt_name: Option<TargetName>,
    psk: Option<String>,
    dhchap_key: Option<String>,
    dhchap_ctrlr_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetKeys {
    nqn: String,
    host: String,
    tgt_name: Option<TargetName>,
    dhchap_key: Option<String>,
    dhchap_ctrlr_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveHost {
    nqn: String,
    host: String,
    tgt_name: Option<TargetName>,
    /// SPDK 26.5+: how long to wait for the host's I/O when it is disconnected.
    timeout_ms: Option<u64>,
}

/// `nvmf_set_config`: of SPDK's params pollux implements the DH-HMAC-CHAP lists; the
/// others (admin_cmd_passthru, poll_groups_mask, discovery_filter) are refused by name. As in
/// SPDK it is a STARTUP method (`--wait-for-rpc`, before `framework_start_init`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetConfig {
    dhchap_digests: Option<Vec<String>>,
    dhchap_dhgroups: Option<Vec<String>>,
    admin_cmd_passthru: Option<Value>,
    poll_groups_mask: Option<Value>,
    discovery_filter: Option<Value>,
}

impl SetConfig {
    fn dhchap_policy(&self) -> Result<Option<target::DhchapPolicy>, RpcError> {
        for (field, v) in [
            ("admin_cmd_passthru", &self.admin_cmd_passthru),
            ("poll_groups_mask", &self.poll_groups_mask),
            ("discovery_filter", &self.discovery_filter),
        ] {
            if v.is_some() {
                return Err(failed(format!("{field}: not supported by pollux")));
            }
        }
        if self.dhchap_digests.is_none() && self.dhchap_dhgroups.is_none() {
            return Ok(None);
        }
        let mut policy = with_target(|t| (*t.view().dhchap).clone());
        if let Some(d) = &self.dhchap_digests {
            policy.digests = d
                .iter()
                .map(|name| {
                    [Hash::Sha256, Hash::Sha384, Hash::Sha512]
                        .into_iter()
                        .find(|h| h.name() == name)
                        .ok_or_else(|| {
                            failed(format!(
                                "dhchap_digests: unknown digest '{name}' (sha256, sha384, sha512)"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?;
            if policy.digests.is_empty() {
                return Err(failed("dhchap_digests: the list is empty".into()));
            }
        }
        if let Some(g) = &self.dhchap_dhgroups {
            policy.dhgroups = g
                .iter()
                .map(|name| {
                    target::DHGROUP_NAMES
                        .iter()
                        .position(|n| n == name)
                        .map(|i| i as u8)
                        .ok_or_else(|| {
                            failed(format!(
                                "dhchap_dhgroups: unknown DH group '{name}' ({})",
                                target::DHGROUP_NAMES.join(", ")
                            ))
                        })
                })
                .collect::<Result<_, _>>()?;
            if policy.dhgroups.is_empty() {
                return Err(failed("dhchap_dhgroups: the list is empty".into()));
            }
        }
        Ok(Some(policy))
    }
}

/// Resolves the keyring names of a host's DH-HMAC-CHAP keys and reads their secrets (main
/// reactor: the poll groups get these copies and never read a file): an unknown name, a
/// file that cannot be read or does not hold a DHHC-1 secret, or a controller key without
/// a host key, is an error naming the field.
fn host_keys(
    key: Option<&str>,
    ctrlr_key: Option<&str>,
) -> Result<Option<subsystem::HostKeys>, RpcError> {
    let resolve = |field: &str, name: &str| {
        let info = crate::keyring::lookup(name).map_err(|e| failed(format!("{field}: {e}")))?;
        let text = info.secret().map_err(|e| failed(format!("{field}: {e}")))?;
        let secret = DhchapSecret::parse(&text)
            .map_err(|e| failed(format!("{field}: key '{name}' is not a DHHC-1 secret: {e}")))?;
        Ok::<_, RpcError>((info, secret))
    };
    match (key, ctrlr_key) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(failed(
            "dhchap_ctrlr_key: a controller key needs a host key (dhchap_key)".into(),
        )),
        (Some(k), c) => {
            let (key, secret) = resolve("dhchap_key", k)?;
            let (ctrlr_key, ctrlr_secret) = match c {
                Some(c) => {
                    let (i, s) = resolve("dhchap_ctrlr_key", c)?;
                    (Some(i), Some(s))
                }
                None => (None, None),
            };
            Ok(Some(subsystem::HostKeys {
                key,
                ctrlr_key,
                secret,
                ctrlr_secret,
            }))
        }
    }
}

/// The TLS PSK named `name` in the keyring (SPDK >= 24.01 takes a key name), read and
/// checked now (interchange format and CRC) so handshakes read no file.
fn host_psk(name: &str) -> Result<subsystem::HostPsk, RpcError> {
    let key = crate::keyring::lookup(name).map_err(|e| failed(format!("psk: {e}")))?;
    let text = key.secret().map_err(|e| failed(format!("psk: {e}")))?;
    let psk = crate::nvmf::psk::ConfiguredPsk::parse(&text)
        .map_err(|e| failed(format!("psk: key {name}: {e}")))?;
    Ok(subsystem::HostPsk {
        key,
        psk: std::sync::Arc::new(psk),
    })
}

pub(super) fn nvmf_subsystem_add_host(params: Option<Value>, responder: Responder) {
    let p: HostParams = params!(params, responder);
    let psk = match p.psk.as_deref().map(host_psk).transpose() {
        Ok(k) => k,
        Err(e) => return responder.err(e),
    };
    let keys = match host_keys(p.dhchap_key.as_deref(), p.dhchap_ctrlr_key.as_deref()) {
        Ok(k) => k,
        Err(e) => return responder.err(e),
    };
    let _ = p.tgt_name;
    mutate(responder, |t| {
        t.add_host(&p.nqn, &p.host, keys)?;
        match psk {
            Some(psk) => t.set_host_psk(&p.nqn, &p.host, psk),
            None => Ok(()),
        }
    })
}

pub(super) fn nvmf_subsystem_remove_host(params: Option<Value>, responder: Responder) {
    let p: RemoveHost = params!(params, responder);
    let _ = p.tgt_name;
    if p.timeout_ms.is_some() {
        rpc::without_effect(
            "nvmf_subsystem_remove_host",
            "timeout_ms",
            "the removed host's queues close as soon as the change is published, without a wait",
        );
    }
    mutate(responder, |t| t.remove_host(&p.nqn, &p.host))
}

pub(super) fn nvmf_subsystem_set_keys(params: Option<Value>, responder: Responder) {
    let p: SetKeys = params!(params, responder);
    let _ = p.tgt_name;
    match host_keys(p.dhchap_key.as_deref(), p.dhchap_ctrlr_key.as_deref()) {
        Ok(keys) => mutate(responder, |t| t.set_host_keys(&p.nqn, &p.host, keys)),
        Err(e) => responder.err(e),
    }
}

pub(super) fn nvmf_set_config(params: Option<Value>, responder: Responder) {
    let p: SetConfig = params!(params, responder);
    match p.dhchap_policy() {
        Ok(policy) => mutate(responder, |t| {
            if let Some(policy) = policy {
                t.set_dhchap_policy(policy);
            }
            Ok(())
        }),
        Err(e) => responder.err(e),
    }
}
