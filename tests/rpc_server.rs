//! The JSON-RPC server against raw socket clients, in process: SPDK's framing (pretty-printed
//! values back-to-back, split writes, batches), notifications, every error code, malformed
//! and oversized input, 64 concurrent clients, clients that vanish or stall mid-request, and
//! answers that arrive later from another reactor or thread.

mod common;

use common::{start, start_with_client, test_options, Client, TIMEOUT};
use pollux::app::RunningApp;
use pollux::reactor;
use pollux::rpc::{self, Allowed, RpcError};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[test]
fn pretty_printed_requests_back_to_back_in_one_write() {
    let (app, mut c) = start_with_client("pretty");
    c.send(
        b"{\n  \"jsonrpc\": \"2.0\",\n  \"method\": \"spdk_get_version\",\n  \"id\": 1\n}{\n  \"jsonrpc\": \"2.0\",\n  \"method\": \"log_get_level\",\n  \"id\": 2\n}\n  {\"jsonrpc\":\"2.0\",\"method\":\"rpc_get_methods\",\"id\":\"three\"}",
    );
    let a = c.read();
    assert_eq!(a["id"], 1);
    assert!(a["result"]["version"]
        .as_str()
        .unwrap()
        .starts_with("pollux v"));
    let b = c.read();
    assert_eq!(b["id"], 2);
    assert!(b["result"].is_string());
    let d = c.read();
    assert_eq!(d["id"], "three");
    assert!(d["result"]
        .as_array()
        .unwrap()
        .contains(&json!("framework_get_config")));
    app.shutdown_and_wait();
}

#[test]
fn a_request_split_across_writes() {
    let (app, mut c) = start_with_client("split");
    let req = br#"{"jsonrpc": "2.0", "method": "spdk_get_version", "id": 7}"#;
    for chunk in req.chunks(5) {
        c.send(chunk);
        std::thread::sleep(Duration::from_millis(2));
    }
    let a = c.read();
    assert_eq!(a["id"], 7);
    assert!(a["result"]["fields"]["major"].is_u64());
    app.shutdown_and_wait();
}

#[test]
fn batches_answer_with_an_array() {
    let (app, mut c) = start_with_client("batch");
    c.send(
        br#"[
          {"jsonrpc": "2.0", "method": "spdk_get_version", "id": 1},
          {"jsonrpc": "2.0", "method": "log_get_level"},
          {"jsonrpc": "2.0", "method": "no_such_method", "id": 2},
          {"jsonrpc": "1.0", "method": "spdk_get_version", "id": 3}
        ]"#,
    );
    let a = c.read();
    let answers = a.as_array().expect("a batch answer is an array");
    assert_eq!(answers.len(), 3, "{a}");
    assert_eq!(answers[0]["id"], 1);
    assert!(answers[0]["result"].is_object());
    assert_eq!(answers[1]["id"], 2);
    assert_eq!(answers[1]["error"]["code"], -32601);
    assert_eq!(answers[2]["id"], 3);
    assert_eq!(answers[2]["error"]["code"], -32600);
    // A batch of notifications only gets no answer; an empty batch is invalid.
    c.send(br#"[{"jsonrpc":"2.0","method":"log_get_level"}] []"#);
    let empty = c.read();
    assert_eq!(empty["error"]["code"], -32600, "{empty}");
    assert_eq!(empty["id"], Value::Null);
    app.shutdown_and_wait();
}

