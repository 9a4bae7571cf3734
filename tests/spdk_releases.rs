//! Every SPDK rpc.py release pollux promises (25.5 to the newest, installed by
//! `scripts/spdk-releases.sh` into `.ci/spdk-releases/VERSION`) drives a real `pollux`
//! process through the same scripted session (`tests/data/spdk-rpc-session.txt`): startup
//! options, framework, log, sock, every bdev module and the NVMe-oF target with the flags
//! users pass. Every command must succeed with every release; the results are checked where
//! they show what the flags asked for, and a host connects to the export in the middle.

mod common;

use common::free_port;
use common::nvme::Host;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";
/// The secret in the session's key file (`keyring_file_add_key key0 {FILE}.key`).
const KEY_SECRET: &str = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
/// The session's subsystem with ANA reporting.
const ANA_NQN: &str = "nqn.2016-06.io.spdk:ana";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:7f2d3c4b-1a2b-4c3d-8e9f-0a1b2c3d4e5f";

fn releases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/spdk-releases")
}

/// The releases `scripts/spdk-releases.sh` installs.
fn releases() -> Vec<String> {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/spdk-releases.sh"))
        .arg("--list")
        .output()
        .expect("run scripts/spdk-releases.sh --list");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn version(v: &str) -> Vec<u32> {
    v.split('.')
        .map(|p| p.parse().expect("numeric version"))
        .collect()
}

/// The session's command lines for `release`, with its selectors applied (see the file's
/// header): `<V` before release V, `>=V` from V on, `!V` every release but V.
fn session_for(release: &str) -> Vec<String> {
    let text = include_str!("data/spdk-rpc-session.txt");
    let me = version(release);
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (first, rest) = line.split_once(' ').unwrap_or((line, ""));
        let keep = if let Some(v) = first.strip_prefix(">=") {
            Some(me >= version(v))
        } else if let Some(v) = first.strip_prefix('<') {
            Some(me < version(v))
        } else {
            first.strip_prefix('!').map(|v| me != version(v))
        };
        match keep {
            Some(true) => out.push(rest.to_string()),
            Some(false) => {}
            None => out.push(line.to_string()),
        }
    }
    out
}

struct Pollux {
    child: Child,
    sock: PathBuf,
}

impl Pollux {
    fn start(tag: &str) -> Pollux {
        let sock = common::sock_path(tag);
        let mut child = Command::new(env!("CARGO_BIN_EXE_pollux"))
            .args([
                "--wait-for-rpc",
                "--no-default",
                "--no-pin",
                "-m",
                "0x1",
                "-r",
            ])
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pollux");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "pollux never listened");
            assert!(child.try_wait().unwrap().is_none(), "pollux exited early");
            std::thread::sleep(Duration::from_millis(20));
        }
        Pollux { child, sock }
    }
}

impl Drop for Pollux {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}

fn json(out: &str, what: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {out}"))
}

