//! NVMe/TCP over TLS 1.3 with PSKs, end to end: a secure-channel listener of an in-process pollux, the host library and pollux-perf with both identity forms and both cipher suites, and every refusal.
//!
//! Keys live in keyring files (0600) referenced by name, as SPDK's RPCs do. Refusals: a
//! plaintext connection to the secure listener (the TLS handshake fails, the target closes),
//! a wrong PSK, a TLS identity naming another host than the Connect, a host with a PSK
//! connecting in plaintext (to a second, plaintext listener), and a handshake that stalls
//! (closed by the transport's handshake timeout while other hosts keep doing I/O).

mod common;

use pollux::nvmf::host::{ConnectOpts, HostError, HostTls, SyncController, TransportId};
use pollux::nvmf::psk::{ConfiguredPsk, IdentityVersion};
use pollux::nvmf::secret::Hash;
use serde_json::json;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.pollux:tls";
const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:0000000a-0000-0000-0000-000000000000";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:0000000b-0000-0000-0000-000000000000";
const HOST_C: &str = "nqn.2014-08.org.nvmexpress:uuid:0000000c-0000-0000-0000-000000000000";

fn psk(hash: Hash, len: usize, fill: u8) -> ConfiguredPsk {
    ConfiguredPsk {
        retained_hash: Some(hash),
        key: (0..len).map(|i| fill ^ i as u8).collect(),
    }
}

fn key_file(dir: &std::path::Path, name: &str, key: &ConfiguredPsk) -> String {
    let p = dir.join(name);
    std::fs::write(&p, key.format()).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

fn opts(hostnqn: &str, key: Option<&ConfiguredPsk>, identity: IdentityVersion) -> ConnectOpts {
    ConnectOpts {
        hostnqn: Some(hostnqn.into()),
        io_queues: 2,
        queue_depth: 32,
        timeout: Duration::from_secs(5),
        tls: key.map(|k| HostTls {
            psk: std::sync::Arc::new(k.clone()),
            identity,
            psk_hostnqn: None,
        }),
        ..Default::default()
    }
}

/// Connects, writes and reads back (small and large), disconnects.
fn io_round_trip(trid: &TransportId, o: ConnectOpts, seed: u8) {
    let c = SyncController::connect(trid, o).unwrap();
    let nsid = c.active_namespaces().unwrap()[0];
    let bs = c.identify_namespace(nsid).unwrap().block_size().unwrap();
    let small: Vec<u8> = (0..bs as usize).map(|i| (i as u8) ^ seed).collect();
    let large: Vec<u8> = (0..128 * 1024)
        .map(|i| (i as u8).wrapping_mul(7) ^ seed)
        .collect();
    c.write(1, nsid, 8, 1, &small).unwrap();
    c.write(2, nsid, 64, large.len() as u32 / bs, &large)
        .unwrap();
    assert!(c.read(2, nsid, 8, 1, bs).unwrap()[..] == small[..]);
    assert!(c.read(1, nsid, 64, large.len() as u32 / bs, bs).unwrap()[..] == large[..]);
    c.disconnect().unwrap();
}

fn refused(trid: &TransportId, o: ConnectOpts, what: &str) -> HostError {
    let started = Instant::now();
    match SyncController::connect(trid, o) {
        Ok(_) => panic!("{what}: connected"),
        Err(e) => {
            // Refused at once (a failed handshake or a Connect status), not by the 5 s timeout.
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{what}: took {:?}: {e}",
                started.elapsed()
            );
            eprintln!("refused, {what}: {e}");
            e
        }
    }
}

fn listener(
    rpc: &mut dyn FnMut(&str, serde_json::Value) -> Result<serde_json::Value, serde_json::Value>,
    secure: bool,
) -> u16 {
    let mut p = json!({"nqn": NQN, "listen_address": {"trtype": "tcp", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "0"}});
    if secure {
        p["secure_channel"] = json!(true);
    }
    rpc("nvmf_subsystem_add_listener", p).expect("listener");
    let l = rpc("nvmf_subsystem_get_listeners", json!({"nqn": NQN})).expect("listeners");
    let ports: Vec<u16> = l
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["address"]["trsvcid"].as_str().unwrap().parse().unwrap())
        .collect();
    *ports.last().unwrap()
}

