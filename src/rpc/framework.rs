//! The framework's own RPC methods, with SPDK's names, params and result shapes.
//!
//! Version (as SPDK's docs/jsonrpc.md describes them), method listing, the STARTUP → RUNTIME
//! transition (`framework_start_init`, `framework_wait_init`), subsystem listing and config
//! dump, reactor/thread/poller statistics gathered from every reactor with a fan-out, shutdown,
//! and log level/flag control.
//!
//! Times are reported in ticks of 1 ns (`tick_rate` is 1e9); each reactor is one "thread" in
//! SPDK's sense, named `reactor_<core>`.

use super::{
    no_params, parse_params, Allowed, MethodEntry, Responder, RpcError, RpcResult, RpcState,
};
use crate::reactor::{self, ReactorStats};
use serde::Deserialize;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::sync::{Arc, Mutex};

/// Ticks per second in every statistic: ticks are nanoseconds.
pub const TICK_RATE: u64 = 1_000_000_000;

thread_local! {
    /// `framework_wait_init` calls parked until initialization completes.
    static INIT_WAITERS: RefCell<Vec<Responder>> = const { RefCell::new(Vec::new()) };
}

/// Moves the application from STARTUP to RUNTIME (once) and answers every parked
/// `framework_wait_init`. Returns false if it was already initialized.
pub fn start_init() -> bool {
    let was_startup = super::state() == RpcState::Startup;
    super::set_state(RpcState::Runtime);
    if was_startup {
        tracing::info!("framework initialized (RUNTIME state)");
    }
    let waiters: Vec<Responder> = INIT_WAITERS.with(|w| std::mem::take(&mut *w.borrow_mut()));
    for waiter in waiters {
        waiter.ok(Value::Bool(true));
    }
    was_startup
}

fn version() -> Value {
    let version = env!("CARGO_PKG_VERSION");
    let mut parts = version.splitn(3, '.');
    let mut number = || {
        parts
            .next()
            .map(|p| {
                p.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse::<u64>()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    };
    let (major, minor, patch) = (number(), number(), number());
    let suffix = version
        .split_once('-')
        .map(|(_, s)| format!("-{s}"))
        .unwrap_or_default();
    json!({
        "version": format!("pollux v{version}"),
        "fields": {"major": major, "minor": minor, "patch": patch, "suffix": suffix},
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetMethodsParams {
    #[serde(default)]
    current: bool,
    #[serde(default)]
    include_aliases: bool,
}

fn rpc_get_methods(params: Option<Value>) -> RpcResult {
    let p: GetMethodsParams = parse_params(params)?;
    let state = super::state();
    let mut names = Vec::new();
    for m in super::methods() {
        if p.current && !m.allowed.permits(state) {
            continue;
        }
        names.push(m.name.clone());
        if p.include_aliases {
            names.extend(m.aliases.iter().cloned());
        }
    }
    names.sort();
    Ok(json!(names))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetConfigParams {
    name: String,
    /// Sent by SPDK's rpc.py (keep SPDK's batch arrays in the dump); pollux's configs hold
    /// no batches, so both values give the same, flat answer.
    #[serde(default)]
    #[allow(dead_code)]
    with_batches: Option<bool>,
}

fn framework_get_config(params: Option<Value>) -> RpcResult {
    let p: GetConfigParams = parse_params(params)?;
    let subsystem = super::subsystems()
        .into_iter()
        .find(|s| s.name == p.name)
        .ok_or_else(|| {
            RpcError::invalid_params(format!(
                "invalid params: name: subsystem {:?} not found",
                p.name
            ))
        })?;
    Ok(Value::Array((subsystem.write_config)()))
}

fn framework_get_subsystems(params: Option<Value>) -> RpcResult {
    no_params(&params)?;
    let list: Vec<Value> = super::subsystems()
        .iter()
        .map(|s| json!({"subsystem": s.name, "depends_on": s.depends_on}))
        .collect();
    Ok(Value::Array(list))
}

/// Collects `reactor::stats()` from every reactor (main first) and hands them to `done`
/// back on the main reactor.
pub fn gather_stats(done: impl FnOnce(Vec<ReactorStats>) + Send + 'static) {
    let collected: Arc<Mutex<Vec<ReactorStats>>> = Arc::default();
    let sink = collected.clone();
    reactor::for_each_reactor(
        move || {
            let stats = reactor::stats();
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(stats);
        },
        move || {
            let stats = std::mem::take(&mut *collected.lock().unwrap_or_else(|p| p.into_inner()));
            done(stats)
        },
    );
}

fn cpumask(core: u32) -> String {
    if core < 128 {
        format!("{:x}", 1u128 << core)
    } else {
        String::new()
    }
}

fn thread_name(stats: &ReactorStats) -> String {
    format!("reactor_{}", stats.core)
}

/// SPDK's `in_interrupt`: the reactor waits on its wake fds when idle (pollux's default
/// spin-then-sleep strategy) rather than polling without end (`--poll-only`).
fn in_interrupt() -> bool {
    matches!(
        reactor::idle_strategy(),
        reactor::IdleStrategy::SpinThenSleep(_)
    )
}

fn reactors_result(all: &[ReactorStats]) -> Value {
    let reactors: Vec<Value> = all
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "lcore": r.core,
                "tid": r.tid,
                "busy": r.busy_ns,
                "idle": r.idle_ns,
                "in_interrupt": in_interrupt(),
                "sleep": r.sleep_ns,
                "sleeps": r.sleeps,
                "messages": r.messages,
                "lw_threads": [{
                    "name": thread_name(r),
                    "id": i + 1,
                    "cpumask": cpumask(r.core),
                    "elapsed": r.busy_ns + r.idle_ns,
                }],
            })
        })
        .collect();
    json!({"tick_rate": TICK_RATE, "pid": std::process::id(), "reactors": reactors})
}

fn thread_stats_result(all: &[ReactorStats]) -> Value {
    let threads: Vec<Value> = all
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let paused = r.pollers.iter().filter(|p| p.state == "paused").count();
            let running = |timed: bool| {
                r.pollers
                    .iter()
                    .filter(|p| p.state != "paused" && (p.period_us > 0) == timed)
                    .count()
            };
            json!({
                "name": thread_name(r),
                "id": i + 1,
                "cpumask": cpumask(r.core),
                "busy": r.busy_ns,
                "idle": r.idle_ns,
                "in_interrupt": in_interrupt(),
                "active_pollers_count": running(false),
                "timed_pollers_count": running(true),
                "paused_pollers_count": paused,
            })
        })
        .collect();
    json!({"tick_rate": TICK_RATE, "threads": threads})
}

