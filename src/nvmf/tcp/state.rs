//! The queue pair's protocol decisions as plain functions of its state, testable without sockets.
//!
//! The poll group (the shell: sockets, bdev channels, views) asks these functions what to do
//! with a PDU and carries the answer out: the IC exchange's answer and settings
//! ([`ic_exchange`]), the checks of a capsule's SGL and how its data moves
//! ([`admit_in_capsule`], [`plan_transfer`]), the next R2T of a write ([`next_r2t`]), what
//! follows the end of a piece of H2C data ([`h2c_data_end`]), and the checks an H2CData
//! header must pass against the R2T it answers ([`admit_h2c_data`]). A violation is a [`PduError`] whose FES and
//! FEI the shell sends in the C2HTermReq before it closes the queue.

use super::{QpState, ADMIN_IN_CAPSULE};
use crate::nvmf::io;
use crate::nvmf::pdu::{
    self, field_off, H2CData, IcReq, IcResp, PduError, RxConfig, TargetIcParams, TxConfig, R2T,
};
use crate::nvmf::target::TransportOpts;
use crate::nvmf::wire::{DataDirection, SglDescriptor, Sqe, Status};

/// What the IC exchange settles: the ICResp to send, how this side sends and receives from
/// now on, and the number of request slots of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IcOutcome {
    pub resp: IcResp,
    pub tx: TxConfig,
    pub rx: RxConfig,
    pub depth: usize,
}

/// The answer to an ICReq received in `state`, with the transport's options.
pub(super) fn ic_exchange(
    state: QpState,
    req: &IcReq,
    opts: &TransportOpts,
) -> Result<IcOutcome, PduError> {
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
pub(super) fn next_r2t(cid: u16, slot: u16, xfer: u32, received: u32, maxh2cdata: u32) -> R2T {
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
pub(super) fn admit_h2c_data(
    h: &H2CData,
    r2t: &R2T,
    received: u32,
    data_len: u32,
) -> Result<(), PduError> {
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
pub(super) fn admit_in_capsule(sgl: &SglDescriptor, data_len: u32) -> Result<(), Status> {
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
pub(super) enum Transfer {
    /// No data: the command runs at once.
    None,
    /// `len` bytes in direction `dir`: solicited by R2T (host to controller) or sent as
    /// C2HData (controller to host); a bidirectional command is the caller's to refuse.
    Data { dir: DataDirection, len: u32 },
}

/// The data transfer of a capsule without in-capsule data, checked against the transport's
/// largest I/O; an error carries the transfer length and the status to answer with.
#[inline]
pub(super) fn plan_transfer(sqe: &Sqe, max_io_size: u32) -> Result<Transfer, (u32, Status)> {
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
pub(super) enum H2cNext {
    /// The R2T's bytes are in but not the command's: ask for more.
    SendR2t,
    /// More data of the current R2T is still to come.
    Wait,
    /// All data is in: run the command (or answer its error status).
    Complete,
}

/// The step after `received` of `xfer` bytes are in, the outstanding R2T being `r2t`.
#[inline]
pub(super) fn h2c_data_end(received: u32, xfer: u32, r2t: &R2T) -> H2cNext {
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
            let h = H2CData {
                cccid: r2t.cccid,
                ttag: r2t.ttag,
                datao: r2t.r2to,
                datal: r2t.r2tl,
                last: true,
            };
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
        // A write without in-capsule data: R2T for the SGL's length.
        let sgl = SglDescriptor::transport_data_block(8192);
        let write = Sqe::rw(io_opc::WRITE, 1, 1, 0, 16, sgl);
        assert_eq!(
            plan_transfer(&write, max_io),
            Ok(Transfer::Data {
                dir: DataDirection::HostToController,
                len: 8192
            })
        );
        let read = Sqe::rw(io_opc::READ, 1, 1, 0, 16, sgl);
        assert_eq!(
            plan_transfer(&read, max_io),
            Ok(Transfer::Data {
                dir: DataDirection::ControllerToHost,
                len: 8192
            })
        );
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
}
