//! The NVMe-oF/TCP target driven by a small blocking host (tests/common/nvme.rs) over
//! loopback: connect with and without digests, Identify, every I/O command, R2T writes up
//! to max_io_size, I/O queues on two reactors, Connect rejections, keep-alive timeout, live
//! namespace add/remove with AEN, and malformed PDUs answered by a Term Req and a close
//! while another connection keeps working.

mod common;

use common::nvme::{
    add_malloc_namespace, add_uring_listener, call, export, rw, Host, HOSTID, HOSTNQN,
};
use pollux::app::RunningApp;
use pollux::nvmf::pdu::{self, Fes, PduHeader};
use pollux::nvmf::wire::{
    self, admin_opc, aen, cns, feat, io_opc, log_id, prop, Cap, IdentifyController,
    IdentifyNamespace, SglDescriptor, SmartLog, Sqe, Status,
};
use pollux::reactor::IdleStrategy;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.pollux:test";

/// The second bdev the namespace tests add: `Malloc1`, 512 KiB of 512-byte blocks.
fn malloc1() -> Value {
    json!({"name": "Malloc1", "num_blocks": 1024, "block_size": 512})
}

fn start(cores: Vec<u32>, tag: &str) -> RunningApp {
    let mut o = common::test_options(tag);
    o.cores = cores;
    o.idle = IdleStrategy::SpinThenSleep(Duration::from_micros(50));
    common::start(o)
}

fn setup(app: &RunningApp, extra: Value) -> u16 {
    export(&mut |m, p| call(app, m, p), NQN, "Malloc0", 64, extra, true)
}

/// Like `setup` with a 16 MiB namespace and only listed hosts allowed (none yet).
fn setup_restricted(app: &RunningApp) -> u16 {
    export(
        &mut |m, p| call(app, m, p),
        NQN,
        "Malloc0",
        16,
        json!({}),
        false,
    )
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Identify, features, every I/O command, SMART counters.
fn exercise(port: u16, digests: bool, maxh2cdata: u32) {
    let mut admin = Host::admin_connect(port, NQN, digests, 0);
    let cap = Cap::from_u64(admin.prop_get(prop::CAP, true).cqe.result64());
    assert_eq!(cap.mqes(), 127);
    let vs = admin.prop_get(prop::VS, false).cqe.dw0;
    assert_eq!(vs, 0x0001_0300);

    let d = admin.identify(cns::CONTROLLER, 0);
    assert!(d.ok());
    let id = IdentifyController::decode_slice(&d.data).unwrap();
    assert_eq!(pollux::nvmf::field_str(&id.sn), Some("SN123"));
    assert_eq!(pollux::nvmf::field_str(&id.mn), Some("pollux test"));
    assert_eq!(pollux::nvmf::field_str(&id.subnqn), Some(NQN));
    assert_eq!(id.cntlid, admin.cntlid);
    assert_eq!(id.ioccsz, (64 + 4096) / 16);
    assert_eq!(id.iorcsz, 1);
    assert_eq!(id.mdts, 5);
    assert_eq!(id.cntrltype, wire::cntrltype::IO);
    assert_ne!(id.oncs & wire::oncs::WRITE_ZEROES, 0);
    assert_ne!(id.oncs & wire::oncs::DATASET_MANAGEMENT, 0);
    assert_eq!(id.msdbd, 1);

    let d = admin.identify(cns::ACTIVE_NS_LIST, 0);
    assert_eq!(
        wire::decode_ns_list(d.data.as_slice().try_into().unwrap()),
        vec![1]
    );
    let d = admin.identify(cns::NAMESPACE, 1);
    let ns = IdentifyNamespace::decode_slice(&d.data).unwrap();
    assert_eq!(ns.nsze, 64 * 256);
    assert_eq!(ns.block_size(), Some(4096));
    let d = admin.identify(cns::NS_ID_DESCRIPTOR_LIST, 1);
    let descs = wire::decode_ns_id_descriptors(&d.data).unwrap();
    assert!(descs
        .iter()
        .any(|d| matches!(d, wire::NsIdDescriptor::Uuid(_))));
    let d = admin.identify(cns::NAMESPACE, 0);
    d.assert_code(Status::INVALID_NAMESPACE_OR_FORMAT);

    let d = admin.set_feature(feat::NUMBER_OF_QUEUES, wire::num_queues_value(3, 3));
    assert!(d.ok());
    assert_eq!(d.cqe.dw0, wire::num_queues_value(3, 3));
    let d = admin.get_feature(feat::NUMBER_OF_QUEUES);
    assert_eq!(d.cqe.dw0, wire::num_queues_value(3, 3));
    let d = admin.get_feature(0x77);
    d.assert_code(Status::INVALID_FIELD);
    let d = admin.run(Sqe::new(admin_opc::KEEP_ALIVE, 0, 0), None, 0);
    assert!(d.ok());

    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, digests);
    assert_eq!(io.maxh2cdata, maxh2cdata);
    // In-capsule 4 KiB write, read back.
    let a = pattern(4096, 1);
    assert!(io.run(rw(io_opc::WRITE, 10, 1), Some(&a), 0).ok());
    let d = io.run(rw(io_opc::READ, 10, 1), None, 4096);
    assert!(d.ok());
    assert_eq!(d.data, a);
    // R2T writes of up to max_io_size (128 KiB), several PDUs when maxh2cdata is smaller.
    for (blocks, seed) in [(2u32, 2u8), (8, 3), (32, 4)] {
        let b = pattern(blocks as usize * 4096, seed);
        let d = io.run(rw(io_opc::WRITE, 100, blocks), Some(&b), 0);
        assert!(d.ok(), "{blocks} blocks: {:?}", d.cqe.status());
        let d = io.run(rw(io_opc::READ, 100, blocks), None, blocks * 4096);
        assert!(d.ok());
        assert!(d.data == b, "read back {blocks} blocks");
    }
    // Beyond max_io_size: Invalid Field before any data moves.
    let d = io.run(rw(io_opc::READ, 0, 33), None, 33 * 4096);
    assert!(!d.ok());
    // Flush, Write Zeroes, DSM deallocate.
    assert!(io.run(Sqe::new(io_opc::FLUSH, 0, 1), None, 0).ok());
    assert!(io.run(Sqe::write_zeroes(0, 1, 100, 2, false), None, 0).ok());
    let d = io.run(rw(io_opc::READ, 100, 2), None, 8192);
    assert!(d.data.iter().all(|b| *b == 0), "zeroed");
    let mut ranges = vec![0u8; 16];
    ranges[4..8].copy_from_slice(&4u32.to_le_bytes());
    ranges[8..16].copy_from_slice(&102u64.to_le_bytes());
    let dsm = Sqe::dataset_management(0, 1, 1, wire::dsm::DEALLOCATE, SglDescriptor::default());
    assert!(io.run(dsm, Some(&ranges), 0).ok());
    // Errors: LBA out of range, invalid namespace, invalid opcode.
    let d = io.run(rw(io_opc::READ, 64 * 256 - 1, 2), None, 8192);
    d.assert_code(Status::LBA_OUT_OF_RANGE);
    assert!(d.cqe.status().dnr());
    let mut bad_ns = rw(io_opc::READ, 0, 1);
    bad_ns.nsid = 9.into();
    let d = io.run(bad_ns, None, 4096);
    d.assert_code(Status::INVALID_NAMESPACE_OR_FORMAT);
    let d = io.run(Sqe::new(0x7e, 0, 1), None, 0);
    d.assert_code(Status::INVALID_OPCODE);
    // SQ head moves with every command.
    let d = io.run(rw(io_opc::READ, 0, 1), None, 4096);
    assert!(d.ok());

    // SMART: counters from the bdev's iostat (reads and writes above, at least).
    let d = admin.get_log(log_id::SMART_HEALTH, u32::MAX, 0, 512);
    assert!(d.ok());
    let smart = SmartLog::decode_slice(&d.data).unwrap();
    assert!(
        smart.host_read_commands >= 5,
        "{}",
        smart.host_read_commands
    );
    assert!(smart.host_write_commands >= 4);
    assert!(smart.data_units_written >= 1);
    let d = admin.get_log(log_id::FIRMWARE_SLOT, 0, 0, 512);
    assert!(d.ok());
    let d = admin.get_log(log_id::ERROR_INFORMATION, 0, 0, 64);
    assert!(d.ok());
    let d = admin.get_log(0x42, 0, 0, 64);
    assert!(!d.ok());
}

