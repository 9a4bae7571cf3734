//! ANA methods: a listener's ANA state and a namespace's ANA group.

use super::{failed, mutate, ListenAddress};
use crate::nvmf::ana::{self, AnaState};
use crate::rpc::Responder;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetAnaState {
    nqn: String,
    listen_address: ListenAddress,
    ana_state: String,
    anagrpid: Option<u32>,
    tgt_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetNsAnaGroup {
    nqn: String,
    nsid: u32,
    anagrpid: u32,
    tgt_name: Option<String>,
}

pub(super) fn nvmf_subsystem_listener_set_ana_state(params: Option<Value>, responder: Responder) {
    let p: SetAnaState = params!(params, responder);
    let _ = p.tgt_name;
    let state = match AnaState::parse("ana_state", &p.ana_state) {
        Ok(s) => s,
        Err(e) => return responder.err(failed(e)),
    };
    let addr = p.listen_address.into_addr();
    mutate(responder, |t| {
        let s = t.nvme_subsystem_mut(&p.nqn)?;
        if ana::set_state(s, &addr, state, p.anagrpid)? {
            tracing::info!(nqn = %p.nqn, traddr = %addr.traddr, trsvcid = %addr.trsvcid,
                state = state.name(), anagrpid = ?p.anagrpid, "ANA state changed");
        }
        Ok(())
    })
}

pub(super) fn nvmf_subsystem_set_ns_ana_group(params: Option<Value>, responder: Responder) {
    let p: SetNsAnaGroup = params!(params, responder);
    let _ = p.tgt_name;
    mutate(responder, |t| {
        ana::set_ns_group(t.nvme_subsystem_mut(&p.nqn)?, p.nsid, p.anagrpid).map(drop)
    })
}