#[test]
fn notifications_get_only_error_answers() {
    let (app, mut c) = start_with_client("notify");
    c.send(br#"{"jsonrpc":"2.0","method":"log_set_flag","params":{"flag":"rpc"}}"#);
    c.send(br#"{"jsonrpc":"2.0","method":"no_such_method"}"#);
    let err = c.read();
    assert_eq!(err["id"], Value::Null);
    assert_eq!(err["error"]["code"], -32601);
    // The successful notification produced nothing, and it did take effect.
    let flags = c.call("log_get_flags", None);
    assert_eq!(flags["rpc"], true);
    c.call("log_clear_flag", Some(json!({"flag": "rpc"})));
    app.shutdown_and_wait();
}

#[test]
fn error_codes_and_messages() {
    let (app, mut c) = start_with_client("errors");
    // No params at all is fine.
    let v = c.call("spdk_get_version", None);
    assert!(v["version"].is_string());
    let (code, msg) = c.call_err("no_such_method", None);
    assert_eq!(code, -32601);
    assert!(msg.contains("Method not found"), "{msg}");
    let (code, msg) = c.call_err("framework_get_config", Some(json!({"name": 5})));
    assert_eq!(code, -32602);
    assert!(msg.contains("name"), "{msg}");
    let (code, msg) = c.call_err("framework_get_config", Some(json!({})));
    assert_eq!(code, -32602);
    assert!(msg.contains("name"), "{msg}");
    let (code, msg) = c.call_err(
        "rpc_get_methods",
        Some(json!({"current": true, "bogus_field": 1})),
    );
    assert_eq!(code, -32602);
    assert!(msg.contains("bogus_field"), "{msg}");
    let (code, msg) = c.call_err("log_set_level", Some(json!({"level": "LOUD"})));
    assert_eq!(code, -32602);
    assert!(msg.contains("level"), "{msg}");
    let (code, msg) = c.call_err("spdk_get_version", Some(json!({"x": 1})));
    assert_eq!(code, -32602, "{msg}");
    // Invalid request objects keep their id when they have one.
    c.send(br#"{"id": 9, "method": "spdk_get_version"}"#);
    let a = c.read();
    assert_eq!(
        (a["id"].clone(), a["error"]["code"].clone()),
        (json!(9), json!(-32600))
    );
    c.send(br#"{"jsonrpc":"2.0","id":10,"method":"spdk_get_version","params":"str"}"#);
    let a = c.read();
    assert_eq!(a["error"]["code"], -32600);
    assert!(a["error"]["message"].as_str().unwrap().contains("params"));
    c.send(b"42 ");
    let a = c.read();
    assert_eq!(a["error"]["code"], -32600);
    // The connection is still usable after all of that.
    assert!(c.call("log_get_level", None).is_string());
    app.shutdown_and_wait();
}

/// Checks that the server closed `conn` and still serves a new client; stops `app`.
fn closed_while_others_are_served(app: RunningApp, mut conn: Client) {
    assert!(conn.try_read().is_none(), "the connection must be closed");
    let mut good = Client::connect(app.rpc_socket());
    assert!(good.call("spdk_get_version", None).is_object());
    app.shutdown_and_wait();
}

#[test]
fn malformed_json_closes_only_that_connection() {
    let app = start(test_options("malformed"));
    let mut bad = Client::connect(app.rpc_socket());
    bad.send(br#"{"jsonrpc": "2.0", "method": "spdk_get_version", "id": 1} {"jsonrpc": 2.0,, }"#);
    let first = bad.read();
    assert_eq!(first["id"], 1);
    let err = bad.read();
    assert_eq!(err["error"]["code"], -32700, "{err}");
    assert_eq!(err["id"], Value::Null);
    closed_while_others_are_served(app, bad);
}

#[test]
fn oversized_request_is_refused_and_closed() {
    let app = start(test_options("oversized"));
    let mut big = Client::connect(app.rpc_socket());
    // An unterminated string longer than the 1 MiB request limit.
    let mut payload = br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"s":""#.to_vec();
    payload.resize(
        payload.len() + rpc::server::MAX_REQUEST_BYTES + 100_000,
        b'a',
    );
    // The server may close before we finish writing; that is the point.
    let _ = std::io::Write::write_all(&mut big.stream, &payload);
    let err = big.read();
    assert_eq!(err["error"]["code"], -32700, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("exceed"));
    closed_while_others_are_served(app, big);
}

#[test]
fn sixty_four_concurrent_clients() {
    let app = start(test_options("many"));
    let mut clients: Vec<Client> = (0..64).map(|_| Client::connect(app.rpc_socket())).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(
            json!({"jsonrpc": "2.0", "id": i, "method": "thread_get_stats"})
                .to_string()
                .as_bytes(),
        );
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let a = c.read();
        assert_eq!(a["id"], i);
        assert_eq!(a["result"]["threads"].as_array().unwrap().len(), 1);
    }
    // And 64 threads hammering at once.
    let path = app.rpc_socket().to_path_buf();
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&path);
                for j in 0..5u64 {
                    let a = c.request(i * 100 + j, "spdk_get_version", None);
                    assert!(a["result"].is_object());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    app.shutdown_and_wait();
}

#[test]
fn vanishing_and_stalled_clients_do_not_affect_others() {
    let app = start(test_options("stall"));
    // Disconnects in the middle of a request.
    let mut vanishing = Client::connect(app.rpc_socket());
    vanishing.send(br#"{"jsonrpc": "2.0", "method": "spdk_get_v"#);
    drop(vanishing);
    // Sends half a request and then nothing.
    let mut half = Client::connect(app.rpc_socket());
    half.send(br#"{"jsonrpc": "2.0", "met"#);
    // Floods requests and never reads an answer.
    let mut flooder = Client::connect(app.rpc_socket());
    flooder.stream.set_nonblocking(true).unwrap();
    let request = br#"{"jsonrpc":"2.0","id":1,"method":"rpc_get_methods"}"#;
    let mut flooded = 0usize;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last_progress = Instant::now();
    let mut pushed_back = false;
    let mut offset = 0;
    while Instant::now() < deadline {
        match std::io::Write::write(&mut flooder.stream, &request[offset..]) {
            Ok(n) => {
                offset += n;
                if offset == request.len() {
                    offset = 0;
                    flooded += 1;
                }
                last_progress = Instant::now();
            }
            Err(_) if last_progress.elapsed() > Duration::from_millis(300) => {
                // The server stopped reading it (back-pressure): exactly what we want.
                pushed_back = true;
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    eprintln!("the flooder wrote {flooded} requests before the server stopped reading");
    assert!(pushed_back, "the server never pushed back");
    let mut good = Client::connect(app.rpc_socket());
    let start = Instant::now();
    for _ in 0..20 {
        assert!(good.call("spdk_get_version", None).is_object());
    }
    assert!(start.elapsed() < TIMEOUT);
    // The stalled client can still complete its request.
    half.send(br#"hod": "spdk_get_version", "id": 5}"#);
    assert_eq!(half.read()["id"], 5);
    drop(flooder);
    assert!(good.call("spdk_get_version", None).is_object());
    app.shutdown_and_wait();
}

#[test]
fn answers_from_another_reactor_and_from_a_plain_thread() {
    let mut opts = test_options("async");
    opts.cores = vec![0, 1];
    opts.extra_init = Some(Box::new(|| {
        rpc::register_async("test_answer_on_core_1", Allowed::Both, |_, responder| {
            reactor::send_to(1, move || {
                responder.ok(json!({"answered_on": reactor::current_core()}))
            });
        });
        rpc::register_async("test_answer_from_thread", Allowed::Both, |_, responder| {
            std::thread::spawn(move || {
                // Long enough for the main reactor to fall asleep.
                std::thread::sleep(Duration::from_millis(100));
                responder.ok(json!("late"));
            });
        });
        rpc::register_async("test_never_answers", Allowed::Both, |_, responder| {
            drop(responder);
        });
        rpc::register("test_fails", Allowed::Both, |_| {
            Err(RpcError::failed("it failed"))
        });
    }));
    let app = start(opts);
    let mut c = Client::connect(app.rpc_socket());
    assert_eq!(c.call("test_answer_on_core_1", None)["answered_on"], 1);
    let t0 = Instant::now();
    assert_eq!(c.call("test_answer_from_thread", None), "late");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let (code, _) = c.call_err("test_never_answers", None);
    assert_eq!(code, -32603);
    let (code, msg) = c.call_err("test_fails", None);
    assert_eq!((code, msg.as_str()), (-1, "it failed"));
    let stats = c.call("thread_get_stats", None);
    assert_eq!(stats["threads"].as_array().unwrap().len(), 2);
    app.shutdown_and_wait();
}

#[test]
fn statistics_have_spdks_shape() {
    let (app, mut c) = start_with_client("stats");
    let r = c.call("framework_get_reactors", None);
    assert_eq!(r["tick_rate"], 1_000_000_000u64);
    assert_eq!(r["pid"], std::process::id());
    let reactor = &r["reactors"][0];
    assert_eq!(reactor["lcore"], 0);
    assert!(reactor["busy"].is_u64() && reactor["idle"].is_u64());
    assert_eq!(reactor["lw_threads"][0]["cpumask"], "1");
    let s = c.call("thread_get_stats", None);
    let t = &s["threads"][0];
    assert_eq!(t["name"], "reactor_0");
    assert_eq!(t["active_pollers_count"], 1, "the RPC server's poller: {s}");
    let p = c.call("thread_get_pollers", None);
    let active = p["threads"][0]["active_pollers"].as_array().unwrap();
    assert!(active.iter().any(|p| p["name"] == "rpc_server"), "{p}");
    assert!(active[0]["run_count"].as_u64().unwrap() > 0);
    let subsystems = c.call("framework_get_subsystems", None);
    assert!(subsystems.is_array());
    app.shutdown_and_wait();
}

#[test]
fn log_methods_round_trip() {
    let (app, mut c) = start_with_client("log");
    let before = c.call("log_get_level", None);
    assert_eq!(
        c.call("log_set_level", Some(json!({"level": "DEBUG"}))),
        true
    );
    assert_eq!(c.call("log_get_level", None), "DEBUG");
    c.call("log_set_level", Some(json!({"level": before})));
    assert_eq!(c.call("log_set_flag", Some(json!({"flag": "bdev"}))), true);
    assert_eq!(c.call("log_get_flags", None)["bdev"], true);
    c.call("log_clear_flag", Some(json!({"flag": "bdev"})));
    assert_eq!(c.call("log_get_flags", None)["bdev"], false);
    let (code, msg) = c.call_err("log_set_flag", Some(json!({"flag": "nope"})));
    assert_eq!(code, -32602);
    assert!(msg.contains("nope"));
    let all = c.call("rpc_get_methods", Some(json!({"include_aliases": true})));
    assert!(all.as_array().unwrap().contains(&json!("get_rpc_methods")));
    // An alias reaches its method.
    assert!(c.call("get_spdk_version", None)["version"].is_string());
    app.shutdown_and_wait();
}

#[test]
fn spdk_kill_instance_stops_the_app() {
    let (app, mut c) = start_with_client("kill");
    let (code, msg) = c.call_err("spdk_kill_instance", Some(json!({"sig_name": "SIGKILL"})));
    assert_eq!(code, -32602);
    assert!(msg.contains("sig_name"));
    assert_eq!(
        c.call("spdk_kill_instance", Some(json!({"sig_name": "SIGTERM"}))),
        true
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = app.handle().clone();
    std::thread::spawn(move || {
        handle.wait();
        let _ = tx.send(());
    });
    rx.recv_timeout(TIMEOUT).expect("the app stops");
    assert!(c.try_read().is_none(), "the server closed the connection");
    assert!(!app.rpc_socket().exists(), "the socket file is removed");
}

#[test]
fn random_bytes_never_hurt_the_server() {
    let app = start(test_options("garbage"));
    // Deterministic (seeded) noise mixed with JSON fragments, split at random points.
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let mut next = move || rng.u64(..);
    let fragments: [&[u8]; 10] = [
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b"\\u12",
        b"\"jsonrpc\":\"2.0\",",
        b"\"method\":",
        b"\"id\":",
        b"1e99999",
    ];
    for _ in 0..40 {
        let mut c = Client::connect(app.rpc_socket());
        let mut bytes = Vec::new();
        for _ in 0..(next() % 64) {
            if next() % 2 == 0 {
                bytes.extend_from_slice(fragments[(next() % 10) as usize]);
            } else {
                bytes.push((next() % 256) as u8);
            }
        }
        let split = if bytes.is_empty() {
            0
        } else {
            (next() as usize) % bytes.len()
        };
        let _ = std::io::Write::write_all(&mut c.stream, &bytes[..split]);
        let _ = std::io::Write::write_all(&mut c.stream, &bytes[split..]);
        drop(c);
    }
    let mut good = Client::connect(app.rpc_socket());
    assert!(good.call("spdk_get_version", None).is_object());
    app.shutdown_and_wait();
}

/// A method answering with JSON text already serialized (`register_serialized`) answers
/// alone, inside a batch (where it is parsed back into the array) and as a notification
/// (no answer), with string and numeric ids.
#[test]
fn serialized_answers_alone_in_batches_and_as_notifications() {
    let mut opts = test_options("serialized");
    opts.extra_init = Some(Box::new(|| {
        rpc::register_serialized("test_serialized", Allowed::Both, |p| {
            let n = p.and_then(|v| v["n"].as_u64()).unwrap_or(0);
            if n == 13 {
                return Err(RpcError::invalid_params("n: unlucky"));
            }
            rpc::RawValue::from_string(format!("[{n},{{\"x\":\"y\"}}]"))
                .map_err(|e| RpcError::internal(e.to_string()))
        });
    }));
    let app = start(opts);
    let mut c = Client::connect(app.rpc_socket());
    c.send(br#"{"jsonrpc":"2.0","method":"test_serialized","params":{"n":4},"id":"a"}"#);
    let a = c.read();
    assert_eq!(
        a,
        json!({"jsonrpc": "2.0", "id": "a", "result": [4, {"x": "y"}]})
    );
    c.send(
        br#"[{"jsonrpc":"2.0","method":"test_serialized","params":{"n":5},"id":1},
            {"jsonrpc":"2.0","method":"test_serialized","params":{"n":6}},
            {"jsonrpc":"2.0","method":"test_serialized","params":{"n":13},"id":2}]"#,
    );
    let b = c.read();
    let answers = b.as_array().expect("a batch answer is an array");
    assert_eq!(answers.len(), 2, "{b}");
    assert_eq!(answers[0]["result"], json!([5, {"x": "y"}]));
    assert_eq!(answers[1]["error"]["code"], -32602);
    c.send(br#"{"jsonrpc":"2.0","method":"test_serialized","params":{"n":7}}{"jsonrpc":"2.0","method":"spdk_get_version","id":9}"#);
    assert_eq!(c.read()["id"], 9, "the notification got no answer");
    app.shutdown_and_wait();
}
