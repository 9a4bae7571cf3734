//! NVMe/TCP PDU header layouts, read and written in place as little-endian `#[repr(C)]` types.
//!
//! Each PDU starts with the 8-byte [`CommonHeader`]; the PDU specific header follows it. The
//! structs here are the whole header up to HLEN (common header included), so the byte
//! offset of any field — reported as FEI in a Term Req — is `offset_of!` of the struct.

use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{wire_enum, wire_flags, Cqe, Sqe};

wire_enum! {
    /// PDU types (common header byte 0).
    pub enum PduType in pdu_type {
        IcReq / IC_REQ = 0x00,
        IcResp / IC_RESP = 0x01,
        H2CTermReq / H2C_TERM_REQ = 0x02,
        C2HTermReq / C2H_TERM_REQ = 0x03,
        CapsuleCmd / CAPSULE_CMD = 0x04,
        CapsuleResp / CAPSULE_RESP = 0x05,
        H2CData / H2C_DATA = 0x06,
        C2HData / C2H_DATA = 0x07,
        R2T / R2T = 0x09,
    }
}

wire_flags! {
    /// Common header flags (byte 1).
    pub struct PduFlags: u8 {
        /// Header digest present.
        const HDGSTF = 0x01;
        /// Data digest present.
        const DDGSTF = 0x02;
        /// H2CData / C2HData: last data PDU of the transfer.
        const LAST_PDU = 0x04;
        /// C2HData: the command completed successfully, no CapsuleResp follows.
        const SUCCESS = 0x08;
    }
}

wire_flags! {
    /// The digest byte of ICReq / ICResp (DGST): which digests the sender wants.
    pub struct DigestFlags: u8 {
        /// Header digest enable (HDGST_ENABLE).
        const HDGST = 0x01;
        /// Data digest enable (DDGST_ENABLE).
        const DDGST = 0x02;
    }
}

impl DigestFlags {
    /// The flags for the given digest choices.
    pub fn from_bools(hdgst: bool, ddgst: bool) -> Self {
        let mut f = Self::empty();
        f.set(Self::HDGST, hdgst);
        f.set(Self::DDGST, ddgst);
        f
    }
}

/// The 8-byte common header of every PDU.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct CommonHeader {
    /// PDU type ([`PduType`]).
    pub pdu_type: u8,
    pub flags: PduFlags,
    /// PDU header length (common header + PDU specific header).
    pub hlen: u8,
    /// PDU data offset (0 when the PDU carries no data).
    pub pdo: u8,
    /// Total PDU length.
    pub plen: U32,
}

/// ICReq and ICResp (128 bytes): PFV, the PDU data alignment the sender asks of its peer
/// (HPDA in ICReq, CPDA in ICResp), the digests it wants, and MAXR2T (ICReq, 0-based) or
/// MAXH2CDATA (ICResp).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct IcPdu {
    pub ch: CommonHeader,
    pub pfv: U16,
    /// HPDA (ICReq) / CPDA (ICResp).
    pub pda: u8,
    pub dgst: DigestFlags,
    /// MAXR2T (ICReq) / MAXH2CDATA (ICResp).
    pub limit: U32,
    pub rsvd: [u8; 112],
}

impl IcPdu {
    /// The PDU specific part of an ICReq / ICResp (the encoder fills in the common header).
    pub fn new(pfv: u16, pda: u8, hdgst: bool, ddgst: bool, limit: u32) -> Self {
        Self {
            ch: CommonHeader::new_zeroed(),
            pfv: pfv.into(),
            pda,
            dgst: DigestFlags::from_bools(hdgst, ddgst),
            limit: limit.into(),
            rsvd: [0; 112],
        }
    }
}

/// H2CTermReq and C2HTermReq header (24 bytes); the data is the PDU header in error.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct TermReqHdr {
    pub ch: CommonHeader,
    /// Fatal error status.
    pub fes: U16,
    /// Fatal error information (the byte offset of the bad field, or 0).
    pub fei: U32,
    pub rsvd: [u8; 10],
}

