//! The `nvmf` framework subsystem's config writer and the embedded default configuration.

use super::transport::transport_json;
use crate::nvmf::ana;
use crate::nvmf::subsystem::{self, Subsystem};
use crate::nvmf::target::{self, with_target};
use crate::reactor;
use crate::rpc::{self, config_entry, Responder};
use serde_json::{json, Value};

/// The `nvmf` subsystem's config: the transport, then each subsystem with its listeners,
/// hosts and namespaces.
pub fn write_config() -> Vec<Value> {
    with_target(|t| {
        let mut out = vec![config_entry(
            "nvmf_set_max_subsystems",
            json!({"max_subsystems": t.max_subsystems()}),
        )];
        let dhchap = &t.view().dhchap;
        out.push(config_entry(
            "nvmf_set_config",
            json!({
                "dhchap_digests": dhchap.digests.iter().map(|h| h.name()).collect::<Vec<_>>(),
                "dhchap_dhgroups": dhchap.dhgroups.iter()
                    .map(|&g| target::DHGROUP_NAMES[g as usize]).collect::<Vec<_>>(),
            }),
        ));
        if let Some(o) = t.transport() {
            out.push(config_entry("nvmf_create_transport", transport_json(o)));
        }
        out.extend(
            t.referrals()
                .iter()
                .map(|r| config_entry("nvmf_discovery_add_referral", r.to_json())),
        );
        let listener = |s: &Subsystem, l: &subsystem::ListenAddr| {
            let mut p = json!({"nqn": s.nqn, "listen_address": l.to_json()});
            if let Some(name) = t.listener_sock_impl(l) {
                p["sock_impl"] = json!(name);
                if name == "ssl" {
                    p["secure_channel"] = json!(true);
                }
            }
            let mut out = Vec::new();
            if s.ana_reporting {
                if let Some(st) = ana::base_state(s, l) {
                    p["ana_state"] = json!(st.name());
                }
            }
            out.push(config_entry("nvmf_subsystem_add_listener", p));
            if s.ana_reporting {
                out.extend(
                    ana::config_overrides(s, l)
                        .into_iter()
                        .map(|p| config_entry("nvmf_subsystem_listener_set_ana_state", p)),
                );
            }
            out
        };
        for s in t.subsystems().iter().filter(|s| s.is_discovery()) {
            out.extend(s.listeners.iter().flat_map(|l| listener(s, l)));
        }
        for s in t.subsystems().iter().filter(|s| !s.is_discovery()) {
            out.push(config_entry(
                "nvmf_create_subsystem",
                json!({
                    "nqn": s.nqn,
                    "serial_number": s.serial_number,
                    "model_number": s.model_number,
                    "allow_any_host": s.allow_any_host,
                    "max_namespaces": s.max_namespaces,
                    "min_cntlid": s.min_cntlid,
                    "max_cntlid": s.max_cntlid,
                    "ana_reporting": s.ana_reporting,
                }),
            ));
            out.extend(s.listeners.iter().flat_map(|l| listener(s, l)));
            for h in &s.hosts {
                let mut params = json!({"nqn": s.nqn, "host": h});
                if let Some(p) = s.host_psks.get(h) {
                    params["psk"] = json!(p.key.name);
                }
                if let Some(keys) = s.host_keys.get(h) {
                    params["dhchap_key"] = json!(keys.key.name);
                    if let Some(c) = &keys.ctrlr_key {
                        params["dhchap_ctrlr_key"] = json!(c.name);
                    }
                }
                out.push(config_entry("nvmf_subsystem_add_host", params));
            }
            for ns in s.namespaces.values() {
                let mut namespace = json!({
                    "nsid": ns.nsid,
                    "bdev_name": ns.bdev.name(),
                    "uuid": subsystem::format_uuid(&ns.uuid),
                    "no_auto_visible": ns.visible_hosts.is_some(),
                });
                ns.put_ids(&mut namespace);
                if s.ana_reporting {
                    namespace["anagrpid"] = json!(ns.anagrpid);
                }
                if let Some(f) = &ns.ptpl_file {
                    namespace["ptpl_file"] = json!(f.as_ref());
                }
                out.push(config_entry(
                    "nvmf_subsystem_add_ns",
                    json!({"nqn": s.nqn, "namespace": namespace}),
                ));
                for host in ns.visible_hosts.iter().flat_map(|h| h.iter()) {
                    out.push(config_entry(
                        "nvmf_ns_add_host",
                        json!({"nqn": s.nqn, "nsid": ns.nsid, "host": host}),
                    ));
                }
            }
        }
        out
    })
}

/// The default export's NQN.
pub const DEFAULT_NQN: &str = "nqn.2016-06.io.pollux:cnode1";
/// The default listen port.
pub const DEFAULT_PORT: u16 = 4420;

/// Applies `calls` in order through the in-process RPC path (main reactor); `done` gets the
/// first error.
pub fn apply_calls(
    calls: Vec<(String, Value)>,
    done: impl FnOnce(Result<(), String>) + Send + 'static,
) {
    step(calls.into_iter(), Box::new(done));
}

type CallsDone = Box<dyn FnOnce(Result<(), String>) + Send>;

fn step(mut calls: std::vec::IntoIter<(String, Value)>, done: CallsDone) {
    let Some((method, params)) = calls.next() else {
        return done(Ok(()));
    };
    let core = reactor::current_core().unwrap_or(0);
    let m = method.clone();
    rpc::call(
        &method,
        Some(params),
        // The answer may come from another reactor: continue here by message.
        Responder::new(move |res| {
            reactor::send_to(core, move || match res {
                Ok(_) => step(calls, done),
                Err(e) => done(Err(format!("{m}: {}", e.message))),
            })
        }),
    );
}

/// The embedded default configuration: a 256 MiB malloc bdev exported as namespace 1 of
/// `nqn.2016-06.io.pollux:cnode1` (any host) on 127.0.0.1:4420.
pub fn default_config() {
    let calls: Vec<(String, Value)> = vec![
        (
            "bdev_malloc_create".into(),
            json!({"name": "Malloc0", "num_blocks": 65536, "block_size": 4096}),
        ),
        ("nvmf_create_transport".into(), json!({"trtype": "TCP"})),
        (
            "nvmf_create_subsystem".into(),
            json!({"nqn": DEFAULT_NQN, "serial_number": "POLLUX00000000000001",
                   "model_number": "pollux malloc", "allow_any_host": true}),
        ),
        (
            "nvmf_subsystem_add_ns".into(),
            json!({"nqn": DEFAULT_NQN, "namespace": {"bdev_name": "Malloc0", "nsid": 1}}),
        ),
        (
            "nvmf_subsystem_add_listener".into(),
            json!({"nqn": DEFAULT_NQN, "listen_address": {"trtype": "TCP", "adrfam": "IPv4",
                   "traddr": "127.0.0.1", "trsvcid": DEFAULT_PORT.to_string()}}),
        ),
    ];
    apply_calls(calls, |r| match r {
        Ok(()) => eprintln!(
            "pollux: default configuration: 256 MiB malloc bdev Malloc0 exported as namespace 1 \
             of {DEFAULT_NQN} (any host) on NVMe/TCP 127.0.0.1:{DEFAULT_PORT}"
        ),
        Err(e) => eprintln!("pollux: the default configuration failed: {e}"),
    });
}
