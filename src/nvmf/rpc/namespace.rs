//! Namespace methods: add and remove a namespace, and the hosts that see one.

use super::{failed, mutate, publish_then, TargetName};
use crate::nvmf::subsystem;
use crate::nvmf::target::{self, with_target};
use crate::rpc::{self, Responder};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NsParams {
    bdev_name: String,
    nsid: Option<u32>,
    nguid: Option<String>,
    eui64: Option<String>,
    uuid: Option<String>,
    ptpl_file: Option<String>,
    anagrpid: Option<u32>,
    no_auto_visible: Option<bool>,
    // Sent as `false` by SPDK's rpc.py 25.5 to 26.5.
    hide_metadata: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNs {
    nqn: String,
    namespace: NsParams,
    tgt_name: Option<TargetName>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveNs {
    nqn: String,
    nsid: u32,
    tgt_name: Option<TargetName>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NsHost {
    nqn: String,
    nsid: u32,
    host: String,
    tgt_name: Option<TargetName>,
}

pub(super) fn nvmf_subsystem_add_ns(params: Option<Value>, responder: Responder) {
    let p: AddNs = params!(params, responder);
    match add_ns(p) {
        Ok(nsid) => publish_then(responder, json!(nsid)),
        Err(e) => responder.err(failed(e)),
    }
}

/// Checks the namespace `nvmf_subsystem_add_ns` describes and adds it, with the reservations
/// its PTPL file holds; answers its nsid.
fn add_ns(p: AddNs) -> Result<u32, String> {
    let mut ns = p.namespace;
    let _ = p.tgt_name;
    // As in SPDK, group 0 means the default (the nsid).
    ns.anagrpid = ns.anagrpid.filter(|g| *g != 0);
    if ns.anagrpid.is_some()
        && !with_target(|t| t.subsystem(&p.nqn).is_some_and(|s| s.ana_reporting))
    {
        return Err(format!(
            "namespace.anagrpid: {} was not created with ana_reporting (no ANA groups)",
            p.nqn
        ));
    }
    if ns.hide_metadata.is_some() {
        rpc::without_effect(
            "nvmf_subsystem_add_ns",
            "namespace.hide_metadata",
            "pollux bdevs carry no metadata",
        );
    }
    let ids = target::NsIds {
        nguid: parse_id(&ns.nguid, "namespace.nguid: not 16 bytes of hex")?,
        eui64: parse_id(&ns.eui64, "namespace.eui64: not 8 bytes of hex")?,
        uuid: parse_id(&ns.uuid, "namespace.uuid: not a UUID")?,
        anagrpid: ns.anagrpid,
    };
    with_target(|t| {
        let auto_visible = ns.no_auto_visible != Some(true);
        let nsid = t.add_ns(&p.nqn, &ns.bdev_name, ns.nsid, ids, auto_visible)?;
        if let Some(path) = ns.ptpl_file.as_deref().filter(|p| !p.is_empty()) {
            if let Err(e) = restore_ptpl(t, &p.nqn, nsid, path) {
                let _ = t.remove_ns(&p.nqn, nsid);
                return Err(e);
            }
        }
        Ok(nsid)
    })
}

/// An optional namespace id given in hex (`N` bytes); `error` if it is not.
fn parse_id<const N: usize>(hex: &Option<String>, error: &str) -> Result<Option<[u8; N]>, String> {
    hex.as_deref()
        .map(|h| subsystem::parse_hex::<N>(h).ok_or_else(|| error.to_string()))
        .transpose()
}

/// Gives a new namespace its PTPL file and the reservations the file holds (read here, on
/// the main reactor, as SPDK does at `nvmf_subsystem_add_ns`; a few hundred bytes).
fn restore_ptpl(t: &mut target::Target, nqn: &str, nsid: u32, path: &str) -> Result<(), String> {
    let uuid = t
        .subsystem(nqn)
        .and_then(|s| s.namespaces.get(&nsid))
        .map(|ns| ns.bdev.info.uuid.to_string())
        .ok_or_else(|| format!("nsid: namespace {nsid} of {nqn} not found"))?;
    let state = crate::nvmf::reservation_target::load_ptpl(path, &uuid)?.unwrap_or_default();
    t.set_ns_ptpl(nqn, nsid, path, state)
}

pub(super) fn nvmf_subsystem_remove_ns(params: Option<Value>, responder: Responder) {
    let p: RemoveNs = params!(params, responder);
    let _ = p.tgt_name;
    mutate(responder, |t| t.remove_ns(&p.nqn, p.nsid))
}

pub(super) fn nvmf_ns_add_host(params: Option<Value>, responder: Responder) {
    ns_set_host(params, responder, true)
}

pub(super) fn nvmf_ns_remove_host(params: Option<Value>, responder: Responder) {
    ns_set_host(params, responder, false)
}

/// Makes namespace `nsid` visible to `host` or not (`nvmf_ns_add_host` / `_remove_host`).
fn ns_set_host(params: Option<Value>, responder: Responder, visible: bool) {
    let p: NsHost = params!(params, responder);
    let _ = p.tgt_name;
    mutate(responder, |t| {
        t.ns_set_host(&p.nqn, p.nsid, &p.host, visible)
    })
}