#[test]
fn connect_identify_and_every_io_command() {
    let app = start(vec![0], "nvmf-basic");
    let port = setup(&app, json!({}));
    exercise(port, false, 131072);
    app.shutdown_and_wait();
}

#[test]
fn header_and_data_digests() {
    let app = start(vec![0], "nvmf-digest");
    // An 8 KiB I/O unit (MAXH2CDATA) makes a 128 KiB write take 16 R2T / H2CData rounds.
    let port = setup(&app, json!({"io_unit_size": 8192}));
    exercise(port, true, 8192);
    app.shutdown_and_wait();
}

#[test]
fn c2h_success_flag_when_sq_flow_control_is_off() {
    let app = start(vec![0], "nvmf-c2h");
    let port = setup(&app, json!({}));
    let admin = Host::admin_connect(port, NQN, false, 0);
    let mut io = Host::connect(port, false, false);
    let d = io.fabric_connect_full(1, NQN, HOSTNQN, HOSTID, admin.cntlid, 31, 0, 0x4);
    assert!(d.ok());
    let a = pattern(8192, 9);
    assert!(io.run(rw(io_opc::WRITE, 0, 2), Some(&a), 0).ok());
    let cid = io.submit(rw(io_opc::READ, 0, 2), None, 8192);
    let p = io.recv_pdu().unwrap();
    match p.header {
        PduHeader::C2HData(c) => {
            assert!(c.success && c.last && c.cccid == cid);
            assert_eq!(p.data, a);
        }
        other => panic!("expected C2HData, got {other:?}"),
    }
    app.shutdown_and_wait();
}

