//! Reliability of the NVMe-oF/TCP target against malformed and hostile peers and under
//! faults, each case bounded in time, with a well-behaved host served throughout:
//! malformed headers (wrong HLEN, PLEN below HLEN, oversized data lengths), truncated PDUs,
//! H2CData for another command or beyond its R2T, bad H2CData digests, I/O before Connect,
//! thousands of connections that never send anything or stop after the IC exchange (closed
//! by the transport's `handshake_timeout_ms`), hosts that stop reading their socket;
//! error-injecting bdevs under a namespace (failures reach the host as NVMe status, nomem is
//! retried without loss), 1000 abrupt disconnects with I/O in flight (qpairs, bdev I/O,
//! connections and the process's open fds return to their baseline), keep-alive expiry
//! during I/O, namespace removal and subsystem deletion with I/O in flight. The cases that
//! count fds or connections run one at a time (a process-wide lock), since cargo runs the
//! tests of a binary in parallel threads of one process.

mod common;

use common::nvme::{call, export, reset_on_close, rw, Host};
use pollux::app::RunningApp;
use pollux::nvmf::pdu::{self, Fes, H2CData, PduHeader};
use pollux::nvmf::wire::{admin_opc, io_opc, SglDescriptor, Sqe, Status};
use pollux::reactor::IdleStrategy;
use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.pollux:reliab";
/// Every wait in this file gives up (and fails the test) after this long.
const DEADLINE: Duration = Duration::from_secs(20);

/// One test at a time: fd and connection counts are process-wide.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes the one-test-at-a-time lock and starts an app (`tag`) that exports a 16 MiB malloc
/// namespace of `NQN` to any host, `extra` added to the transport's options; returns the
/// lock, the app and the listener's port.
fn start_exporting(tag: &str, extra: Value) -> (MutexGuard<'static, ()>, RunningApp, u16) {
    let serial = serial();
    let mut o = common::test_options(tag);
    o.idle = IdleStrategy::SpinThenSleep(Duration::from_micros(50));
    let app = common::start(o);
    let port = export(
        &mut |m, p| call(&app, m, p),
        NQN,
        "Malloc0",
        16,
        extra,
        true,
    );
    (serial, app, port)
}

fn rpc(app: &RunningApp, method: &str, params: Value) -> Value {
    call(app, method, params).unwrap_or_else(|e| panic!("{method}: {e}"))
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(0x9e37_79b9).wrapping_add(seed) >> 7) as u8)
        .collect()
}

/// The transport statistics of poll group 0.
fn group_stats(app: &RunningApp) -> Value {
    let s = rpc(app, "nvmf_get_stats", json!({}));
    s["poll_groups"][0].clone()
}

fn open_connections(app: &RunningApp) -> u64 {
    group_stats(app)["transports"][0]["open_connections"]
        .as_u64()
        .unwrap()
}

/// Open file descriptors of this process.
fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The fd count once the poll group's lazily created socket group exists: one connection
/// comes and goes first, then the count is taken with nothing connected.
fn warm_fd_baseline(app: &RunningApp, port: u16) -> usize {
    drop(Host::connect(port, false, false));
    wait_until("the warm-up connection closed", || {
        open_connections(app) == 0
    });
    fd_count()
}

/// Polls `cond` until it holds or the deadline passes (then fails with `what`).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for the stats to show no connection, queue pair or bdev I/O left and the fd count
/// to be back at `fds`.
fn wait_for_baseline(app: &RunningApp, fds: usize) {
    let t0 = Instant::now();
    loop {
        let g = group_stats(app);
        let clean = g["current_admin_qpairs"] == 0
            && g["current_io_qpairs"] == 0
            && g["pending_bdev_io"] == 0
            && g["transports"][0]["open_connections"] == 0;
        if clean && fd_count() <= fds {
            return;
        }
        assert!(
            t0.elapsed() < DEADLINE,
            "not back to baseline: {g} fds {} (baseline {fds})",
            fd_count()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads everything the target still sends until it closes the connection, which it must
/// do within the deadline (a read timeout is a failure, unlike `drain_until_closed`).
fn expect_closed(h: &mut Host) -> Vec<pdu::DecodedPdu> {
    h.stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut out = Vec::new();
    loop {
        match h.recv_pdu() {
            Ok(p) => out.push(p),
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                    ),
                    "expected the target to close the connection, got {e} after {out:?}"
                );
                return out;
            }
        }
    }
}

