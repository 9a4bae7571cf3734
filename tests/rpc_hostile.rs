//! Control-plane hostility: more than 1000 malformed or hostile RPCs at one in-process server
//! (wrong param types, unknown methods, invalid requests, invalid UTF-8, 100k-deep nesting,
//! strings just under and just over the 1 MiB request limit, slowloris clients trickling
//! requests a byte at a time, clients that pipeline requests and never read the answers,
//! clients that vanish mid-request) while a well-behaved client keeps calling
//! `spdk_get_version` and must get every answer, promptly, throughout. Afterwards the server
//! still answers and the process's open fd count is back to its baseline (/proc/self/fd), so
//! no hostile client leaked a descriptor. Everything is bounded: the whole test takes a few
//! seconds. The tests of this file run one at a time (the fd count is process-wide).

mod common;

use common::{start, start_with_client, test_options, Client};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const LIMIT: usize = pollux::rpc::server::MAX_REQUEST_BYTES;
/// The slowest answer the well-behaved client may see while the server is under attack.
const MAX_GOOD_LATENCY: Duration = Duration::from_secs(2);

/// The tests here count the process's fds: they must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Waits (bounded) until the fd count is back to `baseline`; returns the last count.
fn settle_fds(baseline: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = open_fds();
        if n <= baseline || Instant::now() > deadline {
            return n;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn request(id: u64, method: &str, params: Option<Value>) -> Vec<u8> {
    let mut r = json!({"jsonrpc": "2.0", "id": id, "method": method});
    if let Some(p) = params {
        r["params"] = p;
    }
    r.to_string().into_bytes()
}

/// Sends `bytes` on a fresh connection and returns the first answer (None: closed without
/// one). The connection is closed on return.
fn one_shot(path: &Path, bytes: &[u8]) -> Option<Value> {
    let mut c = Client::connect(path);
    // A peer that closes while we still write (over-limit input) is fine: read what it said.
    let _ = c.stream.write_all(bytes);
    c.try_read()
}

fn error_code(answer: &Value) -> i64 {
    answer["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("an error answer: {answer}"))
}

/// The well-behaved client: calls `spdk_get_version` until told to stop; returns how many
/// answers it got and the slowest one.
fn good_client(path: &Path, stop: Arc<AtomicBool>) -> thread::JoinHandle<(u64, Duration)> {
    let mut c = Client::connect(path);
    thread::spawn(move || {
        let mut worst = Duration::ZERO;
        let mut id = 0;
        while !stop.load(Ordering::Relaxed) {
            id += 1;
            let t = Instant::now();
            let answer = c.request(id, "spdk_get_version", None);
            worst = worst.max(t.elapsed());
            assert!(
                answer["result"]["version"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("pollux")),
                "{answer}"
            );
            thread::sleep(Duration::from_millis(1));
        }
        (id, worst)
    })
}

/// Wrong types, unknown methods and invalid request objects, pipelined on one connection:
/// each gets its own error answer, in order. Returns how many requests were sent.
fn pipelined_errors(path: &Path) -> usize {
    let mut cases: Vec<(Vec<u8>, i64)> = Vec::new();
    let wrong_types = [
        ("sock_impl_get_options", json!({"impl_name": 7})),
        ("sock_impl_get_options", json!({"impl_name": ["posix"]})),
        (
            "sock_impl_set_options",
            json!({"impl_name": "posix", "recv_buf_size": "big"}),
        ),
        (
            "sock_impl_set_options",
            json!({"impl_name": "posix", "recv_buf_size": -1}),
        ),
        (
            "sock_impl_set_options",
            json!({"impl_name": "posix", "send_buf_size": 4294967296u64}),
        ),
        (
            "sock_impl_set_options",
            json!({"impl_name": "posix", "enable_quickack": 1}),
        ),
        ("sock_set_default_impl", json!({"impl_name": null})),
        ("log_set_level", json!({"level": {"deep": true}})),
        ("log_set_flag", json!({"flag": false})),
        ("framework_get_config", json!({"name": 1.5})),
        ("spdk_kill_instance", json!({"sig_name": 15})),
        ("rpc_get_methods", json!({"current": "yes"})),
        ("spdk_get_version", json!({"unexpected": 1})),
        ("sock_impl_get_options", json!([1, 2, 3])),
        // Found by the rpc_params fuzzer: by-position params decode as a sequence.
        ("log_set_level", json!([])),
        ("log_set_level", json!([1])),
        ("log_get_level", json!({"level": "DEBUG"})),
    ];
    for i in 0..500 {
        let (method, params) = &wrong_types[i % wrong_types.len()];
        cases.push((request(i as u64, method, Some(params.clone())), -32602));
    }
    for i in 500..700 {
        let method = format!("no_such_method_{i}_{}", "x".repeat(i % 97));
        cases.push((request(i as u64, &method, None), -32601));
    }
    let invalid = [
        r#"{"jsonrpc": "1.0", "id": ID, "method": "spdk_get_version"}"#,
        r#"{"id": ID, "method": "spdk_get_version"}"#,
        r#"{"jsonrpc": "2.0", "id": ID, "method": 42}"#,
        r#"{"jsonrpc": "2.0", "id": ID, "method": "spdk_get_version", "params": "str"}"#,
        r#"{"jsonrpc": "2.0", "id": ID, "method": "spdk_get_version", "extra": 1}"#,
        r#"[]"#,
        r#"17"#,
        r#""just a string""#,
    ];
    for i in 700..800 {
        let text = invalid[i % invalid.len()].replace("ID", &i.to_string());
        cases.push((text.into_bytes(), -32600));
    }
    let mut c = Client::connect(path);
    let sender = {
        let mut w = c.stream.try_clone().unwrap();
        let all: Vec<u8> = cases.iter().flat_map(|(b, _)| b.clone()).collect();
        thread::spawn(move || w.write_all(&all).unwrap())
    };
    // JSON-RPC answers may come in any order (the server answers an invalid request at
    // once, a call when the method answers): match them by id.
    let mut want: HashMap<u64, i64> = HashMap::new();
    let mut anonymous = 0;
    for (i, (bytes, code)) in cases.iter().enumerate() {
        let value: Option<Value> = serde_json::from_slice(bytes).ok();
        if value.as_ref().is_some_and(|v| v.get("id").is_some()) {
            want.insert(i as u64, *code);
        } else {
            anonymous += 1;
        }
    }
    for _ in 0..cases.len() {
        let answer = c.read();
        let code = error_code(&answer);
        match answer["id"].as_u64() {
            Some(id) => {
                let expected = want.remove(&id).unwrap_or_else(|| panic!("{answer}"));
                assert_eq!(code, expected, "{answer}");
            }
            None => {
                assert!(answer["id"].is_null(), "{answer}");
                assert_eq!(code, -32600, "{answer}");
                anonymous -= 1;
            }
        }
        if code == -32602 {
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.starts_with("invalid params"), "{message}");
        }
    }
    assert!(want.is_empty() && anonymous == 0, "answers missing");
    sender.join().unwrap();
    cases.len()
}

/// Framing attacks, each on its own connection (a parse error closes it). Returns how many.
fn fatal_inputs(path: &Path) -> usize {
    let mut sent = 0;
    // Invalid UTF-8 inside and outside strings.
    for i in 0..100u8 {
        let mut bytes = br#"{"jsonrpc": "2.0", "id": 1, "method": "spdk_get_"#.to_vec();
        bytes.extend_from_slice(&[0xc3, 0x28, 0xff, 0x80 | (i % 64)]);
        bytes.extend_from_slice(br#"version"}"#);
        if i % 2 == 1 {
            bytes = vec![0xfe, 0xff, i];
        }
        let answer = one_shot(path, &bytes).expect("a parse error answer");
        assert_eq!(error_code(&answer), -32700, "{answer}");
        sent += 1;
    }
    // Deep nesting: serde_json's recursion limit makes it a parse error, not a stack
    // overflow, whether the nesting is complete, incomplete, arrays or objects.
    let deep_arrays = "[".repeat(100_000);
    let deep_closed = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_objects = r#"{"a":"#.repeat(100_000);
    let deep_params = format!(
        r#"{{"jsonrpc": "2.0", "id": 1, "method": "log_set_level", "params": {{"level": {}1{}}}}}"#,
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    for i in 0..40 {
        let bytes = match i % 4 {
            0 => deep_arrays.as_bytes(),
            1 => deep_closed.as_bytes(),
            2 => deep_objects.as_bytes(),
            _ => deep_params.as_bytes(),
        };
        let answer = one_shot(path, bytes).expect("a parse error answer");
        assert_eq!(error_code(&answer), -32700, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("recursion limit"),
            "{answer}"
        );
        sent += 1;
    }
    // Strings just under the limit are requests (a bad level, named); just over, refused.
    for excess in [-4096i64, -600, 1, 4096, 70_000] {
        let filler = (LIMIT as i64 + excess) as usize;
        let head =
            r#"{"jsonrpc": "2.0", "id": 9, "method": "log_set_level", "params": {"level": ""#;
        let tail = r#""}}"#;
        let mut bytes = head.as_bytes().to_vec();
        bytes.resize(filler - tail.len(), b'x');
        bytes.extend_from_slice(tail.as_bytes());
        let answer = one_shot(path, &bytes).expect("an answer");
        if excess < 0 {
            assert_eq!(
                error_code(&answer),
                -32602,
                "{}",
                &answer.to_string()[..200]
            );
            assert!(answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("level"));
        } else {
            // Over the limit: refused as a parse error, whether or not the server saw the
            // end of the value (it may, within one read chunk of the limit).
            let code = error_code(&answer);
            assert!(code == -32700 || code == -32602, "{code}");
        }
        sent += 1;
    }
    // Garbage inside a large open value, then a half-close: still answered (the server's
    // read gate parses what is left at end of input).
    let mut bytes = br#"{"jsonrpc": "2.0", "id": 1, "method": "x", "params": [0"#.to_vec();
    while bytes.len() < 20_000 {
        bytes.extend_from_slice(b",0");
    }
    bytes.extend_from_slice(b",oops");
    let mut c = Client::connect(path);
    c.send(&bytes);
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let answer = c.read();
    assert_eq!(error_code(&answer), -32700, "{answer}");
    assert!(c.try_read().is_none());
    sent += 1;
    // An unterminated string over the limit is refused once the limit is passed.
    let mut bytes = br#"{"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"s": ""#.to_vec();
    bytes.resize(LIMIT + 100_000, b'y');
    let answer = one_shot(path, &bytes).expect("an answer");
    assert_eq!(error_code(&answer), -32700);
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("may not exceed"));
    sent + 1
}

/// Clients that trickle a valid request one byte at a time: each gets its answer.
fn slowloris(path: &Path, clients: usize) -> Vec<thread::JoinHandle<()>> {
    (0..clients)
        .map(|i| {
            let mut c = Client::connect(path);
            thread::spawn(move || {
                let pretty = format!(
                    "{{\n  \"jsonrpc\": \"2.0\",\n  \"method\": \"sock_impl_get_options\",\n  \"id\": {i},\n  \"params\": {{\"impl_name\": \"posix\"}}\n}}"
                );
                for b in pretty.as_bytes() {
                    c.send(std::slice::from_ref(b));
                    thread::sleep(Duration::from_micros(500));
                }
                let answer = c.read();
                assert_eq!(answer["id"], i, "{answer}");
                assert!(answer["result"]["recv_buf_size"].is_u64(), "{answer}");
            })
        })
        .collect()
}

/// Slowloris clients with a large incomplete request: each sends most of a 1 MiB array,
/// then trickles more elements for `duration` and finally vanishes. A server that re-parses
/// the whole buffered request for every byte that arrives spends its main reactor on them.
fn heavy_slowloris(
    path: &Path,
    clients: usize,
    duration: Duration,
) -> Vec<thread::JoinHandle<usize>> {
    (0..clients)
        .map(|_| {
            let mut s = UnixStream::connect(path).unwrap();
            thread::spawn(move || {
                let mut head = br#"{"jsonrpc": "2.0", "id": 1, "method": "log_set_level", "params": {"level": [0"#.to_vec();
                while head.len() < LIMIT - 200_000 {
                    head.extend_from_slice(b",0");
                }
                s.write_all(&head).unwrap();
                let deadline = Instant::now() + duration;
                let mut trickled = 0;
                while Instant::now() < deadline {
                    s.write_all(b",0").unwrap();
                    trickled += 1;
                    thread::sleep(Duration::from_micros(200));
                }
                trickled
            })
        })
        .collect()
}

/// Clients that pipeline requests with large answers and never read them, then vanish;
/// and clients that send half a request and vanish. Returns the streams to drop later and
/// how many requests they sent.
fn non_readers(path: &Path) -> (Vec<UnixStream>, usize) {
    let mut streams = Vec::new();
    let mut sent = 0;
    let req = request(1, "rpc_get_methods", None);
    for _ in 0..8 {
        let s = UnixStream::connect(path).unwrap();
        s.set_nonblocking(true).unwrap();
        let mut w = &s;
        // Write until the socket is full: the server stops reading once its answer buffer
        // for this client is full, so this ends.
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            match w.write(&req) {
                Ok(n) if n == req.len() => sent += 1,
                Ok(_) => break, // a partial request: leave it there
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        streams.push(s);
    }
    for i in 0..20 {
        let mut s = UnixStream::connect(path).unwrap();
        let half = request(i, "spdk_get_version", None);
        s.write_all(&half[..half.len() / 2]).unwrap();
        sent += 1;
        if i % 2 == 0 {
            streams.push(s); // vanishes later
        } // else vanishes now
    }
    (streams, sent)
}

#[test]
fn a_thousand_hostile_rpcs_while_a_good_client_is_served() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let app = start(test_options("hostile"));
    let path = app.rpc_socket().to_path_buf();
    let baseline = open_fds();
    let stop = Arc::new(AtomicBool::new(false));
    let good = good_client(&path, stop.clone());
    let started = Instant::now();

    let loris = slowloris(&path, 16);
    let heavy = heavy_slowloris(&path, 4, Duration::from_secs(1));
    let (lingering, mut hostile) = non_readers(&path);
    hostile += pipelined_errors(&path);
    hostile += fatal_inputs(&path);
    hostile += loris.len();
    for l in loris {
        l.join().expect("a slowloris client got its answer");
    }
    for h in heavy {
        let trickled = h.join().unwrap();
        assert!(trickled > 0);
        hostile += 1;
    }
    drop(lingering);
    stop.store(true, Ordering::Relaxed);
    let (answers, worst) = good.join().expect("the good client was served throughout");
    let elapsed = started.elapsed();
    eprintln!(
        "hostile requests {hostile} in {elapsed:?}; good client: {answers} answers, slowest {worst:?}"
    );
    assert!(hostile >= 1000, "only {hostile} hostile requests");
    assert!(answers >= 10, "the good client got only {answers} answers");
    assert!(worst < MAX_GOOD_LATENCY, "the good client waited {worst:?}");

    // The server still works and released every hostile connection.
    let mut c = Client::connect(&path);
    assert!(c.call("spdk_get_version", None)["version"].is_string());
    drop(c);
    let fds = settle_fds(baseline);
    assert_eq!(fds, baseline, "fds leaked: {fds} open, {baseline} before");
    app.shutdown_and_wait();
}

#[test]
fn a_slow_reader_gets_every_answer_in_order() {
    // Back-pressure must not lose answers: 2000 pipelined requests with large answers,
    // read slowly, all arrive in order.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (app, mut c) = start_with_client("slowreader");
    let all: Vec<u8> = (0..2000u64)
        .flat_map(|i| request(i, "rpc_get_methods", None))
        .collect();
    let mut w = c.stream.try_clone().unwrap();
    let writer = thread::spawn(move || w.write_all(&all).unwrap());
    thread::sleep(Duration::from_millis(200));
    for i in 0..2000u64 {
        let answer = c.read();
        assert_eq!(answer["id"], i);
        assert!(answer["result"].is_array());
    }
    writer.join().unwrap();
    let mut rest = [0u8; 1];
    c.stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    assert!(c.stream.read(&mut rest).is_err(), "no extra answers");
    app.shutdown_and_wait();
}