/// Runs the whole session with one release; returns the failures (empty: all went well).
fn drive(release: &str, spdk_rpc: &Path) -> Vec<String> {
    let pollux = Pollux::start(&format!("rel-{release}"));
    let (port, dport, aport) = (free_port(), free_port(), free_port());
    let file = std::env::temp_dir().join(format!(
        "pollux-rel-{}-{release}.backing",
        std::process::id()
    ));
    for ext in ["aio", "uring"] {
        std::fs::write(format!("{}.{ext}", file.display()), vec![0u8; 1 << 20]).unwrap();
    }
    let key_file = format!("{}.key", file.display());
    std::fs::write(&key_file, KEY_SECRET).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut failures = Vec::new();
    let mut host = None;
    for line in session_for(release) {
        let line = line
            .replace("{NQN}", NQN)
            .replace("{HOST}", HOST)
            .replace("{PORT}", &port.to_string())
            .replace("{DPORT}", &dport.to_string())
            .replace("{APORT}", &aport.to_string())
            .replace("{FILE}", file.to_str().unwrap());
        let args: Vec<&str> = line.split_whitespace().collect();
        if args[0] == "nvmf_subsystem_get_controllers" {
            // A host on the export, so the inspection methods have something to show.
            let mut h = Host::admin_connect(port, NQN, false, 0);
            if !h.identify(0, 1).ok() {
                failures.push(format!(
                    "{release}: Identify Namespace 1 over the export failed"
                ));
            }
            host = Some(h);
        }
        let out = Command::new(spdk_rpc)
            .arg("-s")
            .arg(&pollux.sock)
            .args(&args)
            .output()
            .expect("run spdk-rpc");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            failures.push(format!(
                "{release}: `{line}` failed: {}{}",
                stdout,
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        check_result(release, &args, &stdout, port, dport, &mut failures);
    }
    drop(host);
    for ext in ["aio", "uring", "key"] {
        let _ = std::fs::remove_file(format!("{}.{ext}", file.display()));
    }
    failures
}

/// Checks that a result shows what the session's flags asked for.
fn check_result(
    release: &str,
    args: &[&str],
    out: &str,
    port: u16,
    dport: u16,
    failures: &mut Vec<String>,
) {
    let mut expect = |ok: bool, what: &str| {
        if !ok {
            failures.push(format!("{release}: {}: {what}: {out}", args.join(" ")));
        }
    };
    match args {
        ["nvmf_get_transports", ..] => {
            let t = json(out, "nvmf_get_transports");
            expect(t[0]["in_capsule_data_size"] == 8192, "in-capsule size 8192");
            expect(t[0]["max_io_qpairs_per_ctrlr"] == 8, "8 I/O queues");
            expect(t[0]["min_kato"] == 1000, "min_kato 1000");
        }
        ["nvmf_get_subsystems", nqn] if *nqn == NQN => {
            let s = &json(out, "nvmf_get_subsystems")[0];
            expect(s["serial_number"] == "SPDK00000000000001", "serial number");
            expect(s["model_number"] == "SPDK_Controller1", "model number");
            expect(s["max_namespaces"] == 32, "max_namespaces 32");
            expect(
                s["min_cntlid"] == 1 && s["max_cntlid"] == 1000,
                "cntlid range",
            );
            expect(
                s["namespaces"].as_array().map(Vec::len) == Some(3),
                "three namespaces",
            );
            let ns9 = s["namespaces"]
                .as_array()
                .and_then(|a| a.iter().find(|n| n["nsid"] == 9));
            expect(
                ns9.is_some_and(|n| n["no_auto_visible"] == true && n["hosts"][0]["nqn"] == HOST),
                "namespace 9 masked, visible to the listed host",
            );
            let ns7 = s["namespaces"]
                .as_array()
                .and_then(|a| a.iter().find(|n| n["nsid"] == 7));
            expect(
                ns7.is_some_and(|n| {
                    n["bdev_name"] == "Passthru0"
                        && n["nguid"].as_str().is_some_and(|g| {
                            g.eq_ignore_ascii_case("00112233445566778899AABBCCDDEEFF")
                        })
                        && n["eui64"] == "0011223344556677"
                }),
                "namespace 7 on Passthru0 with its NGUID and EUI-64",
            );
            expect(
                s["listen_addresses"][0]["trsvcid"] == port.to_string().as_str(),
                "listener on the session's port",
            );
            expect(s["allow_any_host"] == true, "allow_any_host back on");
            expect(
                s["hosts"]
                    .as_array()
                    .is_some_and(|h| h.iter().any(|h| h["nqn"] == HOST)),
                "the added host",
            );
        }
        ["nvmf_subsystem_get_listeners", nqn] if *nqn == ANA_NQN => {
            let l = &json(out, "nvmf_subsystem_get_listeners")[0];
            let states = &l["ana_states"];
            expect(
                states.as_array().map(Vec::len) == Some(8),
                "one state per group 1..=8",
            );
            expect(
                states[0]["ana_state"] == "non_optimized",
                "the listener's initial state (-n non_optimized)",
            );
            expect(
                states[3] == serde_json::json!({"ana_group": 4, "ana_state": "inaccessible"}),
                "group 4 inaccessible (-g 4)",
            );
        }
        ["nvmf_discovery_get_referrals"] => {
            let r = json(out, "nvmf_discovery_get_referrals");
            expect(
                r.as_array().map(Vec::len) == Some(1),
                "one referral left after the removal",
            );
            expect(
                r[0]["subnqn"] == ANA_NQN
                    && r[0]["secure_channel"] == true
                    && r[0]["address"]["trsvcid"] == "4432",
                "the referral to the ANA subsystem's port, secure channel (-k)",
            );
        }
        ["nvmf_get_subsystems", nqn] if *nqn == ANA_NQN => {
            let s = &json(out, "nvmf_get_subsystems")[0];
            expect(s["ana_reporting"] == true, "ana_reporting (-r)");
            expect(
                s["namespaces"][0]["anagrpid"] == 4,
                "namespace moved to group 4",
            );
            expect(
                s["min_cntlid"] == 2000 && s["max_cntlid"] == 2999,
                "cntlid range",
            );
        }
        ["nvmf_subsystem_get_controllers", ..] => {
            let c = json(out, "controllers");
            expect(
                c.as_array().map(Vec::len) == Some(1),
                "the connected host's controller",
            );
        }
        ["bdev_get_iostat", "-b" | "--names", name] => {
            let s = json(out, "iostat");
            expect(s["bdevs"][0]["name"] == *name, "the named bdev only");
            expect(s["bdevs"].as_array().map(Vec::len) == Some(1), "one bdev");
        }
        ["bdev_get_bdevs", "-b", name] => {
            expect(
                json(out, "bdev_get_bdevs")[0]["name"] == *name,
                "the named bdev",
            );
        }
        ["keyring_get_keys"] => {
            let keys = json(out, "keyring_get_keys");
            expect(
                keys.as_array().is_some_and(|a| {
                    a.iter().any(|k| {
                        k["name"] == "key0"
                            && k["module"] == "keyring_file"
                            && k["path"].as_str().is_some_and(|p| p.ends_with(".key"))
                    })
                }) && !out.contains(KEY_SECRET),
                "key0 listed with its path, never its secret",
            );
        }
        ["save_config"] => {
            let c = json(out, "save_config");
            let nvmf = c["subsystems"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["subsystem"] == "nvmf"))
                .map(|s| s["config"].clone())
                .unwrap_or_default();
            let listens_at = |nqn: &str, p: u16| {
                nvmf.as_array().is_some_and(|a| {
                    a.iter().any(|e| {
                        e["method"] == "nvmf_subsystem_add_listener"
                            && e["params"]["nqn"] == nqn
                            && e["params"]["listen_address"]["trsvcid"] == p.to_string().as_str()
                    })
                })
            };
            expect(listens_at(NQN, port), "the subsystem's listener saved");
            expect(
                nvmf[0]["params"]["max_subsystems"] == 64,
                "nvmf_set_max_subsystems saved",
            );
            expect(
                listens_at("nqn.2014-08.org.nvmexpress.discovery", dport),
                "the discovery subsystem's listener saved",
            );
            let iobuf = c["subsystems"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["subsystem"] == "iobuf"))
                .map(|s| s["config"][0]["params"].clone())
                .unwrap_or_default();
            expect(
                iobuf["small_pool_count"] == 4096 && iobuf["small_bufsize"] == 16384,
                "iobuf_set_options saved",
            );
            let keyring = c["subsystems"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["subsystem"] == "keyring"))
                .map(|s| s["config"].clone())
                .unwrap_or_default();
            expect(
                keyring.as_array().is_some_and(|a| {
                    a.len() == 1
                        && a[0]["method"] == "keyring_file_add_key"
                        && a[0]["params"]["name"] == "key0"
                }) && !out.contains(KEY_SECRET),
                "the keyring saved by name and path, without its secret",
            );
        }
        _ => {}
    }
}