/// The connection gets a C2HTermReq (with `fes`, when given) and is closed.
fn expect_term_req(h: &mut Host, fes: Option<Fes>) {
    let pdus = expect_closed(h);
    let term = pdus.iter().find_map(|p| match p.header {
        PduHeader::C2HTermReq(t) => Some(t),
        _ => None,
    });
    let t = term.unwrap_or_else(|| panic!("no C2HTermReq before the close: {pdus:?}"));
    if let Some(fes) = fes {
        assert_eq!(t.fes, fes, "{t:?}");
    }
}

/// A raw socket reads end of stream (or a reset) within the deadline.
fn raw_closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// The well-behaved host: one write and read back of a fresh pattern, and an Identify.
fn still_served(admin: &mut Host, io: &mut Host, seed: u64) {
    let data = pattern(8192, seed);
    let slba = seed % 1000;
    let w = io.run(rw(io_opc::WRITE, slba, 2), Some(&data), 0);
    assert!(w.ok(), "write: {:?}", w.cqe.status());
    let r = io.run(rw(io_opc::READ, slba, 2), None, 8192);
    assert!(r.ok(), "read: {:?}", r.cqe.status());
    assert_eq!(r.data, data);
    assert!(admin
        .run(Sqe::new(admin_opc::KEEP_ALIVE, 0, 0), None, 0)
        .ok());
}

/// A capsule PDU for a Read, encoded, for byte surgery.
fn read_capsule(h: &Host) -> Vec<u8> {
    let mut sqe = rw(io_opc::READ, 0, 1);
    sqe.cid = 9.into();
    sqe.dptr = SglDescriptor::transport_data_block(4096);
    pdu::encode_pdu(&PduHeader::CapsuleCmd(sqe), &[], &h.tx).unwrap()
}

/// Starts an R2T write of `len` bytes on `h` and returns (cid, R2T).
fn start_r2t_write(h: &mut Host, len: u32) -> (u16, pdu::R2T) {
    let mut sqe = rw(io_opc::WRITE, 0, len / 4096);
    sqe.cid = 77.into();
    sqe.dptr = SglDescriptor::transport_data_block(len);
    h.send_pdu(&PduHeader::CapsuleCmd(sqe), &[]);
    let p = h.recv_pdu().expect("an R2T");
    let PduHeader::R2T(r) = p.header else {
        panic!("expected an R2T, got {:?}", p.header)
    };
    assert_eq!(r.cccid, 77);
    (77, r)
}

/// Starts an 8 KiB R2T write on a new I/O queue of controller `cntlid` and answers the R2T
/// with one H2CData for all of it, changed by `spoil` and carrying its DATAL bytes of
/// `fill`: the target must answer with a Term Req of `fes`.
fn spoiled_h2c_gets_term_req(
    port: u16,
    cntlid: u16,
    fill: u8,
    fes: Fes,
    spoil: impl FnOnce(&mut H2CData),
) {
    let mut bad = Host::io_connect(port, NQN, cntlid, 2, false);
    let (cid, r2t) = start_r2t_write(&mut bad, 8192);
    let mut h2c = H2CData {
        cccid: cid,
        ttag: r2t.ttag,
        datao: r2t.r2to,
        datal: r2t.r2tl,
        last: true,
    };
    spoil(&mut h2c);
    bad.send_pdu(&PduHeader::H2CData(h2c), &vec![fill; h2c.datal as usize]);
    expect_term_req(&mut bad, Some(fes));
}

