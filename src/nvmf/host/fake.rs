//! A tiny scripted NVMe/TCP controller for tests of the host.
//!
//! A tiny NVMe/TCP controller for tests of the host (and of anything that wants a peer it
//! can make misbehave): blocking std threads, one per connection, speaking NVMe/TCP through
//! the codec over loopback, with a 1 MiB RAM namespace of 512-byte blocks (nsid 1). It
//! accepts 4 KiB of in-capsule data and announces MAXH2CDATA 4096, so larger writes take one
//! R2T answered by several H2CData PDUs; reads go out as 8 KiB C2HData PDUs, the last one
//! with SUCCESS (no CapsuleResp). [`Misbehavior`] makes it fail on purpose on the I/O
//! queues (the admin queue keeps working): C2HData for a command id that is not in flight,
//! hanging up, or never answering. Deviations of the host from what it expects (H2CData
//! out of order, bad data digests) are recorded in `violations()`, never panics. It is a
//! test fixture: it implements just enough of a controller for the host's bring-up and I/O,
//! not a target.

use crate::nvmf::pdu::{
    encode_pdu, target_negotiate, C2HData, PduAssembler, PduDecoder, PduHeader, Role,
    TargetIcParams, TxConfig, R2T,
};
use crate::nvmf::wire::{
    admin_opc, cns, fctype, io_opc, prop, Cap, Cc, Cqe, Csts, IdentifyController,
    IdentifyNamespace, Sqe, Status, Version,
};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use zerocopy::IntoBytes;

/// Namespace size in 512-byte blocks.
pub const FAKE_BLOCKS: u64 = 2048;
/// The subsystem NQN it answers to (any NQN is accepted).
pub const FAKE_NQN: &str = "nqn.2026-11.io.pollux:fake";

#[derive(Default)]
struct FakeState {
    violations: Mutex<Vec<String>>,
    disk: Mutex<Vec<u8>>,
    /// A `Misbehavior` as u8.
    mode: std::sync::atomic::AtomicU8,
    saw_term_req: AtomicBool,
    max_h2c_pdus_per_write: Mutex<usize>,
    keep_alives: std::sync::atomic::AtomicUsize,
    /// (QID, CATTR) of every Connect received.
    connects: Mutex<Vec<(u16, u8)>>,
}

impl FakeState {
    fn violation(&self, what: String) {
        self.violations.lock().unwrap().push(what);
    }
}

struct FakeConn {
    s: TcpStream,
    tx: TxConfig,
    cc: Cc,
    qid: u16,
    /// Writes being received through R2T, by cid: (slba, length, received, pdus).
    pending: std::collections::HashMap<u16, (u64, u32, u32, usize)>,
}

