//! The RBD bdev behind the NVMe-oF/TCP target, against a throw-away Ceph cluster each test
//! starts (scripts/ceph-dev-cluster.sh) and stops: host I/O on an RBD namespace beside a
//! malloc one, a live resize raising a Namespace Attribute Changed AEN with the new size
//! in Identify, SPDK's own rpc.py and ours creating and deleting RBD bdevs, and a stalled
//! OSD: I/O is answered within the timeout, the malloc namespace keeps serving, and after
//! the OSD resumes every block holds its old or its new data. Skipped loudly only when the
//! Ceph packages are absent (and never under CI, which sets POLLUX_REQUIRE_CEPH).

mod common;

use common::nvme::{call, export, rw, Host};
use pollux::app::RunningApp;
use pollux::bdev::rbd::DevCluster;
use pollux::nvmf::wire::{cns, io_opc, Sqe};
use pollux::reactor::IdleStrategy;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.pollux:rbd";

/// A dev cluster for `test`, or `None` after reporting the test skipped (Ceph absent).
fn cluster(test: &str, tag: &str) -> Option<DevCluster> {
    if let Some(why) = DevCluster::unavailable_or_panic() {
        common::skip(test, &why);
        return None;
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-dev-cluster.sh");
    Some(DevCluster::start(&script, tag).expect("start the dev Ceph cluster"))
}

fn start(tag: &str) -> RunningApp {
    let mut o = common::test_options(tag);
    o.idle = IdleStrategy::SpinThenSleep(Duration::from_micros(50));
    common::start(o)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

fn rw_ns(op: u8, nsid: u32, slba: u64, blocks: u32) -> Sqe {
    let mut s = rw(op, slba, blocks);
    s.nsid = nsid.into();
    s
}

/// Exports Malloc0 as nsid 1 and the RBD bdev `rbd0` as nsid 2; returns the port.
fn export_both(app: &RunningApp) -> u16 {
    let port = export(
        &mut |m, p| call(app, m, p),
        NQN,
        "Malloc0",
        16,
        json!({}),
        true,
    );
    let nsid = call(
        app,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "rbd0", "nsid": 2}}),
    )
    .unwrap();
    assert_eq!(nsid, json!(2));
    port
}

fn run_client(cmd: &mut std::process::Command, app: &RunningApp, args: &[&str]) -> String {
    let (ok, out, err) = common::run_rpc_client(cmd, app.rpc_socket(), args);
    assert!(ok, "rpc {args:?}: {err}");
    out
}