fn thread_pollers_result(all: &[ReactorStats]) -> Value {
    let threads: Vec<Value> = all
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let describe = |p: &reactor::PollerStats| {
                let mut v = json!({
                    "name": p.name,
                    "id": p.id,
                    // SPDK says "waiting" for a registered poller that is not executing.
                    "state": if p.state == "paused" { "paused" } else { "waiting" },
                    "run_count": p.run_count,
                    "busy_count": p.busy_count,
                });
                if p.period_us > 0 {
                    v["period_ticks"] = json!(p.period_us * 1000);
                }
                v
            };
            let pick = |f: &dyn Fn(&reactor::PollerStats) -> bool| -> Vec<Value> {
                r.pollers.iter().filter(|p| f(p)).map(describe).collect()
            };
            json!({
                "name": thread_name(r),
                "id": i + 1,
                "active_pollers": pick(&|p| p.state != "paused" && p.period_us == 0),
                "timed_pollers": pick(&|p| p.state != "paused" && p.period_us > 0),
                "paused_pollers": pick(&|p| p.state == "paused"),
            })
        })
        .collect();
    json!({"tick_rate": TICK_RATE, "threads": threads})
}

/// Answers a statistics method: checks it has no params, gathers every reactor's stats and
/// shapes them with `shape`.
fn answer_stats(params: Option<Value>, responder: Responder, shape: fn(&[ReactorStats]) -> Value) {
    if let Err(e) = no_params(&params) {
        return responder.err(e);
    }
    gather_stats(move |stats| responder.ok(shape(&stats)));
}

fn framework_get_reactors(params: Option<Value>, responder: Responder) {
    answer_stats(params, responder, reactors_result)
}

fn thread_get_stats(params: Option<Value>, responder: Responder) {
    answer_stats(params, responder, thread_stats_result)
}

fn thread_get_pollers(params: Option<Value>, responder: Responder) {
    answer_stats(params, responder, thread_pollers_result)
}

fn spdk_get_version(params: Option<Value>) -> RpcResult {
    no_params(&params)?;
    Ok(version())
}

fn framework_start_init(params: Option<Value>) -> RpcResult {
    no_params(&params)?;
    start_init();
    Ok(Value::Bool(true))
}

