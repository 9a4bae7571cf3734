//! Application start-up, in process: `--wait-for-rpc` and the STARTUP/RUNTIME state rules,
//! `--json` config load in two passes (with a test subsystem registered through
//! `extra_init`), the `framework_get_config` round trip, start-up errors naming the failing
//! method, the socket lock against a second instance, and stale socket replacement.

mod common;

use common::{start, start_waiting_for_rpc, test_options, Client, TIMEOUT};
use pollux::app::{self, AppError, AppOptions};
use pollux::rpc::{self, Allowed, RpcError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The test subsystem's state, on each app's main reactor.
#[derive(Default)]
struct KvState {
    values: BTreeMap<String, String>,
    /// The order in which its methods ran.
    log: Vec<String>,
    limit: Option<u32>,
}

thread_local! {
    static KV: RefCell<KvState> = RefCell::new(KvState::default());
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetParams {
    key: String,
    value: String,
}

/// Registers `test_kv`: `test_kv_set_limit` (STARTUP only), `test_kv_set` (RUNTIME only),
/// `test_kv_log` (the order methods ran in) and a config writer that recreates the state.
fn register_test_kv() {
    rpc::register("test_kv_set_limit", Allowed::StartupOnly, |params| {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct P {
            limit: u32,
        }
        let p: P = rpc::parse_params(params)?;
        KV.with(|kv| {
            let mut kv = kv.borrow_mut();
            kv.limit = Some(p.limit);
            kv.log.push("test_kv_set_limit".into());
        });
        Ok(json!(true))
    });
    rpc::register("test_kv_set", Allowed::RuntimeOnly, |params| {
        let p: SetParams = rpc::parse_params(params)?;
        KV.with(|kv| {
            let mut kv = kv.borrow_mut();
            if kv
                .limit
                .is_some_and(|limit| kv.values.len() as u32 >= limit)
            {
                return Err(RpcError::failed("test_kv is full"));
            }
            kv.log.push(format!("test_kv_set {}", p.key));
            kv.values.insert(p.key, p.value);
            Ok(json!(true))
        })
    });
    rpc::register("test_kv_log", Allowed::Both, |_| {
        Ok(KV.with(|kv| json!(kv.borrow().log)))
    });
    rpc::register_subsystem("test_kv", &[], || {
        KV.with(|kv| {
            let kv = kv.borrow();
            let mut entries = Vec::new();
            if let Some(limit) = kv.limit {
                entries.push(rpc::config_entry(
                    "test_kv_set_limit",
                    json!({"limit": limit}),
                ));
            }
            for (key, value) in &kv.values {
                entries.push(rpc::config_entry(
                    "test_kv_set",
                    json!({"key": key, "value": value}),
                ));
            }
            entries
        })
    });
}

fn write_config(tag: &str, config: &Value) -> PathBuf {
    let path = common::sock_path(tag).with_extension("json");
    std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    path
}

#[test]
fn wait_for_rpc_state_rules() {
    let app = start_waiting_for_rpc("wait");
    let mut c = Client::connect(app.rpc_socket());
    // RUNTIME-only methods are refused with -1 in STARTUP, in SPDK's words.
    let (code, msg) = c.call_err("framework_get_reactors", None);
    assert_eq!(code, -1);
    assert_eq!(
        msg,
        "Method may only be called after framework is initialized using \
         framework_start_init RPC."
    );
    assert!(c.call("spdk_get_version", None).is_object());
    let current = c.call("rpc_get_methods", Some(json!({"current": true})));
    let current = current.as_array().unwrap();
    assert!(current.contains(&json!("framework_start_init")));
    assert!(!current.contains(&json!("framework_get_config")));
    // framework_wait_init is answered only after framework_start_init.
    let mut waiter = Client::connect(app.rpc_socket());
    waiter.send(br#"{"jsonrpc":"2.0","id":77,"method":"framework_wait_init"}"#);
    waiter
        .stream
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let mut probe = [0u8; 1];
    let early = std::io::Read::read(&mut waiter.stream, &mut probe);
    assert!(early.is_err(), "framework_wait_init answered before init");
    waiter.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(c.call("framework_start_init", None), true);
    let answer = waiter.read();
    assert_eq!(
        (answer["id"].clone(), answer["result"].clone()),
        (json!(77), json!(true))
    );
    // Now the state is RUNTIME: start_init is refused, runtime methods work.
    let (code, _) = c.call_err("framework_start_init", None);
    assert_eq!(code, -1);
    assert!(c.call("framework_get_reactors", None)["reactors"].is_array());
    assert_eq!(c.call("framework_wait_init", None), true);
    app.shutdown_and_wait();
}

/// Options for an app (`tag`) with the test_kv subsystem, loading `config` from a file it
/// writes; returns them and the file.
fn test_kv_options(tag: &str, config: &Value) -> (AppOptions, PathBuf) {
    let file = write_config(tag, config);
    let mut opts = test_options(tag);
    opts.json_config = Some(file.clone());
    opts.extra_init = Some(Box::new(register_test_kv));
    (opts, file)
}

#[test]
fn json_config_loads_in_two_passes_and_round_trips() {
    // The RUNTIME entry comes first in the file; the STARTUP one must still run first.
    let config = json!({"subsystems": [
        {"subsystem": "test_kv", "config": [
            {"method": "test_kv_set", "params": {"key": "a", "value": "1"}},
            {"method": "test_kv_set_limit", "params": {"limit": 5}},
            {"method": "test_kv_set", "params": {"key": "b", "value": "2"}}
        ]},
        {"subsystem": "empty", "config": null}
    ]});
    let (opts, file) = test_kv_options("twopass", &config);
    let app = start(opts);
    let mut c = Client::connect(app.rpc_socket());
    assert_eq!(
        c.call("test_kv_log", None),
        json!(["test_kv_set_limit", "test_kv_set a", "test_kv_set b"])
    );
    let subsystems = c.call("framework_get_subsystems", None);
    // Module subsystems (sock, bdev, ...) register first; the test's comes last.
    let subsystems = subsystems.as_array().unwrap();
    assert_eq!(
        subsystems.last().unwrap(),
        &json!({"subsystem": "test_kv", "depends_on": []})
    );
    let dumped = c.call("framework_get_config", Some(json!({"name": "test_kv"})));
    assert_eq!(
        dumped,
        json!([
            {"method": "test_kv_set_limit", "params": {"limit": 5}},
            {"method": "test_kv_set", "params": {"key": "a", "value": "1"}},
            {"method": "test_kv_set", "params": {"key": "b", "value": "2"}}
        ])
    );
    let (code, msg) = c.call_err("framework_get_config", Some(json!({"name": "nope"})));
    assert_eq!(code, -32602);
    assert!(msg.contains("nope"));
    c.call("test_kv_set", Some(json!({"key": "c", "value": "3"})));
    // Save (as rpc.py save_config does) and start a second app from the saved file.
    let saved = json!({"subsystems": [{
        "subsystem": "test_kv",
        "config": c.call("framework_get_config", Some(json!({"name": "test_kv"}))),
    }]});
    app.shutdown_and_wait();
    let (opts, file2) = test_kv_options("roundtrip", &saved);
    let app = start(opts);
    let mut c = Client::connect(app.rpc_socket());
    let again = c.call("framework_get_config", Some(json!({"name": "test_kv"})));
    assert_eq!(again, saved["subsystems"][0]["config"]);
    app.shutdown_and_wait();
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(file2);
}

fn start_err(config: Value, tag: &str) -> String {
    let (opts, file) = test_kv_options(tag, &config);
    let socket = opts.rpc_socket.clone();
    let err = match app::start(opts) {
        Ok(_) => panic!("start-up with a bad config must fail"),
        Err(e) => e,
    };
    assert!(matches!(err, AppError::Config(_)), "{err:?}");
    assert!(
        !socket.exists(),
        "a failed start-up leaves no socket behind"
    );
    let _ = std::fs::remove_file(file);
    err.to_string()
}

#[test]
fn the_first_config_error_aborts_start_up_naming_the_method() {
    let msg = start_err(
        json!({"subsystems": [{"subsystem": "x", "config": [
            {"method": "test_kv_set_limit", "params": {"limit": 1}},
            {"method": "no_such_method", "params": {}}
        ]}]}),
        "cfg-unknown",
    );
    assert!(
        msg.contains("no_such_method") && msg.contains("Method not found"),
        "{msg}"
    );
    let msg = start_err(
        json!({"subsystems": [{"subsystem": "x", "config": [
            {"method": "test_kv_set", "params": {"key": "a", "valu": "1"}}
        ]}]}),
        "cfg-params",
    );
    assert!(msg.contains("test_kv_set") && msg.contains("valu"), "{msg}");
    let msg = start_err(
        json!({"subsystems": [{"subsystem": "x", "config": [
            {"method": "test_kv_set_limit", "params": {"limit": 1}},
            {"method": "test_kv_set", "params": {"key": "a", "value": "1"}},
            {"method": "test_kv_set", "params": {"key": "b", "value": "2"}}
        ]}]}),
        "cfg-fails",
    );
    assert!(msg.contains("test_kv_set") && msg.contains("full"), "{msg}");
    // A file that is not a config at all fails before anything starts.
    let file = write_config("cfg-shape", &json!([1, 2]));
    let mut opts = test_options("cfg-shape");
    opts.json_config = Some(file.clone());
    let err = app::start(opts).err().expect("not a config");
    assert!(err.to_string().contains("subsystems"), "{err}");
    let _ = std::fs::remove_file(file);
}

#[test]
fn json_config_with_wait_for_rpc_stops_after_the_startup_pass() {
    let config = json!({"subsystems": [{"subsystem": "test_kv", "config": [
        {"method": "test_kv_set_limit", "params": {"limit": 5}},
        {"method": "test_kv_set", "params": {"key": "a", "value": "1"}}
    ]}]});
    let (mut opts, file) = test_kv_options("cfg-wait", &config);
    opts.wait_for_rpc = true;
    let app = start(opts);
    let mut c = Client::connect(app.rpc_socket());
    assert_eq!(c.call("test_kv_log", None), json!(["test_kv_set_limit"]));
    assert_eq!(c.call("framework_start_init", None), true);
    app.shutdown_and_wait();
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_second_instance_on_the_same_socket_is_refused() {
    let opts = test_options("lock");
    let path = opts.rpc_socket.clone();
    let first = start(opts);
    let mut second = test_options("lock");
    second.rpc_socket = path.clone();
    let err = app::start(second).err().expect("the socket is in use");
    let msg = err.to_string();
    assert!(matches!(err, AppError::Rpc(_)), "{err:?}");
    assert!(msg.contains("in use") && msg.contains(".lock"), "{msg}");
    // The first instance is unharmed.
    let mut c = Client::connect(&path);
    assert!(c.call("spdk_get_version", None).is_object());
    first.shutdown_and_wait();
    // Once it is gone, the path is free again, and a stale socket file is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(stale);
    assert!(path.exists());
    let mut third = test_options("lock");
    third.rpc_socket = path.clone();
    let app = start(third);
    let mut c = Client::connect(&path);
    assert!(c.call("spdk_get_version", None).is_object());
    app.shutdown_and_wait();
}

#[test]
fn bad_options_fail_clearly() {
    let mut opts = test_options("badlevel");
    opts.log_level = Some("LOUD".into());
    let err = app::start(opts).err().expect("bad level");
    assert!(err.to_string().contains("LOUD"), "{err}");
    let mut opts = test_options("badflag");
    opts.log_flags = vec!["no_such_module".into()];
    let err = app::start(opts).err().expect("bad flag");
    assert!(err.to_string().contains("no_such_module"), "{err}");
    let mut opts = test_options("badsocket");
    opts.rpc_socket = "/nonexistent-dir/x.sock".into();
    let err = app::start(opts).err().expect("bad socket path");
    assert!(err.to_string().contains("/nonexistent-dir/x.sock"), "{err}");
}

#[test]
fn poll_only_and_two_reactors_serve_and_stop() {
    let mut opts = test_options("pollonly");
    opts.idle = pollux::reactor::IdleStrategy::PollOnly;
    opts.cores = vec![0, 1];
    let app = start(opts);
    let mut c = Client::connect(app.rpc_socket());
    let reactors = c.call("framework_get_reactors", None);
    let cores: Vec<u64> = reactors["reactors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["lcore"].as_u64().unwrap())
        .collect();
    assert_eq!(cores, vec![0, 1]);
    app.shutdown_and_wait();
}