#[test]
fn io_queues_on_two_reactors() {
    let app = start(vec![0, 1], "nvmf-2r");
    let port = setup(&app, json!({}));
    let mut admin = Host::admin_connect(port, NQN, false, 0);
    assert!(admin
        .set_feature(feat::NUMBER_OF_QUEUES, wire::num_queues_value(1, 1))
        .ok());
    let mut q1 = Host::io_connect(port, NQN, admin.cntlid, 1, false);
    let mut q2 = Host::io_connect(port, NQN, admin.cntlid, 2, false);
    for (i, q) in [&mut q1, &mut q2].into_iter().enumerate() {
        let a = pattern(16384, i as u8);
        assert!(q
            .run(rw(io_opc::WRITE, 1000 * i as u64, 4), Some(&a), 0)
            .ok());
        assert_eq!(
            q.run(rw(io_opc::READ, 1000 * i as u64, 4), None, 16384)
                .data,
            a
        );
    }
    // Both reactors host queues (connections are spread round-robin).
    let stats = call(&app, "nvmf_get_stats", json!({})).unwrap();
    let groups = stats["poll_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert!(groups
        .iter()
        .all(|g| g["current_admin_qpairs"].as_u64().unwrap()
            + g["current_io_qpairs"].as_u64().unwrap()
            > 0));
    let qps = call(&app, "nvmf_subsystem_get_qpairs", json!({"nqn": NQN})).unwrap();
    assert_eq!(qps.as_array().unwrap().len(), 3);
    // Closing the admin queue tears down the I/O queues on the other reactor too.
    drop(admin);
    for q in [&mut q1, &mut q2] {
        q.drain_until_closed();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while call(&app, "nvmf_subsystem_get_controllers", json!({"nqn": NQN}))
        .unwrap()
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        assert!(Instant::now() < deadline, "controller not destroyed");
        std::thread::sleep(Duration::from_millis(10));
    }
    app.shutdown_and_wait();
}

fn invalid_param(d: &common::nvme::Done) -> (bool, u16) {
    d.assert_code(Status::CONNECT_INVALID_PARAMETERS);
    wire::connect_invalid_param_from_dw0(d.cqe.dw0.get())
}

#[test]
fn connect_rejections() {
    let app = start(vec![0], "nvmf-reject");
    let port = setup_restricted(&app);
    // Unknown subsystem: IATTR=1, IPO=256.
    let mut h = Host::connect(port, false, false);
    let d = h.fabric_connect(0, "nqn.2016-06.io.pollux:nope", HOSTNQN, 0xffff, 31, 0);
    assert_eq!(invalid_param(&d), (true, 256));
    // Host not allowed.
    let mut h = Host::connect(port, false, false);
    let d = h.fabric_connect(0, NQN, HOSTNQN, 0xffff, 31, 0);
    d.assert_code(Status::CONNECT_INVALID_HOST);
    call(
        &app,
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOSTNQN}),
    )
    .unwrap();
    // Admin connect with a static cntlid: IPO=16 in the data.
    let mut h = Host::connect(port, false, false);
    let d = h.fabric_connect(0, NQN, HOSTNQN, 5, 31, 0);
    assert_eq!(invalid_param(&d), (true, 16));
    // Queue size 0 and too large: IPO=44 in the SQE.
    let mut h = Host::connect(port, false, false);
    let d = h.fabric_connect(0, NQN, HOSTNQN, 0xffff, 0, 0);
    assert_eq!(invalid_param(&d), (false, 44));
    // A command before Connect: Command Sequence Error.
    let d = h.run(Sqe::new(admin_opc::IDENTIFY, 0, 0), None, 4096);
    d.assert_code(Status::COMMAND_SEQUENCE_ERROR);

    // A controller, not yet enabled: an I/O connect is a Command Sequence Error.
    let mut admin = Host::connect(port, false, false);
    assert!(admin.fabric_connect(0, NQN, HOSTNQN, 0xffff, 31, 0).ok());
    let cntlid = admin.cntlid;
    let mut h = Host::connect(port, false, false);
    let d = h.fabric_connect(1, NQN, HOSTNQN, cntlid, 31, 0);
    d.assert_code(Status::COMMAND_SEQUENCE_ERROR);
    assert!(admin.prop_set(prop::CC, 1 | 6 << 16 | 4 << 20).ok());
    assert!(admin
        .set_feature(feat::NUMBER_OF_QUEUES, wire::num_queues_value(0, 0))
        .ok());
    // Unknown cntlid.
    let mut h = Host::connect(port, false, false);
    let d = h.fabric_connect(1, NQN, HOSTNQN, cntlid + 7, 31, 0);
    assert_eq!(invalid_param(&d), (true, 16));
    // Another host NQN (also one that shares the prefix), another host id.
    let mut h = Host::connect(port, false, false);
    let longer = format!("{HOSTNQN}x");
    let d = h.fabric_connect(1, NQN, &longer, cntlid, 31, 0);
    assert!(!d.ok());
    let mut h = Host::connect(port, false, false);
    let d = h.fabric_connect_full(1, NQN, HOSTNQN, [9; 16], cntlid, 31, 0, 0);
    assert_eq!(invalid_param(&d), (true, 0));
    // QID beyond the granted queue count (1 queue), then in use.
    let mut h = Host::connect(port, false, false);
    let d = h.fabric_connect(2, NQN, HOSTNQN, cntlid, 31, 0);
    assert_eq!(invalid_param(&d), (false, 42));
    let _q1 = Host::io_connect(port, NQN, cntlid, 1, false);
    let mut h = Host::connect(port, false, false);
    let d = h.fabric_connect(1, NQN, HOSTNQN, cntlid, 31, 0);
    assert_eq!(invalid_param(&d), (false, 42));
    // A second Connect on a connected queue.
    let d = admin.fabric_connect(0, NQN, HOSTNQN, 0xffff, 31, 0);
    d.assert_code(Status::COMMAND_SEQUENCE_ERROR);
    app.shutdown_and_wait();
}