#[test]
fn rbd_namespace_io_resize_aen_and_rpc_clients() {
    let Some(c) = cluster("rbd_namespace_io_resize_aen_and_rpc_clients", "target") else {
        return;
    };
    c.create_image("img0", 16).unwrap();
    let app = start("rbd-target");
    assert_eq!(
        call(
            &app,
            "bdev_rbd_register_cluster",
            json!({"name": "c0", "config_file": c.conf})
        )
        .unwrap(),
        json!("c0")
    );
    call(
        &app,
        "bdev_rbd_create",
        json!({"name": "rbd0", "pool_name": "rbd", "rbd_name": "img0", "block_size": 4096,
               "cluster_name": "c0"}),
    )
    .unwrap();
    let port = export_both(&app);
    let mut admin = Host::admin_connect(port, NQN, false, 0);
    let aer = admin.arm_ns_notice();
    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);

    // Write and read back on both namespaces (16 KiB: in-capsule and R2T paths).
    for nsid in [2u32, 1] {
        for (slba, seed) in [(0u64, 1u8), (100, 2), (4000, 3)] {
            let data = pattern(16384, seed.wrapping_add(nsid as u8));
            assert!(io
                .run(rw_ns(io_opc::WRITE, nsid, slba, 4), Some(&data), 0)
                .ok());
            let r = io.run(rw_ns(io_opc::READ, nsid, slba, 4), None, 16384);
            assert!(r.ok(), "nsid {nsid} read: {:?}", r.cqe.status());
            assert!(r.data == data, "nsid {nsid}: read back what was written");
        }
    }
    // Past the end of the 16 MiB image: LBA out of range.
    let r = io.run(rw_ns(io_opc::READ, 2, 4096, 1), None, 4096);
    assert!(!r.ok());

    // A live resize: the host gets a notice for nsid 2, and Identify shows the new size.
    assert_eq!(
        call(
            &app,
            "bdev_rbd_resize",
            json!({"name": "rbd0", "new_size": 32})
        )
        .unwrap(),
        json!(true)
    );
    assert_eq!(admin.expect_ns_notice(aer), vec![2]);
    let id = admin.identify(cns::NAMESPACE, 2);
    let nsze = u64::from_le_bytes(id.data[0..8].try_into().unwrap());
    assert_eq!(nsze, 32 * 256, "Identify Namespace shows the new size");
    let data = pattern(4096, 9);
    assert!(io
        .run(rw_ns(io_opc::WRITE, 2, 8000, 1), Some(&data), 0)
        .ok());

    // Our rpc.py, then SPDK's own (when installed), create and delete RBD bdevs.
    c.create_image("img1", 8).unwrap();
    let ours = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rpc.py");
    let mut clients: Vec<(String, std::process::Command)> = Vec::new();
    let mut py = std::process::Command::new("python3");
    py.arg(&ours);
    clients.push(("ours".into(), py));
    match std::env::var_os("POLLUX_SPDK_RPC") {
        Some(spdk) => clients.push(("spdk".into(), std::process::Command::new(spdk))),
        None => {
            eprintln!("POLLUX_SPDK_RPC is not set: SPDK's rpc.py rbd compatibility not checked")
        }
    }
    for (who, cmd) in clients {
        let run = |args: &[&str]| {
            let mut c2 = std::process::Command::new(cmd.get_program());
            c2.args(cmd.get_args());
            run_client(&mut c2, &app, args)
        };
        let cl = format!("c-{who}");
        let b = format!("b-{who}");
        run(&["bdev_rbd_register_cluster", &cl, "--config-file", &c.conf]);
        let info: Value =
            serde_json::from_str(&run(&["bdev_rbd_get_clusters_info", "-b", &cl])).unwrap();
        assert_eq!(info["cluster_name"], json!(cl), "{who}");
        let name = run(&["bdev_rbd_create", "-b", &b, "-c", &cl, "rbd", "img1", "512"]);
        assert!(name.contains(&b), "{who}: {name}");
        let bd: Value = serde_json::from_str(&run(&["bdev_get_bdevs", "-b", &b])).unwrap();
        assert_eq!(bd[0]["num_blocks"], json!(8 * 2048), "{who}");
        assert_eq!(bd[0]["supported_io_types"]["write_zeroes"], json!(true));
        run(&["bdev_rbd_delete", &b]);
        // The bdev's images close off the reactors; then the cluster can go.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let r = call(&app, "bdev_rbd_unregister_cluster", json!({"name": cl}));
            if r.is_ok() || Instant::now() > until {
                assert!(r.is_ok(), "{who}: {r:?}");
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    app.shutdown_and_wait();
}

/// The OSD stops answering (SIGSTOP) under writes: each RBD I/O is answered with an error
/// within the bdev's timeout, the malloc namespace keeps serving, and after the OSD resumes
/// every block reads back as the old or the new data, exactly.
#[test]
fn stalled_osd_is_answered_within_the_timeout_and_data_is_old_or_new() {
    let Some(c) = cluster(
        "stalled_osd_is_answered_within_the_timeout_and_data_is_old_or_new",
        "fault",
    ) else {
        return;
    };
    c.create_image("img0", 16).unwrap();
    let app = start("rbd-fault");
    call(
        &app,
        "bdev_rbd_register_cluster",
        json!({"name": "c0", "config_file": c.conf, "config_param": {"rados_osd_op_timeout": "60"}}),
    )
    .unwrap();
    call(
        &app,
        "bdev_rbd_create",
        json!({"name": "rbd0", "pool_name": "rbd", "rbd_name": "img0", "block_size": 4096,
               "cluster_name": "c0", "timeout_s": 2}),
    )
    .unwrap();
    let port = export_both(&app);
    let admin = Host::admin_connect(port, NQN, false, 0);
    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);
    const N: u64 = 16;
    for b in 0..N {
        let old = pattern(4096, b as u8);
        assert!(io.run(rw_ns(io_opc::WRITE, 2, b, 1), Some(&old), 0).ok());
    }
    let osd_pid: i32 = std::fs::read_to_string(c.dir.join("run/osd.0.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signals a process this test's cluster started.
    assert_eq!(unsafe { libc::kill(osd_pid, libc::SIGSTOP) }, 0);
    let t0 = Instant::now();
    let mut failed = 0;
    // A few writes (each waits the 2 s timeout) on the first blocks.
    for b in 0..4 {
        let new = pattern(4096, 100 + b as u8);
        let r = io.run(rw_ns(io_opc::WRITE, 2, b, 1), Some(&new), 0);
        if !r.ok() {
            failed += 1;
            // The other namespace still serves while the RBD one is stuck.
            let m = io.run(rw_ns(io_opc::READ, 1, 0, 1), None, 4096);
            assert!(m.ok(), "malloc namespace served during the stall");
        }
        if b == 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "answered within the timeout: {:?}",
                t0.elapsed()
            );
        }
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(osd_pid, libc::SIGCONT) }, 0);
    assert!(failed > 0, "a stalled OSD fails I/O after the timeout");
    eprintln!(
        "{failed} of {N} writes failed during the stall ({:?})",
        t0.elapsed()
    );
    // Once the OSD is back, every block is old or new, exactly; and new I/O works.
    let until = Instant::now() + Duration::from_secs(60);
    for b in 0..N {
        let r = loop {
            let r = io.run(rw_ns(io_opc::READ, 2, b, 1), None, 4096);
            if r.ok() || Instant::now() > until {
                break r;
            }
        };
        assert!(r.ok(), "read after the OSD resumed: {:?}", r.cqe.status());
        let (old, new) = (pattern(4096, b as u8), pattern(4096, 100 + b as u8));
        assert!(
            r.data == old || r.data == new,
            "block {b} holds neither the old nor the new data"
        );
    }
    let data = pattern(4096, 77);
    assert!(io.run(rw_ns(io_opc::WRITE, 2, 0, 1), Some(&data), 0).ok());
    assert_eq!(io.run(rw_ns(io_opc::READ, 2, 0, 1), None, 4096).data, data);
    app.shutdown_and_wait();
}
