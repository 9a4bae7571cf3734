//! Unit tests of the host.
//!
//! Unit tests of the host: transport id parsing, and the queue state machine against a
//! tiny in-test controller (a thread speaking NVMe/TCP through the codec over loopback).

use super::*;

#[test]
fn transport_id_parses_spdk_syntax() {
    let t: TransportId = "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.x:y"
        .parse()
        .unwrap();
    assert_eq!(t, TransportId::tcp("127.0.0.1", 4420, "nqn.x:y"));
    let d: TransportId = "trtype:tcp traddr:::1 trsvcid:1".parse().unwrap();
    assert_eq!(d.subnqn, crate::nvmf::wire::DISCOVERY_NQN);
    for (text, complaint) in [
        ("trtype:RDMA traddr:127.0.0.1", "TCP"),
        ("traddr:127.0.0.1 trsvcid:x", "trsvcid"),
        ("adrfam:IPv6 traddr:127.0.0.1", "IPv6"),
        ("trsvcid:1", "traddr"),
        ("bogus:1 traddr:127.0.0.1", "bogus"),
    ] {
        let err = text.parse::<TransportId>().unwrap_err();
        assert!(err.contains(complaint), "{text}: {err}");
    }
}

use super::fake::{FakeTarget, Misbehavior, FAKE_BLOCKS};
use crate::nvmf::wire::Status;
use std::net::TcpListener;
use std::time::Duration;