#[test]
fn keep_alive_timeout_destroys_the_controller() {
    let app = start(vec![0], "nvmf-kato");
    let port = setup(&app, json!({"min_kato": 100}));
    let mut admin = Host::admin_connect(port, NQN, false, 300);
    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);
    // Keep-alives keep it alive for a while...
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(100));
        assert!(admin
            .run(Sqe::new(admin_opc::KEEP_ALIVE, 0, 0), None, 0)
            .ok());
    }
    // ...then silence: the target closes both queues.
    let t0 = Instant::now();
    admin.drain_until_closed();
    io.drain_until_closed();
    assert!(t0.elapsed() < Duration::from_secs(5));
    let c = call(&app, "nvmf_subsystem_get_controllers", json!({"nqn": NQN})).unwrap();
    assert_eq!(c, json!([]));
    app.shutdown_and_wait();
}

#[test]
fn live_namespace_add_and_remove_raise_aens() {
    let app = start(vec![0], "nvmf-aen");
    let port = setup(&app, json!({}));
    let mut admin = Host::admin_connect(port, NQN, false, 0);
    let aer = admin.arm_ns_notice();
    let nsid = add_malloc_namespace(&app, NQN, malloc1(), json!({"nsid": 2}));
    assert_eq!(nsid, json!(2));
    assert_eq!(admin.expect_ns_notice(aer), vec![2]);
    let d = admin.identify(cns::ACTIVE_NS_LIST, 0);
    assert_eq!(
        wire::decode_ns_list(d.data.as_slice().try_into().unwrap()),
        vec![1, 2]
    );
    // The new namespace serves I/O.
    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);
    let mut r = rw(io_opc::READ, 0, 8);
    r.nsid = 2.into();
    assert!(io.run(r, None, 4096).ok());
    // Removal: another AER, another notice; the namespace is gone for I/O.
    let aer = admin.submit_aer();
    call(
        &app,
        "nvmf_subsystem_remove_ns",
        json!({"nqn": NQN, "nsid": 2}),
    )
    .unwrap();
    assert!(admin.wait_completion(aer).ok());
    assert_eq!(admin.changed_ns_list(), vec![2]);
    let d = io.run(r, None, 4096);
    d.assert_code(Status::INVALID_NAMESPACE_OR_FORMAT);
    // Abort (best effort): a pending AER can be aborted, an unknown command cannot.
    let aer = admin.submit(Sqe::new(admin_opc::ASYNC_EVENT_REQUEST, 0, 0), None, 0);
    let mut abort = Sqe::new(admin_opc::ABORT, 0, 0);
    abort.cdw10 = ((aer as u32) << 16).into();
    let d = admin.run(abort, None, 0);
    assert!(d.ok());
    assert_eq!(d.cqe.dw0 & 1, 0, "aborted");
    let a = admin.wait_completion(aer);
    a.assert_code(Status::ABORTED_BY_REQUEST);
    abort.cdw10 = (999 << 16).into();
    let d = admin.run(abort, None, 0);
    assert_eq!(d.cqe.dw0 & 1, 1, "not aborted");
    app.shutdown_and_wait();
}

fn expect_term_req(h: &mut Host, fes: Fes) {
    let pdus = h.drain_until_closed();
    let term = pdus.iter().find_map(|p| match p.header {
        PduHeader::C2HTermReq(t) => Some(t),
        _ => None,
    });
    let t = term.unwrap_or_else(|| panic!("no C2HTermReq in {pdus:?}"));
    assert_eq!(t.fes, fes);
}