#[test]
fn malformed_headers_truncations_and_stray_data_get_a_term_req_or_a_close() {
    let (_serial, app, port) = start_exporting("rel-malformed", json!({}));
    let mut admin = Host::admin_connect(port, NQN, false, 0);
    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);
    let mut seed = 1;
    let mut check_good = |admin: &mut Host, io: &mut Host| {
        seed += 1;
        still_served(admin, io, seed);
    };

    // A capsule whose HLEN is not a capsule's.
    let mut bad = Host::io_connect(port, NQN, admin.cntlid, 2, false);
    let mut bytes = read_capsule(&bad);
    bytes[2] = 24;
    bad.send_raw(&bytes).unwrap();
    expect_term_req(&mut bad, Some(Fes::INVALID_HEADER_FIELD));
    check_good(&mut admin, &mut io);

    // PLEN smaller than HLEN.
    let mut bad = Host::connect(port, false, false);
    let mut bytes = read_capsule(&bad);
    bytes[4..8].copy_from_slice(&16u32.to_le_bytes());
    bad.send_raw(&bytes).unwrap();
    expect_term_req(&mut bad, Some(Fes::INVALID_HEADER_FIELD));
    check_good(&mut admin, &mut io);

    // A capsule announcing 64 MiB of in-capsule data (far above in_capsule_data_size);
    // the data never comes, the Term Req must not wait for it.
    let mut bad = Host::io_connect(port, NQN, admin.cntlid, 2, false);
    let mut bytes = read_capsule(&bad);
    bytes[4..8].copy_from_slice(&(72u32 + (64 << 20)).to_le_bytes());
    bad.send_raw(&bytes).unwrap();
    expect_term_req(&mut bad, None);
    check_good(&mut admin, &mut io);

    // An H2CData whose DATAL exceeds the maximum (and the R2T).
    let mut bad = Host::io_connect(port, NQN, admin.cntlid, 2, false);
    let (cid, r2t) = start_r2t_write(&mut bad, 8192);
    let mut hdr = pdu::encode_pdu(
        &PduHeader::H2CData(H2CData {
            cccid: cid,
            ttag: r2t.ttag,
            datao: 0,
            datal: 8192,
            last: true,
        }),
        &[&[0u8; 8192]],
        &bad.tx,
    )
    .unwrap();
    hdr.truncate(24);
    let huge = 64u32 << 20;
    hdr[4..8].copy_from_slice(&(24 + huge).to_le_bytes());
    hdr[20..24].copy_from_slice(&huge.to_le_bytes());
    bad.send_raw(&hdr).unwrap();
    expect_term_req(&mut bad, None);
    check_good(&mut admin, &mut io);

    // H2CData beyond what the R2T asked for.
    spoiled_h2c_gets_term_req(
        port,
        admin.cntlid,
        0xab,
        Fes::DATA_TRANSFER_OUT_OF_RANGE,
        |h| h.datal += 512,
    );
    check_good(&mut admin, &mut io);

    // H2CData at an offset the R2T did not ask for.
    spoiled_h2c_gets_term_req(
        port,
        admin.cntlid,
        0xcd,
        Fes::DATA_TRANSFER_OUT_OF_RANGE,
        |h| {
            h.datao += 4096;
            h.datal = 4096;
        },
    );
    check_good(&mut admin, &mut io);

    // H2CData naming a command id that is not the one the transfer tag belongs to.
    spoiled_h2c_gets_term_req(port, admin.cntlid, 0xef, Fes::INVALID_HEADER_FIELD, |h| {
        h.cccid += 1;
        h.datao = 0;
        h.datal = 4096;
        h.last = false;
    });
    check_good(&mut admin, &mut io);

    // H2CData with a wrong data digest: the write fails (never reaches the bdev) or the
    // connection is terminated; the block keeps its old contents either way.
    let before = io.run(rw(io_opc::READ, 0, 2), None, 8192).data;
    let bad = Host::admin_connect(port, NQN, true, 0);
    let mut badio = Host::io_connect(port, NQN, bad.cntlid, 1, true);
    let (cid, r2t) = start_r2t_write(&mut badio, 8192);
    badio.send_spoiled_pdu(
        &PduHeader::H2CData(H2CData {
            cccid: cid,
            ttag: r2t.ttag,
            datao: 0,
            datal: r2t.r2tl,
            last: true,
        }),
        &vec![0x5a; r2t.r2tl as usize],
        0xff,
    );
    badio
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    match badio.recv_pdu() {
        Ok(p) => match p.header {
            PduHeader::CapsuleResp(c) => assert!(!c.status().is_success(), "{c:?}"),
            PduHeader::C2HTermReq(_) => {}
            other => panic!("unexpected answer to a bad data digest: {other:?}"),
        },
        Err(e) => panic!("no answer to a bad data digest: {e}"),
    }
    assert_eq!(io.run(rw(io_opc::READ, 0, 2), None, 8192).data, before);
    drop((bad, badio));
    check_good(&mut admin, &mut io);

    // Truncated PDUs: half a capsule, then the host closes its sending side; half an
    // ICReq likewise. The target closes without waiting for the rest.
    let mut bad = Host::io_connect(port, NQN, admin.cntlid, 2, false);
    let bytes = read_capsule(&bad);
    bad.send_raw(&bytes[..30]).unwrap();
    bad.stream.shutdown(Shutdown::Write).unwrap();
    expect_closed(&mut bad);
    let mut bad = Host::tcp(port);
    let ic = pdu::encode_pdu(
        &PduHeader::IcReq(pdu::IcReq::default()),
        &[],
        &Default::default(),
    )
    .unwrap();
    bad.send_raw(&ic[..40]).unwrap();
    bad.stream.shutdown(Shutdown::Write).unwrap();
    expect_closed(&mut bad);
    check_good(&mut admin, &mut io);

    // Only the well-behaved host is left.
    wait_until("two open connections", || open_connections(&app) == 2);
    let g = group_stats(&app);
    assert!(g["transports"][0]["term_reqs_sent"].as_u64().unwrap() >= 7);
    app.shutdown_and_wait();
}