fn fake_opts(impl_name: &str, digests: bool) -> ConnectOpts {
    ConnectOpts {
        sock_impl: Some(impl_name.into()),
        hdgst: digests,
        ddgst: digests,
        io_queues: 2,
        queue_depth: 16,
        kato_ms: 0,
        timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn fake_round_trip(impl_name: &str, digests: bool) {
    let fake = FakeTarget::start();
    let c = SyncController::connect(&fake.trid(), fake_opts(impl_name, digests)).unwrap();
    let info = c.info();
    assert_eq!(
        (info.cntlid, info.io_in_capsule, info.max_transfer),
        (7, 4096, 128 * 1024)
    );
    assert_eq!(
        (info.hdgst, info.ddgst, info.maxh2cdata),
        (digests, digests, 4096)
    );
    assert_eq!(c.active_namespaces().unwrap(), vec![1]);
    assert_eq!(c.identify_namespace(1).unwrap().block_size(), Some(512));
    // The admin queue keeps SQ flow control; the I/O queues ask to disable it (CATTR bit 2)
    // so that reads may complete with C2HData SUCCESS.
    let mut connects = fake.connects();
    connects.sort();
    assert_eq!(connects, vec![(0, 0), (1, 0x4), (2, 0x4)]);
    // In-capsule (4 KiB) and R2T (64 KiB = 16 H2CData PDUs) writes; reads arrive as 8 KiB
    // C2HData PDUs ending with SUCCESS.
    let small = bytes(1, 4096);
    c.write(1, 1, 8, 8, &small).unwrap();
    let large = bytes(2, 64 * 1024);
    c.write(2, 1, 64, 128, &large).unwrap();
    assert_eq!(fake.max_h2c_pdus_per_write(), 16);
    assert!(c.read(2, 1, 8, 8, 512).unwrap()[..] == small[..]);
    assert!(c.read(1, 1, 64, 128, 512).unwrap()[..] == large[..]);
    c.write_zeroes(1, 1, 64, 8).unwrap();
    assert!(c.read(1, 1, 64, 8, 512).unwrap().iter().all(|&b| b == 0));
    c.deallocate(1, 1, &[(0, 8)]).unwrap();
    c.flush(2, 1).unwrap();
    let err = c.read(1, 1, FAKE_BLOCKS, 1, 512).unwrap_err();
    assert_eq!(
        err.nvme_status()
            .map(|s| s.same_code(Status::LBA_OUT_OF_RANGE)),
        Some(true)
    );
    // Over the transfer limit: refused locally, the queue stays usable.
    assert!(matches!(
        c.read(1, 1, 0, 512, 512),
        Err(HostError::Invalid(_))
    ));
    c.flush(1, 1).unwrap();
    c.disconnect().unwrap();
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn fake_target_round_trip_posix() {
    fake_round_trip("posix", false);
}

#[test]
fn fake_target_round_trip_uring_with_digests() {
    fake_round_trip("uring", true);
}

#[test]
fn protocol_violation_fails_the_queue_with_a_term_req() {
    let fake = FakeTarget::start();
    let c = SyncController::connect(&fake.trid(), fake_opts("posix", false)).unwrap();
    fake.set_misbehavior(Misbehavior::WrongCid);
    let err = c.read(1, 1, 0, 8, 512).unwrap_err();
    assert!(matches!(err, HostError::Protocol(_)), "{err}");
    assert!(matches!(
        c.read(1, 1, 0, 8, 512),
        Err(HostError::NotReady(_))
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !fake.saw_term_req() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(fake.saw_term_req(), "host sent an H2CTermReq");
    // The admin queue is unaffected.
    c.keep_alive().unwrap();
}

#[test]
fn connection_refused_is_a_clear_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let trid = TransportId::tcp("127.0.0.1", port, super::fake::FAKE_NQN);
    let err = SyncController::connect(&trid, fake_opts("posix", false))
        .err()
        .unwrap();
    assert!(
        matches!(&err, HostError::Connection(m) if m.contains("refused")),
        "{err}"
    );
}

#[test]
fn keep_alive_is_sent_every_half_kato() {
    let fake = FakeTarget::start();
    let opts = ConnectOpts {
        kato_ms: 200,
        io_queues: 0,
        ..fake_opts("posix", false)
    };
    let c = SyncController::connect(&fake.trid(), opts).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fake.keep_alives() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(fake.keep_alives() >= 3, "keep alives on the 100 ms timer");
    c.disconnect().unwrap();
}

#[test]
fn controller_hanging_up_fails_commands_with_a_connection_error() {
    let fake = FakeTarget::start();
    let c = SyncController::connect(&fake.trid(), fake_opts("posix", false)).unwrap();
    fake.set_misbehavior(Misbehavior::HangUp);
    let err = c.write(1, 1, 0, 8, &[5u8; 4096]).unwrap_err();
    assert!(matches!(err, HostError::Connection(_)), "{err}");
    assert!(matches!(c.flush(1, 1), Err(HostError::NotReady(_))));
    // The other I/O queue and the admin queue live on.
    fake.set_misbehavior(Misbehavior::None);
    c.flush(2, 1).unwrap();
    c.keep_alive().unwrap();
}

#[test]
fn silent_controller_times_out_in_bounded_time() {
    let fake = FakeTarget::start();
    let mut c = SyncController::connect(&fake.trid(), fake_opts("uring", false)).unwrap();
    fake.set_misbehavior(Misbehavior::Silent);
    c.set_timeout(Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    assert!(matches!(c.flush(1, 1), Err(HostError::Timeout(_))));
    assert!(t0.elapsed() < Duration::from_secs(5));
    c.set_timeout(Duration::from_secs(5));
    c.keep_alive().unwrap();
    let t0 = std::time::Instant::now();
    drop(c);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "teardown with a command in flight"
    );
}

/// A controller that asks for authentication and never answers it: the connect fails with
/// an authentication error within the transaction's bound; a host without a secret fails
/// at once.
#[test]
fn unanswered_authentication_fails_in_bounded_time() {
    let fake = FakeTarget::start();
    fake.set_misbehavior(Misbehavior::AuthSilent);
    let mut dhchap = DhchapOpts::new(
        crate::nvmf::secret::DhchapSecret {
            transform: None,
            key: vec![1; 32],
        },
        None,
    );
    dhchap.timeout = Duration::from_millis(300);
    let opts = ConnectOpts {
        dhchap: Some(dhchap),
        ..fake_opts("posix", false)
    };
    let started = std::time::Instant::now();
    match SyncController::connect(&fake.trid(), opts) {
        Err(HostError::Auth {
            reason: None,
            detail,
        }) => assert!(detail.contains("no answer"), "{detail}"),
        other => panic!("expected an authentication timeout, got {:?}", other.err()),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    match SyncController::connect(&fake.trid(), fake_opts("posix", false)) {
        Err(HostError::Auth {
            reason: None,
            detail,
        }) => {
            assert!(detail.contains("requires authentication"), "{detail}")
        }
        other => panic!("expected an authentication error, got {:?}", other.err()),
    }
}