#[test]
fn malformed_pdus_get_a_term_req_while_others_keep_working() {
    let app = start(vec![0], "nvmf-malformed");
    let port = setup(&app, json!({}));
    let mut admin = Host::admin_connect(port, NQN, false, 0);
    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);

    // Unknown PDU type.
    let mut bad = Host::tcp(port);
    bad.send_raw(&[0x42, 0, 8, 0, 8, 0, 0, 0]).unwrap();
    expect_term_req(&mut bad, Fes::INVALID_HEADER_FIELD);
    // A capsule before the IC exchange.
    let mut bad = Host::tcp(port);
    let sqe = Sqe::new(admin_opc::IDENTIFY, 1, 0);
    let bytes = pdu::encode_pdu(&PduHeader::CapsuleCmd(sqe), &[], &Default::default()).unwrap();
    bad.send_raw(&bytes).unwrap();
    expect_term_req(&mut bad, Fes::PDU_SEQUENCE_ERROR);
    // A second ICReq.
    let mut bad = Host::connect(port, false, false);
    let ic = pdu::encode_pdu(
        &PduHeader::IcReq(pdu::IcReq::default()),
        &[],
        &Default::default(),
    )
    .unwrap();
    bad.send_raw(&ic).unwrap();
    let pdus = bad.drain_until_closed();
    assert!(pdus
        .iter()
        .any(|p| matches!(p.header, PduHeader::C2HTermReq(_))));
    // H2CData for a transfer tag nobody asked for.
    let mut bad = Host::connect(port, false, false);
    let h = pdu::H2CData {
        cccid: 1,
        ttag: 3,
        datao: 0,
        datal: 4,
        last: true,
    };
    bad.send_pdu(&PduHeader::H2CData(h), &[1, 2, 3, 4]);
    expect_term_req(&mut bad, Fes::INVALID_HEADER_FIELD);
    // A wrong header digest.
    let mut bad = Host::connect(port, true, false);
    bad.send_spoiled_pdu(&PduHeader::CapsuleCmd(sqe), &[], 0xff);
    expect_term_req(&mut bad, Fes::HEADER_DIGEST_ERROR);
    // In-capsule data above the limit.
    let mut bad = Host::io_connect(port, NQN, admin.cntlid, 2, false);
    let big = vec![0u8; 8192];
    let mut w = rw(io_opc::WRITE, 0, 2);
    w.dptr = SglDescriptor::in_capsule(0, 8192);
    bad.send_pdu(&PduHeader::CapsuleCmd(w), &big);
    let pdus = bad.drain_until_closed();
    assert!(pdus
        .iter()
        .any(|p| matches!(p.header, PduHeader::C2HTermReq(_))));

    // The well-behaved host never noticed.
    let a = pattern(4096, 7);
    assert!(io.run(rw(io_opc::WRITE, 5, 1), Some(&a), 0).ok());
    assert_eq!(io.run(rw(io_opc::READ, 5, 1), None, 4096).data, a);
    assert!(admin.identify(cns::CONTROLLER, 0).ok());
    let stats = call(&app, "nvmf_get_stats", json!({})).unwrap();
    assert!(
        stats["poll_groups"][0]["transports"][0]["term_reqs_sent"]
            .as_u64()
            .unwrap()
            >= 5
    );
    app.shutdown_and_wait();
}

#[test]
fn discovery_log_lists_the_subsystem_listeners() {
    let app = start(vec![0], "nvmf-disc");
    let port = setup(&app, json!({}));
    let mut h = Host::connect(port, false, false);
    assert!(h
        .fabric_connect(0, wire::DISCOVERY_NQN, HOSTNQN, 0xffff, 31, 0)
        .ok());
    assert!(h.prop_set(prop::CC, 1).ok());
    let id = IdentifyController::decode_slice(&h.identify(cns::CONTROLLER, 0).data).unwrap();
    assert_eq!(id.cntrltype, wire::cntrltype::DISCOVERY);
    let d = h.get_log(log_id::DISCOVERY, 0, 0, 4096);
    assert!(d.ok());
    let hdr = wire::DiscoveryLogHeader::decode_slice(&d.data).unwrap();
    assert_eq!(hdr.numrec, 1);
    let e = wire::DiscoveryLogEntry::decode_slice(&d.data[1024..]).unwrap();
    assert_eq!(pollux::nvmf::field_str(&e.subnqn), Some(NQN));
    assert_eq!(
        pollux::nvmf::field_str(&e.trsvcid),
        Some(port.to_string().as_str())
    );
    assert_eq!(e.trtype, wire::trtype::TCP);
    // RPC view: discovery first, SPDK's shape.
    let subs = call(&app, "nvmf_get_subsystems", json!({})).unwrap();
    assert_eq!(subs[0]["nqn"], json!(wire::DISCOVERY_NQN));
    assert_eq!(subs[1]["namespaces"][0]["bdev_name"], json!("Malloc0"));
    // Removing the listener closes its connections cleanly.
    let mut admin = Host::admin_connect(port, NQN, false, 0);
    call(
        &app,
        "nvmf_subsystem_remove_listener",
        json!({"nqn": NQN, "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()}}),
    )
    .unwrap();
    admin.drain_until_closed();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    // The nvmf framework subsystem's config recreates it.
    let cfg = call(&app, "framework_get_config", json!({"name": "nvmf"})).unwrap();
    let methods: Vec<&str> = cfg
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["method"].as_str())
        .collect();
    assert_eq!(
        methods,
        [
            "nvmf_set_max_subsystems",
            "nvmf_set_config",
            "nvmf_create_transport",
            "nvmf_create_subsystem",
            "nvmf_subsystem_add_ns"
        ]
    );
    app.shutdown_and_wait();
}

#[test]
fn deleting_the_bdev_or_the_subsystem_under_a_host() {
    let app = start(vec![0], "nvmf-delete");
    let port = setup(&app, json!({}));
    add_malloc_namespace(&app, NQN, malloc1(), json!({}));
    let mut admin = Host::admin_connect(port, NQN, false, 0);
    assert!(admin
        .set_feature(feat::ASYNC_EVENT_CONFIG, aen::CONFIG_NS_ATTRIBUTE)
        .ok());
    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);
    let mut r = rw(io_opc::READ, 0, 1);
    r.nsid = 2.into();
    assert!(io.run(r, None, 4096).ok());
    // Hot remove: the namespace leaves the subsystem, hosts get a notice, the delete
    // completes once the target closed its channels.
    let aer = admin.submit(Sqe::new(admin_opc::ASYNC_EVENT_REQUEST, 0, 0), None, 0);
    call(&app, "bdev_malloc_delete", json!({"name": "Malloc1"})).unwrap();
    assert!(admin.wait_completion(aer).ok());
    let d = admin.identify(cns::ACTIVE_NS_LIST, 0);
    assert_eq!(
        wire::decode_ns_list(d.data.as_slice().try_into().unwrap()),
        vec![1]
    );
    io.run(r, None, 4096)
        .assert_code(Status::INVALID_NAMESPACE_OR_FORMAT);
    // Deleting the subsystem disconnects its hosts.
    call(&app, "nvmf_delete_subsystem", json!({"nqn": NQN})).unwrap();
    admin.drain_until_closed();
    io.drain_until_closed();
    let subs = call(&app, "nvmf_get_subsystems", json!({})).unwrap();
    assert_eq!(subs.as_array().unwrap().len(), 1);
    app.shutdown_and_wait();
}

