//! The JSON-RPC control plane's shared vocabulary and registries.
//!
//! It holds errors with SPDK's codes, the method registry with its states (STARTUP before
//! `framework_start_init`, RUNTIME after), the `Responder` a method answers through (possibly
//! later, from any reactor), typed parameter decoding whose errors name the offending field,
//! and the registry of framework subsystems (sock, bdev, nvmf, ...) that write their state as a
//! replayable config.
//!
//! The registries live on the main reactor (thread-local there); modules register into them
//! from `register_*` functions the application calls at start-up. The server knows no module.
//!
//! # How a module registers its methods
//!
//! Each method is a named handler function, listed with its name and allowed states in one
//! table per module, so the list of what a module offers reads in one screen and each
//! method can be found (and tested) by its name:
//!
//! ```ignore
//! fn bdev_null_resize(params: Option<Value>) -> RpcResult { .. }          // answers at once
//! fn bdev_malloc_create(params: Option<Value>, responder: Responder) { .. } // answers later
//! fn bdev_get_bdevs(params: Option<Value>) -> Result<Box<RawValue>, RpcError> { .. } // JSON text
//!
//! const METHODS: &[MethodEntry] = &[
//!     MethodEntry::sync("bdev_null_resize", Allowed::RuntimeOnly, bdev_null_resize),
//!     MethodEntry::with_responder("bdev_malloc_create", Allowed::RuntimeOnly, bdev_malloc_create),
//!     MethodEntry::serialized("bdev_get_bdevs", Allowed::RuntimeOnly, bdev_get_bdevs),
//! ];
//!
//! pub fn register() {
//!     rpc::register_table(METHODS);
//!     rpc::register_aliases(ALIASES);          // deprecated names, if any
//!     rpc::register_subsystem("bdev", &[], write_config);
//! }
//! ```
//!
//! `sync` is `register`'s shape (the result is the answer), `with_responder` is
//! `register_async`'s (answer through the `Responder`, possibly from another reactor after a
//! fan-out), `serialized` is `register_serialized`'s (the answer is JSON text the server
//! writes as it is). A family of methods that differ by one value (every module's
//! `<module>_delete`) gets one small named function each that calls the shared one. The
//! closure-taking `register*` functions stay for tests and one-off registrations.

pub mod config;
pub mod framework;
pub mod iobuf;
pub mod server;

use serde::de::DeserializeOwned;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// JSON-RPC error codes used by SPDK.
pub mod code {
    pub const PARSE_ERROR: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const METHOD_NOT_FOUND: i32 = -32601;
    pub const INVALID_PARAMS: i32 = -32602;
    pub const INTERNAL_ERROR: i32 = -32603;
    /// SPDK's "method not allowed in the current state" (and generic failure).
    pub const INVALID_STATE: i32 = -1;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct RpcError {
    pub code: i32,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_PARAMS, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(code::INTERNAL_ERROR, message)
    }
    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            code::METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
        )
    }
    /// A failure of the operation itself (SPDK answers these with -1 or a -errno code).
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_STATE, message)
    }
    /// An operation refused with an errno, as SPDK reports `-ENODEV` and friends.
    pub fn errno(errno: i32, message: impl Into<String>) -> Self {
        Self::new(-errno.abs(), message)
    }
}

pub type RpcResult = Result<Value, RpcError>;

/// Decodes `params` into `T`. A missing `params` decodes as `{}` (so all-optional param
/// structs work without params). Errors name the field: `invalid params: name: invalid
/// type: integer, expected a string`, `unknown field `foo``, `missing field `name``.
pub fn parse_params<T: DeserializeOwned>(params: Option<Value>) -> Result<T, RpcError> {
    let value = match params {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v) => v,
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            RpcError::invalid_params(format!("invalid params: {inner}"))
        } else {
            RpcError::invalid_params(format!("invalid params: {path}: {inner}"))
        }
    })
}

/// Logs, once per process and per `method.field`, that a parameter SPDK's rpc.py sends was
/// accepted but has no effect in pollux (`why` says why). DESIGN: never accept silently.
pub fn without_effect(method: &str, field: &str, why: &str) {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let key = format!("{method}.{field}");
    let first = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key);
    if first {
        tracing::warn!(target: "pollux::rpc", "{method}: parameter {field} accepted without effect: {why}");
    }
}

/// Rejects any `params` for methods that take none.
pub fn no_params(params: &Option<Value>) -> Result<(), RpcError> {
    match params {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(m)) if m.is_empty() => Ok(()),
        Some(_) => Err(RpcError::invalid_params(
            "invalid params: this method takes no parameters",
        )),
    }
}

/// The application state a method may run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcState {
    /// `--wait-for-rpc` before `framework_start_init`.
    Startup,
    Runtime,
}

/// Which states a method is allowed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    StartupOnly,
    RuntimeOnly,
    Both,
}

impl Allowed {
    pub fn permits(self, state: RpcState) -> bool {
        matches!(
            (self, state),
            (Allowed::Both, _)
                | (Allowed::StartupOnly, RpcState::Startup)
                | (Allowed::RuntimeOnly, RpcState::Runtime)
        )
    }
}