/// Connections this test leaves idle: 2,000 in the normal suite (10,000 take ~13 s to
/// open on a loaded 2-core machine, and both ends live in this process, so the 20,000-fd
/// limit caps them below 10,000 anyway); POLLUX_IDLE_CONNS asks for more, up to what the
/// fd limit (raised to its hard maximum) allows.
fn idle_connection_count() -> usize {
    let wanted = std::env::var("POLLUX_IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let limit = pollux::sys::process::raise_nofile_limit();
    let spare = (limit as usize).saturating_sub(fd_count() + 512);
    wanted.min(spare / 2)
}

#[test]
fn idle_and_half_open_connections_are_closed_by_the_handshake_timeout() {
    let (_serial, app, port) = start_exporting("rel-idle", json!({"handshake_timeout_ms": 1000}));
    let t = rpc(&app, "nvmf_get_transports", json!({}));
    assert_eq!(t[0]["handshake_timeout_ms"], json!(1000));
    let mut admin = Host::admin_connect(port, NQN, false, 0);
    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);
    let fds = fd_count();

    let n = idle_connection_count();
    assert!(n >= 1000, "fd limit too low for this test ({n})");
    let t0 = Instant::now();
    let mut silent: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    // Stalled mid-ICReq, IC done but never a Connect, and I/O before Connect (refused with
    // Command Sequence Error; the queue then never connects either).
    let ic = pdu::encode_pdu(
        &PduHeader::IcReq(pdu::IcReq::default()),
        &[],
        &Default::default(),
    )
    .unwrap();
    let mut partial: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(&ic[..64]).unwrap();
            s
        })
        .collect();
    let mut ic_only: Vec<Host> = (0..20).map(|_| Host::connect(port, false, false)).collect();
    let mut early: Vec<Host> = (0..5)
        .map(|_| {
            let mut h = Host::connect(port, false, false);
            let d = h.run(rw(io_opc::READ, 0, 1), None, 4096);
            d.assert_code(Status::COMMAND_SEQUENCE_ERROR);
            h
        })
        .collect();
    let opened = t0.elapsed();
    // The target keeps serving while they sit there.
    still_served(&mut admin, &mut io, 3);
    wait_until("every idle connection accepted", || {
        open_connections(&app) as usize >= n + 45 + 2 || t0.elapsed() > Duration::from_secs(1)
    });
    for (i, s) in silent.iter_mut().enumerate() {
        assert!(raw_closed(s), "silent connection {i} was not closed");
        if i % 1000 == 0 {
            still_served(&mut admin, &mut io, 4 + i as u64);
        }
    }
    for s in partial.iter_mut() {
        assert!(raw_closed(s), "a half-sent ICReq was not closed");
    }
    for h in ic_only.iter_mut().chain(early.iter_mut()) {
        expect_closed(h);
    }
    let closed = t0.elapsed();
    still_served(&mut admin, &mut io, 5);
    drop((silent, partial, ic_only, early));
    wait_until("only the good host left", || open_connections(&app) == 2);
    wait_until("fds back to baseline", || fd_count() <= fds);
    eprintln!(
        "{n} silent + 45 half-open connections: opened in {opened:?}, all closed by the \
         handshake timeout after {closed:?}"
    );
    app.shutdown_and_wait();
}

