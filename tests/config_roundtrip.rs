//! A saved configuration is lossless: a pollux configured through every module and option
//! (sock options and default impl, bdev options, every bdev module (split included),
//! transport options,
//! subsystems with hosts, namespaces with their identifiers, listeners on both socket
//! implementations, the discovery subsystem's own listener, ANA reporting with namespace
//! groups and per-listener group states) saves a config; a second
//! pollux started from it with `--json` saves the same document (order within a module
//! aside), and serves the same exports.

mod common;

use common::nvme::Host;
use common::{free_port, start, start_waiting_for_rpc, test_options, Client};
use serde_json::{json, Value};

const NQN: &str = "nqn.2016-06.io.pollux:roundtrip";
const NQN2: &str = "nqn.2016-06.io.pollux:roundtrip2";
const NQN3: &str = "nqn.2016-06.io.pollux:roundtrip-ana";
const DISCOVERY: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// What `rpc.py save_config` builds: every framework subsystem with its config.
fn save_config(c: &mut Client) -> Value {
    let subsystems: Vec<Value> = c
        .call("framework_get_subsystems", None)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let name = s["subsystem"].clone();
            let config = c.call("framework_get_config", Some(json!({"name": name})));
            json!({"subsystem": name, "config": config})
        })
        .collect();
    json!({ "subsystems": subsystems })
}

/// The document with each module's entries sorted (their order may differ where it does
/// not matter; the module order must not).
fn normalized(config: &Value) -> Value {
    let mut out = config.clone();
    for s in out["subsystems"].as_array_mut().unwrap() {
        if let Some(entries) = s["config"].as_array_mut() {
            entries.sort_by_key(|e| e.to_string());
        }
    }
    out
}

fn listen(nqn: &str, port: u16, sock_impl: &str) -> Value {
    json!({"nqn": nqn, "sock_impl": sock_impl, "listen_address":
        {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()}})
}