#[test]
fn rpc_errors_name_the_field_and_other_transport_keys_are_ignored() {
    let app = start(vec![0], "nvmf-rpc");
    // rpc.py always sends these for TCP too.
    call(
        &app,
        "nvmf_create_transport",
        json!({"trtype": "TCP", "no_srq": false, "c2h_success": true, "num_cqe": 0,
               "max_srq_depth": 0, "no_wr_batching": false, "acceptor_backlog": 100,
               "disable_mappable_bar0": false, "disable_adaptive_irq": false,
               "disable_shadow_doorbells": false, "dif_insert_or_strip": false,
               "disable_command_passthru": false}),
    )
    .unwrap();
    let t = call(&app, "nvmf_get_transports", json!({})).unwrap();
    assert_eq!(t[0]["trtype"], json!("TCP"));
    assert_eq!(t[0]["max_queue_depth"], json!(128));
    let e = call(
        &app,
        "nvmf_create_transport",
        json!({"trtype": "TCP", "bogus": 1}),
    )
    .unwrap_err();
    assert!(e["message"].as_str().unwrap().contains("bogus"), "{e}");
    let e = call(&app, "nvmf_create_subsystem", json!({"nqn": "not-an-nqn"})).unwrap_err();
    assert!(e["message"].as_str().unwrap().contains("nqn"), "{e}");
    let e = call(
        &app,
        "nvmf_subsystem_add_ns",
        json!({"nqn": "nqn.2016-06.io.pollux:x", "namespace": {"bdev_name": "nope"}}),
    )
    .unwrap_err();
    assert!(e["message"].as_str().unwrap().contains("nqn"), "{e}");
    app.shutdown_and_wait();
}

#[test]
fn embedded_default_exports_cnode1_on_4420() {
    let free = std::net::TcpListener::bind(("127.0.0.1", 4420)).is_ok();
    let mut o = common::test_options("nvmf-default");
    o.no_default = false;
    let app = common::start(o);
    // The default is applied by a chain of in-process calls; the listener comes last.
    let deadline = Instant::now() + Duration::from_secs(5);
    let subs = loop {
        let s = call(&app, "nvmf_get_subsystems", json!({})).unwrap();
        let done = s.as_array().unwrap().len() == 2
            && (!free || !s[1]["listen_addresses"].as_array().unwrap().is_empty());
        if done {
            break s;
        }
        assert!(Instant::now() < deadline, "default config not applied: {s}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(subs[1]["nqn"], json!("nqn.2016-06.io.pollux:cnode1"));
    assert_eq!(subs[1]["allow_any_host"], json!(true));
    assert_eq!(subs[1]["namespaces"][0]["nsid"], json!(1));
    assert_eq!(subs[1]["namespaces"][0]["bdev_name"], json!("Malloc0"));
    let b = call(&app, "bdev_get_bdevs", json!({"name": "Malloc0"})).unwrap();
    assert_eq!(
        b[0]["num_blocks"].as_u64().unwrap() * b[0]["block_size"].as_u64().unwrap(),
        256 << 20
    );
    let listening = !subs[1]["listen_addresses"].as_array().unwrap().is_empty();
    if listening {
        assert_eq!(subs[1]["listen_addresses"][0]["trsvcid"], json!("4420"));
        assert_eq!(subs[1]["listen_addresses"][0]["traddr"], json!("127.0.0.1"));
        let mut admin = Host::admin_connect(4420, "nqn.2016-06.io.pollux:cnode1", false, 0);
        assert!(admin.identify(cns::NAMESPACE, 1).ok());
    } else {
        common::skip(
            "embedded_default_exports_cnode1_on_4420",
            "port 4420 is used by another process: the listener part is not checked",
        );
    }
    app.shutdown_and_wait();
}

#[test]
fn uring_sockets_serve_the_same_protocol() {
    let app = start(vec![0], "nvmf-uring");
    let _ = setup(&app, json!({}));
    let port = match add_uring_listener(&app, NQN) {
        Ok(port) => port,
        Err(e) => {
            common::skip(
                "uring_sockets_serve_the_same_protocol",
                &format!("the uring sock impl is unavailable here: {e:?}"),
            );
            return;
        }
    };
    exercise(port, true, 131072);
    app.shutdown_and_wait();
}

#[test]
fn data_digest_errors_fail_the_command_and_host_removal_disconnects() {
    let app = start(vec![0], "nvmf-ddgst");
    let port = setup_restricted(&app);
    call(
        &app,
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOSTNQN}),
    )
    .unwrap();
    let admin = Host::admin_connect(port, NQN, true, 0);
    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, true);
    // A 4 KiB in-capsule write whose data digest is wrong.
    let data = pattern(4096, 3);
    io.send_write_with_bad_ddgst(77, &data, 0x5a);
    io.wait_completion(77)
        .assert_code(Status::TRANSIENT_TRANSPORT_ERROR);
    // The queue still works.
    assert!(io.run(rw(io_opc::WRITE, 0, 1), Some(&data), 0).ok());
    // Removing the host from the allowed list disconnects its controller.
    let mut admin = admin;
    call(
        &app,
        "nvmf_subsystem_remove_host",
        json!({"nqn": NQN, "host": HOSTNQN}),
    )
    .unwrap();
    admin.drain_until_closed();
    io.drain_until_closed();
    app.shutdown_and_wait();
}

