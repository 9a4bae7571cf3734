//! The host library and pollux-perf against pollux's own NVMe/TCP target, in process: one
//! app on an unpinned, sleeping reactor exporting a malloc namespace on an ephemeral port,
//! driven by `SyncController` (posix without digests, io_uring with both digests) and by a
//! one-second pollux-perf run.

mod common;

use common::nvme::export;
use pollux::nvmf::host::{discover, ConnectOpts, SyncController, TransportId};
use serde_json::json;

const NQN: &str = "nqn.2016-06.io.pollux:host-test";

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed)
        .collect()
}

/// Options for `io_queues` I/O queues on sock impl `sock`, both digests on or both off.
fn digest_opts(sock: &str, digests: bool, io_queues: u16) -> ConnectOpts {
    ConnectOpts {
        sock_impl: Some(sock.into()),
        hdgst: digests,
        ddgst: digests,
        io_queues,
        ..Default::default()
    }
}

/// Connects with `opts`; returns the controller, its first active namespace and that
/// namespace's block size.
fn connect_first_ns(trid: &TransportId, opts: ConnectOpts) -> (SyncController, u32, u32) {
    let c = SyncController::connect(trid, opts).unwrap();
    let nsid = c.active_namespaces().unwrap()[0];
    let bs = c.identify_namespace(nsid).unwrap().block_size().unwrap();
    (c, nsid, bs)
}

fn round_trip(trid: &TransportId, sock: &str, digests: bool) {
    let opts = ConnectOpts {
        queue_depth: 32,
        ..digest_opts(sock, digests, 2)
    };
    let (c, nsid, bs) = connect_first_ns(trid, opts);
    assert_eq!((c.info().hdgst, c.info().ddgst), (digests, digests));
    let small = pattern(1, bs as usize);
    let large = pattern(2, 128 * 1024);
    c.write(1, nsid, 10, 1, &small).unwrap();
    c.write(2, nsid, 100, large.len() as u32 / bs, &large)
        .unwrap();
    assert!(c.read(2, nsid, 10, 1, bs).unwrap()[..] == small[..]);
    assert!(c.read(1, nsid, 100, large.len() as u32 / bs, bs).unwrap()[..] == large[..]);
    c.write_zeroes(1, nsid, 100, 4).unwrap();
    assert!(c.read(1, nsid, 100, 4, bs).unwrap().iter().all(|&b| b == 0));
    c.deallocate(2, nsid, &[(100, 8)]).unwrap();
    c.flush(1, nsid).unwrap();
    c.keep_alive().unwrap();
    c.disconnect().unwrap();
}

/// Streams of same-shaped in-capsule writes (which the target lands straight in the
/// commands' buffers once it sees a streak of them), broken by reads and by writes of
/// another size (which make it copy what it received back to its staging buffer), then
/// every block read back.
fn write_streams(trid: &TransportId, sock: &str, digests: bool) {
    let (c, nsid, bs) = connect_first_ns(trid, digest_opts(sock, digests, 1));
    let big = (4096 / bs).max(1);
    let mut expect = Vec::new();
    for round in 0..3u64 {
        for i in 0..12u64 {
            let lba = 2000 + (round * 12 + i) * big as u64;
            let data = pattern((round * 12 + i) as u8, (big * bs) as usize);
            c.write(1, nsid, lba, big, &data).unwrap();
            expect.push((lba, big, data));
        }
        let (lba, n, data) = &expect[expect.len() - 3];
        assert!(c.read(1, nsid, *lba, *n, bs).unwrap()[..] == data[..]);
        for i in 0..6u64 {
            let lba = 3000 + round * 6 + i;
            let data = pattern(100 + (round * 6 + i) as u8, bs as usize);
            c.write(1, nsid, lba, 1, &data).unwrap();
            expect.push((lba, 1, data));
        }
    }
    for (lba, n, data) in &expect {
        assert!(
            c.read(1, nsid, *lba, *n, bs).unwrap()[..] == data[..],
            "lba {lba}"
        );
    }
    c.disconnect().unwrap();
}

#[test]
fn host_and_perf_against_pollux_target() {
    let app = common::start(common::test_options("host"));
    let mut rpc = |m: &str, p| common::nvme::call(&app, m, p);
    let port = export(&mut rpc, NQN, "Malloc0", 64, json!({}), true);
    let trid = TransportId::tcp("127.0.0.1", port, NQN);

    let entries = discover(&trid, ConnectOpts::default()).unwrap();
    assert!(entries
        .iter()
        .any(|e| pollux::nvmf::field_str(&e.subnqn) == Some(NQN)));
    round_trip(&trid, "posix", false);
    round_trip(&trid, "uring", true);
    let landed = |app: &pollux::app::RunningApp| {
        let s = common::nvme::call(app, "nvmf_get_stats", json!({})).unwrap();
        s["poll_groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["transports"][0]["in_capsule_landed"].as_u64().unwrap())
            .sum::<u64>()
    };
    let before = landed(&app);
    write_streams(&trid, "posix", false);
    write_streams(&trid, "posix", true);
    write_streams(&trid, "uring", false);
    // Each stream of 12 writes lands at least its writes after the fourth.
    assert!(
        landed(&app) - before >= 3 * 3 * 8,
        "{}",
        landed(&app) - before
    );

    let v = common::json_output(
        std::process::Command::new(env!("CARGO_BIN_EXE_pollux-perf")).args([
            "-r",
            &format!("trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{port} subnqn:{NQN}"),
            "-q",
            "16",
            "-o",
            "4096",
            "-w",
            "randrw",
            "-t",
            "1",
            "--no-pin",
            "--json",
        ]),
    );
    assert!(v["total"]["ios"].as_u64().unwrap() > 0);
    assert_eq!(v["total"]["errors"].as_u64(), Some(0));
    app.shutdown_and_wait();
}