/// CapsuleCmd header (72 bytes): the common header and the SQE.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct CapsuleCmdHdr {
    pub ch: CommonHeader,
    pub sqe: Sqe,
}

/// CapsuleResp header (24 bytes): the common header and the CQE.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct CapsuleRespHdr {
    pub ch: CommonHeader,
    pub cqe: Cqe,
}

/// H2CData, C2HData and R2T header (24 bytes). In R2T the offset and length are called
/// R2TO and R2TL; C2HData has no transfer tag (reserved, zero).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct DataHdr {
    pub ch: CommonHeader,
    /// Command capsule CID.
    pub cccid: U16,
    /// Transfer tag (H2CData, R2T).
    pub ttag: U16,
    /// DATAO (H2CData, C2HData) / R2TO (R2T).
    pub datao: U32,
    /// DATAL (H2CData, C2HData) / R2TL (R2T).
    pub datal: U32,
    pub rsvd: [u8; 4],
}

/// Common header length.
pub const CH_LEN: usize = size_of::<CommonHeader>();
/// HLEN of ICReq / ICResp (they are exactly this long: PLEN = HLEN).
pub const IC_HLEN: usize = size_of::<IcPdu>();
/// HLEN of H2CTermReq / C2HTermReq.
pub const TERM_REQ_HLEN: usize = size_of::<TermReqHdr>();
/// HLEN of CapsuleCmd (common header + 64-byte SQE; no in-capsule data offset).
pub const CAPSULE_CMD_HLEN: usize = size_of::<CapsuleCmdHdr>();
/// HLEN of CapsuleResp, H2CData, C2HData and R2T.
pub const SHORT_HLEN: usize = size_of::<DataHdr>();

const _: () = {
    assert!(CH_LEN == 8);
    assert!(IC_HLEN == 128);
    assert!(TERM_REQ_HLEN == 24);
    assert!(CAPSULE_CMD_HLEN == 72);
    assert!(size_of::<CapsuleRespHdr>() == 24);
    assert!(SHORT_HLEN == 24);
};

/// Byte offsets of header fields within a PDU, as reported in a Term Req's FEI; they come
/// from the layouts above.
pub mod field_off {
    use super::*;

    pub const PDU_TYPE: u32 = offset_of!(CommonHeader, pdu_type) as u32;
    pub const FLAGS: u32 = offset_of!(CommonHeader, flags) as u32;
    pub const HLEN: u32 = offset_of!(CommonHeader, hlen) as u32;
    pub const PDO: u32 = offset_of!(CommonHeader, pdo) as u32;
    pub const PLEN: u32 = offset_of!(CommonHeader, plen) as u32;
    pub const PFV: u32 = offset_of!(IcPdu, pfv) as u32;
    /// HPDA (ICReq) / CPDA (ICResp).
    pub const PDA: u32 = offset_of!(IcPdu, pda) as u32;
    pub const DGST: u32 = offset_of!(IcPdu, dgst) as u32;
    /// MAXR2T (ICReq) / MAXH2CDATA (ICResp).
    pub const IC_LIMIT: u32 = offset_of!(IcPdu, limit) as u32;
    pub const CCCID: u32 = offset_of!(DataHdr, cccid) as u32;
    pub const TTAG: u32 = offset_of!(DataHdr, ttag) as u32;
    /// DATAO (H2CData, C2HData) / R2TO (R2T).
    pub const DATAO: u32 = offset_of!(DataHdr, datao) as u32;
    /// DATAL (H2CData, C2HData) / R2TL (R2T).
    pub const DATAL: u32 = offset_of!(DataHdr, datal) as u32;
    /// The command identifier in a CapsuleResp's CQE.
    pub const CQE_CID: u32 = (offset_of!(CapsuleRespHdr, cqe) + offset_of!(Cqe, cid)) as u32;
    /// The command identifier in a CapsuleCmd's SQE.
    pub const SQE_CID: u32 = (offset_of!(CapsuleCmdHdr, sqe) + offset_of!(Sqe, cid)) as u32;
}
