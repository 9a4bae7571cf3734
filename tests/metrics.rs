//! The Prometheus endpoint of the real binary (`pollux --metrics-addr`): scraped before,
//! during and after a pollux-perf load and parsed with the reference parser (the PyPI
//! package `prometheus_client`, installed by `scripts/py-tools.sh` into `.ci/py-tools`), the
//! counters move with the traffic; bad requests (wrong path or method, garbage, huge or too
//! many headers, slow and silent clients, a flood of connections) get an HTTP error or a
//! close within bounded time, and the RPC server answers all along.

mod common;

use common::target_proc::{load_result, TargetProc, BDEV, NQN};
use common::{free_port, skip, Client};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The python with prometheus_client: `POLLUX_PY_TOOLS` (a venv) or `.ci/py-tools`.
fn py_tools() -> Option<PathBuf> {
    let venv = std::env::var_os("POLLUX_PY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/py-tools"));
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import prometheus_client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(python)
}

fn start_with_metrics(tag: &str) -> (TargetProc, u16) {
    let mport = free_port();
    let addr = format!("127.0.0.1:{mport}");
    let t = TargetProc::start(tag, &["--metrics-addr", &addr]);
    // The endpoint opens right after the RPC socket.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", mport)).is_err() {
        assert!(
            Instant::now() < deadline,
            "no metrics endpoint: {}",
            t.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (t, mport)
}

/// Sends `request` as is and returns (status, head, body) and how long the answer took.
fn raw(port: u16, request: &[u8]) -> (u16, String, Vec<u8>, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // A server that closes before reading everything may reset our write: that is its right.
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let took = started.elapsed();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&answer)));
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    (status, head, answer[split + 4..].to_vec(), took)
}

fn scrape(port: u16) -> String {
    let (status, head, body, _) = raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    String::from_utf8(body).expect("UTF-8 exposition")
}

/// Every sample of an exposition, parsed by prometheus_client.
struct Samples(Vec<Value>);

impl Samples {
    fn parse(python: &PathBuf, text: &str) -> Samples {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/common/prom_parse.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "prometheus_client rejects the exposition: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        Samples(serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap())
    }

    /// The value of sample `name` whose labels include `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .iter()
            .find(|s| {
                s["name"] == name
                    && labels
                        .iter()
                        .all(|(k, v)| s["labels"][*k].as_str() == Some(v))
            })
            .and_then(|s| s["value"].as_f64())
    }

    fn must(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
    }

    fn type_of(&self, family: &str) -> Option<String> {
        self.0
            .iter()
            .find(|s| s["family"] == family)
            .and_then(|s| s["type"].as_str().map(str::to_string))
    }
}