/// Where a method's answer goes. Answer exactly once with `respond`; a responder dropped
/// unanswered answers an internal error so no client waits forever. It is `Send`: a method
/// may answer from another reactor after a fan-out.
pub struct Responder {
    deliver: Option<Box<dyn FnOnce(RpcResult) + Send>>,
    /// Where an answer already serialized goes (the RPC server writes it out as it is);
    /// without one, `ok_serialized` parses it back into a `Value`.
    deliver_serialized: Option<Box<dyn FnOnce(Box<RawValue>) + Send>>,
}

/// A result already serialized to JSON text (large answers skip the `Value` tree).
pub use serde_json::value::RawValue;

impl Responder {
    pub fn new(deliver: impl FnOnce(RpcResult) + Send + 'static) -> Self {
        Self {
            deliver: Some(Box::new(deliver)),
            deliver_serialized: None,
        }
    }

    /// A responder that also takes answers already serialized (the RPC server's).
    pub fn with_serialized(
        deliver: impl FnOnce(RpcResult) + Send + 'static,
        deliver_serialized: impl FnOnce(Box<RawValue>) + Send + 'static,
    ) -> Self {
        Self {
            deliver: Some(Box::new(deliver)),
            deliver_serialized: Some(Box::new(deliver_serialized)),
        }
    }

    /// Answers with a result already serialized to JSON text.
    pub fn ok_serialized(mut self, json: Box<RawValue>) {
        match self.deliver_serialized.take() {
            Some(d) => {
                self.deliver = None;
                d(json)
            }
            None => match serde_json::from_str(json.get()) {
                Ok(v) => self.ok(v),
                Err(e) => self.err(RpcError::internal(format!("answer: {e}"))),
            },
        }
    }

    pub fn respond(mut self, result: RpcResult) {
        if let Some(d) = self.deliver.take() {
            d(result)
        }
    }

    pub fn ok(self, value: Value) {
        self.respond(Ok(value))
    }

    pub fn err(self, error: RpcError) {
        self.respond(Err(error))
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(d) = self.deliver.take() {
            d(Err(RpcError::internal(
                "the method finished without an answer",
            )))
        }
    }
}

/// A method implementation. It runs on the main reactor and answers through the responder.
pub type Handler = Rc<dyn Fn(Option<Value>, Responder)>;

#[derive(Clone)]
pub struct Method {
    pub name: String,
    pub allowed: Allowed,
    pub handler: Handler,
    /// Deprecated names that also reach this method.
    pub aliases: Vec<String>,
}

#[derive(Default)]
struct Registry {
    methods: BTreeMap<String, Method>,
    aliases: BTreeMap<String, String>,
    subsystems: Vec<Subsystem>,
    state: Option<RpcState>,
}

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

/// Registers a method with a synchronous handler (the common case).
pub fn register(
    name: &str,
    allowed: Allowed,
    handler: impl Fn(Option<Value>) -> RpcResult + 'static,
) {
    register_async(name, allowed, move |params, responder| {
        responder.respond(handler(params))
    });
}

/// Registers a method that answers through its responder, possibly later.
pub fn register_async(
    name: &str,
    allowed: Allowed,
    handler: impl Fn(Option<Value>, Responder) + 'static,
) {
    REGISTRY.with(|r| {
        r.borrow_mut().methods.insert(
            name.to_string(),
            Method {
                name: name.to_string(),
                allowed,
                handler: Rc::new(handler),
                aliases: Vec::new(),
            },
        )
    });
}

/// Registers a synchronous method whose result is already JSON text (large answers: the
/// server writes the text out without building a `Value` tree).
pub fn register_serialized(
    name: &str,
    allowed: Allowed,
    handler: impl Fn(Option<Value>) -> Result<Box<RawValue>, RpcError> + 'static,
) {
    register_async(name, allowed, move |params, responder| {
        match handler(params) {
            Ok(text) => responder.ok_serialized(text),
            Err(e) => responder.err(e),
        }
    });
}

/// How a named handler in a method table answers (see the module doc).
#[derive(Clone, Copy)]
pub enum HandlerFn {
    /// Answers at once with its result (`register`).
    Sync(fn(Option<Value>) -> RpcResult),
    /// Answers through its responder, possibly later (`register_async`).
    WithResponder(fn(Option<Value>, Responder)),
    /// Answers at once with JSON text (`register_serialized`).
    Serialized(fn(Option<Value>) -> Result<Box<RawValue>, RpcError>),
}

/// One row of a module's method table: the method's name, the states it runs in and its
/// named handler.
#[derive(Clone, Copy)]
pub struct MethodEntry {
    pub name: &'static str,
    pub allowed: Allowed,
    pub handler: HandlerFn,
}

impl MethodEntry {
    /// A method whose handler returns its answer.
    pub const fn sync(
        name: &'static str,
        allowed: Allowed,
        handler: fn(Option<Value>) -> RpcResult,
    ) -> Self {
        Self {
            name,
            allowed,
            handler: HandlerFn::Sync(handler),
        }
    }

