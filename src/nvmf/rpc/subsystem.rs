//! Subsystem methods: create and delete, listeners, `_allow_any_host` and the subsystem limit.

use super::{failed, mutate, ListenAddress, NqnOnly, TargetName};
use crate::nvmf::ana::AnaState;
use crate::nvmf::subsystem::{self, SubType, Subsystem};
use crate::nvmf::target::with_target;
use crate::rpc::{self, parse_params, Responder, RpcResult};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSubsystem {
    nqn: String,
    tgt_name: Option<TargetName>,
    serial_number: Option<String>,
    model_number: Option<String>,
    #[serde(default)]
    allow_any_host: bool,
    #[serde(default)]
    max_namespaces: u32,
    #[serde(default)]
    ana_reporting: bool,
    min_cntlid: Option<u16>,
    max_cntlid: Option<u16>,
    // Sent by SPDK's rpc.py (false by default); the features are not implemented.
    passthrough: Option<bool>,
    enable_nssr: Option<bool>,
    dmrsl: Option<u32>,
    wzsl: Option<u32>,
    admin_label: Option<String>,
    // Deprecated (SPDK 25.5 to 26.5) spellings of dmrsl / wzsl.
    max_discard_size_kib: Option<u64>,
    max_write_zeroes_size_kib: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerParams {
    nqn: String,
    listen_address: ListenAddress,
    tgt_name: Option<TargetName>,
    secure_channel: Option<bool>,
    sock_impl: Option<String>,
    ana_state: Option<String>,
    numa_id: Option<i64>,
}

impl ListenerParams {
    /// The sock impl of the listener: a secure channel is the `ssl` impl (as in SPDK).
    fn sock_impl(&self) -> Result<Option<&str>, String> {
        match (self.secure_channel, self.sock_impl.as_deref()) {
            (Some(true), None | Some("ssl")) => Ok(Some("ssl")),
            (Some(true), Some(other)) => Err(format!(
                "sock_impl: {other} cannot carry a secure channel (TLS needs the ssl impl)"
            )),
            (_, name) => Ok(name),
        }
    }

    /// Refuses what pollux does not implement; notes what has no effect here.
    fn check(&self, method: &str) -> Result<(), String> {
        if self.ana_state.is_some() && method != "nvmf_subsystem_add_listener" {
            return Err(format!(
                "ana_state: not a parameter of {method} (see nvmf_subsystem_listener_set_ana_state)"
            ));
        }
        if self.numa_id.is_some_and(|n| n >= 0) {
            rpc::without_effect(
                method,
                "numa_id",
                "connections are spread over all reactors whatever their NUMA node",
            );
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowAnyHost {
    nqn: String,
    allow_any_host: bool,
    tgt_name: Option<TargetName>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaxSubsystems {
    max_subsystems: u32,
}

pub(super) fn nvmf_set_max_subsystems(params: Option<Value>) -> RpcResult {
    let p: MaxSubsystems = parse_params(params)?;
    with_target(|t| t.set_max_subsystems(p.max_subsystems)).map_err(failed)?;
    Ok(json!(true))
}

pub(super) fn nvmf_create_subsystem(params: Option<Value>, responder: Responder) {
    let p: CreateSubsystem = params!(params, responder);
    match new_subsystem(p) {
        Ok(s) => mutate(responder, |t| t.create_subsystem(s)),
        Err(e) => responder.err(failed(e)),
    }
}

/// The subsystem `nvmf_create_subsystem` describes, checked; refuses what pollux lacks.
fn new_subsystem(p: CreateSubsystem) -> Result<Subsystem, String> {
    let _ = p.tgt_name;
    for (field, value) in [
        ("dmrsl", p.dmrsl.map(u64::from)),
        ("wzsl", p.wzsl.map(u64::from)),
        ("max_discard_size_kib", p.max_discard_size_kib),
        ("max_write_zeroes_size_kib", p.max_write_zeroes_size_kib),
    ] {
        if value.unwrap_or(0) != 0 {
            return Err(format!(
                "{field}: size limits for deallocate / write zeroes are not supported (0 = none)"
            ));
        }
    }
    if p.admin_label.is_some() {
        return Err("admin_label: extended discovery log entries are not supported".into());
    }
    if p.passthrough == Some(true) {
        return Err("passthrough: NVMe passthrough is not supported".into());
    }
    if p.enable_nssr == Some(true) {
        return Err("enable_nssr: NVM subsystem reset is not supported".into());
    }
    subsystem::valid_nqn(&p.nqn)?;
    let subtype = if p.nqn == crate::nvmf::wire::DISCOVERY_NQN {
        SubType::Discovery
    } else {
        SubType::Nvme
    };
    let mut s = Subsystem::new(0, &p.nqn, subtype);
    if let Some(sn) = p.serial_number {
        if sn.len() > 20 || !sn.is_ascii() {
            return Err(format!(
                "serial_number: {sn} is not at most 20 ASCII characters"
            ));
        }
        s.serial_number = sn;
    }
    if let Some(mn) = p.model_number {
        if mn.len() > 40 || !mn.is_ascii() {
            return Err(format!(
                "model_number: {mn} is not at most 40 ASCII characters"
            ));
        }
        s.model_number = mn;
    }
    s.allow_any_host = p.allow_any_host;
    s.max_namespaces = p.max_namespaces;
    if p.ana_reporting && subtype == SubType::Discovery {
        return Err(
            "ana_reporting: the discovery subsystem has no namespaces to report ANA of".into(),
        );
    }
    s.ana_reporting = p.ana_reporting;
    s.min_cntlid = p.min_cntlid.unwrap_or(1);
    s.max_cntlid = p.max_cntlid.unwrap_or(0xffef);
    Ok(s)
}

pub(super) fn nvmf_delete_subsystem(params: Option<Value>, responder: Responder) {
    let p: NqnOnly = params!(params, responder);
    let _ = p.tgt_name;
    mutate(responder, |t| t.delete_subsystem(&p.nqn))
}

pub(super) fn nvmf_subsystem_add_listener(params: Option<Value>, responder: Responder) {
    let p: ListenerParams = params!(params, responder);
    let _ = &p.tgt_name;
    if let Err(e) = p.check("nvmf_subsystem_add_listener") {
        return responder.err(failed(e));
    }
    let state = match p
        .ana_state
        .as_deref()
        .map(|s| AnaState::parse("ana_state", s))
    {
        Some(Err(e)) => return responder.err(failed(e)),
        Some(Ok(s)) => Some(s),
        None => None,
    };
    let sock_impl = match p.sock_impl() {
        Ok(i) => i.map(str::to_string),
        Err(e) => return responder.err(failed(e)),
    };
    let addr = p.listen_address.into_addr();
    mutate(responder, |t| {
        let reporting = t.subsystem(&p.nqn).is_some_and(|s| s.ana_reporting);
        if let Some(st) = state.filter(|st| !reporting && *st != AnaState::Optimized) {
            return Err(format!(
                "ana_state: {} needs a subsystem created with ana_reporting (without it \
                 every path is optimized)",
                st.name()
            ));
        }
        let state = state.unwrap_or(AnaState::Optimized);
        t.add_listener(&p.nqn, addr, sock_impl.as_deref(), state)
            .map(drop)
    })
}

pub(super) fn nvmf_subsystem_remove_listener(params: Option<Value>, responder: Responder) {
    let p: ListenerParams = params!(params, responder);
    if let Err(e) = p.check("nvmf_subsystem_remove_listener") {
        return responder.err(failed(e));
    }
    let addr = p.listen_address.into_addr();
    mutate(responder, |t| t.remove_listener(&p.nqn, &addr))
}

pub(super) fn nvmf_subsystem_allow_any_host(params: Option<Value>, responder: Responder) {
    let p: AllowAnyHost = params!(params, responder);
    let _ = p.tgt_name;
    mutate(responder, |t| t.allow_any_host(&p.nqn, p.allow_any_host))
}