/// Runs `scripts/rpc.py -s SOCK args...`; returns (success, stdout, stderr).
fn rpc_py(app: &RunningApp, args: &[&str]) -> (bool, String, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rpc.py");
    run_client(std::process::Command::new("python3").arg(script), app, args)
}

/// The rpc.py arguments of `method` (adding or removing a listener) for `NQN` on TCP/IPv4
/// 127.0.0.1:`trsvcid`.
fn listener_args<'a>(method: &'a str, trsvcid: &'a str) -> [&'a str; 10] {
    [
        method,
        NQN,
        "-t",
        "tcp",
        "-a",
        "127.0.0.1",
        "-s",
        trsvcid,
        "-f",
        "ipv4",
    ]
}

/// The stdout of a client run (`run_client`'s result) with `args`; panics, showing the
/// stderr, unless it succeeded.
fn succeeded(client: &str, args: &[&str], (ok, out, err): (bool, String, String)) -> String {
    assert!(ok, "{client} {args:?}: {err}");
    out
}

fn run_client(
    cmd: &mut std::process::Command,
    app: &RunningApp,
    args: &[&str],
) -> (bool, String, String) {
    common::run_rpc_client(cmd, app.rpc_socket(), args)
}

#[test]
fn rpc_py_nvmf_commands() {
    if !common::have_tool(
        "python3",
        "rpc_py_nvmf_commands",
        "python3 is not installed",
    ) {
        return;
    }
    let app = start(vec![0], "nvmf-rpcpy");
    let ok = |args: &[&str]| succeeded("rpc.py", args, rpc_py(&app, args));
    ok(&["bdev_malloc_create", "-b", "Malloc0", "16", "4096"]);
    ok(&[
        "nvmf_create_transport",
        "-t",
        "TCP",
        "-u",
        "16384",
        "-c",
        "8192",
        "--min-kato",
        "500",
    ]);
    ok(&[
        "nvmf_create_subsystem",
        NQN,
        "-s",
        "SN42",
        "-d",
        "model 42",
        "-m",
        "8",
    ]);
    let nsid = ok(&[
        "nvmf_subsystem_add_ns",
        NQN,
        "Malloc0",
        "-n",
        "3",
        "-g",
        "00112233445566778899aabbccddeeff",
    ]);
    assert_eq!(nsid.trim(), "3");
    ok(&["nvmf_subsystem_add_host", NQN, HOSTNQN]);
    ok(&["nvmf_subsystem_allow_any_host", NQN, "--enable"]);
    ok(&listener_args("nvmf_subsystem_add_listener", "0"));
    let t: Value = serde_json::from_str(&ok(&["nvmf_get_transports"])).unwrap();
    assert_eq!(t[0]["in_capsule_data_size"], json!(8192));
    assert_eq!(t[0]["min_kato"], json!(500));
    let s: Value = serde_json::from_str(&ok(&["nvmf_get_subsystems", NQN])).unwrap();
    assert_eq!(s[0]["serial_number"], json!("SN42"));
    assert_eq!(s[0]["max_namespaces"], json!(8));
    assert_eq!(s[0]["allow_any_host"], json!(true));
    assert_eq!(
        s[0]["namespaces"][0]["nguid"],
        json!("00112233445566778899AABBCCDDEEFF")
    );
    let l: Value = serde_json::from_str(&ok(&["nvmf_subsystem_get_listeners", NQN])).unwrap();
    let port: u16 = l[0]["address"]["trsvcid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut admin = Host::admin_connect(port, NQN, false, 0);
    let d = admin.identify(cns::NS_ID_DESCRIPTOR_LIST, 3);
    let descs = wire::decode_ns_id_descriptors(&d.data).unwrap();
    assert!(descs.contains(&wire::NsIdDescriptor::Nguid([
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff
    ])));
    let c: Value = serde_json::from_str(&ok(&["nvmf_subsystem_get_controllers", NQN])).unwrap();
    assert_eq!(c[0]["hostnqn"], json!(HOSTNQN));
    assert_eq!(
        c[0]["hostid"],
        json!("11111111-2222-3333-4444-555555555555")
    );
    let q: Value = serde_json::from_str(&ok(&["nvmf_subsystem_get_qpairs", NQN])).unwrap();
    assert_eq!(q[0]["qid"], json!(0));
    let st: Value = serde_json::from_str(&ok(&["nvmf_get_stats"])).unwrap();
    assert_eq!(st["poll_groups"][0]["current_admin_qpairs"], json!(1));
    ok(&["nvmf_subsystem_remove_ns", NQN, "3"]);
    ok(&["nvmf_subsystem_remove_host", NQN, HOSTNQN]);
    ok(&listener_args(
        "nvmf_subsystem_remove_listener",
        &port.to_string(),
    ));
    admin.drain_until_closed();
    ok(&["nvmf_delete_subsystem", NQN]);
    let (fine, _, err) = rpc_py(&app, &["nvmf_delete_subsystem", NQN]);
    assert!(!fine && err.contains("Unable to find subsystem"), "{err}");
    app.shutdown_and_wait();
}

#[test]
fn saved_config_recreates_the_target() {
    let app = start(vec![0], "nvmf-save");
    let port = setup(&app, json!({"in_capsule_data_size": 8192}));
    call(
        &app,
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOSTNQN}),
    )
    .unwrap();
    // Save as rpc.py save_config does: every framework subsystem's config.
    let names = call(&app, "framework_get_subsystems", json!(null)).unwrap();
    let subsystems: Vec<Value> = names
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let name = s["subsystem"].as_str().unwrap();
            json!({"subsystem": name,
                   "config": call(&app, "framework_get_config", json!({"name": name})).unwrap()})
        })
        .collect();
    let before = call(&app, "nvmf_get_subsystems", json!({})).unwrap();
    app.shutdown_and_wait();
    let file = common::sock_path("nvmf-save").with_extension("json");
    std::fs::write(&file, json!({"subsystems": subsystems}).to_string()).unwrap();
    let mut o = common::test_options("nvmf-load");
    o.json_config = Some(file.clone());
    let app = common::start(o);
    let after = call(&app, "nvmf_get_subsystems", json!({})).unwrap();
    assert_eq!(before, after);
    let t = call(&app, "nvmf_get_transports", json!({})).unwrap();
    assert_eq!(t[0]["in_capsule_data_size"], json!(8192));
    // And it serves on the same port.
    let mut admin = Host::admin_connect(port, NQN, false, 0);
    assert!(admin.identify(cns::NAMESPACE, 1).ok());
    app.shutdown_and_wait();
    let _ = std::fs::remove_file(file);
}