    /// A method whose handler answers through its responder, possibly later.
    pub const fn with_responder(
        name: &'static str,
        allowed: Allowed,
        handler: fn(Option<Value>, Responder),
    ) -> Self {
        Self {
            name,
            allowed,
            handler: HandlerFn::WithResponder(handler),
        }
    }

    /// A method whose handler returns its answer as JSON text.
    pub const fn serialized(
        name: &'static str,
        allowed: Allowed,
        handler: fn(Option<Value>) -> Result<Box<RawValue>, RpcError>,
    ) -> Self {
        Self {
            name,
            allowed,
            handler: HandlerFn::Serialized(handler),
        }
    }
}

/// Registers every method of a module's table (main reactor, at start-up).
pub fn register_table(table: &[MethodEntry]) {
    for entry in table {
        match entry.handler {
            HandlerFn::Sync(f) => register(entry.name, entry.allowed, f),
            HandlerFn::WithResponder(f) => register_async(entry.name, entry.allowed, f),
            HandlerFn::Serialized(f) => register_serialized(entry.name, entry.allowed, f),
        }
    }
}

/// Registers each `(alias, method)` pair of a table of deprecated names.
pub fn register_aliases(table: &[(&str, &str)]) {
    for (alias, method) in table {
        register_alias(alias, method);
    }
}

/// Adds a deprecated alias for an existing method.
pub fn register_alias(alias: &str, method: &str) {
    REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        if let Some(m) = r.methods.get_mut(method) {
            m.aliases.push(alias.to_string());
        }
        r.aliases.insert(alias.to_string(), method.to_string());
    });
}

/// Looks a method up by name or alias.
pub fn lookup(name: &str) -> Option<Method> {
    REGISTRY.with(|r| {
        let r = r.borrow();
        let target = r.aliases.get(name).map(String::as_str).unwrap_or(name);
        r.methods.get(target).cloned()
    })
}

/// Every registered method, sorted by name.
pub fn methods() -> Vec<Method> {
    REGISTRY.with(|r| r.borrow().methods.values().cloned().collect())
}

/// The current state (RUNTIME unless the application set STARTUP).
pub fn state() -> RpcState {
    REGISTRY.with(|r| r.borrow().state.unwrap_or(RpcState::Runtime))
}

pub fn set_state(state: RpcState) {
    REGISTRY.with(|r| r.borrow_mut().state = Some(state));
}

/// Calls a method in-process (config load, tests): state rules apply as for a client.
pub fn call(method: &str, params: Option<Value>, responder: Responder) {
    let Some(m) = lookup(method) else {
        return responder.err(RpcError::method_not_found(method));
    };
    let state = state();
    if !m.allowed.permits(state) {
        // SPDK's answers, word for word (clients match them).
        let why = match state {
            RpcState::Startup => {
                "Method may only be called after framework is initialized using \
                 framework_start_init RPC."
            }
            RpcState::Runtime => {
                "Method may only be called before framework is initialized. Use \
                 --wait-for-rpc command line parameter and then issue this RPC before the \
                 framework_start_init RPC."
            }
        };
        return responder.err(RpcError::new(code::INVALID_STATE, why.to_string()));
    }
    (m.handler)(params, responder)
}

/// A framework subsystem: a named part of the application whose state can be written as
/// the list of `{"method": .., "params": ..}` calls that recreate it.
#[derive(Clone)]
pub struct Subsystem {
    pub name: String,
    pub depends_on: Vec<String>,
    pub write_config: Rc<dyn Fn() -> Vec<Value>>,
}

pub fn register_subsystem(
    name: &str,
    depends_on: &[&str],
    write_config: impl Fn() -> Vec<Value> + 'static,
) {
    REGISTRY.with(|r| {
        r.borrow_mut().subsystems.push(Subsystem {
            name: name.to_string(),
            depends_on: depends_on.iter().map(|s| s.to_string()).collect(),
            write_config: Rc::new(write_config),
        })
    });
}

/// Registered subsystems in registration order (dependencies register first).
pub fn subsystems() -> Vec<Subsystem> {
    REGISTRY.with(|r| r.borrow().subsystems.clone())
}

/// Builds one `{"method": .., "params": ..}` config entry.
pub fn config_entry(method: &str, params: Value) -> Value {
    serde_json::json!({ "method": method, "params": params })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        name: String,
        num_blocks: u64,
    }

    #[test]
    fn param_errors_name_the_field() {
        let e =
            parse_params::<P>(Some(serde_json::json!({"name": 1, "num_blocks": 2}))).unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS);
        assert!(e.message.contains("name"), "{}", e.message);
        let e = parse_params::<P>(Some(serde_json::json!({"name": "a"}))).unwrap_err();
        assert!(e.message.contains("num_blocks"), "{}", e.message);
        let e = parse_params::<P>(Some(
            serde_json::json!({"name": "a", "num_blocks": 1, "x": 1}),
        ))
        .unwrap_err();
        assert!(e.message.contains("`x`"), "{}", e.message);
    }
}
