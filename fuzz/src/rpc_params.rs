//! The RPC parameter harness. One in-process application (one unpinned reactor, every
//! module registered exactly as `pollux` registers them) lives for the whole fuzzing run;
//! each input is a JSON-RPC request object as rpc.py sends it (or, when the bytes are not
//! JSON, a request built from them: see `structured`). Its `method` picks one of the
//! methods allowed at run time (an unknown name is mapped onto one by its hash, so every
//! input exercises some method's params), its `params` go through `rpc::call` on the main
//! reactor, and the answer must arrive (no hang, no panic on the reactor: libFuzzer's panic
//! hook aborts the process from any thread) and be either a success or an error that is an
//! answer about the params: -32602 (or the sock module's -EINVAL for an unknown impl) with a
//! message that names the offending field. Excluded: `spdk_kill_instance`, whose success
//! stops the application the harness lives on.

use pollux::app::RunningApp;
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
        let app = crate::start_app("pollux-fuzz");
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
        // By-position params (an array) have no field name to repeat: serde decodes a
        // struct from a sequence and says what it expected ("invalid length 0, expected
        // struct ...") or the method names the field the position maps to.
        Some(Value::Array(_)) => !message.is_empty(),
        _ => false,
    }
}

/// Param names the registered methods take, and values they expect: the structured inputs
/// draw keys and strings from them so most inputs reach a method's own checks.
const FIELDS: &[&str] = &[
    "impl_name",
    "recv_buf_size",
    "send_buf_size",
    "enable_recv_pipe",
    "enable_quickack",
    "enable_placement_id",
    "enable_zerocopy_send_server",
    "enable_zerocopy_send_client",
    "zerocopy_threshold",
    "tls_version",
    "enable_ktls",
    "name",
    "level",
    "flag",
    "sig_name",
    "current",
    "include_aliases",
];
const STRINGS: &[&str] = &[
    "posix", "uring", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG", "all", "rpc", "sock", "",
];

/// Reads bytes off the front of a structured input (zeros once it is used up).
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |a, _| (a << 8) | self.byte() as u64)
    }
}

/// A JSON value built from bytes: objects keyed by known param names (or raw text), known
/// strings, integers at the edges of u32 / u64 / i64, floats, bools, null; depth at most 4.
fn structured_value(b: &mut Bytes, depth: u32) -> Value {
    let tag = b.byte();
    match tag % 10 {
        0 | 1 if depth < 4 => {
            let mut m = serde_json::Map::new();
            for _ in 0..b.byte() % 5 {
                let k = b.byte();
                let key = if k < 240 {
                    FIELDS[k as usize % FIELDS.len()].to_string()
                } else {
                    format!("f{}", k - 240)
                };
                m.insert(key, structured_value(b, depth + 1));
            }
            Value::Object(m)
        }
        2 if depth < 4 => (0..b.byte() % 4)
            .map(|_| structured_value(b, depth + 1))
            .collect(),
        3 => Value::from(STRINGS[b.byte() as usize % STRINGS.len()]),
        4 => {
            let n = b.byte() as usize % 8;
            let raw: Vec<u8> = (0..n).map(|_| b.byte()).collect();
            Value::from(String::from_utf8_lossy(&raw).into_owned())
        }
        5 => Value::from(
            [
                0u64,
                1,
                1023,
                1024,
                4096,
                65536,
                u32::MAX as u64,
                u32::MAX as u64 + 1,
                u64::MAX,
            ][b.byte() as usize % 9],
        ),
        6 => Value::from(b.u64()),
        7 => Value::from(-(b.byte() as i64) - 1),
        8 => serde_json::Number::from_f64(f64::from_bits(b.u64()))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        _ => match b.byte() % 3 {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            _ => Value::Null,
        },
    }
}

/// A request from bytes that are not JSON: byte 0 picks the method, byte 1 whether there
/// are params (mostly an object), the rest builds them.
fn structured(data: &[u8], methods: &[String]) -> serde_json::Map<String, Value> {
    let mut b = Bytes(data);
    let mut request = serde_json::Map::new();
    let method = &methods[b.byte() as usize % methods.len()];
    request.insert("method".into(), Value::from(method.as_str()));
    match b.byte() % 8 {
        0 => {}
        1 => {
            request.insert("params".into(), structured_value(&mut b, 0));
        }
        _ => {
            let mut params = serde_json::Map::new();
            for _ in 0..1 + b.byte() % 4 {
                let k = FIELDS[b.byte() as usize % FIELDS.len()];
                params.insert(k.to_string(), structured_value(&mut b, 1));
            }
            request.insert("params".into(), Value::Object(params));
        }
    }
    request
}

pub fn check(data: &[u8]) {
    let h = harness();
    let mut request = match serde_json::from_slice::<Value>(data) {
        Ok(Value::Object(request)) => request,
        Ok(_) => return,
        Err(_) => structured(data, &h.methods),
    };
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