/// Answers once the application is initialized (parked until `framework_start_init`).
fn framework_wait_init(params: Option<Value>, responder: Responder) {
    if let Err(e) = no_params(&params) {
        return responder.err(e);
    }
    if super::state() == RpcState::Runtime {
        responder.ok(Value::Bool(true));
    } else {
        INIT_WAITERS.with(|w| w.borrow_mut().push(responder));
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KillParams {
    sig_name: String,
}

fn spdk_kill_instance(params: Option<Value>, responder: Responder) {
    let p: KillParams = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return responder.err(e),
    };
    match p.sig_name.to_ascii_uppercase().trim_start_matches("SIG") {
        "INT" | "TERM" | "QUIT" | "HUP" => {
            tracing::info!(signal = %p.sig_name, "spdk_kill_instance: shutting down");
            responder.ok(Value::Bool(true));
            reactor::request_shutdown();
        }
        _ => responder.err(RpcError::invalid_params(format!(
            "invalid params: sig_name: {:?} is not supported (use SIGINT, SIGTERM, SIGQUIT or SIGHUP)",
            p.sig_name
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelParams {
    level: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlagParams {
    flag: String,
}

fn log_set_level(params: Option<Value>) -> RpcResult {
    let p: LevelParams = parse_params(params)?;
    let level = crate::log::Level::parse(&p.level)
        .map_err(|e| RpcError::invalid_params(format!("invalid params: level: {e}")))?;
    crate::log::set_level(level);
    Ok(Value::Bool(true))
}

fn log_get_level(params: Option<Value>) -> RpcResult {
    no_params(&params)?;
    Ok(json!(crate::log::level().name()))
}

fn set_log_flag(params: Option<Value>, enabled: bool) -> RpcResult {
    let p: FlagParams = parse_params(params)?;
    crate::log::set_flag(&p.flag, enabled)
        .map_err(|e| RpcError::invalid_params(format!("invalid params: flag: {e}")))?;
    Ok(Value::Bool(true))
}

fn log_set_flag(params: Option<Value>) -> RpcResult {
    set_log_flag(params, true)
}

fn log_clear_flag(params: Option<Value>) -> RpcResult {
    set_log_flag(params, false)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnableParams {
    enabled: bool,
}

fn log_enable_timestamps(params: Option<Value>) -> RpcResult {
    let p: EnableParams = parse_params(params)?;
    crate::log::set_timestamps(p.enabled);
    Ok(Value::Bool(true))
}

fn log_get_flags(params: Option<Value>) -> RpcResult {
    no_params(&params)?;
    Ok(json!(crate::log::flags()))
}

/// The framework's methods (SPDK's names; the print-level pair shares the level handlers).
const METHODS: &[MethodEntry] = &[
    MethodEntry::sync("spdk_get_version", Allowed::Both, spdk_get_version),
    MethodEntry::sync("rpc_get_methods", Allowed::Both, rpc_get_methods),
    MethodEntry::sync(
        "framework_start_init",
        Allowed::StartupOnly,
        framework_start_init,
    ),
    MethodEntry::with_responder("framework_wait_init", Allowed::Both, framework_wait_init),
    MethodEntry::sync(
        "framework_get_subsystems",
        Allowed::RuntimeOnly,
        framework_get_subsystems,
    ),
    MethodEntry::sync(
        "framework_get_config",
        Allowed::RuntimeOnly,
        framework_get_config,
    ),
    MethodEntry::with_responder(
        "framework_get_reactors",
        Allowed::RuntimeOnly,
        framework_get_reactors,
    ),
    MethodEntry::with_responder("thread_get_stats", Allowed::RuntimeOnly, thread_get_stats),
    MethodEntry::with_responder(
        "thread_get_pollers",
        Allowed::RuntimeOnly,
        thread_get_pollers,
    ),
    MethodEntry::with_responder("spdk_kill_instance", Allowed::Both, spdk_kill_instance),
    MethodEntry::sync("log_set_level", Allowed::Both, log_set_level),
    MethodEntry::sync("log_get_level", Allowed::Both, log_get_level),
    MethodEntry::sync("log_set_print_level", Allowed::Both, log_set_level),
    MethodEntry::sync("log_get_print_level", Allowed::Both, log_get_level),
    MethodEntry::sync("log_set_flag", Allowed::Both, log_set_flag),
    MethodEntry::sync("log_clear_flag", Allowed::Both, log_clear_flag),
    MethodEntry::sync(
        "log_enable_timestamps",
        Allowed::Both,
        log_enable_timestamps,
    ),
    MethodEntry::sync("log_get_flags", Allowed::Both, log_get_flags),
];

/// The deprecated names older SPDK automation still sends, as `(alias, method)`.
const ALIASES: &[(&str, &str)] = &[
    ("get_spdk_version", "spdk_get_version"),
    ("get_rpc_methods", "rpc_get_methods"),
    ("start_subsystem_init", "framework_start_init"),
    ("wait_subsystem_init", "framework_wait_init"),
    ("get_subsystems", "framework_get_subsystems"),
    ("get_subsystem_config", "framework_get_config"),
    ("kill_instance", "spdk_kill_instance"),
];

/// Registers every framework method on the current (main) reactor.
pub fn register() {
    super::register_table(METHODS);
    super::register_aliases(ALIASES);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_has_spdks_shape() {
        let v = version();
        assert!(v["version"].as_str().unwrap().starts_with("pollux v"));
        assert!(v["fields"]["major"].is_u64());
        assert!(v["fields"]["minor"].is_u64());
        assert!(v["fields"]["patch"].is_u64());
        assert!(v["fields"]["suffix"].is_string());
    }

    #[test]
    fn cpumask_is_hex_of_the_core_bit() {
        assert_eq!(cpumask(0), "1");
        assert_eq!(cpumask(5), "20");
    }
}
