//! The sock RPCs with SPDK's names and params.
//!
//! They are `sock_impl_get_options`, `sock_impl_set_options`, `sock_set_default_impl`,
//! `sock_get_default_impl`, and the `sock` framework subsystem whose config replays the default
//! impl and every impl's options.
//!
//! Settings are per application: they change on the main reactor and are pushed to every
//! reactor's thread-local copy before the method answers, so sockets created anywhere after the
//! answer see them. Values an impl cannot honour are rejected with an error naming the field
//! (`tls_version` other than 0, `enable_ktls: true`, `enable_recv_pipe: false` for uring, ...).
//! The ssl impl's `psk_key` / `psk_identity` options of older SPDK releases are refused as unknown
//! fields (-32602, naming the field): a TLS PSK belongs to a host, so pollux takes it only from
//! `nvmf_subsystem_add_host --psk` (a keyring key).

#![forbid(unsafe_code)]

use super::{get_impl, set_settings, settings, ImplOptions, SockSettings};
use crate::rpc::{self, parse_params, Allowed, MethodEntry, Responder, RpcError};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImplName {
    impl_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetOptions {
    impl_name: String,
    recv_buf_size: Option<u32>,
    send_buf_size: Option<u32>,
    enable_recv_pipe: Option<bool>,
    enable_quickack: Option<bool>,
    enable_placement_id: Option<u32>,
    enable_zerocopy_send_server: Option<bool>,
    enable_zerocopy_send_client: Option<bool>,
    zerocopy_threshold: Option<u32>,
    tls_version: Option<u32>,
    enable_ktls: Option<bool>,
}

fn no_such_impl(name: &str) -> RpcError {
    RpcError::errno(
        libc::EINVAL,
        format!("impl_name: unknown sock impl '{name}'"),
    )
}

fn options_of(s: &SockSettings, name: &str) -> Option<ImplOptions> {
    match name {
        "posix" => Some(s.posix.clone()),
        "uring" => Some(s.uring.clone()),
        "ssl" => Some(s.ssl.clone()),
        _ => None,
    }
}

/// Applies `new` on this thread and pushes it to every reactor, answering when done.
fn apply_everywhere(new: SockSettings, responder: Responder) {
    set_settings(new.clone());
    if crate::reactor::current_core().is_none() {
        return responder.ok(json!(true));
    }
    crate::reactor::for_each_reactor(
        move || set_settings(new.clone()),
        move || responder.ok(json!(true)),
    );
}

fn set_options(params: Option<Value>, responder: Responder) {
    let p: SetOptions = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    let mut s = settings();
    let Some(mut o) = options_of(&s, &p.impl_name) else {
        return responder.err(no_such_impl(&p.impl_name));
    };
    macro_rules! take {
        ($($f:ident),*) => { $( if let Some(v) = p.$f { o.$f = v; } )* };
    }
    take!(
        recv_buf_size,
        send_buf_size,
        enable_recv_pipe,
        enable_quickack,
        enable_placement_id,
        enable_zerocopy_send_server,
        enable_zerocopy_send_client,
        zerocopy_threshold,
        tls_version,
        enable_ktls
    );
    if let Err(msg) = o.validate(&p.impl_name) {
        return responder.err(RpcError::invalid_params(msg));
    }
    match p.impl_name.as_str() {
        "uring" => s.uring = o,
        "ssl" => s.ssl = o,
        _ => s.posix = o,
    }
    apply_everywhere(s, responder);
}

fn get_options(params: Option<Value>) -> rpc::RpcResult {
    let p: ImplName = parse_params(params)?;
    let o = options_of(&settings(), &p.impl_name).ok_or_else(|| no_such_impl(&p.impl_name))?;
    serde_json::to_value(o).map_err(|e| RpcError::internal(e.to_string()))
}

fn set_default_impl(params: Option<Value>, responder: Responder) {
    let p: ImplName = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    if get_impl(&p.impl_name).is_none() {
        return responder.err(no_such_impl(&p.impl_name));
    }
    if p.impl_name == "ssl" {
        return responder.err(RpcError::errno(
            libc::EINVAL,
            "impl_name: ssl cannot be the default impl (a TLS socket needs a PSK: give the \
             listener secure_channel)"
                .to_string(),
        ));
    }
    let mut s = settings();
    s.default_impl = p.impl_name;
    apply_everywhere(s, responder);
}

fn get_default_impl(params: Option<Value>) -> rpc::RpcResult {
    rpc::no_params(&params)?;
    Ok(json!({ "impl_name": settings().default_impl }))
}

/// The config entries that recreate the current sock settings.
pub fn write_config() -> Vec<Value> {
    let s = settings();
    let mut out = vec![rpc::config_entry(
        "sock_set_default_impl",
        json!({ "impl_name": s.default_impl }),
    )];
    for (name, o) in [("posix", &s.posix), ("uring", &s.uring), ("ssl", &s.ssl)] {
        let mut params = serde_json::to_value(o).unwrap_or_else(|_| json!({}));
        if let Value::Object(m) = &mut params {
            m.insert("impl_name".into(), json!(name));
        }
        out.push(rpc::config_entry("sock_impl_set_options", params));
    }
    out
}

/// The sock methods (usable before and after `framework_start_init`, as in SPDK).
const METHODS: &[MethodEntry] = &[
    MethodEntry::with_responder("sock_impl_set_options", Allowed::Both, set_options),
    MethodEntry::sync("sock_impl_get_options", Allowed::Both, get_options),
    MethodEntry::with_responder("sock_set_default_impl", Allowed::Both, set_default_impl),
    MethodEntry::sync("sock_get_default_impl", Allowed::Both, get_default_impl),
];

/// Registers the sock methods and the `sock` subsystem (on the main reactor).
pub fn register() {
    rpc::register_table(METHODS);
    rpc::register_subsystem("sock", &[], write_config);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn call(method: &str, params: Value) -> rpc::RpcResult {
        let (tx, rx) = mpsc::channel();
        rpc::call(
            method,
            Some(params),
            Responder::new(move |r| tx.send(r).unwrap()),
        );
        rx.recv().unwrap()
    }

    #[test]
    fn options_round_trip_and_errors_name_the_field() {
        register();
        let o = call("sock_impl_get_options", json!({"impl_name": "posix"})).unwrap();
        assert_eq!(o["enable_recv_pipe"], json!(true));
        call(
            "sock_impl_set_options",
            json!({"impl_name": "posix", "zerocopy_threshold": 4096, "enable_quickack": true}),
        )
        .unwrap();
        let o = call("sock_impl_get_options", json!({"impl_name": "posix"})).unwrap();
        assert_eq!(o["zerocopy_threshold"], json!(4096));
        assert_eq!(o["enable_quickack"], json!(true));
        let e = call(
            "sock_impl_set_options",
            json!({"impl_name": "posix", "tls_version": 13}),
        )
        .unwrap_err();
        assert!(e.message.contains("tls_version"), "{}", e.message);
        let e = call(
            "sock_impl_set_options",
            json!({"impl_name": "uring", "enable_recv_pipe": false}),
        )
        .unwrap_err();
        assert!(e.message.contains("enable_recv_pipe"), "{}", e.message);
        let e = call(
            "sock_impl_set_options",
            json!({"impl_name": "posix", "bogus": 1}),
        )
        .unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
        for field in ["psk_key", "psk_identity"] {
            let e = call(
                "sock_impl_set_options",
                json!({"impl_name": "ssl", field: "x"}),
            )
            .unwrap_err();
            assert_eq!(e.code, -32602);
            assert!(e.message.contains(field), "{}", e.message);
        }
        let e = call("sock_impl_get_options", json!({"impl_name": "nope"})).unwrap_err();
        assert!(e.message.contains("impl_name"), "{}", e.message);

        call("sock_set_default_impl", json!({"impl_name": "uring"})).unwrap();
        let d = call("sock_get_default_impl", json!({})).unwrap();
        assert_eq!(d, json!({"impl_name": "uring"}));
        assert!(call("sock_set_default_impl", json!({"impl_name": "x"})).is_err());
        let e = call("sock_set_default_impl", json!({"impl_name": "ssl"})).unwrap_err();
        assert!(e.message.contains("impl_name"), "{}", e.message);

        let cfg = write_config();
        assert_eq!(cfg[0]["method"], json!("sock_set_default_impl"));
        assert_eq!(cfg[0]["params"]["impl_name"], json!("uring"));
        assert_eq!(cfg[1]["params"]["zerocopy_threshold"], json!(4096));
        assert_eq!(cfg[1]["params"]["impl_name"], json!("posix"));
        // Replaying the config is accepted.
        for entry in cfg {
            call(entry["method"].as_str().unwrap(), entry["params"].clone()).unwrap();
        }
    }

    /// On a running app the settings reach every reactor before the method answers.
    #[test]
    fn set_options_reaches_every_reactor() {
        use crate::reactor::{self, IdleStrategy, ReactorConfig};
        let (tx, rx) = mpsc::channel();
        let app = reactor::start(
            ReactorConfig {
                cores: vec![0, 1],
                idle: IdleStrategy::SpinThenSleep(std::time::Duration::from_micros(50)),
                pin: false,
            },
            move || {
                register();
                rpc::call(
                    "sock_impl_set_options",
                    Some(json!({"impl_name": "posix", "zerocopy_threshold": 12345})),
                    Responder::new(move |r| {
                        r.unwrap();
                        // Answered on the main reactor: the other one already has it.
                        reactor::send_to(1, move || {
                            tx.send(settings().posix.zerocopy_threshold).unwrap()
                        });
                    }),
                );
            },
        )
        .unwrap();
        let got = rx.recv_timeout(std::time::Duration::from_secs(5));
        app.shutdown();
        app.wait();
        assert_eq!(got.unwrap(), 12345);
    }
}
