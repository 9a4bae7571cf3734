//! The discovery subsystem behaves as in SPDK: deleting it turns discovery off (connected
//! discovery controllers are closed, new Connects to the discovery NQN are refused, its own
//! listeners close) while NVMe subsystems keep serving; creating it again turns it back on.

mod common;

use common::nvme::{call, start_exporting_malloc, Host, HOSTNQN};
use serde_json::json;

const NQN: &str = "nqn.2016-06.io.pollux:disc";
const DISCOVERY: &str = "nqn.2014-08.org.nvmexpress.discovery";

fn discovery_connect_ok(port: u16) -> bool {
    let mut h = Host::connect(port, false, false);
    h.fabric_connect(0, DISCOVERY, HOSTNQN, 0xffff, 31, 0).ok()
}

#[test]
fn deleting_the_discovery_subsystem_turns_discovery_off() {
    let (app, port) = start_exporting_malloc("disc-delete", NQN);
    // Its own listener on another port.
    let dport = common::free_port();
    call(
        &app,
        "nvmf_subsystem_add_listener",
        json!({"nqn": DISCOVERY, "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1",
               "trsvcid": dport.to_string()}}),
    )
    .unwrap();
    assert!(discovery_connect_ok(port), "discovery on an NVMe listener");
    assert!(discovery_connect_ok(dport), "discovery on its own listener");
    let mut connected = Host::admin_connect(dport, DISCOVERY, false, 0);

    assert_eq!(
        call(&app, "nvmf_delete_subsystem", json!({"nqn": DISCOVERY})).unwrap(),
        true
    );
    connected.drain_until_closed();
    assert!(!discovery_connect_ok(port), "no discovery once deleted");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", dport)).is_err(),
        "its own listener closed"
    );
    let subs = call(&app, "nvmf_get_subsystems", json!({})).unwrap();
    assert!(subs
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["nqn"] != DISCOVERY));
    let mut admin = Host::admin_connect(port, NQN, false, 0);
    assert!(admin.identify(0, 1).ok(), "NVMe subsystems keep serving");
    let e = call(&app, "nvmf_delete_subsystem", json!({"nqn": DISCOVERY})).unwrap_err();
    assert!(e.to_string().contains(DISCOVERY), "{e}");

    // Created again, it answers on every listener again.
    call(
        &app,
        "nvmf_create_subsystem",
        json!({"nqn": DISCOVERY, "allow_any_host": true}),
    )
    .unwrap();
    assert!(discovery_connect_ok(port));
    let subs = call(&app, "nvmf_get_subsystems", json!({"nqn": DISCOVERY})).unwrap();
    assert_eq!(subs[0]["subtype"], "Discovery");
    let e = call(&app, "nvmf_create_subsystem", json!({"nqn": DISCOVERY})).unwrap_err();
    assert!(e.to_string().contains("exists"), "{e}");
    drop(admin);
    app.shutdown_and_wait();
}
