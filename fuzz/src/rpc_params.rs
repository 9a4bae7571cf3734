//! The RPC parameter harness. One in-process application (one unpinned reactor, every
//! module registered exactly as `pollux` registers them) lives for the whole fuzzing run;
//! each input is a JSON-RPC request object as rpc.py sends it. Its `method` picks one of the
//! methods allowed at run time (an unknown name is mapped onto one by its hash, so every
//! input exercises some method's params), its `params` go through `rpc::call` on the main
//! reactor, and the answer must arrive (no hang, no panic on the reactor: libFuzzer's panic
//! hook aborts the process from any thread) and be either a success or an error that is an
//! answer about the params: -32602 (or the sock module's -EINVAL for an unknown impl) with a
//! message that names the offending field. Excluded: `spdk_kill_instance`, whose success
//! stops the application the harness lives on.

use pollux::app::{self, AppOptions, RunningApp};
use pollux::reactor::IdleStrategy;
use pollux::rpc::{self, code, Responder, RpcResult, RpcState};
use serde_json::Value;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

/// Methods whose success would end the harness's application.
const EXCLUDED: &[&str] = &["spdk_kill_instance"];
/// An answer slower than this is a hang.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

struct Harness {
    app: RunningApp,
    methods: Vec<String>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let socket = std::env::temp_dir().join(format!("pollux-fuzz-{}.sock", std::process::id()));
        let app = app::start(AppOptions {
            cores: vec![0],
            rpc_socket: socket,
            pin: false,
            idle: IdleStrategy::SpinThenSleep(Duration::from_micros(50)),
            no_default: true,
            ..Default::default()
        })
        .expect("start the harness application");
        let (tx, rx) = mpsc::channel();
        app.handle()
            .send_to(0, move || {
                let names: Vec<String> = rpc::methods()
                    .into_iter()
                    .filter(|m| m.allowed.permits(RpcState::Runtime))
                    .map(|m| m.name)
                    .filter(|n| !EXCLUDED.contains(&n.as_str()))
                    .collect();
                let _ = tx.send(names);
            })
            .expect("reach the main reactor");
        let methods = rx.recv_timeout(ANSWER_TIMEOUT).expect("the method list");
        assert!(!methods.is_empty());
        Harness { app, methods }
    })
}

/// Calls `method` on the harness's main reactor and waits for its answer.
fn call(h: &Harness, method: String, params: Option<Value>) -> RpcResult {
    let (tx, rx) = mpsc::channel();
    h.app
        .handle()
        .send_to(0, move || {
            rpc::call(
                &method,
                params,
                Responder::new(move |r| {
                    let _ = tx.send(r);
                }),
            )
        })
        .expect("reach the main reactor");
    rx.recv_timeout(ANSWER_TIMEOUT)
        .expect("every call is answered")
}

/// Whether an error message points at what was wrong with `params`.
fn names_the_problem(message: &str, params: &Option<Value>) -> bool {
    const GENERIC: &[&str] = &[
        "missing field",
        "unknown field",
        "invalid type",
        "takes no parameters",
    ];
    if GENERIC.iter().any(|g| message.contains(g)) {
        return true;
    }
    match params {
        Some(Value::Object(m)) => m
            .keys()
            .any(|k| !k.is_empty() && message.contains(k.as_str())),
        _ => false,
    }
}

pub fn check(data: &[u8]) {
    let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let h = harness();
    let method = match request.remove("method") {
        Some(Value::String(m)) if h.methods.contains(&m) => m,
        other => {
            let key = other.map(|v| v.to_string()).unwrap_or_default();
            let hash = key.bytes().fold(data.len(), |a, b| {
                a.wrapping_mul(31).wrapping_add(b as usize)
            });
            h.methods[hash % h.methods.len()].clone()
        }
    };
    let params = request.remove("params");
    let shown = params.clone();
    match call(h, method.clone(), params) {
        Ok(_) => {}
        Err(e) => {
            let about_params = e.code == code::INVALID_PARAMS
                || (e.code == -libc_einval() && e.message.starts_with("impl_name:"));
            assert!(
                about_params,
                "{method} {shown:?}: an error that is not about the params: {e:?}"
            );
            assert!(
                names_the_problem(&e.message, &shown),
                "{method} {shown:?}: the error does not name the field: {e:?}"
            );
        }
    }
}

/// EINVAL without a libc dependency in the harness (Linux's value).
const fn libc_einval() -> i32 {
    22
}