#[test]
fn scrape_under_load_parses_and_counters_move() {
    let Some(python) = py_tools() else {
        return skip(
            "scrape_under_load_parses_and_counters_move",
            "python prometheus_client is absent (run scripts/py-tools.sh)",
        );
    };
    let (t, mport) = start_with_metrics("metrics-load");
    let before = Samples::parse(&python, &scrape(mport));
    for (family, kind) in [
        ("pollux_reactor_busy_seconds", "counter"),
        ("pollux_bdev_latency_seconds", "histogram"),
        ("pollux_nvmf_subsystem_controllers", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("pollux_nvmf_tcp_term_reqs_sent", "counter"),
        ("pollux_nvmf_tcp_hdr_digest_errors", "counter"),
        ("pollux_nvmf_tcp_data_digest_errors", "counter"),
    ] {
        assert_eq!(
            before.type_of(family).as_deref(),
            Some(kind),
            "family {family}"
        );
    }
    let read = [("bdev", BDEV), ("type", "read")];
    let write = [("bdev", BDEV), ("type", "write")];
    let sub = [("nqn", NQN)];
    assert_eq!(before.must("pollux_bdev_ops_total", &read), 0.0);
    assert_eq!(before.must("pollux_nvmf_subsystem_controllers", &sub), 0.0);
    assert_eq!(before.must("pollux_nvmf_subsystem_namespaces", &sub), 1.0);
    assert!(before.must("process_resident_memory_bytes", &[]) > 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = before.must("process_start_time_seconds", &[]);
    assert!(
        start <= now + 1.0 && start > now - 120.0,
        "start {start}, now {now}"
    );

    let load = t.load(3, 32);
    // Scrape every 200 ms while the load runs: the endpoint keeps answering and the host's
    // controller shows up.
    let mut during = Vec::new();
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        during.push(Samples::parse(&python, &scrape(mport)));
        std::thread::sleep(Duration::from_millis(200));
    }
    let result = load_result(load);
    let after = Samples::parse(&python, &scrape(mport));

    assert!(
        during
            .iter()
            .any(|s| s.must("pollux_nvmf_subsystem_controllers", &sub) >= 1.0
                && s.must("pollux_nvmf_subsystem_qpairs", &sub) >= 2.0),
        "no controller with an admin and an I/O queue seen during the load"
    );
    let ops = |s: &Samples| {
        s.must("pollux_bdev_ops_total", &read) + s.must("pollux_bdev_ops_total", &write)
    };
    // The reads and writes grow from scrape to scrape while the load runs.
    let series: Vec<f64> = during.iter().map(ops).collect();
    assert!(
        series.windows(2).all(|w| w[0] <= w[1]) && series.last() > series.first(),
        "{series:?}"
    );
    let perf_ios = result["total"]["ios"].as_u64().unwrap() as f64;
    let done = ops(&after);
    assert!(perf_ios > 0.0, "{result}");
    assert!(
        done >= perf_ios,
        "bdev ops {done} < the {perf_ios} I/Os pollux-perf completed"
    );
    assert_eq!(
        after.must("pollux_bdev_bytes_total", &read),
        after.must("pollux_bdev_ops_total", &read) * 4096.0
    );
    let completed = after.must(
        "pollux_nvmf_completed_nvme_io_total",
        &[("poll_group", "nvmf_tgt_poll_group_0")],
    );
    assert!(completed >= perf_ios, "completed {completed} < {perf_ios}");
    assert!(
        after.must(
            "pollux_nvmf_tcp_connections_total",
            &[("poll_group", "nvmf_tgt_poll_group_0")]
        ) >= 2.0
    );
    let count = after.must("pollux_bdev_latency_seconds_count", &read);
    assert_eq!(count, after.must("pollux_bdev_ops_total", &read));
    let sum = after.must("pollux_bdev_latency_seconds_sum", &read);
    // A malloc bdev completes within the reactor loop that submitted (the clock is read once
    // a loop), so its latencies may all be 0: the sum is bounded, not positive.
    assert!(
        sum >= 0.0 && sum / count < 1.0,
        "mean read latency {}",
        sum / count
    );
    let le = |b: &str| {
        after.must(
            "pollux_bdev_latency_seconds_bucket",
            &[("bdev", BDEV), ("type", "read"), ("le", b)],
        )
    };
    assert_eq!(le("+Inf"), count);
    assert!(le("0.1") <= count && le("5e-06") <= le("0.1"));
    assert!(
        after.must("pollux_reactor_busy_seconds_total", &[("core", "0")])
            > before.must("pollux_reactor_busy_seconds_total", &[("core", "0")])
    );
    assert_eq!(
        after.must(
            "pollux_nvmf_tcp_term_reqs_sent_total",
            &[("poll_group", "nvmf_tgt_poll_group_0")]
        ),
        0.0
    );
    // The load has gone: its controller with it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = Samples::parse(&python, &scrape(mport));
        if s.must("pollux_nvmf_subsystem_controllers", &sub) == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the controller stayed after the host left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(t.stop().success());
}

#[test]
fn bad_requests_get_an_error_or_a_close_in_bounded_time() {
    let (t, mport) = start_with_metrics("metrics-bad");
    let mut rpc = Client::connect(&t.sock);

    let (status, _, _, _) = raw(mport, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 404);
    let (status, _, _, _) = raw(mport, b"GET /metricsX HTTP/1.1\r\n\r\n");
    assert_eq!(status, 404);
    let (status, head, _, _) = raw(
        mport,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    let (status, _, _, _) = raw(
        mport,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
    );
    assert_eq!(status, 400);
    let (status, head, body, _) = raw(mport, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200, "{head}");
    assert!(body.is_empty());
    assert!(head.contains("Content-Length: "), "{head}");

    // A huge header: 431 after at most 8 KiB are read, however much the client sends.
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1 << 20));
    huge.extend_from_slice(b"\r\n\r\n");
    let (status, _, _, took) = raw(mport, &huge);
    assert_eq!(status, 431);
    assert!(took < Duration::from_secs(4), "{took:?}");
    let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
    for i in 0..100 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let (status, _, _, _) = raw(mport, &many);
    assert_eq!(status, 431);

    // A slow client (a byte a second) and a silent one: 408 once the head's 5 s are up.
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", mport)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // A byte a second for 4 s, then nothing: the head is never complete.
        for b in b"GET ".iter() {
            s.write_all(&[*b]).unwrap();
            std::thread::sleep(Duration::from_millis(1000));
        }
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        (
            String::from_utf8_lossy(&answer).into_owned(),
            started.elapsed(),
        )
    });
    let (status, _, _, took) = raw(mport, b"");
    assert_eq!(status, 408);
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(8),
        "{took:?}"
    );
    // The RPC server (on the main reactor) answered all along.
    assert!(rpc.call("spdk_get_version", None)["version"].is_string());
    let (answer, took) = slow.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(took < Duration::from_secs(8), "{took:?}");

    // A flood of silent connections: beyond MAX_CONNECTIONS (16) they are answered 503 at
    // once; a scrape works again as soon as they are gone.
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(("127.0.0.1", mport)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (status, _, _, took) = raw(mport, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, 503);
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(rpc.call("spdk_get_version", None)["version"].is_string());
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, body, _) = raw(mport, b"GET /metrics HTTP/1.1\r\n\r\n");
        if status == 200 {
            assert!(String::from_utf8_lossy(&body).contains("pollux_reactor_busy_seconds_total"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} after the flood closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(rpc);
    assert!(t.stop().success(), "pollux exits 0 after all that");
}

#[test]
fn metrics_addr_in_use_is_a_clear_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let sock = common::sock_path("metrics-inuse");
    let out = Command::new(env!("CARGO_BIN_EXE_pollux"))
        .args(["-m", "[0]", "--no-pin", "--no-default", "-r"])
        .arg(&sock)
        .args(["--metrics-addr", &addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("--metrics-addr {addr}")),
        "{stderr}"
    );
}

