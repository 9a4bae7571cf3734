//! Asymmetric Namespace Access as in SPDK: a subsystem created with `ana_reporting` reports
//! ANA in Identify, serves the ANA log page (0x0C) as seen through the listener a controller
//! connected on, raises an ANA change AEN when that view changes, fails I/O on a path that
//! cannot reach a namespace's group with the path status, refuses an I/O queue Connect on
//! another listener than the admin queue's, and saves all of it in configs. RPC errors name
//! the field.

mod common;

use common::nvme::{call, rw, Host, HOSTNQN};
use common::{start, test_options};
use pollux::nvmf::host::{ConnectOpts, SyncController, TransportId};
use pollux::nvmf::wire::{
    self, admin_opc, aen, ana_state, cns, feat, io_opc, log_id, GetLogPageCmd, SglDescriptor, Sqe,
    Status,
};
use serde_json::{json, Value};

const NQN: &str = "nqn.2016-06.io.pollux:ana";
const PLAIN: &str = "nqn.2016-06.io.pollux:plain";

fn listen(port: u16) -> Value {
    json!({"trtype": "tcp", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()})
}

/// Adds a listener on an ephemeral port and returns the port.
fn add_listener(app: &pollux::app::RunningApp, nqn: &str, extra: Value) -> u16 {
    let before: Vec<Value> = call(app, "nvmf_subsystem_get_listeners", json!({"nqn": nqn}))
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    let mut p = json!({"nqn": nqn, "listen_address": listen(0)});
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    call(app, "nvmf_subsystem_add_listener", p).unwrap();
    let after = call(app, "nvmf_subsystem_get_listeners", json!({"nqn": nqn})).unwrap();
    let new = after
        .as_array()
        .unwrap()
        .iter()
        .find(|l| !before.contains(l))
        .expect("the new listener");
    new["address"]["trsvcid"].as_str().unwrap().parse().unwrap()
}

fn set_state(app: &pollux::app::RunningApp, port: u16, state: &str, grp: Option<u32>) {
    let mut p = json!({"nqn": NQN, "listen_address": listen(port), "ana_state": state});
    if let Some(g) = grp {
        p["anagrpid"] = json!(g);
    }
    assert_eq!(
        call(app, "nvmf_subsystem_listener_set_ana_state", p).unwrap(),
        true
    );
}

/// The ANA log page through a raw admin queue (optionally Return Groups Only).
fn ana_log(h: &mut Host, rgo: bool) -> (u64, Vec<wire::AnaGroup>) {
    let mut cmd = GetLogPageCmd::new(0, log_id::ANA, 0, 4096);
    cmd.lsp = rgo as u8;
    let d = h.run(
        cmd.to_sqe(0, SglDescriptor::transport_data_block(4096)),
        None,
        4096,
    );
    assert!(d.ok(), "ANA log: {:?}", d.cqe.status());
    wire::decode_ana_log(&d.data).expect("an ANA log page")
}

fn read(io: &mut Host, nsid: u32) -> Status {
    let mut s = rw(io_opc::READ, 0, 1);
    s.nsid = nsid.into();
    io.run(s, None, 4096).cqe.status()
}

fn err_of(app: &pollux::app::RunningApp, method: &str, params: Value) -> String {
    let e = call(app, method, params).expect_err(method);
    assert_eq!(e["code"], -32602, "{method}: {e}");
    e["message"].as_str().unwrap().to_string()
}

