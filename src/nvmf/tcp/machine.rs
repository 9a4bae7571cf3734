//! The queue pair's NVMe/TCP protocol as a state machine: decoded PDU events in, actions out.
//!
//! A [`QueueMachine`] holds a queue pair's protocol state: where it is in the connection
//! ([`QpState`]: awaiting the ICReq, ready, closing), how it sends (the negotiated digests)
//! and the MAXH2CDATA it announced, its request slots (`reqs` and the free list) with the SQ
//! head, and where the data of the PDU being received goes. The poll group (the shell:
//! sockets, write requests, bdev channels, views) feeds it the decoder's events, an ICReq
//! ([`QueueMachine::on_header`]), a command capsule, an H2CData header, a Term Req, pieces
//! of a PDU's data ([`QueueMachine::on_data`]) and their end ([`QueueMachine::on_data_end`]),
//! and carries out the [`Action`] each returns: send the ICResp or an R2T, execute or answer
//! a command, or send a C2HTermReq with the violation's FES and FEI and close. What a
//! command does (fabrics, admin, I/O, fused pairs, reservations) is the shell's; once it is
//! answered the shell gives its slot back ([`QueueMachine::release`]). No sockets are
//! involved, so whole PDU sequences are unit-tested here.

use super::{ReqState, Request, ADMIN_IN_CAPSULE};
use crate::buf::IoBuf;
use crate::nvmf::io;
use crate::nvmf::pdu::{
    self, field_off, H2CData, IcReq, IcResp, PduError, PduHeader, RxConfig, TargetIcParams,
    TermReq, TxConfig, R2T,
};
use crate::nvmf::target::TransportOpts;
use crate::nvmf::wire::{DataDirection, SglDescriptor, Sqe, Status};
use std::time::Instant;

/// Where a queue pair is in its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QpState {
    AwaitIcReq,
    Ready,
    /// A Term Req was sent (or the queue is being torn down): no more input is processed.
    Closing {
        deadline: Instant,
    },
}

/// Where the data of the PDU being received goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataDest {
    None,
    /// In-capsule data of this slot.
    Capsule(u16),
    /// H2CData for this slot, at `base` within the command's data.
    H2C {
        slot: u16,
        base: u32,
        len: u32,
    },
}

/// What the shell does after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Nothing until more input arrives.
    Wait,
    /// Send this ICResp (without digests) and receive with `rx` from now on.
    SendIcResp { resp: IcResp, rx: RxConfig },
    /// `len` bytes of in-capsule data for `slot` follow: give the command a buffer of that
    /// length if it passed its checks (its status is success), else the data is dropped.
    ReceiveCapsule { slot: u16, len: u32 },
    /// Send this R2T (its TTAG is the command's slot).
    SendR2t(R2T),
    /// The command in this slot has its data: execute it.
    Execute(u16),
    /// Answer the command in this slot with the status it holds.
    Respond(u16),
    /// A protocol violation: send a C2HTermReq with its FES and FEI, then close.
    Fatal(PduError),
    /// The host sent a Term Req: close.
    HostTerminated(TermReq),
}

impl Action {
    /// The command slot the action concerns, if any.
    pub(super) fn slot(self) -> Option<u16> {
        match self {
            Action::ReceiveCapsule { slot, .. } | Action::Execute(slot) | Action::Respond(slot) => {
                Some(slot)
            }
            Action::SendR2t(r2t) => Some(r2t.ttag),
            _ => None,
        }
    }
}

/// A queue pair's protocol state (see the module documentation).
pub(super) struct QueueMachine {
    state: QpState,
    /// How PDUs are sent (digests), as the IC exchange settled.
    tx: TxConfig,
    /// The most data one H2CData may carry, as the ICResp announced.
    maxh2cdata: u32,
    /// The largest transfer a command may ask for.
    max_io_size: u32,
    /// The request slots (sized by the transport's queue depths at the IC exchange).
    pub(super) reqs: Vec<Request>,
    free: Vec<u16>,
    /// Where the data of the PDU being received goes.
    cur: DataDest,
    sqhd: u16,
    qsize: u16,
    /// Connected as an I/O queue (admin data is built in zeroed buffers).
    io_queue: bool,
}

impl QueueMachine {
    pub(super) fn new() -> Self {
        Self {
            state: QpState::AwaitIcReq,
            tx: TxConfig::default(),
            maxh2cdata: 0,
            max_io_size: 0,
            reqs: Vec::new(),
            free: Vec::new(),
            cur: DataDest::None,
            sqhd: 0,
            qsize: 1,
            io_queue: false,
        }
    }

    pub(super) fn state(&self) -> QpState {
        self.state
    }

    pub(super) fn closing(&self) -> bool {
        matches!(self.state, QpState::Closing { .. })
    }

    /// Stops processing input: the queue closes at `deadline` at the latest.
    pub(super) fn close(&mut self, deadline: Instant) {
        self.state = QpState::Closing { deadline };
    }

    /// How PDUs are sent on this queue.
    pub(super) fn tx(&self) -> TxConfig {
        self.tx
    }

    /// The SQ head reported in completions.
    pub(super) fn sqhd(&self) -> u16 {
        self.sqhd
    }

    /// Request slots free for new commands.
    pub(super) fn free_slots(&self) -> usize {
        self.free.len()
    }

    /// A Connect made this queue `qid` with `sqsize` (0-based) entries; the Connect itself
    /// was its first entry.
    pub(super) fn on_connect(&mut self, qid: u16, sqsize: u16, max_io_size: u32) {
        self.qsize = sqsize + 1;
        self.sqhd = 1 % self.qsize;
        self.io_queue = qid != 0;
        self.max_io_size = max_io_size;
    }

