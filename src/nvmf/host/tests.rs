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
    assert_eq!(d.subnqn, crate::nvmf::spec::DISCOVERY_NQN);
    assert!("trtype:RDMA traddr:127.0.0.1"
        .parse::<TransportId>()
        .unwrap_err()
        .contains("TCP"));
    assert!("traddr:127.0.0.1 trsvcid:x"
        .parse::<TransportId>()
        .unwrap_err()
        .contains("trsvcid"));
    assert!("adrfam:IPv6 traddr:127.0.0.1"
        .parse::<TransportId>()
        .unwrap_err()
        .contains("IPv6"));
    assert!("trsvcid:1"
        .parse::<TransportId>()
        .unwrap_err()
        .contains("traddr"));
    assert!("bogus:1 traddr:127.0.0.1"
        .parse::<TransportId>()
        .unwrap_err()
        .contains("bogus"));
}

// ---------------------------------------------------------------------------------------
// A tiny fake controller: blocking threads speaking NVMe/TCP through the codec. It cuts
// reads into 8 KiB C2HData PDUs (the last with SUCCESS, no CapsuleResp), answers writes
// above 4 KiB with one R2T whose data must come as several H2CData (MAXH2CDATA = 4096),
// and in "evil" mode answers a read with C2HData for a command id that is not in flight.
// ---------------------------------------------------------------------------------------

use crate::nvmf::pdu::{
    encode_pdu, target_negotiate, C2HData, PduAssembler, PduDecoder, PduHeader, Role,
    TargetIcParams, TxConfig, R2T,
};
use crate::nvmf::spec::{
    admin_opc, cns, fctype, io_opc, prop, Cap, Cc, Cqe, Csts, IdentifyController,
    IdentifyNamespace, Sqe, Status, Version,
};
use crate::nvmf::wire::WireField;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FAKE_BLOCKS: u64 = 2048;
const FAKE_NQN: &str = "nqn.2026-11.io.pollux:fake";

#[derive(Default)]
struct FakeState {
    disk: Mutex<Vec<u8>>,
    evil: AtomicBool,
    saw_term_req: AtomicBool,
    max_h2c_pdus_per_write: Mutex<usize>,
    keep_alives: std::sync::atomic::AtomicUsize,
}

struct FakeConn {
    s: TcpStream,
    tx: TxConfig,
    cc: Cc,
    qid: u16,
    /// The write being received through R2T: (cid, slba, length, received, pdus).
    pending: Option<(u16, u64, u32, u32, usize)>,
}

impl FakeConn {
    fn send(&mut self, hdr: PduHeader, data: &[u8]) {
        let bytes = encode_pdu(&hdr, &[data], &self.tx).unwrap();
        let _ = self.s.write_all(&bytes);
    }
    fn respond(&mut self, cid: u16, status: Status, dw0: u32) {
        let mut cqe = Cqe::new(cid, status);
        cqe.dw0 = dw0;
        self.send(PduHeader::CapsuleResp(cqe), &[]);
    }
    /// Sends `data` as C2HData PDUs of at most 8 KiB; with `success` the last one completes.
    fn send_read(&mut self, cid: u16, data: &[u8], success: bool) {
        let mut off = 0;
        for chunk in data.chunks(8192) {
            let last = off + chunk.len() == data.len();
            let hdr = C2HData {
                cccid: cid,
                datao: off as u32,
                datal: chunk.len() as u32,
                last,
                success: success && last,
            };
            self.send(PduHeader::C2HData(hdr), chunk);
            off += chunk.len();
        }
    }