#[test]
fn hosts_that_stop_reading_are_dropped() {
    let (_serial, app, port) = start_exporting("rel-noread", json!({"min_kato": 100}));
    let mut admin = Host::admin_connect(port, NQN, false, 0);
    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);

    // A host that keeps sending reads and never reads an answer: the target's queued
    // writes pass their bound and it closes the connection.
    let mut flood = Host::io_connect(port, NQN, admin.cntlid, 2, false);
    flood
        .stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sqe = rw(io_opc::READ, 0, 32);
    sqe.dptr = SglDescriptor::transport_data_block(128 * 1024);
    let mut sent = 0u64;
    let t0 = Instant::now();
    let stopped = loop {
        sqe.cid = ((sent % 60_000) as u16).into();
        let bytes = pdu::encode_pdu(&PduHeader::CapsuleCmd(sqe), &[], &flood.tx).unwrap();
        if let Err(e) = flood.send_raw(&bytes) {
            break e;
        }
        sent += 1;
        assert!(t0.elapsed() < DEADLINE, "the target never pushed back");
        if sent.is_multiple_of(64) {
            still_served(&mut admin, &mut io, sent);
        }
    };
    // Either the target closed (reset / broken pipe) or our send buffer filled up because
    // it stopped reading from us: in both cases it must be gone soon.
    eprintln!("flooding host stopped after {sent} commands: {stopped}");
    wait_until("the flooding host dropped", || open_connections(&app) == 2);
    drop(flood);

    // A host that respects its queue but stops reading, and no longer sends keep-alives:
    // the keep-alive timeout destroys its controller and closes both of its queues while
    // 16 MiB of read data sit unread.
    let mut quiet_admin = Host::admin_connect(port, NQN, false, 300);
    let mut quiet = Host::io_connect(port, NQN, quiet_admin.cntlid, 1, false);
    for i in 0..127u16 {
        let mut sqe = rw(io_opc::READ, 0, 32);
        sqe.cid = (i + 1).into();
        sqe.dptr = SglDescriptor::transport_data_block(128 * 1024);
        quiet.send_pdu(&PduHeader::CapsuleCmd(sqe), &[]);
    }
    let t0 = Instant::now();
    while open_connections(&app) > 2 {
        assert!(t0.elapsed() < DEADLINE, "the quiet host was never dropped");
        still_served(&mut admin, &mut io, t0.elapsed().as_millis() as u64);
        std::thread::sleep(Duration::from_millis(50));
    }
    expect_closed(&mut quiet_admin);
    expect_closed(&mut quiet);
    let g = group_stats(&app);
    assert_eq!(g["current_io_qpairs"], 1, "{g}");
    wait_until("no bdev I/O left", || {
        group_stats(&app)["pending_bdev_io"] == 0
    });
    app.shutdown_and_wait();
}

/// A namespace (nsid 2) on an error bdev over a new malloc bdev.
fn error_namespace(app: &RunningApp) {
    rpc(
        app,
        "bdev_malloc_create",
        json!({"name": "Malloc1", "num_blocks": 1024, "block_size": 4096}),
    );
    rpc(app, "bdev_error_create", json!({"base_name": "Malloc1"}));
    rpc(
        app,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "EE_Malloc1", "nsid": 2}}),
    );
}

fn inject(app: &RunningApp, io_type: &str, error_type: &str, num: u64) {
    rpc(
        app,
        "bdev_error_inject_error",
        json!({"name": "EE_Malloc1", "io_type": io_type, "error_type": error_type, "num": num}),
    );
}

fn on_ns2(mut sqe: Sqe) -> Sqe {
    sqe.nsid = 2.into();
    sqe
}