    /// Gives the slot of an answered (or dropped) command back to the pool.
    pub(super) fn release(&mut self, slot: u16) {
        let r = &mut self.reqs[slot as usize];
        if r.state != ReqState::Free {
            r.state = ReqState::Free;
            r.buf = None;
            r.shared = None;
            self.free.push(slot);
        }
    }

    /// A PDU header with `data_len` bytes of data behind it; `transport` holds the options
    /// an ICReq is answered with.
    pub(super) fn on_header(
        &mut self,
        header: &PduHeader,
        data_len: u32,
        transport: Option<&TransportOpts>,
    ) -> Action {
        match header {
            PduHeader::CapsuleCmd(sqe) => self.on_capsule(sqe, data_len),
            PduHeader::H2CData(h) => self.on_h2c_data(h, data_len),
            PduHeader::IcReq(req) => match transport {
                Some(opts) => self.on_ic_req(req, opts),
                None => self.on_ic_req(req, &TransportOpts::default()),
            },
            PduHeader::H2CTermReq(t) => Action::HostTerminated(*t),
            _ => Action::Fatal(PduError::field(
                field_off::PDU_TYPE,
                "PDU type not accepted by a controller",
            )),
        }
    }

    /// An ICReq: the exchange settles the digests, MAXH2CDATA and the request slots.
    fn on_ic_req(&mut self, req: &IcReq, opts: &TransportOpts) -> Action {
        let IcOutcome {
            resp,
            tx,
            rx,
            depth,
        } = match ic_exchange(self.state, req, opts) {
            Ok(ic) => ic,
            Err(e) => return Action::Fatal(e),
        };
        self.tx = tx;
        self.maxh2cdata = resp.maxh2cdata;
        self.max_io_size = opts.max_io_size;
        self.reqs = (0..depth).map(|_| Request::new()).collect();
        self.free = (0..depth as u16).rev().collect();
        self.state = QpState::Ready;
        Action::SendIcResp { resp, rx }
    }

    /// A command capsule: takes a slot and decides how its data moves.
    fn on_capsule(&mut self, sqe: &Sqe, data_len: u32) -> Action {
        if self.state != QpState::Ready {
            return Action::Fatal(PduError::new(
                pdu::Fes::PDU_SEQUENCE_ERROR,
                0,
                "command before the IC exchange",
            ));
        }
        let Some(slot) = self.free.pop() else {
            return Action::Fatal(PduError::new(
                pdu::Fes::PDU_SEQUENCE_ERROR,
                0,
                "more commands than the queue holds",
            ));
        };
        self.sqhd = (self.sqhd + 1) % self.qsize.max(1);
        let req = &mut self.reqs[slot as usize];
        req.start(*sqe);
        if data_len > 0 {
            req.state = ReqState::Capsule;
            req.xfer = data_len;
            if let Err(status) = admit_in_capsule(&sqe.dptr, data_len) {
                req.status = status;
            }
            self.cur = DataDest::Capsule(slot);
            return Action::ReceiveCapsule {
                slot,
                len: data_len,
            };
        }
        req.state = ReqState::Executing;
        let (dir, len) = match plan_transfer(sqe, self.max_io_size) {
            Ok(Transfer::None) => {
                req.xfer = 0;
                return Action::Execute(slot);
            }
            Ok(Transfer::Data { dir, len }) => (dir, len),
            Err((len, status)) => {
                req.xfer = len;
                req.status = status;
                return Action::Respond(slot);
            }
        };
        req.xfer = len;
        match dir {
            DataDirection::HostToController => {
                req.buf = Some(IoBuf::with_len(len as usize));
                req.state = ReqState::AwaitH2C;
                Action::SendR2t(self.next_r2t(slot))
            }
            DataDirection::ControllerToHost => {
                // Admin data is built in this buffer; reads allocate at submit.
                if !self.io_queue || sqe.is_fabrics() {
                    req.buf = Some(IoBuf::zeroed(len as usize));
                }
                Action::Execute(slot)
            }
            _ => {
                req.status = Status::INVALID_FIELD.with_dnr();
                Action::Respond(slot)
            }
        }
    }

    /// An H2CData header: its data must answer the outstanding R2T of the slot its TTAG names.
    fn on_h2c_data(&mut self, h: &H2CData, data_len: u32) -> Action {
        let slot = h.ttag;
        let Some(req) = self
            .reqs
            .get(slot as usize)
            .filter(|r| r.state == ReqState::AwaitH2C)
        else {
            return Action::Fatal(PduError::field(
                field_off::TTAG,
                "H2CData with an unknown transfer tag",
            ));
        };
        if let Err(e) = admit_h2c_data(h, &req.r2t, req.received, data_len) {
            return Action::Fatal(e);
        }
        self.cur = DataDest::H2C {
            slot,
            base: h.datao,
            len: data_len,
        };
        if data_len == 0 {
            return self.on_data_end(true);
        }
        Action::Wait
    }

    /// The R2T for the next piece of the write in `slot`, remembered as its outstanding one.
    fn next_r2t(&mut self, slot: u16) -> R2T {
        let req = &mut self.reqs[slot as usize];
        req.r2t = next_r2t(
            req.sqe.cid.get(),
            slot,
            req.xfer,
            req.received,
            self.maxh2cdata,
        );
        req.r2t
    }

    /// The slot and base offset the current PDU's data lands in.
    pub(super) fn data_target(&self) -> Option<(u16, u32)> {
        match self.cur {
            DataDest::Capsule(slot) => Some((slot, 0)),
            DataDest::H2C { slot, base, .. } => Some((slot, base)),
            DataDest::None => None,
        }
    }

    /// Where `len` bytes at `offset` of the current PDU's data go in its command's buffer
    /// (`None`: the data is dropped).
    #[inline]
    pub(super) fn data_buffer(&mut self, offset: u32, len: usize) -> Option<&mut [u8]> {
        let (slot, base) = self.data_target()?;
        let buf = self.reqs[slot as usize].buf.as_mut()?;
        let start = (base + offset) as usize;
        buf.as_mut_slice().get_mut(start..start + len)
    }