/// SPDK's own rpc.py (POLLUX_SPDK_RPC names its `spdk-rpc`; .ci/run installs it) drives
/// the nvmf methods unchanged.
#[test]
fn spdk_rpc_py_nvmf_commands() {
    let Some(spdk) = std::env::var_os("POLLUX_SPDK_RPC") else {
        common::skip(
            "spdk_rpc_py_nvmf_commands",
            "POLLUX_SPDK_RPC is not set and .ci/venv/bin/spdk-rpc is absent (scripts/test.sh \
             sets it from there; .ci/run installs it): SPDK's rpc.py nvmf compatibility not \
             checked",
        );
        return;
    };
    let app = start(vec![0], "nvmf-spdkrpc");
    let run = |args: &[&str]| {
        let result = run_client(&mut std::process::Command::new(&spdk), &app, args);
        succeeded("spdk rpc.py", args, result)
    };
    run(&["bdev_malloc_create", "-b", "Malloc0", "16", "4096"]);
    run(&[
        "nvmf_create_transport",
        "-t",
        "TCP",
        "-m",
        "8",
        "-c",
        "8192",
        "--min-kato",
        "1000",
    ]);
    run(&[
        "nvmf_create_subsystem",
        NQN,
        "-a",
        "-s",
        "SPDK0001",
        "-d",
        "SPDK_Controller1",
    ]);
    run(&["nvmf_subsystem_add_ns", NQN, "Malloc0"]);
    run(&listener_args("nvmf_subsystem_add_listener", "0"));
    run(&["nvmf_subsystem_add_host", NQN, HOSTNQN]);
    run(&["nvmf_subsystem_allow_any_host", "--no-allow-any-host", NQN]);
    let s: Value = serde_json::from_str(&run(&["nvmf_get_subsystems", NQN])).unwrap();
    assert_eq!(s[0]["allow_any_host"], json!(false));
    assert_eq!(s[0]["listen_addresses"][0]["adrfam"], json!("IPv4"));
    let port: u16 = s[0]["listen_addresses"][0]["trsvcid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut admin = Host::admin_connect(port, NQN, false, 0);
    assert!(admin.identify(cns::NAMESPACE, 1).ok());
    let c: Value = serde_json::from_str(&run(&["nvmf_subsystem_get_controllers", NQN])).unwrap();
    assert_eq!(c[0]["hostnqn"], json!(HOSTNQN));
    run(&["nvmf_get_stats"]);
    run(&["nvmf_get_transports"]);
    run(&["nvmf_subsystem_remove_ns", NQN, "1"]);
    run(&["nvmf_delete_subsystem", NQN]);
    admin.drain_until_closed();
    app.shutdown_and_wait();
}