#[test]
fn injected_bdev_failures_reach_the_host_and_nomem_is_retried_without_loss() {
    let (_serial, app, port) = start_exporting("rel-errbdev", json!({}));
    error_namespace(&app);
    let admin = Host::admin_connect(port, NQN, false, 0);
    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);
    let data = pattern(8192, 42);
    assert!(io
        .run(on_ns2(rw(io_opc::WRITE, 10, 2)), Some(&data), 0)
        .ok());

    // A failed read: Internal Error, retryable (no DNR); the next read works.
    inject(&app, "read", "failure", 1);
    let d = io.run(on_ns2(rw(io_opc::READ, 10, 2)), None, 8192);
    d.assert_code(Status::INTERNAL_ERROR);
    assert!(!d.cqe.status().dnr());
    assert_eq!(
        io.run(on_ns2(rw(io_opc::READ, 10, 2)), None, 8192).data,
        data
    );

    // A failed write (R2T path) and a failed in-capsule write leave the old data.
    inject(&app, "write", "failure", 2);
    let other = pattern(8192, 43);
    let d = io.run(on_ns2(rw(io_opc::WRITE, 10, 2)), Some(&other), 0);
    d.assert_code(Status::INTERNAL_ERROR);
    let d = io.run(on_ns2(rw(io_opc::WRITE, 10, 1)), Some(&other[..4096]), 0);
    d.assert_code(Status::INTERNAL_ERROR);
    assert_eq!(
        io.run(on_ns2(rw(io_opc::READ, 10, 2)), None, 8192).data,
        data
    );

    // Flush, Write Zeroes and Deallocate failures are reported too.
    inject(&app, "flush", "failure", 1);
    let d = io.run(on_ns2(Sqe::new(io_opc::FLUSH, 0, 2)), None, 0);
    d.assert_code(Status::INTERNAL_ERROR);
    inject(&app, "write_zeroes", "failure", 1);
    let d = io.run(on_ns2(rw(io_opc::WRITE_ZEROES, 10, 1)), None, 0);
    d.assert_code(Status::INTERNAL_ERROR);
    inject(&app, "unmap", "failure", 1);
    let mut dsm = Sqe::new(io_opc::DATASET_MANAGEMENT, 0, 2);
    dsm.cdw11 = pollux::nvmf::wire::dsm::DEALLOCATE.into();
    let mut range = [0u8; 16];
    range[4..8].copy_from_slice(&2u32.to_le_bytes());
    range[8..16].copy_from_slice(&10u64.to_le_bytes());
    let d = io.run(dsm, Some(&range), 0);
    d.assert_code(Status::INTERNAL_ERROR);
    assert_eq!(
        io.run(on_ns2(rw(io_opc::READ, 10, 2)), None, 8192).data,
        data
    );

    // nomem: the bdev layer retries, the host sees nothing but successes and every byte
    // lands. 200 armed refusals over 64 writes, several commands in flight at a time.
    inject(&app, "write", "nomem", 200);
    let mut expected = Vec::new();
    for batch in 0..8u64 {
        let mut cids = Vec::new();
        for i in 0..8u64 {
            let lba = 100 + batch * 8 + i;
            let d = pattern(4096, 1000 + lba);
            cids.push(io.submit(on_ns2(rw(io_opc::WRITE, lba, 1)), Some(&d), 0));
            expected.push((lba, d));
        }
        for cid in cids {
            let d = io.wait_completion(cid);
            assert!(d.ok(), "a nomem write failed: {:?}", d.cqe.status());
        }
    }
    for (lba, d) in &expected {
        let r = io.run(on_ns2(rw(io_opc::READ, *lba, 1)), None, 4096);
        assert!(r.ok());
        assert_eq!(&r.data, d, "lba {lba}");
    }
    inject(&app, "clear", "failure", 0);
    // nomem on reads, too.
    inject(&app, "read", "nomem", 50);
    for (lba, d) in expected.iter().take(16) {
        assert_eq!(
            &io.run(on_ns2(rw(io_opc::READ, *lba, 1)), None, 4096).data,
            d
        );
    }
    // The bdev counted each injected failure once, and no nomem refusal as an error.
    let st = rpc(&app, "bdev_get_iostat", json!({"name": "EE_Malloc1"}));
    assert_eq!(
        st["bdevs"][0]["io_error"],
        json!({"flush": 1, "read": 1, "unmap": 1, "write": 2, "write_zeroes": 1}),
        "{st}"
    );
    app.shutdown_and_wait();
}

/// A namespace (nsid `nsid`) on a delay bdev (`latency_us` per I/O) over a new malloc bdev.
fn delay_namespace(app: &RunningApp, nsid: u32, latency_us: u64) {
    let base = format!("DelayBase{nsid}");
    let name = format!("Delay{nsid}");
    rpc(
        app,
        "bdev_malloc_create",
        json!({"name": base, "num_blocks": 1024, "block_size": 4096}),
    );
    rpc(
        app,
        "bdev_delay_create",
        json!({"name": name, "base_bdev_name": base, "avg_read_latency": latency_us,
               "p99_read_latency": latency_us, "avg_write_latency": latency_us,
               "p99_write_latency": latency_us}),
    );
    rpc(
        app,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": name, "nsid": nsid}}),
    );
}

#[test]
fn a_thousand_abrupt_disconnects_with_io_in_flight_leak_nothing() {
    let (_serial, app, port) = start_exporting("rel-disconnect", json!({}));
    delay_namespace(&app, 2, 2000);
    let fds = warm_fd_baseline(&app, port);
    let rounds: usize = std::env::var("POLLUX_DISCONNECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let t0 = Instant::now();
    let data = pattern(4096, 9);
    let mut in_flight = 0u64;
    for round in 0..rounds {
        let admin = Host::admin_connect(port, NQN, false, 0);
        let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);
        // Slow I/O (the delayed namespace: 2 ms), then a fast read whose completion proves
        // the target took the slow ones; those are still in flight at the disconnect.
        for i in 0..4u64 {
            io.submit(
                on_ns2(rw(io_opc::WRITE, i + round as u64 % 512, 1)),
                Some(&data),
                0,
            );
            in_flight += 1;
        }
        let fast = io.submit(rw(io_opc::READ, round as u64 % 512, 1), None, 4096);
        assert!(io.wait_completion(fast).ok());
        for i in 0..4u64 {
            io.submit(on_ns2(rw(io_opc::READ, i, 1)), None, 4096);
            in_flight += 1;
        }
        match round % 3 {
            0 => {
                reset_on_close(&io.stream);
                reset_on_close(&admin.stream);
                drop((io, admin));
            }
            1 => drop((admin, io)),
            _ => drop((io, admin)),
        }
    }
    let elapsed = t0.elapsed();
    wait_for_baseline(&app, fds);
    let c = rpc(&app, "nvmf_subsystem_get_controllers", json!({"nqn": NQN}));
    assert_eq!(c, json!([]));
    let g = group_stats(&app);
    assert_eq!(g["admin_qpairs"].as_u64().unwrap(), rounds as u64, "{g}");
    eprintln!(
        "{rounds} abrupt disconnects ({in_flight} slow commands in flight at the disconnect) \
         in {elapsed:?}; back to baseline: {g}"
    );
    // Still fully functional, and the delay bdev can go (no leaked descriptor or claim).
    let mut admin = Host::admin_connect(port, NQN, false, 0);
    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);
    still_served(&mut admin, &mut io, 77);
    drop((admin, io));
    rpc(
        &app,
        "nvmf_subsystem_remove_ns",
        json!({"nqn": NQN, "nsid": 2}),
    );
    rpc(&app, "bdev_delay_delete", json!({"name": "Delay2"}));
    app.shutdown_and_wait();
}

