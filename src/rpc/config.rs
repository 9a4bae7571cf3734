//! Loading an SPDK-format JSON config (`--json FILE`): `{"subsystems": [{"subsystem": "bdev",
//! "config": [{"method": .., "params": ..}, ..]}, ..]}`.
//!
//! Like SPDK it runs in two passes over the entries in file order: first every method allowed
//! in the STARTUP state, then `framework_start_init`, then the methods allowed only at
//! RUNTIME. Each entry is an ordinary in-process RPC call (state rules included) whose answer
//! may come later from any reactor; the loader continues on the main reactor. The first error
//! stops the load and is reported with the method's name.

use super::{lookup, Allowed, Responder, RpcResult, RpcState};
use crate::reactor::{self, AppHandle};
use serde_json::Value;

/// One `{"method", "params"}` entry of a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigEntry {
    pub subsystem: String,
    pub method: String,
    pub params: Option<Value>,
}

/// Parses a config file's text into its entries, in file order.
pub fn parse(text: &str) -> Result<Vec<ConfigEntry>, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let subsystems = root
        .get("subsystems")
        .and_then(Value::as_array)
        .ok_or("the top level must be an object with a \"subsystems\" array")?;
    let mut entries = Vec::new();
    for (i, sub) in subsystems.iter().enumerate() {
        let name = sub
            .get("subsystem")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("subsystems[{i}] lacks a \"subsystem\" name"))?;
        let config = match sub.get("config") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(c)) => c,
            Some(_) => return Err(format!("subsystem {name}: \"config\" must be an array")),
        };
        // SPDK writes a batch of calls as an array element; its calls run in order.
        let flat = config.iter().enumerate().flat_map(|(j, e)| match e {
            Value::Array(batch) => batch.iter().map(|e| (j, e)).collect::<Vec<_>>(),
            e => vec![(j, e)],
        });
        for (j, entry) in flat {
            let method = entry
                .get("method")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("subsystem {name}: config[{j}] lacks a \"method\""))?;
            entries.push(ConfigEntry {
                subsystem: name.to_string(),
                method: method.to_string(),
                params: entry.get("params").cloned(),
            });
        }
    }
    Ok(entries)
}

/// Reads and parses a config file.
pub fn read_file(path: &std::path::Path) -> Result<Vec<ConfigEntry>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Startup,
    Init,
    Runtime,
    Done,
}

type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

struct Loader {
    entries: Vec<ConfigEntry>,
    pass: Pass,
    next: usize,
    /// Run `framework_start_init` and the RUNTIME pass (false with `--wait-for-rpc`).
    initialize: bool,
    app: AppHandle,
    main: u32,
    done: Done,
}

/// Applies `entries` on the main reactor and calls `done` there with the outcome. With
/// `initialize` false only the STARTUP pass runs (the application then waits for
/// `framework_start_init`); RUNTIME-only entries are skipped with a warning.
pub fn apply(
    entries: Vec<ConfigEntry>,
    initialize: bool,
    done: impl FnOnce(Result<(), String>) + Send + 'static,
) {
    let loader = Loader {
        entries,
        pass: Pass::Startup,
        next: 0,
        initialize,
        app: reactor::app(),
        main: reactor::main_core(),
        done: Box::new(done),
    };
    step(Box::new(loader));
}

/// Runs `f` on the main reactor, from whichever thread an answer arrived on.
fn on_main(app: &AppHandle, main: u32, f: impl FnOnce() + Send + 'static) {
    if reactor::current_core().is_some() {
        // On a reactor thread a full queue defers instead of failing.
        reactor::send_to(main, f);
        return;
    }
    let mut msg: Box<dyn FnOnce() + Send> = Box::new(f);
    loop {
        match app.send_to(main, msg) {
            Ok(()) => return,
            Err(e) if e.reason == reactor::SendErrorKind::Full => {
                msg = e.msg;
                std::thread::yield_now();
            }
            Err(e) => {
                tracing::warn!(reason = ?e.reason, "config load abandoned: application stopping");
                return;
            }
        }
    }
}

fn belongs_to(pass: Pass, allowed: Allowed) -> bool {
    match pass {
        Pass::Startup => allowed.permits(RpcState::Startup),
        Pass::Runtime => allowed == Allowed::RuntimeOnly,
        Pass::Init | Pass::Done => false,
    }
}

fn step(mut loader: Box<Loader>) {
    loop {
        match loader.pass {
            Pass::Startup | Pass::Runtime => {
                let Some(i) = (loader.next..loader.entries.len()).find(|&i| {
                    // Unknown methods stop the load in the first pass.
                    lookup(&loader.entries[i].method).map_or(loader.pass == Pass::Startup, |m| {
                        belongs_to(loader.pass, m.allowed)
                    })
                }) else {
                    loader.pass = match loader.pass {
                        Pass::Startup if loader.initialize => Pass::Init,
                        Pass::Startup => {
                            let skipped = loader
                                .entries
                                .iter()
                                .filter(|e| {
                                    lookup(&e.method)
                                        .is_some_and(|m| m.allowed == Allowed::RuntimeOnly)
                                })
                                .count();
                            if skipped > 0 {
                                tracing::warn!(
                                    skipped,
                                    "--wait-for-rpc: RUNTIME entries of the config are not applied"
                                );
                            }
                            Pass::Done
                        }
                        _ => Pass::Done,
                    };
                    loader.next = 0;
                    continue;
                };
                loader.next = i + 1;
                let entry = loader.entries[i].clone();
                tracing::debug!(subsystem = %entry.subsystem, method = %entry.method, "config entry");
                return call_then_step(loader, entry.method, entry.params);
            }
            Pass::Init => {
                loader.pass = Pass::Runtime;
                loader.next = 0;
                if super::state() == RpcState::Startup {
                    return call_then_step(loader, "framework_start_init".to_string(), None);
                }
            }
            Pass::Done => return (loader.done)(Ok(())),
        }
    }
}

fn call_then_step(loader: Box<Loader>, method: String, params: Option<Value>) {
    let name = method.clone();
    let responder = Responder::new(move |result: RpcResult| {
        let (app, main) = (loader.app.clone(), loader.main);
        on_main(&app, main, move || match result {
            Ok(_) => step(loader),
            Err(e) => (loader.done)(Err(format!("config method {name} failed: {e}"))),
        })
    });
    super::call(&method, params, responder);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spdk_config_files() {
        let entries = parse(
            r#"{"subsystems": [
                {"subsystem": "a", "config": [{"method": "m1", "params": {"x": 1}}, {"method": "m2"}]},
                {"subsystem": "b", "config": null},
                {"subsystem": "d", "config": [[{"method": "m3"}, {"method": "m4"}]]},
                {"subsystem": "c"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[3].method, "m4");
        assert_eq!(entries[0].method, "m1");
        assert_eq!(entries[0].params, Some(serde_json::json!({"x": 1})));
        assert_eq!(entries[1].params, None);
        assert!(parse("[]").unwrap_err().contains("subsystems"));
        assert!(parse(r#"{"subsystems":[{"subsystem":"a","config":[{}]}]}"#)
            .unwrap_err()
            .contains("method"));
        assert!(parse("{").unwrap_err().contains("JSON"));
    }
}