#[test]
fn ana_paths_identify_log_aen_path_status_and_config() {
    let app = start(test_options("ana"));
    call(&app, "nvmf_create_transport", json!({"trtype": "TCP"})).unwrap();
    for b in ["A0", "A1"] {
        call(
            &app,
            "bdev_malloc_create",
            json!({"name": b, "num_blocks": 1024, "block_size": 4096}),
        )
        .unwrap();
    }
    call(
        &app,
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "allow_any_host": true, "ana_reporting": true,
               "max_namespaces": 8, "min_cntlid": 100, "max_cntlid": 199}),
    )
    .unwrap();
    // nsid 1 in group 1 (its nsid), nsid 2 in group 5.
    call(
        &app,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "A0", "nsid": 1}}),
    )
    .unwrap();
    call(
        &app,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "A1", "nsid": 2, "anagrpid": 5}}),
    )
    .unwrap();
    let pa = add_listener(&app, NQN, json!({}));
    let pb = add_listener(&app, NQN, json!({"ana_state": "non_optimized"}));

    // nvmf_subsystem_get_listeners: one state per group 1..=max_nsid, as SPDK.
    let ls = call(&app, "nvmf_subsystem_get_listeners", json!({"nqn": NQN})).unwrap();
    let states = ls[1]["ana_states"].as_array().unwrap();
    assert_eq!(states.len(), 8);
    assert_eq!(
        states[4],
        json!({"ana_group": 5, "ana_state": "non_optimized"})
    );
    assert_eq!(ls[0]["ana_states"][0]["ana_state"], "optimized");
    let subs = call(&app, "nvmf_get_subsystems", json!({"nqn": NQN})).unwrap();
    assert_eq!(subs[0]["namespaces"][1]["anagrpid"], 5);

    // Identify through the host library.
    let ctrl = SyncController::connect(
        &TransportId::tcp("127.0.0.1", pa, NQN),
        ConnectOpts::default(),
    )
    .unwrap();
    let id = ctrl.identify_controller().unwrap();
    assert_eq!(
        id.cmic & 0b1010,
        0b1010,
        "multi-controller and ANA reporting"
    );
    assert_eq!(id.anatt, 10);
    assert_eq!(
        id.anacap & 0x7,
        0x7,
        "optimized, non-optimized, inaccessible"
    );
    assert_eq!(id.anagrpmax.get(), 8);
    assert_eq!(id.nanagrpid.get(), 8);
    assert_ne!(id.oaes.get() & aen::CONFIG_ANA_CHANGE, 0);
    assert!((100..=199).contains(&id.cntlid.get()));
    let ns = ctrl.identify_namespace(2).unwrap();
    assert_eq!(ns.anagrpid.get(), 5);
    assert_eq!(ns.nuse.get(), 1024);
    let page = ctrl.get_log_page(log_id::ANA, 0, 0, 4096).unwrap();
    let (count0, groups) = wire::decode_ana_log(&page).unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(
        (groups[0].anagrpid, groups[0].state, groups[0].nsids.clone()),
        (1, ana_state::OPTIMIZED, vec![1])
    );
    assert_eq!((groups[1].anagrpid, groups[1].nsids.clone()), (5, vec![2]));
    ctrl.write(1, 2, 0, 1, &[7u8; 4096]).unwrap();

    // A raw controller on path A with an AER armed for ANA changes.
    let mut admin = Host::admin_connect(pa, NQN, false, 0);
    let mut io = Host::io_connect(pa, NQN, admin.cntlid, 1, false);
    assert!(admin
        .set_feature(feat::ASYNC_EVENT_CONFIG, aen::CONFIG_ANA_CHANGE)
        .ok());
    let aer = admin.submit(Sqe::new(admin_opc::ASYNC_EVENT_REQUEST, 0, 0), None, 0);
    // Path B changes: nothing for a controller on A (its AER stays pending).
    set_state(&app, pb, "inaccessible", Some(5));
    // Path A, group 5: inaccessible.
    set_state(&app, pa, "inaccessible", Some(5));
    let c = admin.wait_completion(aer);
    assert!(c.ok());
    assert_eq!(
        c.cqe.dw0.get(),
        aen::dw0(aen::TYPE_NOTICE, aen::NOTICE_ANA_CHANGE, log_id::ANA)
    );
    let (count1, groups) = ana_log(&mut admin, false);
    assert!(
        count1 > count0,
        "change count advances: {count0} -> {count1}"
    );
    assert_eq!(groups[1].state, ana_state::INACCESSIBLE);
    assert_eq!(groups[0].state, ana_state::OPTIMIZED);
    let (_, rgo) = ana_log(&mut admin, true);
    assert_eq!(rgo.len(), 2);
    assert!(rgo.iter().all(|g| g.nsids.is_empty()), "RGO omits NSIDs");
    let id = admin.identify(cns::NAMESPACE, 2);
    let nuse = u64::from_le_bytes(id.data[16..24].try_into().unwrap());
    assert_eq!(nuse, 0, "NUSE 0 when inaccessible");

    // I/O on the inaccessible group: the path status, no DNR; the other group is served.
    let st = read(&mut io, 2);
    assert_eq!((st.sct(), st.sc(), st.dnr()), (3, 2, false), "{st:?}");
    assert!(read(&mut io, 1).is_success());
    let e = ctrl.read(1, 2, 0, 1, 4096).unwrap_err();
    assert!(e
        .nvme_status()
        .is_some_and(|s| s.same_code(Status::ANA_INACCESSIBLE)));
    let mut sqe = Sqe::new(admin_opc::GET_FEATURES, 0, 2);
    sqe.cdw10 = (feat::ERROR_RECOVERY as u32).into();
    let d = admin.run(sqe, None, 0);
    assert!(
        d.cqe.status().same_code(Status::ANA_INACCESSIBLE),
        "a namespace feature through an inaccessible path: {:?}",
        d.cqe.status()
    );
    // Change and persistent loss have their own statuses.
    set_state(&app, pa, "change", Some(5));
    assert!(read(&mut io, 2).same_code(Status::ANA_TRANSITION));
    set_state(&app, pa, "persistent_loss", Some(5));
    assert!(read(&mut io, 2).same_code(Status::ANA_PERSISTENT_LOSS));

    // The notice is masked until the log is read without RAE; the read above unmasked it.
    let aer = admin.submit(Sqe::new(admin_opc::ASYNC_EVENT_REQUEST, 0, 0), None, 0);
    set_state(&app, pa, "optimized", None);
    assert!(admin.wait_completion(aer).ok());
    let (count2, groups) = ana_log(&mut admin, false);
    assert!(count2 > count1);
    assert!(groups.iter().all(|g| g.state == ana_state::OPTIMIZED));
    assert!(read(&mut io, 2).is_success());
    let data = ctrl.read(1, 2, 0, 1, 4096).unwrap();
    assert_eq!(&data[..], &[7u8; 4096][..]);

    // Moving a namespace to another group: an ANA change for the controllers.
    let aer = admin.submit(Sqe::new(admin_opc::ASYNC_EVENT_REQUEST, 0, 0), None, 0);
    assert_eq!(
        call(
            &app,
            "nvmf_subsystem_set_ns_ana_group",
            json!({"nqn": NQN, "nsid": 2, "anagrpid": 1}),
        )
        .unwrap(),
        true
    );
    assert!(admin.wait_completion(aer).ok());
    let (_, groups) = ana_log(&mut admin, false);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].nsids, vec![1, 2]);

    // Path B: non-optimized for group 1 serves I/O; an I/O queue of controller A on B is
    // refused (the qid is the invalid field, as SPDK).
    let mut b_admin = Host::admin_connect(pb, NQN, false, 0);
    let (_, groups) = ana_log(&mut b_admin, false);
    assert_eq!(groups[0].state, ana_state::NON_OPTIMIZED);
    let mut b_io = Host::io_connect(pb, NQN, b_admin.cntlid, 1, false);
    assert!(read(&mut b_io, 1).is_success());
    let mut wrong = Host::connect(pb, false, false);
    let d = wrong.fabric_connect(2, NQN, HOSTNQN, admin.cntlid, 31, 0);
    d.assert_code(Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(
        wire::connect_invalid_param_from_dw0(d.cqe.dw0.get()),
        (false, wire::connect_off::QID)
    );

    // Saved in the config, and restored as it was.
    set_state(&app, pb, "inaccessible", Some(3));
    let cfg = call(&app, "framework_get_config", json!({"name": "nvmf"})).unwrap();
    let entries = cfg.as_array().unwrap();
    let find = |method: &str, pred: &dyn Fn(&Value) -> bool| {
        entries
            .iter()
            .any(|e| e["method"] == method && pred(&e["params"]))
    };
    assert!(find("nvmf_create_subsystem", &|p| p["nqn"] == NQN
        && p["ana_reporting"] == true));
    assert!(find("nvmf_subsystem_add_ns", &|p| p["namespace"]["nsid"]
        == 2
        && p["namespace"]["anagrpid"] == 1));
    assert!(find("nvmf_subsystem_add_listener", &|p| p
        ["listen_address"]["trsvcid"]
        == json!(pb.to_string())
        && p["ana_state"] == "non_optimized"));
    assert!(find("nvmf_subsystem_listener_set_ana_state", &|p| p
        ["anagrpid"]
        == 3
        && p["ana_state"] == "inaccessible"));

    // Errors name the field.
    call(
        &app,
        "nvmf_create_subsystem",
        json!({"nqn": PLAIN, "allow_any_host": true}),
    )
    .unwrap();
    for (method, params, field) in [
        (
            "nvmf_subsystem_listener_set_ana_state",
            json!({"nqn": NQN, "listen_address": listen(pa), "ana_state": "sleepy"}),
            "ana_state",
        ),
        (
            "nvmf_subsystem_listener_set_ana_state",
            json!({"nqn": NQN, "listen_address": listen(pa), "ana_state": "optimized", "anagrpid": 0}),
            "anagrpid",
        ),
        (
            "nvmf_subsystem_listener_set_ana_state",
            json!({"nqn": NQN, "listen_address": listen(pa), "ana_state": "optimized", "anagrpid": 9}),
            "anagrpid",
        ),
        (
            "nvmf_subsystem_listener_set_ana_state",
            json!({"nqn": NQN, "listen_address": listen(1), "ana_state": "optimized"}),
            "listen_address",
        ),
        (
            "nvmf_subsystem_listener_set_ana_state",
            json!({"nqn": PLAIN, "listen_address": listen(pa), "ana_state": "optimized"}),
            "nqn",
        ),
        (
            "nvmf_subsystem_set_ns_ana_group",
            json!({"nqn": NQN, "nsid": 7, "anagrpid": 1}),
            "nsid",
        ),
        (
            "nvmf_subsystem_set_ns_ana_group",
            json!({"nqn": NQN, "nsid": 1, "anagrpid": 99}),
            "anagrpid",
        ),
        (
            "nvmf_subsystem_set_ns_ana_group",
            json!({"nqn": PLAIN, "nsid": 1, "anagrpid": 1}),
            "nqn",
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": PLAIN, "namespace": {"bdev_name": "A0", "anagrpid": 1}}),
            "namespace.anagrpid",
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "A0", "anagrpid": 9}}),
            "namespace.anagrpid",
        ),
        (
            "nvmf_subsystem_add_listener",
            json!({"nqn": PLAIN, "listen_address": listen(0), "ana_state": "inaccessible"}),
            "ana_state",
        ),
        (
            "nvmf_subsystem_add_listener",
            json!({"nqn": NQN, "listen_address": listen(0), "ana_state": "down"}),
            "ana_state",
        ),
        (
            "nvmf_create_subsystem",
            json!({"nqn": wire::DISCOVERY_NQN, "ana_reporting": true}),
            "ana_reporting",
        ),
    ] {
        let msg = err_of(&app, method, params.clone());
        assert!(
            msg.starts_with(&format!("{field}:")),
            "{method} {params}: {msg}"
        );
    }
    // A subsystem without ANA reporting shows none of it.
    let plain = add_listener(&app, PLAIN, json!({"ana_state": "optimized"}));
    let mut p = Host::admin_connect(plain, PLAIN, false, 0);
    let d = p.identify(cns::CONTROLLER, 0);
    assert_eq!(d.data[76] & 0b1000, 0, "no CMIC ANA bit");
    assert!(!p.get_log(log_id::ANA, 0, 0, 4096).ok());
    drop(ctrl);
}