#[test]
fn keep_alive_expiry_during_io_tears_everything_down() {
    let (_serial, app, port) = start_exporting("rel-kato", json!({"min_kato": 100}));
    delay_namespace(&app, 2, 1000);
    let fds = warm_fd_baseline(&app, port);
    let _admin = Host::admin_connect(port, NQN, false, 300);
    let cntlid = _admin.cntlid;
    let mut io = Host::io_connect(port, NQN, cntlid, 1, false);
    io.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // I/O does not count as keep-alive traffic: with no Keep Alive on the admin queue the
    // controller expires while 16 commands are always in flight.
    let data = pattern(4096, 3);
    let t0 = Instant::now();
    let mut completed = 0u64;
    let mut outstanding = std::collections::VecDeque::new();
    let ended = loop {
        while outstanding.len() < 16 {
            let sqe = if completed.is_multiple_of(2) {
                on_ns2(rw(io_opc::WRITE, completed % 1000, 1))
            } else {
                on_ns2(rw(io_opc::READ, completed % 1000, 1))
            };
            let mut sqe = sqe;
            sqe.cid = ((completed as u16 + outstanding.len() as u16) % 4096 + 1).into();
            let bytes = if sqe.opcode == io_opc::WRITE {
                sqe.dptr = SglDescriptor::in_capsule(0, 4096);
                pdu::encode_pdu(&PduHeader::CapsuleCmd(sqe), &[&data], &io.tx).unwrap()
            } else {
                sqe.dptr = SglDescriptor::transport_data_block(4096);
                pdu::encode_pdu(&PduHeader::CapsuleCmd(sqe), &[], &io.tx).unwrap()
            };
            if io.send_raw(&bytes).is_err() {
                break;
            }
            outstanding.push_back(sqe.cid);
        }
        match io.recv_pdu() {
            Ok(p) => {
                if let PduHeader::CapsuleResp(c) = p.header {
                    assert!(c.status().is_success(), "{c:?}");
                    outstanding.retain(|x| *x != c.cid);
                    completed += 1;
                }
                if let PduHeader::C2HData(d) = p.header {
                    if d.success {
                        outstanding.retain(|x| *x != d.cccid);
                        completed += 1;
                    }
                }
            }
            Err(e) => break e,
        }
        assert!(t0.elapsed() < DEADLINE, "the controller never expired");
    };
    assert!(
        matches!(
            ended.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
        ),
        "{ended}"
    );
    assert!(completed > 0);
    eprintln!(
        "keep-alive expiry after {:?} and {completed} I/Os",
        t0.elapsed()
    );
    drop((io, _admin));
    wait_for_baseline(&app, fds);
    assert_eq!(
        rpc(&app, "nvmf_subsystem_get_controllers", json!({"nqn": NQN})),
        json!([])
    );
    app.shutdown_and_wait();
}

/// Reads PDUs until every one of `cids` was answered (a CapsuleResp, or a C2HData with the
/// SUCCESS flag); returns their statuses.
fn collect_answers(h: &mut Host, cids: &[u16]) -> Vec<Status> {
    h.stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut left: Vec<u16> = cids.to_vec();
    let mut out = Vec::new();
    while !left.is_empty() {
        let p = h.recv_pdu().expect("an answer to every in-flight command");
        let (cid, st) = match p.header {
            PduHeader::CapsuleResp(c) => (c.cid.get(), c.status()),
            PduHeader::C2HData(d) if d.success => (d.cccid, Status::SUCCESS),
            _ => continue,
        };
        if let Some(i) = left.iter().position(|c| *c == cid) {
            left.swap_remove(i);
            out.push(st);
        }
    }
    out
}