#[test]
fn every_spdk_rpc_release_drives_pollux() {
    let dir = releases_dir();
    let releases = releases();
    assert!(
        !releases.is_empty(),
        "scripts/spdk-releases.sh --list is empty"
    );
    let missing: Vec<&String> = releases
        .iter()
        .filter(|r| !dir.join(r).join("bin/spdk-rpc").exists())
        .collect();
    if !missing.is_empty() {
        let msg = format!(
            "SPDK rpc.py releases {missing:?} are not installed in {}: run scripts/spdk-releases.sh",
            dir.display()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{msg} (.ci/run installs them)");
        }
        common::skip("every_spdk_rpc_release_drives_pollux", &msg);
        return;
    }
    // Two releases at a time: each is a pollux process plus ~75 short Python runs.
    let mut failures = Vec::new();
    for pair in releases.chunks(2) {
        let runs: Vec<_> = pair
            .iter()
            .map(|r| {
                let (r, rpc) = (r.clone(), dir.join(r).join("bin/spdk-rpc"));
                std::thread::spawn(move || drive(&r, &rpc))
            })
            .collect();
        for run in runs {
            failures.extend(run.join().expect("release thread"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn session_selectors_pick_one_spelling_per_release() {
    let old = session_for("25.5");
    let new = session_for("26.9");
    assert!(old.iter().any(|l| l.starts_with("bdev_get_iostat -b")));
    assert!(new.iter().any(|l| l.starts_with("bdev_get_iostat --names")));
    assert!(!new.iter().any(|l| l.starts_with("bdev_get_iostat -b")));
    assert!(!session_for("25.9")
        .iter()
        .any(|l| l.starts_with("log_set_level")));
    assert!(session_for("26.1")
        .iter()
        .any(|l| l.starts_with("log_set_level")));
}

/// Parameters some release sends that pollux does not implement are refused naming the
/// parameter when set; sent with their defaults, they are accepted.
#[test]
fn unimplemented_params_are_refused_by_name_defaults_accepted() {
    let (app, mut c) = common::start_with_client("rel-refuse");
    c.call(
        "bdev_null_create",
        Some(serde_json::json!({"name": "N0", "num_blocks": 64, "block_size": 512})),
    );
    c.call(
        "nvmf_create_transport",
        Some(serde_json::json!({"trtype": "TCP"})),
    );
    c.call(
        "nvmf_create_subsystem",
        Some(serde_json::json!({"nqn": NQN, "ana_reporting": false,
        "dmrsl": 0, "wzsl": 0, "max_discard_size_kib": 0, "max_write_zeroes_size_kib": 0})),
    );
    let ns = serde_json::json!({"nqn": NQN, "namespace": {"bdev_name": "N0", "hide_metadata": false,
        "no_auto_visible": false}});
    assert_eq!(c.call("nvmf_subsystem_add_ns", Some(ns)), 1);
    let refused: &[(&str, Value, &str)] = &[
        (
            "nvmf_create_subsystem",
            serde_json::json!({"nqn": "nqn.2016-06.io.x:a", "dmrsl": 8}),
            "dmrsl",
        ),
        (
            "nvmf_create_subsystem",
            serde_json::json!({"nqn": "nqn.2016-06.io.x:a", "max_discard_size_kib": 64}),
            "max_discard_size_kib",
        ),
        (
            "nvmf_create_subsystem",
            serde_json::json!({"nqn": "nqn.2016-06.io.x:a", "admin_label": "x"}),
            "admin_label",
        ),
        (
            "nvmf_subsystem_add_host",
            serde_json::json!({"nqn": NQN, "host": HOST, "dhchap_key": "k"}),
            "dhchap_key",
        ),
        (
            "nvmf_subsystem_add_ns",
            serde_json::json!({"nqn": NQN, "namespace": {"bdev_name": "N0", "anagrpid": 2}}),
            "anagrpid",
        ),
        (
            "nvmf_subsystem_add_listener",
            serde_json::json!({"nqn": NQN, "ana_state": "inaccessible",
            "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "0"}}),
            "ana_state",
        ),
        (
            "bdev_malloc_create",
            serde_json::json!({"num_blocks": 8, "block_size": 512, "numa_id": 0}),
            "numa_id",
        ),
        (
            "bdev_null_create",
            serde_json::json!({"name": "N1", "num_blocks": 8, "block_size": 512, "optimal_write_size": 8}),
            "optimal_write_size",
        ),
        (
            "bdev_malloc_create",
            serde_json::json!({"num_blocks": 8, "block_size": 512, "md_interleave": true}),
            "md_interleave",
        ),
        (
            "bdev_null_create",
            serde_json::json!({"name": "N2", "num_blocks": 8, "block_size": 512,
                               "physical_block_size": 4096}),
            "physical_block_size",
        ),
        (
            "bdev_error_inject_error",
            serde_json::json!({"name": "EE_N0", "io_type": "read", "error_type": "failure",
                               "queue_depth": 4}),
            "queue_depth",
        ),
        (
            "bdev_aio_create",
            serde_json::json!({"name": "A", "filename": "/nonexistent", "nowait": true}),
            "nowait",
        ),
    ];
    for (method, params, field) in refused {
        let (code, msg) = c.call_err(method, Some(params.clone()));
        assert_eq!(code, -32602, "{method} {params}: {msg}");
        assert!(
            msg.contains(field),
            "{method}: the error names {field}: {msg}"
        );
    }
    let (code, msg) = c.call_err(
        "nvmf_create_subsystem",
        Some(serde_json::json!({"nqn": "nqn.2016-06.io.x:a", "bogus": 1})),
    );
    assert_eq!(code, -32602);
    assert!(msg.contains("bogus"), "{msg}");
    app.shutdown_and_wait();
}

/// The smaller methods SPDK users reach for: log timestamps, the subsystem bound, reactor
/// thread ids.
#[test]
fn log_timestamps_max_subsystems_and_reactor_fields() {
    use serde_json::json;
    let app = common::start_waiting_for_rpc("rel-small");
    let mut c = common::Client::connect(app.rpc_socket());
    assert_eq!(
        c.call(
            "nvmf_set_max_subsystems",
            Some(json!({"max_subsystems": 2}))
        ),
        true
    );
    let (code, msg) = c.call_err(
        "nvmf_set_max_subsystems",
        Some(json!({"max_subsystems": "x"})),
    );
    assert_eq!(code, -32602);
    assert!(msg.contains("max_subsystems"), "{msg}");
    c.call("framework_start_init", None);
    let (code, _) = c.call_err(
        "nvmf_set_max_subsystems",
        Some(json!({"max_subsystems": 9})),
    );
    assert_eq!(code, -1, "STARTUP only, as in SPDK");
    c.call("nvmf_create_transport", Some(json!({"trtype": "TCP"})));
    for n in 0..2 {
        c.call(
            "nvmf_create_subsystem",
            Some(json!({"nqn": format!("nqn.2016-06.io.x:{n}")})),
        );
    }
    let (_, msg) = c.call_err(
        "nvmf_create_subsystem",
        Some(json!({"nqn": "nqn.2016-06.io.x:2"})),
    );
    assert!(msg.contains("maximum of 2"), "{msg}");
    let cfg = c.call("framework_get_config", Some(json!({"name": "nvmf"})));
    assert_eq!(
        cfg[0],
        json!({"method": "nvmf_set_max_subsystems", "params": {"max_subsystems": 2}})
    );

    assert_eq!(
        c.call("log_enable_timestamps", Some(json!({"enabled": false}))),
        true
    );
    assert!(!pollux::log::timestamps());
    assert_eq!(
        c.call("log_enable_timestamps", Some(json!({"enabled": true}))),
        true
    );
    assert!(pollux::log::timestamps());
    let (code, msg) = c.call_err("log_enable_timestamps", Some(json!({})));
    assert_eq!(code, -32602);
    assert!(msg.contains("enabled"), "{msg}");

    let r = c.call("framework_get_reactors", None);
    let r0 = &r["reactors"][0];
    assert!(r0["tid"].as_i64().unwrap() > 0, "{r0}");
    assert_eq!(r0["in_interrupt"], true, "the test app sleeps when idle");
    app.shutdown_and_wait();
}

/// `iobuf_set_options` is validated as SPDK validates it, STARTUP only, saved in the `iobuf`
/// subsystem's config; `iobuf_get_stats` has SPDK's shape and counts real buffers.
#[test]
fn iobuf_options_and_stats() {
    use serde_json::json;
    let app = common::start_waiting_for_rpc("rel-iobuf");
    let mut c = common::Client::connect(app.rpc_socket());
    for (bad, field) in [
        (json!({"small_pool_count": 63}), "small_pool_count"),
        (json!({"large_pool_count": 7}), "large_pool_count"),
        (json!({"small_bufsize": "8k"}), "small_bufsize"),
        (json!({"pool": 1}), "pool"),
    ] {
        let (code, msg) = c.call_err("iobuf_set_options", Some(bad));
        assert_eq!(code, -32602);
        assert!(msg.contains(field), "{msg}");
    }
    assert_eq!(
        c.call(
            "iobuf_set_options",
            Some(json!({"small_pool_count": 64, "small_bufsize": 1024, "enable_numa": false}))
        ),
        true
    );
    let (code, _) = c.call_err("iobuf_get_stats", None);
    assert_eq!(code, -1, "RUNTIME only, as in SPDK");
    c.call("framework_start_init", None);
    let (code, _) = c.call_err("iobuf_set_options", Some(json!({"large_pool_count": 9})));
    assert_eq!(code, -1, "STARTUP only, as in SPDK");
    let cfg = c.call("framework_get_config", Some(json!({"name": "iobuf"})));
    assert_eq!(
        cfg,
        json!([{"method": "iobuf_set_options", "params": {
            "small_pool_count": 64, "large_pool_count": 1024,
            "small_bufsize": 4096, "large_bufsize": 135168, "enable_numa": false}}]),
        "the raised small_bufsize and SPDK's defaults are saved"
    );
    let subsystems = c.call("framework_get_subsystems", None);
    assert_eq!(subsystems[0]["subsystem"], "iobuf", "{subsystems}");

    let stats = |c: &mut common::Client| {
        let s = c.call("iobuf_get_stats", None);
        assert_eq!(s.as_array().map(Vec::len), Some(1), "{s}");
        assert_eq!(s[0]["module"], "pollux");
        for pool in ["small_pool", "large_pool"] {
            assert_eq!(s[0][pool]["retry"], 0, "{s}");
        }
        let n = |pool: &str, k: &str| s[0][pool][k].as_u64().unwrap();
        (
            n("small_pool", "main") + n("small_pool", "cache"),
            n("large_pool", "main"),
        )
    };
    let (small_before, large_before) = stats(&mut c);
    // 4 KiB buffers are small (small_bufsize 4096), 8 KiB and up large.
    let small = pollux::buf::IoBuf::with_len(4096);
    let large = pollux::buf::IoBuf::with_len(3 << 20);
    let (small_after, large_after) = stats(&mut c);
    assert!(
        small_after > small_before,
        "{small_before} -> {small_after}"
    );
    assert!(
        large_after > large_before,
        "{large_before} -> {large_after}"
    );
    drop((small, large));
    app.shutdown_and_wait();
}

/// `tgt_name` names pollux's one target (`nvmf_tgt`, as in SPDK's application); any other
/// name is refused naming the field, for every method that takes it.
#[test]
fn tgt_name_selects_the_one_target() {
    use serde_json::json;
    let (app, mut c) = common::start_with_client("rel-tgt");
    assert_eq!(
        c.call(
            "nvmf_create_transport",
            Some(json!({"trtype": "TCP", "tgt_name": "nvmf_tgt"}))
        ),
        true
    );
    assert_eq!(
        c.call(
            "nvmf_create_subsystem",
            Some(json!({"nqn": NQN, "tgt_name": "nvmf_tgt"}))
        ),
        true
    );
    let subs = c.call("nvmf_get_subsystems", Some(json!({"tgt_name": "nvmf_tgt"})));
    assert!(subs.as_array().is_some_and(|a| a.len() == 2), "{subs}");
    for (method, params) in [
        ("nvmf_get_subsystems", json!({"tgt_name": "other"})),
        ("nvmf_get_transports", json!({"tgt_name": "other"})),
        (
            "nvmf_delete_subsystem",
            json!({"nqn": NQN, "tgt_name": "other"}),
        ),
        (
            "nvmf_subsystem_add_host",
            json!({"nqn": NQN, "host": "nqn.2014-08.org.x:h", "tgt_name": "other"}),
        ),
    ] {
        let (code, msg) = c.call_err(method, Some(params));
        assert_eq!(code, -32602, "{method}");
        assert!(
            msg.contains("tgt_name") && msg.contains("other"),
            "{method}: {msg}"
        );
    }
    let subs = c.call("nvmf_get_subsystems", None);
    assert!(
        subs.as_array().is_some_and(|a| a.len() == 2),
        "nothing deleted: {subs}"
    );
    app.shutdown_and_wait();
}

/// The keyring's methods: SPDK's errno codes for a relative path, an open file, a missing
/// file, a duplicate and a missing key; the secret is never shown.
#[test]
fn keyring_methods_and_errors() {
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("pollux-keyring-rpc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (good, open) = (dir.join("good.key"), dir.join("open.key"));
    for (p, mode) in [(&good, 0o600), (&open, 0o644)] {
        std::fs::write(p, KEY_SECRET).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let (app, mut c) = common::start_with_client("rel-keyring");
    let add = |name: &str, path: &std::path::Path| json!({"name": name, "path": path});
    assert_eq!(
        c.call("keyring_file_add_key", Some(add("rpc-k0", &good))),
        true
    );
    for (params, code, says) in [
        (
            add("rpc-k1", std::path::Path::new("rel.key")),
            -1,
            "Non-absolute",
        ),
        (add("rpc-k1", &open), -1, "Invalid permissions"),
        (add("rpc-k1", &dir.join("missing")), -2, "Could not stat"),
        (add("rpc-k0", &good), -17, "already exists"),
        (json!({"name": "rpc-k1"}), -32602, "path"),
        (
            json!({"name": "rpc-k1", "path": "/x", "psk": 1}),
            -32602,
            "psk",
        ),
    ] {
        let (got, msg) = c.call_err("keyring_file_add_key", Some(params));
        assert_eq!(got, code, "{msg}");
        assert!(msg.contains(says), "{msg}");
    }
    let keys = c.call("keyring_get_keys", None);
    let k0 = keys
        .as_array()
        .and_then(|a| a.iter().find(|k| k["name"] == "rpc-k0"))
        .cloned()
        .unwrap_or_else(|| panic!("rpc-k0 missing: {keys}"));
    assert_eq!(k0["path"], json!(good));
    assert_eq!(k0["removed"], false);
    assert!(!keys.to_string().contains(KEY_SECRET));
    assert_eq!(
        c.call("keyring_file_remove_key", Some(json!({"name": "rpc-k0"}))),
        true
    );
    let (code, msg) = c.call_err("keyring_file_remove_key", Some(json!({"name": "rpc-k0"})));
    assert_eq!(code, -126, "{msg}");
    app.shutdown_and_wait();
    std::fs::remove_dir_all(&dir).unwrap();
}
