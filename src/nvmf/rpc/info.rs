//! Inspection methods: the subsystems, a subsystem's listeners, controllers and qpairs, and
//! the poll groups' statistics.

use super::transport::GetTransports;
use super::{failed, inspect, parse_or_empty, TargetName};
use crate::nvmf::ana;
use crate::nvmf::subsystem::{self, Subsystem};
use crate::nvmf::target::with_target;
use crate::nvmf::tcp;
use crate::reactor;
use crate::rpc::{Responder, RpcResult};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GetSubsystems {
    nqn: Option<String>,
    tgt_name: Option<TargetName>,
}

pub(super) fn nvmf_get_subsystems(params: Option<Value>) -> RpcResult {
    let p: GetSubsystems = parse_or_empty(params)?;
    let _ = p.tgt_name;
    with_target(|t| {
        let list: Vec<Value> = t
            .subsystems()
            .iter()
            .filter(|s| p.nqn.as_ref().is_none_or(|n| *n == s.nqn))
            .map(Subsystem::to_json)
            .collect();
        if let (Some(n), true) = (&p.nqn, list.is_empty()) {
            return Err(failed(format!("nqn: subsystem {n} not found")));
        }
        Ok(json!(list))
    })
}

pub(super) fn nvmf_subsystem_get_listeners(params: Option<Value>) -> RpcResult {
    inspect(params, |s| {
        json!(s
            .listeners
            .iter()
            .map(|l| {
                if s.ana_reporting {
                    json!({"address": l.to_json(), "ana_states": ana::listener_json(s, l)})
                } else {
                    json!({"address": l.to_json(), "ana_state": "optimized"})
                }
            })
            .collect::<Vec<_>>())
    })
}

pub(super) fn nvmf_subsystem_get_controllers(params: Option<Value>) -> RpcResult {
    inspect(params, |s| {
        let d = s.directory.lock();
        json!(d
            .iter()
            .map(|(id, e)| json!({
                "cntlid": id,
                "hostnqn": e.hostnqn,
                "hostid": subsystem::format_uuid(&e.hostid),
                "num_io_qpairs": e.io_qpairs.len(),
                "peer_address": e.peer,
            }))
            .collect::<Vec<_>>())
    })
}

pub(super) fn nvmf_subsystem_get_qpairs(params: Option<Value>) -> RpcResult {
    inspect(params, |s| {
        let d = s.directory.lock();
        let mut out = Vec::new();
        for (id, e) in d.iter() {
            let one = |qid: u16, core: u32| {
                json!({
                    "cntlid": id,
                    "qid": qid,
                    "state": "active",
                    "thread": format!("nvmf_tgt_poll_group_{core}"),
                    "listen_address": e.listen.to_json(),
                    "peer_address": {"trtype": "TCP", "traddr": e.peer},
                })
            };
            out.push(one(0, e.admin.core));
            for (qid, r) in &e.io_qpairs {
                out.push(one(*qid, r.core));
            }
        }
        json!(out)
    })
}

/// Every poll group's statistics, gathered from each reactor.
pub(super) fn nvmf_get_stats(params: Option<Value>, responder: Responder) {
    if let Err(e) = parse_or_empty::<GetTransports>(params) {
        return responder.err(e);
    }
    let groups: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(Vec::new()));
    let each = groups.clone();
    reactor::for_each_reactor(
        move || {
            if let Some(v) = tcp::group_stats() {
                each.lock().unwrap_or_else(|e| e.into_inner()).push(v);
            }
        },
        move || {
            let g = groups.lock().unwrap_or_else(|e| e.into_inner()).clone();
            responder.ok(json!({"tick_rate": 1_000_000_000u64, "poll_groups": g}))
        },
    );
}