    /// A piece of the current PDU's data, at `offset` within it.
    #[inline]
    pub(super) fn on_data(&mut self, offset: u32, bytes: &[u8]) {
        if let Some(dst) = self.data_buffer(offset, bytes.len()) {
            crate::buf::copy_bytes(dst, bytes);
        }
    }

    /// The end of the current PDU's data, its digest matching or not (a mismatch fails the
    /// command with a transient transport error once all its data is in).
    pub(super) fn on_data_end(&mut self, digest_ok: bool) -> Action {
        let (slot, next) = match std::mem::replace(&mut self.cur, DataDest::None) {
            DataDest::None => return Action::Wait,
            DataDest::Capsule(slot) => (slot, H2cNext::Complete),
            DataDest::H2C { slot, len, .. } => {
                let req = &mut self.reqs[slot as usize];
                req.received += len;
                (slot, h2c_data_end(req.received, req.xfer, &req.r2t))
            }
        };
        let req = &mut self.reqs[slot as usize];
        if !digest_ok {
            req.status = Status::TRANSIENT_TRANSPORT_ERROR;
        }
        match next {
            H2cNext::SendR2t => Action::SendR2t(self.next_r2t(slot)),
            H2cNext::Wait => Action::Wait,
            H2cNext::Complete if !req.status.is_success() => Action::Respond(slot),
            H2cNext::Complete => {
                req.state = ReqState::Executing;
                Action::Execute(slot)
            }
        }
    }
}

/// What the IC exchange settles: the ICResp to send, how this side sends and receives from
/// now on, and the number of request slots of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IcOutcome {
    resp: IcResp,
    tx: TxConfig,
    rx: RxConfig,
    depth: usize,
}

/// The answer to an ICReq received in `state`, with the transport's options.
fn ic_exchange(state: QpState, req: &IcReq, opts: &TransportOpts) -> Result<IcOutcome, PduError> {
    if state != QpState::AwaitIcReq {
        return Err(PduError::new(
            pdu::Fes::PDU_SEQUENCE_ERROR,
            0,
            "second ICReq",
        ));
    }
    if req.pfv != pdu::PFV_1_0 {
        return Err(PduError::field(
            field_off::PFV,
            "unsupported PDU format version",
        ));
    }
    let params = TargetIcParams {
        cpda: 0,
        // One H2CData PDU carries at most an I/O unit (and at most 128 KiB).
        maxh2cdata: opts
            .io_unit_size
            .clamp(4096, opts.max_io_size.min(128 * 1024))
            & !3,
        max_in_capsule: opts.in_capsule_data_size.max(ADMIN_IN_CAPSULE),
        allow_hdgst: true,
        allow_ddgst: true,
    };
    let (resp, tx, rx) = pdu::target_negotiate(req, &params);
    Ok(IcOutcome {
        resp,
        tx,
        rx,
        depth: opts.max_queue_depth.max(opts.max_aq_depth) as usize,
    })
}

/// The R2T asking for the next piece of a write of `xfer` bytes of which `received` are in:
/// at most `maxh2cdata` bytes, tagged with the command's request slot.
#[inline]
fn next_r2t(cid: u16, slot: u16, xfer: u32, received: u32, maxh2cdata: u32) -> R2T {
    R2T {
        cccid: cid,
        ttag: slot,
        r2to: received,
        r2tl: (xfer - received).min(maxh2cdata),
    }
}

/// Checks an H2CData header carrying `data_len` bytes against the outstanding R2T of its
/// command (`received` bytes already in).
#[inline]
fn admit_h2c_data(h: &H2CData, r2t: &R2T, received: u32, data_len: u32) -> Result<(), PduError> {
    pdu::check_h2c_data(h, r2t, received)?;
    if h.datal != data_len {
        return Err(PduError::field(
            field_off::DATAL,
            "H2CData DATAL differs from the PDU's data",
        ));
    }
    Ok(())
}

/// Checks the SGL of a command capsule that carries `data_len` bytes of in-capsule data: an
/// Offset data block at offset 0 of exactly that length, else the status to answer.
#[inline]
fn admit_in_capsule(sgl: &SglDescriptor, data_len: u32) -> Result<(), Status> {
    if !sgl.is_in_capsule() {
        Err(Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr())
    } else if sgl.address != 0 {
        Err(Status::SGL_OFFSET_INVALID.with_dnr())
    } else if sgl.length != data_len {
        Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr())
    } else {
        Ok(())
    }
}

/// How the data of a command capsule without in-capsule data moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transfer {
    /// No data: the command runs at once.
    None,
    /// `len` bytes in direction `dir`: solicited by R2T (host to controller) or sent as
    /// C2HData (controller to host); a bidirectional command is the caller's to refuse.
    Data { dir: DataDirection, len: u32 },
}

/// The data transfer of a capsule without in-capsule data, checked against the transport's
/// largest I/O; an error carries the transfer length and the status to answer with.
#[inline]
fn plan_transfer(sqe: &Sqe, max_io_size: u32) -> Result<Transfer, (u32, Status)> {
    let sgl = sqe.dptr;
    let limit = max_io_size.max(ADMIN_IN_CAPSULE);
    let dir = if sqe.is_fabrics() {
        sqe.data_direction()
    } else {
        io::direction(sqe)
    };
    let len = match dir {
        DataDirection::None => 0,
        _ => sgl.length.get(),
    };
    if len == 0 {
        return Ok(Transfer::None);
    }
    if len > limit {
        return Err((len, Status::DATA_SGL_LENGTH_INVALID.with_dnr()));
    }
    if !sgl.is_transport_data_block() {
        let status = if sgl.is_in_capsule() {
            Status::DATA_SGL_LENGTH_INVALID.with_dnr()
        } else {
            Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr()
        };
        return Err((len, status));
    }
    Ok(Transfer::Data { dir, len })
}