/// Discovery referrals (the other gateway's discovery service) in the discovery log.
#[test]
fn referrals_appear_in_the_discovery_log_and_configs() {
    use pollux::nvmf::host::discover;
    use pollux::nvmf::wire::{subtype, DISCOVERY_NQN};
    let app = start(test_options("referral"));
    call(&app, "nvmf_create_transport", json!({"trtype": "TCP"})).unwrap();
    call(
        &app,
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "allow_any_host": true, "ana_reporting": true}),
    )
    .unwrap();
    let port = add_listener(&app, NQN, json!({}));
    let other =
        json!({"trtype": "tcp", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "4431"});
    for params in [
        json!({"address": other}),
        json!({"address": other}),
        json!({"address": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "4432"},
               "subnqn": NQN, "secure_channel": true}),
    ] {
        assert_eq!(
            call(&app, "nvmf_discovery_add_referral", params).unwrap(),
            true
        );
    }
    let list = call(&app, "nvmf_discovery_get_referrals", json!({})).unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        2,
        "a repeated referral is kept once"
    );
    assert_eq!(
        list[0],
        json!({"address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1",
                           "trsvcid": "4431"},
               "secure_channel": false, "subnqn": DISCOVERY_NQN})
    );
    let entries = discover(
        &TransportId::tcp("127.0.0.1", port, DISCOVERY_NQN),
        ConnectOpts::default(),
    )
    .unwrap();
    let fields: Vec<(u8, Option<&str>, Option<&str>, u8)> = entries
        .iter()
        .map(|e| {
            (
                e.subtype,
                pollux::nvmf::field_str(&e.trsvcid),
                pollux::nvmf::field_str(&e.subnqn),
                e.treq,
            )
        })
        .collect();
    let own = port.to_string();
    assert_eq!(
        fields,
        vec![
            (subtype::NVME, Some(own.as_str()), Some(NQN), 2),
            (
                subtype::DISCOVERY_REFERRAL,
                Some("4431"),
                Some(DISCOVERY_NQN),
                2
            ),
            (subtype::NVME, Some("4432"), Some(NQN), 1),
        ]
    );
    let cfg = call(&app, "framework_get_config", json!({"name": "nvmf"})).unwrap();
    assert!(cfg
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["method"] == "nvmf_discovery_add_referral" && e["params"] == list[1]));
    assert_eq!(
        call(
            &app,
            "nvmf_discovery_remove_referral",
            json!({"address": other})
        )
        .unwrap(),
        true
    );
    assert_eq!(
        call(&app, "nvmf_discovery_get_referrals", json!(null))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for (method, params, field) in [
        (
            "nvmf_discovery_remove_referral",
            json!({"address": other}),
            "address",
        ),
        (
            "nvmf_discovery_add_referral",
            json!({"address": {"trtype": "rdma", "traddr": "127.0.0.1", "trsvcid": "1"}}),
            "address.trtype",
        ),
        (
            "nvmf_discovery_add_referral",
            json!({"address": {"trtype": "tcp", "traddr": "127.0.0.1"}}),
            "address.trsvcid",
        ),
        (
            "nvmf_discovery_add_referral",
            json!({"address": other, "subnqn": "not-an-nqn"}),
            "subnqn",
        ),
    ] {
        let msg = err_of(&app, method, params.clone());
        assert!(
            msg.starts_with(&format!("{field}:")),
            "{method} {params}: {msg}"
        );
    }
}