    fn on_capsule(&mut self, st: &FakeState, sqe: Sqe, data: &[u8]) {
        let cid = sqe.cid;
        if sqe.is_fabrics() {
            match sqe.fctype() {
                fctype::CONNECT => {
                    self.qid = (sqe.cdw10 >> 16) as u16;
                    self.respond(cid, Status::SUCCESS, 7)
                }
                fctype::PROPERTY_GET => {
                    let v = match sqe.cdw11 {
                        prop::CAP => Cap {
                            mqes: 127,
                            to: 1,
                            css: 1,
                            ..Default::default()
                        }
                        .to_u64(),
                        prop::VS => Version::V1_4.to_u32() as u64,
                        prop::CC => self.cc.to_u32() as u64,
                        prop::CSTS => Csts {
                            rdy: self.cc.en,
                            shst: if self.cc.shn != 0 { 2 } else { 0 },
                            ..Default::default()
                        }
                        .to_u32() as u64,
                        _ => 0,
                    };
                    let mut cqe = Cqe::new(cid, Status::SUCCESS);
                    cqe.dw0 = v as u32;
                    cqe.dw1 = (v >> 32) as u32;
                    self.send(PduHeader::CapsuleResp(cqe), &[]);
                }
                fctype::PROPERTY_SET => {
                    if sqe.cdw11 == prop::CC {
                        self.cc = Cc::from_u32(sqe.cdw12);
                    }
                    self.respond(cid, Status::SUCCESS, 0)
                }
                _ => self.respond(cid, Status::INVALID_OPCODE, 0),
            }
            return;
        }
        if self.qid == 0 {
            match sqe.opcode {
                admin_opc::IDENTIFY => {
                    let mut out = vec![0u8; 4096];
                    match sqe.cdw10 as u8 {
                        cns::CONTROLLER => IdentifyController {
                            cntrltype: crate::nvmf::spec::cntrltype::IO,
                            mn: crate::nvmf::ascii_field("pollux fake"),
                            ioccsz: (64 + 4096) / 16,
                            mdts: 5,
                            cntlid: 7,
                            ..Default::default()
                        }
                        .put(&mut out),
                        cns::NAMESPACE => {
                            let mut ns = IdentifyNamespace {
                                nsze: FAKE_BLOCKS,
                                ncap: FAKE_BLOCKS,
                                ..Default::default()
                            };
                            ns.lbaf[0].lbads = 9;
                            ns.put(&mut out)
                        }
                        cns::ACTIVE_NS_LIST => out[..4].copy_from_slice(&1u32.to_le_bytes()),
                        _ => {}
                    }
                    self.send_read(cid, &out, false);
                    self.respond(cid, Status::SUCCESS, 0);
                }
                admin_opc::SET_FEATURES => self.respond(cid, Status::SUCCESS, sqe.cdw11),
                admin_opc::KEEP_ALIVE => {
                    st.keep_alives.fetch_add(1, Ordering::SeqCst);
                    self.respond(cid, Status::SUCCESS, 0)
                }
                _ => self.respond(cid, Status::SUCCESS, 0),
            }
            return;
        }
        let (slba, nlb) = (sqe.slba(), sqe.nlb() as u64);
        let in_range = slba + nlb <= FAKE_BLOCKS;
        match sqe.opcode {
            io_opc::READ | io_opc::WRITE | io_opc::WRITE_ZEROES if !in_range => {
                self.respond(cid, Status::LBA_OUT_OF_RANGE.with_dnr(), 0)
            }
            io_opc::READ => {
                let range = slba as usize * 512..(slba + nlb) as usize * 512;
                let data = st.disk.lock().unwrap()[range].to_vec();
                if st.evil.load(Ordering::SeqCst) {
                    self.send_read(cid ^ 0x3333, &data, true);
                } else {
                    self.send_read(cid, &data, true);
                }
            }
            io_opc::WRITE if sqe.dptr.is_in_capsule() => {
                let start = slba as usize * 512;
                st.disk.lock().unwrap()[start..start + data.len()].copy_from_slice(data);
                self.respond(cid, Status::SUCCESS, 0);
            }
            io_opc::WRITE => {
                let len = (nlb * 512) as u32;
                self.pending = Some((cid, slba, len, 0, 0));
                let r2t = R2T {
                    cccid: cid,
                    ttag: 0x55,
                    r2to: 0,
                    r2tl: len,
                };
                self.send(PduHeader::R2T(r2t), &[]);
            }
            io_opc::WRITE_ZEROES => {
                let range = slba as usize * 512..(slba + nlb) as usize * 512;
                st.disk.lock().unwrap()[range].fill(0);
                self.respond(cid, Status::SUCCESS, 0);
            }
            io_opc::FLUSH | io_opc::DATASET_MANAGEMENT => self.respond(cid, Status::SUCCESS, 0),
            _ => self.respond(cid, Status::INVALID_OPCODE.with_dnr(), 0),
        }
    }

    fn on_h2c(&mut self, st: &FakeState, d: crate::nvmf::pdu::H2CData, data: &[u8]) {
        let Some((cid, slba, len, got, pdus)) = self.pending else {
            return;
        };
        assert_eq!(
            (d.cccid, d.ttag, d.datao),
            (cid, 0x55, got),
            "H2CData in order"
        );
        let start = slba as usize * 512 + d.datao as usize;
        st.disk.lock().unwrap()[start..start + data.len()].copy_from_slice(data);
        let got = got + d.datal;
        self.pending = Some((cid, slba, len, got, pdus + 1));
        if d.last {
            assert_eq!(got, len, "LAST_PDU on the last byte");
            let mut max = st.max_h2c_pdus_per_write.lock().unwrap();
            *max = (*max).max(pdus + 1);
            drop(max);
            self.pending = None;
            self.respond(cid, Status::SUCCESS, 0);
        }
    }
}