/// The value of an unlabelled-or-labelled sample line `name{...} value` in `text`.
fn sample_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn digest_errors_and_term_reqs_are_counted() {
    use common::nvme::{call, rw, start_exporting_malloc, Host};
    use pollux::nvmf::pdu::PduHeader;
    use pollux::nvmf::wire::{io_opc, Status};

    let nqn = "nqn.2016-06.io.pollux:digest";
    let (app, port) = start_exporting_malloc("metrics-digest", nqn);
    // The in-process endpoint on a port the kernel picks.
    let server = pollux::metrics::start("127.0.0.1:0".parse().unwrap(), app.handle().clone())
        .expect("metrics endpoint");
    let mport = server.local_addr().port();
    let group = "{poll_group=\"nvmf_tgt_poll_group_0\"}";
    let text = scrape(mport);
    for m in ["hdr_digest_errors", "data_digest_errors", "term_reqs_sent"] {
        let name = format!("pollux_nvmf_tcp_{m}_total{group}");
        assert_eq!(sample_value(&text, &name), Some(0.0), "{name} in\n{text}");
    }

    // A write whose data digest is wrong: the command fails, the queue lives on.
    let admin = Host::admin_connect(port, nqn, true, 0);
    let mut io = Host::io_connect(port, nqn, admin.cntlid, 1, true);
    let data = vec![0x5au8; 4096];
    io.send_write_with_bad_ddgst(9, &data, 0xff);
    io.wait_completion(9)
        .assert_code(Status::TRANSIENT_TRANSPORT_ERROR);
    // A capsule whose header digest is wrong: a Term Req and a close.
    let mut bad = Host::connect(port, true, false);
    bad.send_spoiled_pdu(&PduHeader::CapsuleCmd(rw(io_opc::READ, 0, 1)), &[], 0xff);
    let pdus = bad.drain_until_closed();
    assert!(pdus
        .iter()
        .any(|p| matches!(p.header, PduHeader::C2HTermReq(_))));

    // Past the 100 ms reuse of the last snapshot.
    std::thread::sleep(Duration::from_millis(150));
    let text = scrape(mport);
    for (m, want) in [
        ("hdr_digest_errors", 1.0),
        ("data_digest_errors", 1.0),
        ("term_reqs_sent", 1.0),
    ] {
        let name = format!("pollux_nvmf_tcp_{m}_total{group}");
        assert_eq!(sample_value(&text, &name), Some(want), "{name} in\n{text}");
    }
    let stats = call(&app, "nvmf_get_stats", serde_json::json!({})).unwrap();
    let tcp = &stats["poll_groups"][0]["transports"][0];
    assert_eq!(tcp["hdr_digest_errors"], 1);
    assert_eq!(tcp["data_digest_errors"], 1);
    drop(io);
    drop(admin);
    drop(server);
    // Dropped: the port no longer accepts.
    assert!(TcpStream::connect(("127.0.0.1", mport)).is_err());
    app.shutdown_and_wait();
}