impl FakeConn {
    fn send(&mut self, hdr: PduHeader, data: &[u8]) {
        let bytes = encode_pdu(&hdr, &[data], &self.tx).unwrap();
        let _ = self.s.write_all(&bytes);
    }
    fn respond(&mut self, cid: u16, status: Status, dw0: u32) {
        let mut cqe = Cqe::new(cid, status);
        cqe.dw0 = dw0.into();
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

    /// Handles a command; false when the connection must close.
    fn on_capsule(&mut self, st: &FakeState, sqe: Sqe, data: &[u8]) -> bool {
        if self.qid != 0 && !sqe.is_fabrics() {
            match st.mode.load(Ordering::SeqCst) {
                m if m == Misbehavior::HangUp as u8 => {
                    let _ = self.s.shutdown(std::net::Shutdown::Both);
                    return false;
                }
                m if m == Misbehavior::Silent as u8 => return true,
                _ => {}
            }
        }
        self.handle(st, sqe, data);
        true
    }

    fn handle(&mut self, st: &FakeState, sqe: Sqe, data: &[u8]) {
        let cid = sqe.cid.get();
        if sqe.is_fabrics() {
            match sqe.fctype() {
                fctype::CONNECT => {
                    self.qid = (sqe.cdw10 >> 16).get() as u16;
                    let cattr = (sqe.cdw11 >> 16).get() as u8;
                    st.connects.lock().unwrap().push((self.qid, cattr));
                    let atr = if st.mode.load(Ordering::SeqCst) == Misbehavior::AuthSilent as u8 {
                        crate::nvmf::wire::CONNECT_AUTHREQ_ATR
                    } else {
                        0
                    };
                    self.respond(cid, Status::SUCCESS, 7 | atr)
                }
                fctype::AUTHENTICATION_SEND | fctype::AUTHENTICATION_RECEIVE
                    if st.mode.load(Ordering::SeqCst) == Misbehavior::AuthSilent as u8 => {}
                fctype::PROPERTY_GET => {
                    let v = match sqe.cdw11.get() {
                        prop::CAP => Cap::new().with_mqes(127).with_to(1).with_css(1).to_u64(),
                        prop::VS => Version::V1_4.to_u32() as u64,
                        prop::CC => self.cc.to_u32() as u64,
                        prop::CSTS => Csts::new()
                            .with_rdy(self.cc.en())
                            .with_shst(if self.cc.shn() != 0 { 2 } else { 0 })
                            .to_u32() as u64,
                        _ => 0,
                    };
                    let mut cqe = Cqe::new(cid, Status::SUCCESS);
                    cqe.dw0 = (v as u32).into();
                    cqe.dw1 = ((v >> 32) as u32).into();
                    self.send(PduHeader::CapsuleResp(cqe), &[]);
                }
                fctype::PROPERTY_SET => {
                    if sqe.cdw11 == prop::CC {
                        self.cc = Cc::from_u32(sqe.cdw12.get());
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
                    match sqe.cdw10.get() as u8 {
                        cns::CONTROLLER => out.copy_from_slice(
                            IdentifyController {
                                cntrltype: crate::nvmf::wire::cntrltype::IO,
                                mn: crate::nvmf::ascii_field("pollux fake"),
                                ioccsz: ((64 + 4096) / 16).into(),
                                mdts: 5,
                                cntlid: 7.into(),
                                ..Default::default()
                            }
                            .as_bytes(),
                        ),
                        cns::NAMESPACE => {
                            let mut ns = IdentifyNamespace {
                                nsze: FAKE_BLOCKS.into(),
                                ncap: FAKE_BLOCKS.into(),
                                ..Default::default()
                            };
                            ns.lbaf[0].lbads = 9;
                            out.copy_from_slice(ns.as_bytes())
                        }
                        cns::ACTIVE_NS_LIST => out[..4].copy_from_slice(&1u32.to_le_bytes()),
                        _ => {}
                    }
                    self.send_read(cid, &out, false);
                    self.respond(cid, Status::SUCCESS, 0);
                }
                admin_opc::SET_FEATURES => self.respond(cid, Status::SUCCESS, sqe.cdw11.get()),
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
                if st.mode.load(Ordering::SeqCst) == Misbehavior::WrongCid as u8 {
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
                self.pending.insert(cid, (slba, len, 0, 0));
                let r2t = R2T {
                    cccid: cid,
                    ttag: cid ^ 0x5500,
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
        let Some(&(slba, len, got, pdus)) = self.pending.get(&d.cccid) else {
            st.violation(format!("H2CData for a command without R2T: {d:?}"));
            return;
        };
        let cid = d.cccid;
        if d.ttag != cid ^ 0x5500 || d.datao != got || got + d.datal > len {
            st.violation(format!(
                "H2CData out of order: {d:?}, expected offset {got} of {len}"
            ));
            return;
        }
        let start = slba as usize * 512 + d.datao as usize;
        st.disk.lock().unwrap()[start..start + data.len()].copy_from_slice(data);
        let got = got + d.datal;
        self.pending.insert(cid, (slba, len, got, pdus + 1));
        if d.last {
            if got != len {
                st.violation(format!("LAST_PDU after {got} of {len} bytes"));
            }
            let mut max = st.max_h2c_pdus_per_write.lock().unwrap();
            *max = (*max).max(pdus + 1);
            drop(max);
            self.pending.remove(&cid);
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
        pending: Default::default(),
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
            if !pdu.data_digest_ok {
                st.violation("bad data digest from the host".into());
            }
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
                PduHeader::CapsuleCmd(sqe) => {
                    if !conn.on_capsule(&st, sqe, &pdu.data) {
                        return;
                    }
                }
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

/// Deliberate faults, applied to I/O queue commands only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Misbehavior {
    None,
    /// Reads are answered with C2HData for a command id that is not in flight.
    WrongCid,
    /// The connection is closed when a command arrives.
    HangUp,
    /// Commands are swallowed: no answer, ever.
    Silent,
    /// Every Connect response asks for DH-HMAC-CHAP (AUTHREQ.ATR), and authentication
    /// commands are swallowed (on the admin queue too).
    AuthSilent,
}

/// A running fake controller (its threads end with the process).
pub struct FakeTarget {
    port: u16,
    st: Arc<FakeState>,
}

impl FakeTarget {
    /// Listens on an ephemeral 127.0.0.1 port.
    pub fn start() -> Self {
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
        Self { port, st }
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn trid(&self) -> super::TransportId {
        super::TransportId::tcp("127.0.0.1", self.port, FAKE_NQN)
    }
    /// How I/O commands are (mis)handled from now on.
    pub fn set_misbehavior(&self, m: Misbehavior) {
        self.st.mode.store(m as u8, Ordering::SeqCst);
    }
    /// Whether a host sent an H2CTermReq.
    pub fn saw_term_req(&self) -> bool {
        self.st.saw_term_req.load(Ordering::SeqCst)
    }
    pub fn keep_alives(&self) -> usize {
        self.st.keep_alives.load(Ordering::SeqCst)
    }
    /// Most H2CData PDUs one R2T write needed.
    pub fn max_h2c_pdus_per_write(&self) -> usize {
        *self.st.max_h2c_pdus_per_write.lock().unwrap()
    }
    /// (QID, CATTR) of every Connect received, in arrival order.
    pub fn connects(&self) -> Vec<(u16, u8)> {
        self.st.connects.lock().unwrap().clone()
    }
    /// What the host did that a controller would reject.
    pub fn violations(&self) -> Vec<String> {
        self.st.violations.lock().unwrap().clone()
    }
}