fn serve(s: TcpStream, st: Arc<FakeState>) {
    let mut conn = FakeConn {
        s,
        tx: TxConfig::default(),
        cc: Cc::default(),
        qid: 0,
        pending: None,
    };
    let mut reader = conn.s.try_clone().unwrap();
    let mut dec = PduDecoder::new(Role::Target);
    let mut asm = PduAssembler::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut input = &buf[..n];
        loop {
            match dec.feed(input) {
                Ok((used, ev)) => {
                    input = &input[used..];
                    match ev {
                        Some(ev) => asm.on_event(&mut dec, ev),
                        None => break,
                    }
                }
                Err(_) => return,
            }
        }
        for pdu in std::mem::take(&mut asm.pdus) {
            assert!(pdu.data_digest_ok, "host data digest");
            match pdu.header {
                PduHeader::IcReq(req) => {
                    let params = TargetIcParams {
                        cpda: 0,
                        maxh2cdata: 4096,
                        max_in_capsule: 4096,
                        allow_hdgst: true,
                        allow_ddgst: true,
                    };
                    let (resp, tx, rx) = target_negotiate(&req, &params);
                    conn.send(PduHeader::IcResp(resp), &[]);
                    conn.tx = tx;
                    dec.configure(rx);
                }
                PduHeader::CapsuleCmd(sqe) => conn.on_capsule(&st, sqe, &pdu.data),
                PduHeader::H2CData(d) => conn.on_h2c(&st, d, &pdu.data),
                PduHeader::H2CTermReq(_) => {
                    st.saw_term_req.store(true, Ordering::SeqCst);
                    return;
                }
                _ => return,
            }
        }
    }
}

/// Starts the fake controller; returns its port and state.
fn fake_target() -> (u16, Arc<FakeState>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let st = Arc::new(FakeState {
        disk: Mutex::new(vec![0u8; FAKE_BLOCKS as usize * 512]),
        ..Default::default()
    });
    let st2 = st.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().map_while(Result::ok) {
            let st = st2.clone();
            std::thread::spawn(move || serve(s, st));
        }
    });
    (port, st)
}

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
    let (port, st) = fake_target();
    let c = SyncController::connect(
        &TransportId::tcp("127.0.0.1", port, FAKE_NQN),
        fake_opts(impl_name, digests),
    )
    .unwrap();
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
    // In-capsule (4 KiB) and R2T (64 KiB = 16 H2CData PDUs) writes; reads arrive as 8 KiB
    // C2HData PDUs ending with SUCCESS.
    let small = bytes(1, 4096);
    c.write(1, 1, 8, 8, &small).unwrap();
    let large = bytes(2, 64 * 1024);
    c.write(2, 1, 64, 128, &large).unwrap();
    assert_eq!(*st.max_h2c_pdus_per_write.lock().unwrap(), 16);
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
    let (port, st) = fake_target();
    let c = SyncController::connect(
        &TransportId::tcp("127.0.0.1", port, FAKE_NQN),
        fake_opts("posix", false),
    )
    .unwrap();
    st.evil.store(true, Ordering::SeqCst);
    let err = c.read(1, 1, 0, 8, 512).unwrap_err();
    assert!(matches!(err, HostError::Protocol(_)), "{err}");
    assert!(matches!(
        c.read(1, 1, 0, 8, 512),
        Err(HostError::NotReady(_))
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !st.saw_term_req.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        st.saw_term_req.load(Ordering::SeqCst),
        "host sent an H2CTermReq"
    );
    // The admin queue is unaffected.
    c.keep_alive().unwrap();
}

#[test]
fn connection_refused_is_a_clear_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = SyncController::connect(
        &TransportId::tcp("127.0.0.1", port, FAKE_NQN),
        fake_opts("posix", false),
    )
    .err()
    .unwrap();
    assert!(
        matches!(&err, HostError::Connection(m) if m.contains("refused")),
        "{err}"
    );
}

#[test]
fn keep_alive_is_sent_every_half_kato() {
    let (port, st) = fake_target();
    let opts = ConnectOpts {
        kato_ms: 200,
        io_queues: 0,
        ..fake_opts("posix", false)
    };
    let c = SyncController::connect(&TransportId::tcp("127.0.0.1", port, FAKE_NQN), opts).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while st.keep_alives.load(Ordering::SeqCst) < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        st.keep_alives.load(Ordering::SeqCst) >= 3,
        "keep alives on the 100 ms timer"
    );
    c.disconnect().unwrap();
}
