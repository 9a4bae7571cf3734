//! Namespace masking as in SPDK: a namespace added with `no_auto_visible` is active only for
//! the hosts `nvmf_ns_add_host` lists. Other hosts do not see it in the active namespace
//! list, read zeroes for its Identify Namespace and get Invalid Namespace for I/O; adding or
//! removing a host raises a namespace-changed AEN on that host's controller only; the list
//! is saved in configs.

mod common;

use common::nvme::{add_malloc_namespace, call, rw, start_exporting_malloc, Host, HOSTNQN};
use pollux::nvmf::wire::{self, admin_opc, cns, io_opc, Sqe};
use serde_json::json;

const NQN: &str = "nqn.2016-06.io.pollux:mask";
const OTHER: &str = "nqn.2014-08.org.nvmexpress:uuid:99999999-8888-7777-6666-555555555555";

fn active(h: &mut Host) -> Vec<u32> {
    let d = h.identify(cns::ACTIVE_NS_LIST, 0);
    assert!(d.ok());
    wire::decode_ns_list(d.data.as_slice().try_into().unwrap())
}

fn read_ok(io: &mut Host, nsid: u32) -> bool {
    let mut s = rw(io_opc::READ, 0, 1);
    s.nsid = nsid.into();
    io.run(s, None, 4096).ok()
}

#[test]
fn a_masked_namespace_is_seen_only_by_its_hosts() {
    let (app, port) = start_exporting_malloc("ns-mask", NQN);
    let nsid = add_malloc_namespace(
        &app,
        NQN,
        json!({"name": "Masked", "num_blocks": 4096, "block_size": 4096}),
        json!({"nsid": 2, "no_auto_visible": true}),
    );
    assert_eq!(nsid, 2);

    let mut admin = Host::admin_connect(port, NQN, false, 0);
    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);
    assert_eq!(active(&mut admin), vec![1], "masked namespace not active");
    let id = admin.identify(cns::NAMESPACE, 2);
    assert!(
        id.ok() && id.data.iter().all(|b| *b == 0),
        "inactive: zeroed Identify"
    );
    assert!(!admin.identify(cns::NS_ID_DESCRIPTOR_LIST, 2).ok());
    assert!(read_ok(&mut io, 1));
    assert!(!read_ok(&mut io, 2), "I/O to a masked namespace is refused");

    // Listing the host makes it active, with an AEN.
    let aer = admin.arm_ns_notice();
    let add = json!({"nqn": NQN, "nsid": 2, "host": HOSTNQN});
    assert_eq!(call(&app, "nvmf_ns_add_host", add.clone()).unwrap(), true);
    assert_eq!(admin.expect_ns_notice(aer), vec![2]);
    assert_eq!(active(&mut admin), vec![1, 2]);
    assert!(admin
        .identify(cns::NAMESPACE, 2)
        .data
        .iter()
        .any(|b| *b != 0));
    assert!(read_ok(&mut io, 2));

    // Another host's controller does not see it.
    let mut other = Host::connect(port, false, false);
    assert!(other.fabric_connect(0, NQN, OTHER, 0xffff, 31, 0).ok());
    assert!(other.prop_set(wire::prop::CC, 1 | 6 << 16 | 4 << 20).ok());
    assert_eq!(active(&mut other), vec![1]);

    // Saved in the config.
    let cfg = call(&app, "framework_get_config", json!({"name": "nvmf"})).unwrap();
    let entries = cfg.as_array().unwrap();
    assert!(entries
        .iter()
        .any(|e| e["method"] == "nvmf_subsystem_add_ns"
            && e["params"]["namespace"]["no_auto_visible"] == true));
    assert!(entries
        .iter()
        .any(|e| e["method"] == "nvmf_ns_add_host" && e["params"] == add));
    let subs = call(&app, "nvmf_get_subsystems", json!({"nqn": NQN})).unwrap();
    let ns2 = &subs[0]["namespaces"][1];
    assert_eq!(ns2["no_auto_visible"], true);
    assert_eq!(ns2["hosts"], json!([{"nqn": HOSTNQN}]));

    // Removing the host masks it again, with an AEN.
    let aer = admin.submit(Sqe::new(admin_opc::ASYNC_EVENT_REQUEST, 0, 0), None, 0);
    assert_eq!(
        call(&app, "nvmf_ns_remove_host", add.clone()).unwrap(),
        true
    );
    assert!(admin.wait_completion(aer).ok());
    assert_eq!(active(&mut admin), vec![1]);
    assert!(!read_ok(&mut io, 2));

    // Errors name what is wrong.
    for (method, params, needle) in [
        (
            "nvmf_ns_add_host",
            json!({"nqn": NQN, "nsid": 1, "host": HOSTNQN}),
            "every host",
        ),
        (
            "nvmf_ns_add_host",
            json!({"nqn": NQN, "nsid": 7, "host": HOSTNQN}),
            "7",
        ),
        (
            "nvmf_ns_remove_host",
            json!({"nqn": NQN, "nsid": 2, "host": OTHER}),
            OTHER,
        ),
        ("nvmf_ns_add_host", json!({"nqn": NQN, "nsid": 2}), "host"),
    ] {
        let e = call(&app, method, params).unwrap_err();
        assert!(e.to_string().contains(needle), "{method}: {e}");
    }
    drop((admin, io, other));
    app.shutdown_and_wait();
}