#[test]
fn namespace_removal_and_subsystem_deletion_with_io_in_flight() {
    let (_serial, app, port) = start_exporting("rel-remove", json!({}));
    delay_namespace(&app, 2, 100_000);
    delay_namespace(&app, 3, 100_000);
    let fds = warm_fd_baseline(&app, port);
    let mut admin = Host::admin_connect(port, NQN, false, 0);
    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);
    let data = pattern(4096, 5);

    // 16 slow commands on nsid 2, then the namespace goes: each is answered (success or
    // an error), later ones are refused as for a missing namespace.
    let mut cids = Vec::new();
    for i in 0..8u64 {
        cids.push(io.submit(on_ns2(rw(io_opc::WRITE, i, 1)), Some(&data), 0));
        cids.push(io.submit(on_ns2(rw(io_opc::READ, i, 1)), None, 4096));
    }
    rpc(
        &app,
        "nvmf_subsystem_remove_ns",
        json!({"nqn": NQN, "nsid": 2}),
    );
    let answers = collect_answers(&mut io, &cids);
    let ok = answers.iter().filter(|s| s.is_success()).count();
    let d = io.run(on_ns2(rw(io_opc::READ, 0, 1)), None, 4096);
    d.assert_code(Status::INVALID_NAMESPACE_OR_FORMAT);
    still_served(&mut admin, &mut io, 11);
    // The removed namespace's bdev is free again.
    rpc(&app, "bdev_delay_delete", json!({"name": "Delay2"}));
    eprintln!("namespace removed under 16 in-flight commands: {ok} completed successfully");

    // 16 slow commands on nsid 3, then the subsystem goes: both queues are closed.
    let mut sqe3 = rw(io_opc::READ, 0, 1);
    sqe3.nsid = 3.into();
    for _ in 0..16 {
        io.submit(sqe3, None, 4096);
    }
    rpc(&app, "nvmf_delete_subsystem", json!({"nqn": NQN}));
    expect_closed(&mut io);
    expect_closed(&mut admin);
    drop((io, admin));
    wait_for_baseline(&app, fds);
    rpc(&app, "bdev_delay_delete", json!({"name": "Delay3"}));
    app.shutdown_and_wait();
}

/// Guard for a bug the soak found: the socket layer hands a closed socket's key to the next
/// connection before it reports the closed one's cancelled writes; those completions used
/// to be taken for failures of the new connection, which was closed at its ICReq. (The
/// race needs the target's reactor to sleep between the close and the next accept with the
/// cancellations unreported; this test does not hit it reliably, `scripts/soak.sh` did
/// within a second in every run before the fix.)
#[test]
fn cancelled_writes_of_a_closed_connection_do_not_close_the_next_one() {
    let (_serial, app, port) = start_exporting("rel-abandon", json!({}));
    let data = pattern(128 * 1024, 1);
    for round in 0..20u64 {
        let admin = Host::admin_connect(port, NQN, false, 0);
        let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);
        // Writes whose data went out, one whose R2T is never answered, a large read: the
        // target has writes queued on the socket when the host goes away.
        for i in 0..2 {
            io.submit(rw(io_opc::WRITE, i * 32, 32), Some(&data), 0);
        }
        let mut sqe = rw(io_opc::WRITE, 64, 32);
        sqe.cid = 0xfff0.into();
        sqe.dptr = SglDescriptor::transport_data_block(128 * 1024);
        io.send_pdu(&PduHeader::CapsuleCmd(sqe), &[]);
        // Enough unread read data to fill the socket buffers: writes stay queued.
        for _ in 0..64 {
            io.submit(rw(io_opc::READ, 0, 32), None, 128 * 1024);
        }
        std::thread::sleep(Duration::from_millis(2));
        if round % 2 == 0 {
            reset_on_close(&io.stream);
            reset_on_close(&admin.stream);
        }
        if round % 3 == 0 {
            drop((admin, io));
        } else {
            drop((io, admin));
        }
        // Let the target see the close and its reactor fall asleep with the cancelled
        // writes still unreported; then the next host connects and must be served.
        std::thread::sleep(Duration::from_millis(5));
        let mut admin = Host::admin_connect(port, NQN, false, 0);
        let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);
        still_served(&mut admin, &mut io, round);
    }
    app.shutdown_and_wait();
}