#[test]
fn save_config_restart_save_config_is_the_same_document() {
    let dir = std::env::temp_dir().join(format!("pollux-roundtrip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (aio, uring) = (dir.join("aio.img"), dir.join("uring.img"));
    std::fs::write(&aio, vec![0u8; 4 << 20]).unwrap();
    std::fs::write(&uring, vec![0u8; 4 << 20]).unwrap();
    let (port, port2, dport) = (free_port(), free_port(), free_port());
    let (aport1, aport2) = (free_port(), free_port());

    let app = start_waiting_for_rpc("roundtrip-a");
    let mut c = Client::connect(app.rpc_socket());
    // STARTUP methods.
    c.call(
        "sock_impl_set_options",
        Some(
            json!({"impl_name": "posix", "recv_buf_size": 1 << 21, "send_buf_size": 1 << 21,
                    "enable_recv_pipe": false, "enable_quickack": true}),
        ),
    );
    c.call(
        "sock_impl_set_options",
        Some(json!({"impl_name": "uring", "recv_buf_size": 1 << 20})),
    );
    c.call("sock_set_default_impl", Some(json!({"impl_name": "posix"})));
    c.call(
        "bdev_set_options",
        Some(json!({"bdev_io_pool_size": 4096, "bdev_io_cache_size": 128})),
    );
    c.call(
        "iobuf_set_options",
        Some(json!({"small_pool_count": 2048, "large_pool_count": 256, "small_bufsize": 16384})),
    );
    let key = dir.join("k0.key");
    std::fs::write(
        &key,
        "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:",
    )
    .unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    c.call(
        "keyring_file_add_key",
        Some(json!({"name": format!("roundtrip-{}", std::process::id()), "path": key})),
    );
    c.call("framework_start_init", None);
    // Every bdev module.
    for (method, params) in [
        (
            "bdev_malloc_create",
            json!({"name": "Malloc0", "num_blocks": 4096, "block_size": 4096,
                   "uuid": "5b1e0cf4-0d7a-4bb2-8c67-6d7e4c6c0b0a", "optimal_io_boundary": 16}),
        ),
        (
            "bdev_malloc_create",
            json!({"name": "Malloc1", "num_blocks": 8192, "block_size": 512}),
        ),
        (
            "bdev_null_create",
            json!({"name": "Null0", "num_blocks": 1 << 20, "block_size": 4096}),
        ),
        (
            "bdev_aio_create",
            json!({"name": "Aio0", "filename": aio.to_str().unwrap(), "block_size": 4096,
                   "readonly": false}),
        ),
        (
            "bdev_uring_create",
            json!({"name": "Uring0", "filename": uring.to_str().unwrap(), "block_size": 512}),
        ),
        (
            "bdev_delay_create",
            json!({"name": "Delay0", "base_bdev_name": "Malloc1", "avg_read_latency": 10,
                   "p99_read_latency": 20, "avg_write_latency": 30, "p99_write_latency": 40}),
        ),
        ("bdev_error_create", json!({"base_name": "Null0"})),
        (
            "bdev_passthru_create",
            json!({"name": "Pass0", "base_bdev_name": "Uring0"}),
        ),
        (
            "bdev_malloc_create",
            json!({"name": "Malloc2", "num_blocks": 2048, "block_size": 4096}),
        ),
        (
            "bdev_split_create",
            json!({"base_bdev": "Malloc2", "split_count": 3, "split_size_mb": 2}),
        ),
        (
            "bdev_set_qos_limit",
            json!({"name": "Malloc2p2", "rw_ios_per_sec": 5000, "w_mbytes_per_sec": 20}),
        ),
        (
            "bdev_set_qos_limit",
            json!({"name": "Malloc0", "rw_mbytes_per_sec": 100}),
        ),
        (
            "bdev_enable_histogram",
            json!({"name": "Null0", "enable": true, "opc": "write", "granularity": 5}),
        ),
        (
            "nvmf_create_transport",
            json!({"trtype": "TCP", "max_queue_depth": 64, "max_io_qpairs_per_ctrlr": 4,
                   "in_capsule_data_size": 8192, "max_io_size": 65536, "io_unit_size": 8192,
                   "max_aq_depth": 32, "c2h_success": false, "sock_priority": 1,
                   "abort_timeout_sec": 2, "kas": 50, "min_kato": 2000,
                   "handshake_timeout_ms": 5000}),
        ),
        (
            "nvmf_create_subsystem",
            json!({"nqn": NQN, "serial_number": "RT0001", "model_number": "roundtrip model",
                   "allow_any_host": false, "max_namespaces": 16, "min_cntlid": 5,
                   "max_cntlid": 500}),
        ),
        (
            "nvmf_create_subsystem",
            json!({"nqn": NQN2, "allow_any_host": true}),
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc0", "nsid": 3,
                   "nguid": "00112233445566778899AABBCCDDEEFF", "eui64": "0011223344556677",
                   "uuid": "0f0e0d0c-0b0a-0908-0706-050403020100"}}),
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "Delay0"}}),
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN2, "namespace": {"bdev_name": "EE_Null0"}}),
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN2, "namespace": {"bdev_name": "Pass0"}}),
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN2, "namespace": {"bdev_name": "Aio0", "nsid": 9}}),
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN2, "namespace": {"bdev_name": "Malloc2p1", "nsid": 10}}),
        ),
        (
            "nvmf_subsystem_add_host",
            json!({"nqn": NQN, "host": common::nvme::HOSTNQN}),
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc2p0", "nsid": 5,
                   "no_auto_visible": true}}),
        ),
        (
            "nvmf_ns_add_host",
            json!({"nqn": NQN, "nsid": 5, "host": common::nvme::HOSTNQN}),
        ),
        (
            "nvmf_subsystem_add_host",
            json!({"nqn": NQN, "host": "nqn.2014-08.org.nvmexpress:uuid:0000-other"}),
        ),
        (
            "bdev_malloc_create",
            json!({"name": "Malloc3", "num_blocks": 256, "block_size": 4096}),
        ),
        (
            "nvmf_create_subsystem",
            json!({"nqn": NQN3, "allow_any_host": true, "ana_reporting": true,
                   "max_namespaces": 4, "min_cntlid": 1000, "max_cntlid": 1999}),
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN3, "namespace": {"bdev_name": "Malloc3", "nsid": 2, "anagrpid": 3}}),
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN3, "namespace": {"bdev_name": "Malloc2p2", "nsid": 1}}),
        ),
        (
            "nvmf_subsystem_set_ns_ana_group",
            json!({"nqn": NQN3, "nsid": 1, "anagrpid": 4}),
        ),
        ("nvmf_subsystem_add_listener", listen(NQN3, aport1, "posix")),
        ("nvmf_subsystem_add_listener", {
            let mut l = listen(NQN3, aport2, "posix");
            l["ana_state"] = json!("non_optimized");
            l
        }),
        ("nvmf_subsystem_listener_set_ana_state", {
            let mut l = listen(NQN3, aport1, "posix");
            l.as_object_mut().unwrap().remove("sock_impl");
            l["ana_state"] = json!("inaccessible");
            l["anagrpid"] = json!(3);
            l
        }),
        (
            "nvmf_discovery_add_referral",
            json!({"address": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "4431"}}),
        ),
        (
            "nvmf_discovery_add_referral",
            json!({"address": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "4432",
                   "adrfam": "ipv4"}, "subnqn": NQN3, "secure_channel": true}),
        ),
        ("nvmf_subsystem_add_listener", listen(NQN, port, "posix")),
        ("nvmf_subsystem_add_listener", listen(NQN2, port2, "uring")),
        (
            "nvmf_subsystem_add_listener",
            listen(DISCOVERY, dport, "posix"),
        ),
    ] {
        c.call(method, Some(params));
    }
    let first = save_config(&mut c);
    app.shutdown_and_wait();

    if std::env::var_os("POLLUX_SHOW_CONFIG").is_some() {
        eprintln!("{first:#}");
    }
    let file = dir.join("saved.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&first).unwrap()).unwrap();
    let mut opts = test_options("roundtrip-b");
    opts.json_config = Some(file.clone());
    let app = start(opts);
    let mut c = Client::connect(app.rpc_socket());
    let second = save_config(&mut c);
    assert_eq!(
        normalized(&first),
        normalized(&second),
        "\nfirst:\n{first:#}\nsecond:\n{second:#}"
    );
    // Spot checks that the document holds what was configured (not just "the same").
    let text = first.to_string();
    for needle in [
        "\"handshake_timeout_ms\":5000",
        "\"c2h_success\":false",
        "\"sock_impl\":\"uring\"",
        DISCOVERY,
        "\"bdev_io_pool_size\":4096",
        "\"recv_buf_size\":1048576",
        "\"optimal_io_boundary\":16",
        "0000-other",
        "\"min_cntlid\":5",
        "\"split_count\":3",
        "\"w_mbytes_per_sec\":20",
        "bdev_enable_histogram",
        "nvmf_ns_add_host",
        "\"ana_reporting\":true",
        "\"anagrpid\":4",
        "\"ana_state\":\"non_optimized\"",
        "nvmf_subsystem_listener_set_ana_state",
        "nvmf_discovery_add_referral",
        "\"trsvcid\":\"4432\"",
    ] {
        assert!(text.contains(needle), "{needle} missing from {first:#}");
    }
    // The restarted pollux serves the same exports, discovery included.
    let mut admin = Host::admin_connect(port, NQN, false, 0);
    assert!(admin.identify(0, 3).ok(), "namespace 3 of {NQN}");
    let mut admin2 = Host::admin_connect(port2, NQN2, false, 0);
    assert!(admin2.identify(0, 9).ok(), "namespace 9 of {NQN2}");
    let mut disc = Host::admin_connect(dport, DISCOVERY, false, 0);
    let log = disc.get_log(0x70, 0, 0, 1024);
    assert!(log.ok(), "discovery log page on the discovery listener");
    let log = disc.get_log(0x70, 0, 0, 8192);
    let (_, entries) = pollux::nvmf::wire::decode_discovery_log(&log.data).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| pollux::nvmf::field_str(&e.trsvcid) == Some("4432") && e.treq == 1),
        "the referral is in the restarted discovery log"
    );
    // ANA: group 3 (nsid 2) inaccessible through the first listener, group 4 (nsid 1)
    // optimized.
    let mut ana = Host::admin_connect(aport1, NQN3, false, 0);
    let page = ana.get_log(0x0c, 0, 0, 4096);
    let (_, groups) = pollux::nvmf::wire::decode_ana_log(&page.data).expect("ANA log");
    let seen: Vec<(u32, u8, Vec<u32>)> = groups
        .into_iter()
        .map(|g| (g.anagrpid, g.state, g.nsids))
        .collect();
    assert_eq!(seen, vec![(3, 3, vec![2]), (4, 1, vec![1])]);
    drop((admin, admin2, disc, ana));
    app.shutdown_and_wait();
    let _ = std::fs::remove_dir_all(&dir);
}
