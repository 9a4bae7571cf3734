//! DH-HMAC-CHAP configuration through the RPC socket: host keys by keyring name, nvmf_set_config's lists, errors naming the field, and the saved configuration.
//!
//! The protocol itself is covered by the unit tests of `nvmf::auth` and, against the real
//! Linux host, by scripts/e2e-dhchap.sh.

mod common;

use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;

const NQN: &str = "nqn.2016-06.io.pollux:auth";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";
/// A NULL-transform secret of 32 zero bytes with its CRC-32 (as nvme gen-dhchap-key prints it).
const SECRET: &str = "DHHC-1:00:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAACtVQoZ:";

/// `NQN`'s hosts as nvmf_get_subsystems lists them.
fn subsystem_hosts(c: &mut common::Client) -> Value {
    let subs = c.call("nvmf_get_subsystems", None);
    let s = subs.as_array().unwrap().iter().find(|s| s["nqn"] == NQN);
    s.unwrap()["hosts"].clone()
}

fn key_file(dir: &std::path::Path, name: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, SECRET).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

/// SPDK's answer to a method called after framework_start_init that only STARTUP allows.
const STARTUP_ONLY: &str = "Method may only be called before framework is initialized. Use \
    --wait-for-rpc command line parameter and then issue this RPC before the \
    framework_start_init RPC.";

#[test]
fn host_keys_by_name_errors_and_saved_config() {
    // nvmf_set_config is a STARTUP method (as in SPDK): set before framework_start_init.
    let app = common::start_waiting_for_rpc("dhchap-rpc");
    let mut c = common::Client::connect(app.rpc_socket());
    for (params, field) in [
        (json!({"dhchap_digests": ["md5"]}), "dhchap_digests"),
        (json!({"dhchap_dhgroups": ["ffdhe1024"]}), "dhchap_dhgroups"),
        (json!({"dhchap_dhgroups": []}), "dhchap_dhgroups"),
        (json!({"poll_groups_mask": "0x1"}), "poll_groups_mask"),
    ] {
        let (code, msg) = c.call_err("nvmf_set_config", Some(params.clone()));
        assert_eq!(code, -32602, "nvmf_set_config {params}: {msg}");
        assert!(msg.contains(field), "nvmf_set_config {params}: {msg}");
    }
    c.call(
        "nvmf_set_config",
        Some(json!({"dhchap_digests": ["sha384"], "dhchap_dhgroups": ["null", "ffdhe2048"]})),
    );
    c.call("framework_start_init", None);
    let (code, msg) = c.call_err(
        "nvmf_set_config",
        Some(json!({"dhchap_digests": ["sha256"]})),
    );
    assert_eq!((code, msg.as_str()), (-1, STARTUP_ONLY));

    let dir = std::env::temp_dir().join(format!("pollux-dhchap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for k in ["hk", "ck"] {
        c.call(
            "keyring_file_add_key",
            Some(json!({"name": k, "path": key_file(&dir, k)})),
        );
    }
    c.call("nvmf_create_transport", Some(json!({"trtype": "TCP"})));
    c.call("nvmf_create_subsystem", Some(json!({"nqn": NQN})));

    let refused: &[(&str, Value, &str)] = &[
        (
            "nvmf_subsystem_add_host",
            json!({"nqn": NQN, "host": HOST, "dhchap_key": "nope"}),
            "dhchap_key",
        ),
        (
            "nvmf_subsystem_add_host",
            json!({"nqn": NQN, "host": HOST, "dhchap_key": "hk", "dhchap_ctrlr_key": "nope"}),
            "dhchap_ctrlr_key",
        ),
        (
            "nvmf_subsystem_add_host",
            json!({"nqn": NQN, "host": HOST, "dhchap_ctrlr_key": "ck"}),
            "dhchap_ctrlr_key",
        ),
        (
            "nvmf_subsystem_add_host",
            json!({"nqn": NQN, "host": HOST, "psk": "k"}),
            "psk",
        ),
        (
            "nvmf_subsystem_set_keys",
            json!({"nqn": NQN, "host": HOST, "dhchap_key": "hk"}),
            "host",
        ),
    ];
    for (method, params, field) in refused {
        let (code, msg) = c.call_err(method, Some(params.clone()));
        assert_eq!(code, -32602, "{method} {params}: {msg}");
        assert!(msg.contains(field), "{method} {params}: {msg}");
    }

    c.call(
        "nvmf_subsystem_add_host",
        Some(json!({"nqn": NQN, "host": HOST, "dhchap_key": "hk", "dhchap_ctrlr_key": "ck"})),
    );
    assert_eq!(
        subsystem_hosts(&mut c),
        json!([{"nqn": HOST, "dhchap_key": "hk", "dhchap_ctrlr_key": "ck"}])
    );

    let cfg = c.call("framework_get_config", Some(json!({"name": "nvmf"})));
    let entries = cfg.as_array().unwrap();
    let find = |m: &str| entries.iter().find(|e| e["method"] == m).cloned().unwrap();
    assert_eq!(
        find("nvmf_set_config")["params"],
        json!({"dhchap_digests": ["sha384"], "dhchap_dhgroups": ["null", "ffdhe2048"]})
    );
    assert_eq!(
        find("nvmf_subsystem_add_host")["params"],
        json!({"nqn": NQN, "host": HOST, "dhchap_key": "hk", "dhchap_ctrlr_key": "ck"})
    );

    // set_keys replaces the keys; without keys the host no longer authenticates.
    c.call(
        "nvmf_subsystem_set_keys",
        Some(json!({"nqn": NQN, "host": HOST, "dhchap_key": "ck"})),
    );
    assert_eq!(
        subsystem_hosts(&mut c),
        json!([{"nqn": HOST, "dhchap_key": "ck"}])
    );
    c.call(
        "nvmf_subsystem_set_keys",
        Some(json!({"nqn": NQN, "host": HOST})),
    );
    assert_eq!(subsystem_hosts(&mut c), json!([{"nqn": HOST}]));
    let _ = std::fs::remove_dir_all(&dir);
}