#[test]
fn tls_psk_end_to_end() {
    let app = common::start(common::test_options("tls"));
    let mut rpc = |m: &str, p| common::nvme::call(&app, m, p);
    let dir = std::env::temp_dir().join(format!("pollux-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_a = psk(Hash::Sha256, 32, 0x11);
    let key_b = psk(Hash::Sha384, 48, 0x22);
    let path_a = key_file(&dir, "ka", &key_a);
    let path_b = key_file(&dir, "kb", &key_b);
    rpc(
        "keyring_file_add_key",
        json!({"name": "ka", "path": path_a}),
    )
    .unwrap();
    rpc(
        "keyring_file_add_key",
        json!({"name": "kb", "path": path_b}),
    )
    .unwrap();
    rpc(
        "nvmf_create_transport",
        json!({"trtype": "TCP", "handshake_timeout_ms": 1000}),
    )
    .unwrap();
    rpc(
        "bdev_malloc_create",
        json!({"name": "Malloc0", "num_blocks": 4096, "block_size": 4096}),
    )
    .unwrap();
    rpc(
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "allow_any_host": false}),
    )
    .unwrap();
    rpc(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc0"}}),
    )
    .unwrap();
    // A key that is not a TLS PSK is refused by name.
    let err = rpc(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOST_A, "psk": "nope"}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("psk"), "{err}");
    rpc(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOST_A, "psk": "ka"}),
    )
    .unwrap();
    rpc(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOST_B, "psk": "kb"}),
    )
    .unwrap();
    rpc(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOST_C}),
    )
    .unwrap();
    // A secure channel cannot be another sock impl.
    let err = rpc("nvmf_subsystem_add_listener", json!({"nqn": NQN, "secure_channel": true, "sock_impl": "posix",
        "listen_address": {"trtype": "tcp", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "0"}})).unwrap_err();
    assert!(err.to_string().contains("sock_impl"), "{err}");
    let secure = listener(&mut rpc, true);
    let plain = listener(&mut rpc, false);
    let trid = TransportId::tcp("127.0.0.1", secure, NQN);
    let trid_plain = TransportId::tcp("127.0.0.1", plain, NQN);

    // Both identity forms with both suites (A: SHA-256, AES-128-GCM; B: SHA-384, AES-256-GCM).
    for (host, key, seed) in [(HOST_A, &key_a, 1u8), (HOST_B, &key_b, 2u8)] {
        for version in [IdentityVersion::V0, IdentityVersion::V1] {
            io_round_trip(&trid, opts(host, Some(key), version), seed);
        }
    }
    // A host without a PSK works in plaintext on the plaintext listener.
    io_round_trip(&trid_plain, opts(HOST_C, None, IdentityVersion::V0), 3);

    // Plaintext to the secure listener: the handshake fails, the target closes, nothing
    // NVMe is answered.
    let e = refused(
        &trid,
        opts(HOST_C, None, IdentityVersion::V0),
        "plaintext to a secure listener",
    );
    assert!(e.to_string().contains("closed"), "{e}");
    // A wrong PSK (right length, other bytes), and host B's key for host A: no handshake.
    let e = refused(
        &trid,
        opts(
            HOST_A,
            Some(&psk(Hash::Sha256, 32, 0x33)),
            IdentityVersion::V0,
        ),
        "wrong PSK",
    );
    assert!(e.to_string().contains("TLS: handshake failed"), "{e}");
    let e = refused(
        &trid,
        opts(HOST_A, Some(&key_b), IdentityVersion::V1),
        "host A with host B's key",
    );
    assert!(e.to_string().contains("TLS: handshake failed"), "{e}");
    // A host with a PSK coming in plaintext: Connect refused, invalid host (SCT 1, SC 0x84).
    let e = refused(
        &trid_plain,
        opts(HOST_A, None, IdentityVersion::V0),
        "PSK host in plaintext",
    );
    assert!(e.to_string().contains("sct 0x1 sc 0x84"), "{e}");
    // Host A's identity and key, but the Connect claims host C: invalid host.
    let mut o = opts(HOST_C, Some(&key_a), IdentityVersion::V0);
    if let Some(t) = o.tls.as_mut() {
        t.psk_hostnqn = Some(HOST_A.into());
    }
    let e = refused(&trid, o, "identity naming another host");
    assert!(e.to_string().contains("sct 0x1 sc 0x84"), "{e}");

    // A handshake that stalls (half a ClientHello) neither blocks the reactor nor lives on.
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", secure)).unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let t0 = Instant::now();
    io_round_trip(&trid, opts(HOST_A, Some(&key_a), IdentityVersion::V1), 4);
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    let closed_after = t0.elapsed();
    assert!(
        closed_after < Duration::from_secs(8),
        "stalled handshake lived {closed_after:?}"
    );
    assert!(rest.is_empty() || rest[0] == 0x15, "{rest:?}");

    // Saved configuration: names, never secrets.
    let cfg = rpc("framework_get_config", json!({"name": "nvmf"})).unwrap();
    let text = cfg.to_string();
    assert!(!text.contains("NVMeTLSkey"), "{text}");
    let entries = cfg.as_array().unwrap();
    let params_of = |method: &str| -> Vec<serde_json::Value> {
        entries
            .iter()
            .filter(|e| e["method"] == method)
            .map(|e| e["params"].clone())
            .collect()
    };
    let hosts = params_of("nvmf_subsystem_add_host");
    assert!(
        hosts.contains(&json!({"nqn": NQN, "host": HOST_A, "psk": "ka"})),
        "{hosts:?}"
    );
    let listeners = params_of("nvmf_subsystem_add_listener");
    assert!(
        listeners.iter().any(|l| l["secure_channel"] == json!(true)
            && l["listen_address"]["trsvcid"] == json!(secure.to_string())),
        "{listeners:?}"
    );
    assert!(
        listeners.iter().any(|l| l.get("secure_channel").is_none()
            && l["listen_address"]["trsvcid"] == json!(plain.to_string())),
        "{listeners:?}"
    );

    // pollux-perf over TLS: v0 with the SHA-256 key file, v1 with the SHA-384 interchange key.
    for (host, key_arg, identity) in [
        (HOST_A, path_a.clone(), "v0"),
        (HOST_B, key_b.format(), "v1"),
    ] {
        let v = common::json_output(
            std::process::Command::new(env!("CARGO_BIN_EXE_pollux-perf")).args([
                "-r",
                &format!("trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{secure} subnqn:{NQN} hostnqn:{host}"),
                "-q", "16", "-o", "4096", "-w", "randrw", "-t", "1", "--no-pin", "--json",
                "--psk", &key_arg, "--psk-identity", identity,
            ]),
        );
        assert!(v["total"]["ios"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(v["total"]["errors"].as_u64(), Some(0), "{v}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    app.shutdown_and_wait();
}