/// What follows the end of a piece of H2C data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum H2cNext {
    /// The R2T's bytes are in but not the command's: ask for more.
    SendR2t,
    /// More data of the current R2T is still to come.
    Wait,
    /// All data is in: run the command (or answer its error status).
    Complete,
}

/// The step after `received` of `xfer` bytes are in, the outstanding R2T being `r2t`.
#[inline]
fn h2c_data_end(received: u32, xfer: u32, r2t: &R2T) -> H2cNext {
    if received >= xfer {
        H2cNext::Complete
    } else if received == r2t.r2to + r2t.r2tl {
        H2cNext::SendR2t
    } else {
        H2cNext::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvmf::pdu::{
        encode_pdu, encode_term_req, CapsuleRespHdr, Fes, PduDecoder, PduHeader, Role, RxEvent,
        TermReqHdr, TERM_REQ_MAX_PLEN,
    };
    use crate::nvmf::wire::{io_opc, Cqe};
    use std::time::Instant;
    use zerocopy::FromBytes;

    fn icreq(hdgst: bool, ddgst: bool) -> IcReq {
        IcReq {
            pfv: 0,
            hpda: 0,
            hdgst,
            ddgst,
            maxr2t: 0,
        }
    }

    /// The H2CData that answers `r2t` with all it asked for.
    fn answer(r2t: &R2T) -> H2CData {
        H2CData {
            cccid: r2t.cccid,
            ttag: r2t.ttag,
            datao: r2t.r2to,
            datal: r2t.r2tl,
            last: true,
        }
    }

    /// Decodes every PDU of `bytes` with `dec`, or the first error.
    fn decode(dec: &mut PduDecoder, mut bytes: &[u8]) -> Result<Vec<PduHeader>, PduError> {
        let mut out = Vec::new();
        loop {
            let (used, ev) = dec.feed(bytes)?;
            bytes = &bytes[used..];
            match ev {
                Some(RxEvent::Header { header, .. }) => out.push(header),
                Some(_) => {}
                None => return Ok(out),
            }
        }
    }

    #[test]
    fn ic_exchange_negotiates_digests_and_limits() {
        let opts = TransportOpts::default();
        let ic = ic_exchange(QpState::AwaitIcReq, &icreq(true, false), &opts).unwrap();
        assert!(ic.resp.hdgst && !ic.resp.ddgst);
        assert_eq!((ic.tx.hdgst, ic.rx.hdgst), (true, true));
        assert_eq!(ic.resp.cpda, 0);
        assert!(ic.resp.maxh2cdata >= 4096 && ic.resp.maxh2cdata.is_multiple_of(4));
        assert_eq!(ic.rx.max_data_pdu, ic.resp.maxh2cdata);
        assert_eq!(
            ic.depth,
            opts.max_queue_depth.max(opts.max_aq_depth) as usize
        );
        // The ICResp the shell sends decodes on the host side as what was decided.
        let bytes = encode_pdu(&PduHeader::IcResp(ic.resp), &[], &TxConfig::default()).unwrap();
        let mut host = PduDecoder::new(Role::Host);
        assert_eq!(
            decode(&mut host, &bytes).unwrap(),
            vec![PduHeader::IcResp(ic.resp)]
        );
    }

    #[test]
    fn ic_exchange_rejects_a_second_icreq_and_an_unknown_pfv() {
        let opts = TransportOpts::default();
        let e = ic_exchange(QpState::Ready, &icreq(false, false), &opts).unwrap_err();
        assert_eq!((e.fes, e.fei), (Fes::PDU_SEQUENCE_ERROR, 0));
        let mut req = icreq(false, false);
        req.pfv = 1;
        let e = ic_exchange(QpState::AwaitIcReq, &req, &opts).unwrap_err();
        assert_eq!((e.fes, e.fei), (Fes::INVALID_HEADER_FIELD, field_off::PFV));
        let closing = QpState::Closing {
            deadline: Instant::now(),
        };
        assert!(ic_exchange(closing, &icreq(false, false), &opts).is_err());
    }

    /// A 3-piece write: capsule without data, R2T, H2CData pieces, more R2Ts, completion.
    #[test]
    fn capsule_r2t_h2c_data_then_response() {
        let opts = TransportOpts::default();
        let ic = ic_exchange(QpState::AwaitIcReq, &icreq(false, false), &opts).unwrap();
        let mut target = PduDecoder::new(Role::Target);
        let ic_bytes = encode_pdu(
            &PduHeader::IcReq(icreq(false, false)),
            &[],
            &TxConfig::default(),
        )
        .unwrap();
        decode(&mut target, &ic_bytes).unwrap();
        target.configure(ic.rx);

        let xfer = 2 * ic.resp.maxh2cdata + 512;
        let sgl = SglDescriptor::transport_data_block(xfer);
        let sqe = Sqe::rw(io_opc::WRITE, 7, 1, 0, xfer / 512, sgl);
        let cmd = encode_pdu(&PduHeader::CapsuleCmd(sqe), &[], &ic.tx).unwrap();
        assert_eq!(
            decode(&mut target, &cmd).unwrap(),
            vec![PduHeader::CapsuleCmd(sqe)]
        );

        let slot = 3;
        let mut received = 0;
        let mut r2ts = 0;
        let mut r2t = next_r2t(7, slot, xfer, received, ic.resp.maxh2cdata);
        loop {
            r2ts += 1;
            assert_eq!((r2t.cccid, r2t.ttag, r2t.r2to), (7, slot, received));
            // The host answers the R2T with one H2CData of the asked length.
            let h = answer(&r2t);
            let data = vec![0xa5; h.datal as usize];
            let pdu = encode_pdu(&PduHeader::H2CData(h), &[&data], &ic.tx).unwrap();
            assert_eq!(
                decode(&mut target, &pdu).unwrap(),
                vec![PduHeader::H2CData(h)]
            );
            admit_h2c_data(&h, &r2t, received, h.datal).unwrap();
            received += h.datal;
            match h2c_data_end(received, xfer, &r2t) {
                H2cNext::SendR2t => r2t = next_r2t(7, slot, xfer, received, ic.resp.maxh2cdata),
                H2cNext::Complete => break,
                H2cNext::Wait => panic!("a whole R2T's data arrived"),
            }
        }
        assert_eq!((received, r2ts), (xfer, 3));
        // The response: a CapsuleResp with the command's cid and SQ head.
        let mut cqe = Cqe::new(7, Status::SUCCESS);
        cqe.sqhd.set(1);
        let resp = encode_pdu(&PduHeader::CapsuleResp(cqe), &[], &ic.tx).unwrap();
        let (hdr, _) = CapsuleRespHdr::ref_from_prefix(&resp).unwrap();
        assert_eq!((hdr.cqe.cid.get(), hdr.cqe.status()), (7, Status::SUCCESS));
    }

    #[test]
    fn capsules_are_planned_by_their_sgl() {
        let max_io = TransportOpts::default().max_io_size;
        // In-capsule data: an Offset data block at 0 of the capsule's data length.
        assert_eq!(
            admit_in_capsule(&SglDescriptor::in_capsule(0, 512), 512),
            Ok(())
        );
        assert_eq!(
            admit_in_capsule(&SglDescriptor::in_capsule(8, 512), 512),
            Err(Status::SGL_OFFSET_INVALID.with_dnr())
        );
        assert_eq!(
            admit_in_capsule(&SglDescriptor::in_capsule(0, 1024), 512),
            Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr())
        );
        assert_eq!(
            admit_in_capsule(&SglDescriptor::transport_data_block(512), 512),
            Err(Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr())
        );
        // Without in-capsule data: a write is asked for by R2T, a read sent as C2HData.
        let sgl = SglDescriptor::transport_data_block(8192);
        for (opc, dir) in [
            (io_opc::WRITE, DataDirection::HostToController),
            (io_opc::READ, DataDirection::ControllerToHost),
        ] {
            let sqe = Sqe::rw(opc, 1, 1, 0, 16, sgl);
            let planned = plan_transfer(&sqe, max_io);
            assert_eq!(planned, Ok(Transfer::Data { dir, len: 8192 }));
        }
        // Flush moves no data; a transfer over the limit or a wrong SGL type is refused.
        let flush = Sqe::new(io_opc::FLUSH, 1, 1);
        assert_eq!(plan_transfer(&flush, max_io), Ok(Transfer::None));
        let big = SglDescriptor::transport_data_block(max_io + 4096);
        assert_eq!(
            plan_transfer(&Sqe::rw(io_opc::WRITE, 1, 1, 0, 8, big), max_io),
            Err((max_io + 4096, Status::DATA_SGL_LENGTH_INVALID.with_dnr()))
        );
        let keyed = SglDescriptor::keyed(0, 4096, 0);
        assert_eq!(
            plan_transfer(&Sqe::rw(io_opc::READ, 1, 1, 0, 8, keyed), max_io),
            Err((4096, Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr()))
        );
    }

    #[test]
    fn h2c_data_end_waits_within_an_r2t() {
        let r2t = next_r2t(1, 0, 8192, 0, 8192);
        assert_eq!(h2c_data_end(4096, 8192, &r2t), H2cNext::Wait);
        assert_eq!(h2c_data_end(8192, 8192, &r2t), H2cNext::Complete);
        let r2t = next_r2t(1, 0, 8192, 0, 4096);
        assert_eq!(r2t.r2tl, 4096);
        assert_eq!(h2c_data_end(4096, 8192, &r2t), H2cNext::SendR2t);
    }

    #[test]
    fn h2c_data_against_the_wrong_r2t_is_a_header_field_error() {
        let r2t = next_r2t(9, 2, 8192, 0, 8192);
        let good = H2CData {
            cccid: 9,
            ttag: 2,
            datao: 0,
            datal: 4096,
            last: false,
        };
        admit_h2c_data(&good, &r2t, 0, 4096).unwrap();
        let e = admit_h2c_data(&good, &r2t, 0, 2048).unwrap_err();
        assert_eq!(
            (e.fes, e.fei),
            (Fes::INVALID_HEADER_FIELD, field_off::DATAL)
        );
        let beyond = H2CData {
            datao: 8192,
            ..good
        };
        assert!(admit_h2c_data(&beyond, &r2t, 0, 4096).is_err());
    }

    /// A bad PDU: the decoder's error, then the C2HTermReq the shell sends, carrying the FES,
    /// the FEI of the bad field and the offending header.
    #[test]
    fn bad_pdu_answers_a_term_req_with_fes_and_fei() {
        let mut target = PduDecoder::new(Role::Target);
        let mut ic = encode_pdu(
            &PduHeader::IcReq(icreq(false, false)),
            &[],
            &TxConfig::default(),
        )
        .unwrap();
        // HLEN of an ICReq must be 128.
        ic[field_off::HLEN as usize] = 64;
        let e = decode(&mut target, &ic).unwrap_err();
        assert_eq!((e.fes, e.fei), (Fes::INVALID_HEADER_FIELD, field_off::HLEN));
        let mut out = [0u8; TERM_REQ_MAX_PLEN];
        let n = encode_term_req(Role::Target, &e, target.error_header(), &mut out);
        let (term, rest) = TermReqHdr::ref_from_prefix(&out[..n]).unwrap();
        assert_eq!(term.ch.pdu_type, pdu::pdu_type::C2H_TERM_REQ);
        assert_eq!(term.ch.plen.get() as usize, n);
        assert_eq!(
            (term.fes.get(), term.fei.get()),
            (Fes::INVALID_HEADER_FIELD.0, field_off::HLEN)
        );
        assert_eq!(rest, target.error_header());
    }

    /// A machine past the IC exchange with `depth` request slots and MAXH2CDATA `io_unit`.
    fn ready(depth: u16, io_unit: u32) -> QueueMachine {
        let opts = TransportOpts {
            max_queue_depth: depth,
            max_aq_depth: depth,
            io_unit_size: io_unit,
            ..TransportOpts::default()
        };
        let mut m = QueueMachine::new();
        let ic = PduHeader::IcReq(icreq(false, false));
        let action = m.on_header(&ic, 0, Some(&opts));
        assert!(matches!(action, Action::SendIcResp { resp, .. } if resp.maxh2cdata == io_unit));
        m
    }

    fn capsule(m: &mut QueueMachine, sqe: Sqe, data_len: u32) -> Action {
        m.on_header(&PduHeader::CapsuleCmd(sqe), data_len, None)
    }

    fn h2c(m: &mut QueueMachine, r2t: &R2T, datao: u32, datal: u32) -> Action {
        let h = H2CData {
            cccid: r2t.cccid,
            ttag: r2t.ttag,
            datao,
            datal,
            last: true,
        };
        m.on_header(&PduHeader::H2CData(h), datal, None)
    }

    fn fatal(action: Action) -> (Fes, u32) {
        match action {
            Action::Fatal(e) => (e.fes, e.fei),
            other => panic!("not fatal: {other:?}"),
        }
    }

    fn write(cid: u16, len: u32) -> Sqe {
        let sgl = SglDescriptor::transport_data_block(len);
        Sqe::rw(io_opc::WRITE, cid, 1, 0, len / 512 - 1, sgl)
    }

    /// A write of `len` bytes of in-capsule data, its SGL at `offset`.
    fn in_capsule(offset: u64, len: u32) -> Sqe {
        let sgl = SglDescriptor::in_capsule(offset, len);
        Sqe::rw(io_opc::WRITE, 3, 1, 0, len / 512 - 1, sgl)
    }

    #[test]
    fn icreq_answers_icresp_and_opens_the_queue() {
        let opts = TransportOpts::default();
        let mut m = QueueMachine::new();
        let ic = PduHeader::IcReq(icreq(true, true));
        let Action::SendIcResp { resp, rx } = m.on_header(&ic, 0, None) else {
            panic!("no ICResp");
        };
        assert!(resp.hdgst && resp.ddgst && rx.hdgst && rx.ddgst);
        assert_eq!(rx.max_data_pdu, resp.maxh2cdata);
        assert_eq!((m.tx().hdgst, m.tx().ddgst), (true, true));
        assert_eq!(m.state(), QpState::Ready);
        assert_eq!(
            m.free_slots(),
            opts.max_queue_depth.max(opts.max_aq_depth) as usize
        );
        // A second ICReq is out of sequence.
        assert_eq!(
            fatal(m.on_header(&ic, 0, None)),
            (Fes::PDU_SEQUENCE_ERROR, 0)
        );
    }

    #[test]
    fn capsule_before_the_ic_exchange_is_a_sequence_error() {
        let mut m = QueueMachine::new();
        let flush = Sqe::new(io_opc::FLUSH, 1, 1);
        assert_eq!(
            fatal(capsule(&mut m, flush, 0)),
            (Fes::PDU_SEQUENCE_ERROR, 0)
        );
        // So are PDU types a controller does not receive.
        let resp = PduHeader::CapsuleResp(Cqe::new(1, Status::SUCCESS));
        let e = fatal(m.on_header(&resp, 0, None));
        assert_eq!(e, (Fes::INVALID_HEADER_FIELD, field_off::PDU_TYPE));
    }

    #[test]
    fn capsule_without_data_executes_and_advances_the_sq_head() {
        let mut m = ready(4, 8192);
        m.on_connect(1, 3, TransportOpts::default().max_io_size);
        assert_eq!(m.sqhd(), 1);
        let Action::Execute(slot) = capsule(&mut m, Sqe::new(io_opc::FLUSH, 5, 1), 0) else {
            panic!("not executed");
        };
        let req = &m.reqs[slot as usize];
        assert_eq!(
            (req.state, req.xfer, req.sqe.cid.get()),
            (ReqState::Executing, 0, 5)
        );
        assert_eq!((m.sqhd(), m.free_slots()), (2, 3));
        // A read of an I/O queue gets its buffer when it is submitted.
        let read = Sqe::rw(
            io_opc::READ,
            6,
            1,
            0,
            7,
            SglDescriptor::transport_data_block(4096),
        );
        let Action::Execute(slot) = capsule(&mut m, read, 0) else {
            panic!("not executed");
        };
        assert!(m.reqs[slot as usize].buf.is_none());
        assert_eq!(m.reqs[slot as usize].xfer, 4096);
    }

    #[test]
    fn in_capsule_write_executes_once_its_data_is_in() {
        let mut m = ready(4, 8192);
        let Action::ReceiveCapsule { slot, len: 1024 } = capsule(&mut m, in_capsule(0, 1024), 1024)
        else {
            panic!("no in-capsule data expected");
        };
        assert!(m.reqs[slot as usize].status.is_success());
        // The shell gives the command its buffer; the data arrives in pieces.
        m.reqs[slot as usize].buf = Some(IoBuf::with_len(1024));
        let data: Vec<u8> = (0..1024).map(|i| i as u8).collect();
        m.on_data(0, &data[..100]);
        m.on_data(100, &data[100..]);
        assert_eq!(m.on_data_end(true), Action::Execute(slot));
        assert_eq!(m.reqs[slot as usize].buf.as_deref(), Some(&data[..]));
        assert_eq!(m.data_target(), None);
    }

    #[test]
    fn in_capsule_data_with_a_bad_sgl_is_dropped_and_answered() {
        let mut m = ready(4, 8192);
        let Action::ReceiveCapsule { slot, .. } = capsule(&mut m, in_capsule(8, 1024), 1024) else {
            panic!("no in-capsule data expected");
        };
        m.on_data(0, &[1; 1024]);
        assert_eq!(m.on_data_end(true), Action::Respond(slot));
        assert_eq!(
            m.reqs[slot as usize].status,
            Status::SGL_OFFSET_INVALID.with_dnr()
        );
    }

    #[test]
    fn write_over_r2t_asks_for_each_piece_then_executes() {
        let mut m = ready(4, 4096);
        let Action::SendR2t(r2t) = capsule(&mut m, write(9, 8192), 0) else {
            panic!("no R2T");
        };
        let slot = r2t.ttag;
        assert_eq!((r2t.cccid, r2t.r2to, r2t.r2tl), (9, 0, 4096));
        // The first R2T's data in two H2CData PDUs: wait for the second.
        let half = R2T { r2tl: 2048, ..r2t };
        assert_eq!(h2c(&mut m, &half, 0, 2048), Action::Wait);
        m.on_data(0, &[0xa5; 2048]);
        assert_eq!(m.on_data_end(true), Action::Wait);
        assert_eq!(h2c(&mut m, &r2t, 2048, 2048), Action::Wait);
        m.on_data(0, &[0x5a; 2048]);
        let Action::SendR2t(second) = m.on_data_end(true) else {
            panic!("no second R2T");
        };
        assert_eq!((second.ttag, second.r2to, second.r2tl), (slot, 4096, 4096));
        assert_eq!(h2c(&mut m, &second, 4096, 4096), Action::Wait);
        m.on_data(0, &[0x11; 4096]);
        assert_eq!(m.on_data_end(true), Action::Execute(slot));
        let buf = m.reqs[slot as usize].buf.as_deref().unwrap();
        assert_eq!(
            (buf[0], buf[2048], buf[4096], buf.len()),
            (0xa5, 0x5a, 0x11, 8192)
        );
    }

    #[test]
    fn data_digest_error_answers_a_transient_transport_error() {
        let mut m = ready(4, 4096);
        let Action::ReceiveCapsule { slot, .. } = capsule(&mut m, in_capsule(0, 512), 512) else {
            panic!("no in-capsule data expected");
        };
        assert_eq!(m.on_data_end(false), Action::Respond(slot));
        assert_eq!(
            m.reqs[slot as usize].status,
            Status::TRANSIENT_TRANSPORT_ERROR
        );
        // Over R2T: the rest of the data is still asked for, then the command is answered.
        let Action::SendR2t(r2t) = capsule(&mut m, write(4, 8192), 0) else {
            panic!("no R2T");
        };
        assert_eq!(h2c(&mut m, &r2t, 0, 4096), Action::Wait);
        let Action::SendR2t(second) = m.on_data_end(false) else {
            panic!("no second R2T");
        };
        assert_eq!(h2c(&mut m, &second, 4096, 4096), Action::Wait);
        assert_eq!(m.on_data_end(true), Action::Respond(r2t.ttag));
        let status = m.reqs[r2t.ttag as usize].status;
        assert_eq!(status, Status::TRANSIENT_TRANSPORT_ERROR);
    }

    #[test]
    fn h2c_data_outside_its_r2t_is_fatal_with_the_field() {
        let mut m = ready(4, 4096);
        let Action::SendR2t(r2t) = capsule(&mut m, write(9, 8192), 0) else {
            panic!("no R2T");
        };
        let unknown = R2T {
            ttag: r2t.ttag + 1,
            ..r2t
        };
        let e = fatal(h2c(&mut m, &unknown, 0, 4096));
        assert_eq!(e, (Fes::INVALID_HEADER_FIELD, field_off::TTAG));
        let e = fatal(h2c(&mut m, &r2t, 512, 4096));
        assert_eq!(e, (Fes::DATA_TRANSFER_OUT_OF_RANGE, 0));
        let e = fatal(h2c(&mut m, &r2t, 0, 8192));
        assert_eq!(e, (Fes::DATA_TRANSFER_OUT_OF_RANGE, 0));
        let h = H2CData {
            cccid: 9,
            ttag: r2t.ttag,
            datao: 0,
            datal: 4096,
            last: true,
        };
        let e = fatal(m.on_header(&PduHeader::H2CData(h), 2048, None));
        assert_eq!(e, (Fes::INVALID_HEADER_FIELD, field_off::DATAL));
    }

    #[test]
    fn more_commands_than_the_queue_holds_is_fatal_until_a_slot_is_released() {
        let mut m = ready(2, 4096);
        let flush = Sqe::new(io_opc::FLUSH, 1, 1);
        let Action::Execute(a) = capsule(&mut m, flush, 0) else {
            panic!("not executed");
        };
        let Action::Execute(b) = capsule(&mut m, flush, 0) else {
            panic!("not executed");
        };
        assert_ne!(a, b);
        assert_eq!(
            fatal(capsule(&mut m, flush, 0)),
            (Fes::PDU_SEQUENCE_ERROR, 0)
        );
        // The answered command's slot serves the next one, cleared.
        m.reqs[b as usize].status = Status::INTERNAL_ERROR;
        m.release(b);
        m.release(b);
        assert_eq!(m.free_slots(), 1);
        assert_eq!(capsule(&mut m, flush, 0), Action::Execute(b));
        assert!(m.reqs[b as usize].status.is_success());
    }

    #[test]
    fn host_term_req_closes() {
        let mut m = ready(2, 4096);
        let t = TermReq {
            fes: Fes::PDU_SEQUENCE_ERROR,
            fei: 0,
        };
        assert_eq!(
            m.on_header(&PduHeader::H2CTermReq(t), 0, None),
            Action::HostTerminated(t)
        );
    }

    /// Seeded random event sequences, fed as the shell feeds them: the machine never panics,
    /// never names a slot that is not busy, keeps the free list and the slots in step, asks
    /// for no more H2CData than MAXH2CDATA, executes only commands whose data is all in and
    /// answers early only with an error status. A failing seed replays exactly.
    #[test]
    fn random_event_sequences_keep_the_slots_consistent() {
        for seed in 0..3000 {
            run_random_sequence(seed);
        }
    }

    /// The slots the shell holds: commands given to it to execute or answer, awaiting release.
    fn busy_slots(m: &QueueMachine) -> usize {
        m.reqs.iter().filter(|r| r.state != ReqState::Free).count()
    }

    fn random_sqe(rng: &mut fastrand::Rng, io_unit: u32) -> (Sqe, u32) {
        let cid = rng.u16(..);
        let len = 512 * rng.u32(0..=3 * io_unit / 512);
        match rng.u8(0..6) {
            0 => (Sqe::new(io_opc::FLUSH, cid, 1), 0),
            1 => (write(cid, len.max(512)), 0),
            2 => {
                let sgl = SglDescriptor::transport_data_block(len);
                let read = Sqe::rw(io_opc::READ, cid, 1, 0, len.max(512) / 512 - 1, sgl);
                (read, 0)
            }
            3 => {
                let len = len.clamp(512, 8192);
                let data_len = if rng.bool() { len } else { rng.u32(0..=len) };
                (in_capsule(u64::from(rng.u8(0..2)) * 8, len), data_len)
            }
            _ => {
                let mut raw = [0u8; 64];
                rng.fill(&mut raw);
                let sqe = Sqe::read_from_bytes(&raw).expect("64 bytes");
                (sqe, rng.u32(0..=2 * io_unit))
            }
        }
    }

    fn run_random_sequence(seed: u64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let depth = rng.u16(1..=8);
        let io_unit = 4096 * rng.u32(1..=4);
        let mut m = ready(depth, io_unit);
        if rng.bool() {
            m.on_connect(1, depth - 1, 4 * io_unit);
        }
        // R2Ts sent and not yet satisfied, and slots the shell holds until it answers them.
        let mut r2ts: Vec<R2T> = Vec::new();
        let mut held: Vec<u16> = Vec::new();
        for step in 0..200 {
            let ctx = format!("seed {seed} step {step}");
            // Mostly what a sound host sends; now and then a command the queue has no room
            // for or an H2CData no R2T asked for, each of which ends the sequence.
            let (header, data_len) = match rng.u8(0..40) {
                0..=13 if m.free_slots() > 0 || rng.u8(0..20) == 0 => {
                    let (sqe, data_len) = random_sqe(&mut rng, io_unit);
                    (PduHeader::CapsuleCmd(sqe), data_len)
                }
                14..=27 if !r2ts.is_empty() => {
                    let r2t = r2ts.swap_remove(rng.usize(..r2ts.len()));
                    (PduHeader::H2CData(answer(&r2t)), r2t.r2tl)
                }
                28 if rng.u8(0..4) == 0 => {
                    let h = H2CData {
                        cccid: rng.u16(..),
                        ttag: rng.u16(0..depth + 1),
                        datao: rng.u32(0..2 * io_unit),
                        datal: rng.u32(0..2 * io_unit),
                        last: rng.bool(),
                    };
                    (PduHeader::H2CData(h), h.datal)
                }
                _ => {
                    if !held.is_empty() {
                        m.release(held.swap_remove(rng.usize(..held.len())));
                    }
                    continue;
                }
            };
            let mut action = m.on_header(&header, data_len, None);
            loop {
                if let Some(slot) = action.slot() {
                    let req = &m.reqs[slot as usize];
                    assert_ne!(
                        req.state,
                        ReqState::Free,
                        "{ctx}: {action:?} names a free slot"
                    );
                }
                match action {
                    Action::ReceiveCapsule { slot, len } => {
                        let req = &mut m.reqs[slot as usize];
                        if req.status.is_success() {
                            req.buf = Some(IoBuf::with_len(len as usize));
                        }
                    }
                    Action::SendR2t(r2t) => {
                        assert!(r2t.r2tl > 0 && r2t.r2tl <= io_unit, "{ctx}: {r2t:?}");
                        r2ts.push(r2t);
                    }
                    Action::Execute(slot) => {
                        let req = &m.reqs[slot as usize];
                        assert_eq!(req.state, ReqState::Executing, "{ctx}");
                        if let Some(buf) = &req.buf {
                            assert_eq!(buf.len(), req.xfer as usize, "{ctx}: data all in");
                        }
                        held.push(slot);
                    }
                    Action::Respond(slot) => {
                        let status = m.reqs[slot as usize].status;
                        assert!(!status.is_success(), "{ctx}: early answer {status:?}");
                        held.push(slot);
                    }
                    Action::Fatal(_) | Action::HostTerminated(_) => return,
                    Action::Wait | Action::SendIcResp { .. } => {}
                }
                assert_eq!(m.free_slots() + busy_slots(&m), m.reqs.len(), "{ctx}");
                assert!(m.sqhd() < depth.max(1), "{ctx}");
                // The data of the PDU follows, in two pieces, its digest mostly right.
                let Some(_) = m.data_target() else { break };
                let cut = rng.u32(0..=data_len);
                m.on_data(0, &vec![0xa5; cut as usize]);
                m.on_data(cut, &vec![0x5a; (data_len - cut) as usize]);
                action = m.on_data_end(rng.u8(0..10) != 0);
            }
        }
    }
}
