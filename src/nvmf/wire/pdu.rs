//! The NVMe/TCP PDU codec: typed headers, the encoder and the incremental decoder.
//!
//! NVMe/TCP PDUs: typed headers for every PDU (ICReq, ICResp, H2C/C2H TermReq, CapsuleCmd,
//! CapsuleResp, H2CData, C2HData, R2T), an encoder that writes a PDU's header (common header,
//! PDU specific header, header digest and padding up to PDO) into a caller buffer so the
//! data can be sent from its own buffer, and `PduDecoder`, an incremental decoder that takes
//! bytes in any split and yields headers, data pieces and data-digest verdicts. The decoder
//! is direction-aware (a target accepts host-to-controller PDUs, a host the reverse) and
//! checks every length from the wire (HLEN per type, PDO against HLEN and alignment, PLEN
//! against HLEN + PDO, data against MAXH2CDATA / in-capsule / data PDU limits) before using
//! it. Data can be consumed either as slices of the fed input or received by the caller
//! straight into its own buffer (`data_pending` / `data_received`), which is how a target
//! lands a 128 KiB H2CData in the I/O buffer without an intermediate copy. A violation is a
//! `PduError` carrying the FES and FEI that the Term Req must report.

use super::digest::{header_digest, DataDigest, DIGEST_LEN};
pub use super::tcp::{
    field_off, pdu_type, CapsuleCmdHdr, CapsuleRespHdr, CommonHeader, DataHdr, DigestFlags, IcPdu,
    PduFlags, PduType, TermReqHdr, CAPSULE_CMD_HLEN, CH_LEN, IC_HLEN, SHORT_HLEN, TERM_REQ_HLEN,
};
use super::{Cqe, Sqe};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Common header flags (byte 1), as bytes; [`PduFlags`] is the typed set.
pub mod pdu_flags {
    use super::PduFlags;
    /// Header digest present.
    pub const HDGSTF: u8 = PduFlags::HDGSTF.bits();
    /// Data digest present.
    pub const DDGSTF: u8 = PduFlags::DDGSTF.bits();
    /// H2CData / C2HData: last data PDU of the transfer.
    pub const LAST_PDU: u8 = PduFlags::LAST_PDU.bits();
    /// C2HData: the command completed successfully, no CapsuleResp follows.
    pub const SUCCESS: u8 = PduFlags::SUCCESS.bits();
}

/// Maximum PLEN of a Term Req (header + up to 128 bytes of the PDU header in error).
pub const TERM_REQ_MAX_PLEN: usize = 152;
/// Maximum bytes of the offending PDU header carried in a Term Req.
pub const TERM_REQ_MAX_DATA: usize = TERM_REQ_MAX_PLEN - TERM_REQ_HLEN;
/// Largest PDU header with digest and padding: PDO is one byte, so at most 255 bytes.
pub const MAX_HEADER_LEN: usize = 256;
/// The only PDU format version (PFV) defined.
pub const PFV_1_0: u16 = 0;
/// Largest HPDA / CPDA value (alignment (PDA + 1) * 4 bytes = 128).
pub const MAX_PDA: u8 = 31;
/// Smallest MAXH2CDATA a controller may announce.
pub const MIN_MAXH2CDATA: u32 = 4096;

/// Fatal error status of a Term Req. Value 05h is named by who sends it: a controller
/// reports "Data Transfer Limit Exceeded", a host "R2T Limit Exceeded".
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fes(pub u16);

impl Fes {
    pub const INVALID_HEADER_FIELD: Fes = Fes(0x01);
    pub const PDU_SEQUENCE_ERROR: Fes = Fes(0x02);
    pub const HEADER_DIGEST_ERROR: Fes = Fes(0x03);
    pub const DATA_TRANSFER_OUT_OF_RANGE: Fes = Fes(0x04);
    pub const DATA_TRANSFER_LIMIT_EXCEEDED: Fes = Fes(0x05);
    pub const R2T_LIMIT_EXCEEDED: Fes = Fes(0x05);
    pub const UNSUPPORTED_PARAMETER: Fes = Fes(0x06);

    fn name(self) -> &'static str {
        match self.0 {
            1 => "invalid PDU header field",
            2 => "PDU sequence error",
            3 => "header digest error",
            4 => "data transfer out of range",
            5 => "data transfer / R2T limit exceeded",
            6 => "unsupported parameter",
            _ => "unknown fatal error status",
        }
    }
}

impl std::fmt::Debug for Fes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fes({:#x} {})", self.0, self.name())
    }
}

/// A protocol violation found in received PDUs: the FES and FEI to report in the Term Req
/// (FEI is the byte offset of the bad field for header-field and parameter errors, else 0)
/// and a short description for logs. After an error the connection must be terminated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PduError {
    pub fes: Fes,
    pub fei: u32,
    pub what: &'static str,
}

impl PduError {
    pub const fn new(fes: Fes, fei: u32, what: &'static str) -> Self {
        Self { fes, fei, what }
    }
    /// An invalid header field at byte offset `off` of the PDU.
    pub const fn field(off: u32, what: &'static str) -> Self {
        Self::new(Fes::INVALID_HEADER_FIELD, off, what)
    }
    const fn sequence(what: &'static str) -> Self {
        Self::new(Fes::PDU_SEQUENCE_ERROR, 0, what)
    }
}

impl std::fmt::Display for PduError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (fes {:#x}, fei {}): {}",
            self.fes.name(),
            self.fes.0,
            self.fei,
            self.what
        )
    }
}

impl std::error::Error for PduError {}

/// Initialize Connection Request (host to controller).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IcReq {
    pub pfv: u16,
    /// Host PDU data alignment, 0-based dwords: the alignment of data in C2H PDUs.
    pub hpda: u8,
    pub hdgst: bool,
    pub ddgst: bool,
    /// Maximum outstanding R2Ts per command, 0-based.
    pub maxr2t: u32,
}

/// Initialize Connection Response (controller to host).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IcResp {
    pub pfv: u16,
    /// Controller PDU data alignment, 0-based dwords: the alignment of data in H2C PDUs.
    pub cpda: u8,
    pub hdgst: bool,
    pub ddgst: bool,
    /// Maximum data bytes in one H2CData PDU.
    pub maxh2cdata: u32,
}

/// Terminate Connection Request (either direction); its data is the PDU header in error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermReq {
    pub fes: Fes,
    pub fei: u32,
}

/// Host to controller data, answering an R2T.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct H2CData {
    pub cccid: u16,
    pub ttag: u16,
    pub datao: u32,
    pub datal: u32,
    pub last: bool,
}

/// Controller to host data of a read-type command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct C2HData {
    pub cccid: u16,
    pub datao: u32,
    pub datal: u32,
    pub last: bool,
    /// Command completed successfully; no CapsuleResp follows (requires `last`).
    pub success: bool,
}

/// Ready to Transfer: the controller asks for `r2tl` bytes at offset `r2to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct R2T {
    pub cccid: u16,
    pub ttag: u16,
    pub r2to: u32,
    pub r2tl: u32,
}

/// A typed PDU header (everything but the data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PduHeader {
    IcReq(IcReq),
    IcResp(IcResp),
    H2CTermReq(TermReq),
    C2HTermReq(TermReq),
    /// A command capsule; in-capsule data, if any, is the PDU data.
    CapsuleCmd(Sqe),
    CapsuleResp(Cqe),
    H2CData(H2CData),
    C2HData(C2HData),
    R2T(R2T),
}

impl PduHeader {
    pub fn pdu_type(&self) -> u8 {
        match self {
            Self::IcReq(_) => pdu_type::IC_REQ,
            Self::IcResp(_) => pdu_type::IC_RESP,
            Self::H2CTermReq(_) => pdu_type::H2C_TERM_REQ,
            Self::C2HTermReq(_) => pdu_type::C2H_TERM_REQ,
            Self::CapsuleCmd(_) => pdu_type::CAPSULE_CMD,
            Self::CapsuleResp(_) => pdu_type::CAPSULE_RESP,
            Self::H2CData(_) => pdu_type::H2C_DATA,
            Self::C2HData(_) => pdu_type::C2H_DATA,
            Self::R2T(_) => pdu_type::R2T,
        }
    }
}

/// Which side of the connection a decoder or encoder serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The controller: receives ICReq, CapsuleCmd, H2CData, H2CTermReq.
    Target,
    /// The host: receives ICResp, CapsuleResp, C2HData, R2T, C2HTermReq.
    Host,
}

/// Static facts about each PDU type: the HLEN it must have, whether it may carry data,
/// and whether digests apply to it.
struct TypeInfo {
    hlen: usize,
    carries_data: bool,
    digests: bool,
    /// Sent by the host (decoded by a target).
    from_host: bool,
}

fn type_info(t: u8) -> Option<TypeInfo> {
    let (hlen, carries_data, digests, from_host) = match t {
        pdu_type::IC_REQ => (IC_HLEN, false, false, true),
        pdu_type::IC_RESP => (IC_HLEN, false, false, false),
        pdu_type::H2C_TERM_REQ => (TERM_REQ_HLEN, true, false, true),
        pdu_type::C2H_TERM_REQ => (TERM_REQ_HLEN, true, false, false),
        pdu_type::CAPSULE_CMD => (CAPSULE_CMD_HLEN, true, true, true),
        pdu_type::CAPSULE_RESP => (SHORT_HLEN, false, true, false),
        pdu_type::H2C_DATA => (SHORT_HLEN, true, true, true),
        pdu_type::C2H_DATA => (SHORT_HLEN, true, true, false),
        pdu_type::R2T => (SHORT_HLEN, false, true, false),
        _ => return None,
    };
    Some(TypeInfo {
        hlen,
        carries_data,
        digests,
        from_host,
    })
}

/// Alignment in bytes for a 0-based dword PDA value.
pub const fn pda_bytes(pda: u8) -> usize {
    (pda as usize + 1) * 4
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// How this side sends PDUs: digests as negotiated, and the data alignment the peer asked
/// for (a target uses the HPDA of the ICReq, a host the CPDA of the ICResp).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxConfig {
    pub hdgst: bool,
    pub ddgst: bool,
    pub pda: u8,
}

/// Why a header could not be encoded (a bug in the caller, reported rather than panicking).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// This PDU type carries no data.
    DataNotAllowed,
    /// A Term Req carries at most 128 bytes; a PDU at most `u32::MAX` bytes.
    DataTooLong,
    /// H2CData / C2HData `datal` differs from the data length given.
    LengthMismatch,
    /// A PDA above 31.
    BadAlignment,
    /// The output buffer is shorter than the header (PDO bytes).
    BufferTooSmall,
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for EncodeError {}

/// Layout of an encoded PDU: header bytes to send first (CH, PSH, header digest, padding),
/// then `data_len` bytes of data, then a data digest if `data_digest` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodedHeader {
    /// Bytes of the header buffer to send (= PDO when the PDU has data).
    pub len: usize,
    pub data_len: u32,
    /// A 4-byte data digest over the data must follow the data.
    pub data_digest: bool,
    /// Total PDU length (PLEN).
    pub plen: u32,
}

/// Writes the header of a PDU that carries `data_len` bytes of data into `out`: common
/// header, PDU specific header, header digest (when enabled and the type uses digests) and
/// zero padding up to the PDO that `cfg.pda` requires. No allocation; the caller sends
/// `out[..len]`, then the data from wherever it lives, then `digest_of(data)` if
/// `data_digest`.
pub fn encode_header(
    hdr: &PduHeader,
    data_len: u32,
    cfg: &TxConfig,
    out: &mut [u8; MAX_HEADER_LEN],
) -> Result<EncodedHeader, EncodeError> {
    encode_header_into(hdr, data_len, cfg, out)
}

/// [`encode_header`] into any buffer of at least the header's length (PDO bytes), else
/// `BufferTooSmall`.
pub fn encode_header_into(
    hdr: &PduHeader,
    data_len: u32,
    cfg: &TxConfig,
    out: &mut [u8],
) -> Result<EncodedHeader, EncodeError> {
    let t = hdr.pdu_type();
    let info = type_info(t).ok_or(EncodeError::DataNotAllowed)?;
    if cfg.pda > MAX_PDA {
        return Err(EncodeError::BadAlignment);
    }
    if data_len > 0 && !info.carries_data {
        return Err(EncodeError::DataNotAllowed);
    }
    let is_term = matches!(hdr, PduHeader::H2CTermReq(_) | PduHeader::C2HTermReq(_));
    if is_term && data_len as usize > TERM_REQ_MAX_DATA {
        return Err(EncodeError::DataTooLong);
    }
    let hlen = info.hlen;
    let hd = info.digests && cfg.hdgst;
    let dd = info.digests && cfg.ddgst && data_len > 0;
    let header_end = hlen + if hd { DIGEST_LEN } else { 0 };
    let pdo = if data_len == 0 || is_term {
        header_end
    } else {
        header_end.next_multiple_of(pda_bytes(cfg.pda))
    };
    let plen = (pdo as u64) + data_len as u64 + if dd { DIGEST_LEN as u64 } else { 0 };
    let plen = u32::try_from(plen).map_err(|_| EncodeError::DataTooLong)?;
    let Some(out) = out.get_mut(..pdo) else {
        return Err(EncodeError::BufferTooSmall);
    };
    out.fill(0);
    let mut flags = PduFlags::empty();
    flags.set(PduFlags::HDGSTF, hd);
    flags.set(PduFlags::DDGSTF, dd);
    // `out` holds at least HLEN bytes (PDO >= HLEN), so every layout below fits.
    match hdr {
        PduHeader::IcReq(r) => {
            *layout_mut::<IcPdu>(out)? = IcPdu::new(r.pfv, r.hpda, r.hdgst, r.ddgst, r.maxr2t);
        }
        PduHeader::IcResp(r) => {
            *layout_mut::<IcPdu>(out)? = IcPdu::new(r.pfv, r.cpda, r.hdgst, r.ddgst, r.maxh2cdata);
        }
        PduHeader::H2CTermReq(r) | PduHeader::C2HTermReq(r) => {
            let p = layout_mut::<TermReqHdr>(out)?;
            p.fes.set(r.fes.0);
            p.fei.set(r.fei);
        }
        PduHeader::CapsuleCmd(sqe) => {
            let p = layout_mut::<CapsuleCmdHdr>(out)?;
            p.sqe = *sqe;
        }
        PduHeader::CapsuleResp(cqe) => {
            let p = layout_mut::<CapsuleRespHdr>(out)?;
            p.cqe = *cqe;
        }
        PduHeader::H2CData(d) => {
            if d.datal != data_len {
                return Err(EncodeError::LengthMismatch);
            }
            flags.set(PduFlags::LAST_PDU, d.last);
            let p = layout_mut::<DataHdr>(out)?;
            p.cccid.set(d.cccid);
            p.ttag.set(d.ttag);
            p.datao.set(d.datao);
            p.datal.set(d.datal);
        }
        PduHeader::C2HData(d) => {
            if d.datal != data_len {
                return Err(EncodeError::LengthMismatch);
            }
            flags.set(PduFlags::LAST_PDU, d.last);
            flags.set(PduFlags::SUCCESS, d.success);
            let p = layout_mut::<DataHdr>(out)?;
            p.cccid.set(d.cccid);
            p.datao.set(d.datao);
            p.datal.set(d.datal);
        }
        PduHeader::R2T(r) => {
            let p = layout_mut::<DataHdr>(out)?;
            p.cccid.set(r.cccid);
            p.ttag.set(r.ttag);
            p.datao.set(r.r2to);
            p.datal.set(r.r2tl);
        }
    }
    *layout_mut::<CommonHeader>(out)? = CommonHeader {
        pdu_type: t,
        flags,
        hlen: hlen as u8,
        pdo: if data_len > 0 && !is_term {
            pdo as u8
        } else {
            0
        },
        plen: plen.into(),
    };
    if hd {
        let d = header_digest(&out[..hlen]);
        out[hlen..hlen + DIGEST_LEN].copy_from_slice(&d);
    }
    Ok(EncodedHeader {
        len: pdo,
        data_len,
        data_digest: dd,
        plen,
    })
}

/// The header layout `T` at the start of `out` (which holds at least `T`'s bytes whenever
/// the encoder calls this).
fn layout_mut<T: FromBytes + IntoBytes + KnownLayout>(
    out: &mut [u8],
) -> Result<&mut T, EncodeError> {
    T::mut_from_prefix(out)
        .map(|(p, _)| p)
        .map_err(|_| EncodeError::BufferTooSmall)
}

/// The header layout `T` at the start of a received header; the decoder checked HLEN for the
/// type before, so a short buffer cannot happen and is reported as a bad HLEN.
fn layout<T: FromBytes + KnownLayout + Immutable>(h: &[u8]) -> Result<&T, PduError> {
    T::ref_from_prefix(h)
        .map(|(p, _)| p)
        .map_err(|_| PduError::field(field_off::HLEN, "header shorter than its type"))
}

/// Encodes a whole PDU into a new vector: header, the data given as several slices, and the
/// data digest. Convenient for control paths and tests; the data path uses `encode_header`.
pub fn encode_pdu(hdr: &PduHeader, data: &[&[u8]], cfg: &TxConfig) -> Result<Vec<u8>, EncodeError> {
    let total: usize = data.iter().map(|d| d.len()).sum();
    let data_len = u32::try_from(total).map_err(|_| EncodeError::DataTooLong)?;
    let mut hbuf = [0u8; MAX_HEADER_LEN];
    let enc = encode_header(hdr, data_len, cfg, &mut hbuf)?;
    let mut out = Vec::with_capacity(enc.plen as usize);
    out.extend_from_slice(&hbuf[..enc.len]);
    let mut digest = DataDigest::new();
    for d in data {
        out.extend_from_slice(d);
        digest.update(d);
    }
    if enc.data_digest {
        out.extend_from_slice(&digest.to_wire());
    }
    Ok(out)
}

/// Writes a complete Term Req for `err` into `out`: an H2CTermReq when this side is the
/// host, a C2HTermReq when it is the target, carrying up to 128 bytes of the offending PDU
/// header (`PduDecoder::error_header`). Returns the PDU length.
pub fn encode_term_req(
    sender: Role,
    err: &PduError,
    offending_header: &[u8],
    out: &mut [u8; TERM_REQ_MAX_PLEN],
) -> usize {
    let term = TermReq {
        fes: err.fes,
        fei: err.fei,
    };
    let hdr = match sender {
        Role::Host => PduHeader::H2CTermReq(term),
        Role::Target => PduHeader::C2HTermReq(term),
    };
    let n = offending_header.len().min(TERM_REQ_MAX_DATA);
    let mut hbuf = [0u8; MAX_HEADER_LEN];
    // A Term Req never uses digests or padding, and n <= 128, so this cannot fail.
    let Ok(enc) = encode_header(&hdr, n as u32, &TxConfig::default(), &mut hbuf) else {
        return 0;
    };
    out[..enc.len].copy_from_slice(&hbuf[..enc.len]);
    out[enc.len..enc.len + n].copy_from_slice(&offending_header[..n]);
    enc.len + n
}

// ---------------------------------------------------------------------------------------
// Connection initialization
// ---------------------------------------------------------------------------------------

/// What a target offers in the IC exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetIcParams {
    /// CPDA to announce (0-based dwords).
    pub cpda: u8,
    /// MAXH2CDATA to announce (>= 4096, dword multiple).
    pub maxh2cdata: u32,
    /// In-capsule data accepted on this queue.
    pub max_in_capsule: u32,
    /// Digests the target is willing to enable when the host asks.
    pub allow_hdgst: bool,
    pub allow_ddgst: bool,
}

/// Target side: the ICResp answering `req`, and the settings for sending (`TxConfig`, data
/// aligned to the host's HPDA) and receiving (`RxConfig`, with our CPDA and limits) for the
/// rest of the connection. Digests are enabled when the host asks and we allow them.
pub fn target_negotiate(req: &IcReq, p: &TargetIcParams) -> (IcResp, TxConfig, RxConfig) {
    let hdgst = req.hdgst && p.allow_hdgst;
    let ddgst = req.ddgst && p.allow_ddgst;
    let resp = IcResp {
        pfv: PFV_1_0,
        cpda: p.cpda.min(MAX_PDA),
        hdgst,
        ddgst,
        maxh2cdata: p.maxh2cdata.max(MIN_MAXH2CDATA) & !3,
    };
    let txc = TxConfig {
        hdgst,
        ddgst,
        pda: req.hpda.min(MAX_PDA),
    };
    let rxc = RxConfig {
        hdgst,
        ddgst,
        pda: resp.cpda,
        max_data_pdu: resp.maxh2cdata,
        max_in_capsule: p.max_in_capsule,
    };
    (resp, txc, rxc)
}

/// Host side: the settings after receiving `resp` to our `req`. `max_transfer` bounds the
/// data of one C2HData (the largest command we issue). A controller enabling a digest the
/// host did not request is a protocol error (reported on the DGST field).
pub fn host_negotiate(
    req: &IcReq,
    resp: &IcResp,
    max_transfer: u32,
) -> Result<(TxConfig, RxConfig), PduError> {
    if (resp.hdgst && !req.hdgst) || (resp.ddgst && !req.ddgst) {
        return Err(PduError::field(
            field_off::DGST,
            "controller enabled a digest not requested",
        ));
    }
    let txc = TxConfig {
        hdgst: resp.hdgst,
        ddgst: resp.ddgst,
        pda: resp.cpda,
    };
    let rxc = RxConfig {
        hdgst: resp.hdgst,
        ddgst: resp.ddgst,
        pda: req.hpda,
        max_data_pdu: max_transfer,
        max_in_capsule: 0,
    };
    Ok((txc, rxc))
}

// ---------------------------------------------------------------------------------------
// Checks that need command context (used by the target and host state machines)
// ---------------------------------------------------------------------------------------

/// Target side: validates an H2CData against the R2T it answers. `expected_offset` is where
/// the next data of that R2T must start (R2TO plus what has already arrived).
pub fn check_h2c_data(d: &H2CData, r2t: &R2T, expected_offset: u32) -> Result<(), PduError> {
    if d.cccid != r2t.cccid {
        return Err(PduError::field(
            field_off::CCCID,
            "H2CData for another command",
        ));
    }
    if d.ttag != r2t.ttag {
        return Err(PduError::field(
            field_off::TTAG,
            "H2CData with an unknown transfer tag",
        ));
    }
    let end = d.datao as u64 + d.datal as u64;
    if d.datao != expected_offset || end > r2t.r2to as u64 + r2t.r2tl as u64 {
        return Err(PduError::new(
            Fes::DATA_TRANSFER_OUT_OF_RANGE,
            0,
            "H2CData outside the requested range",
        ));
    }
    Ok(())
}

/// Host side: validates a C2HData against its command's transfer length and the data
/// received so far (data arrives in order).
pub fn check_c2h_data(d: &C2HData, transfer_len: u32, received: u32) -> Result<(), PduError> {
    if d.datao != received || d.datao as u64 + d.datal as u64 > transfer_len as u64 {
        return Err(PduError::new(
            Fes::DATA_TRANSFER_OUT_OF_RANGE,
            0,
            "C2HData outside the command's data",
        ));
    }
    Ok(())
}

/// Host side: validates an R2T against its command's transfer length and the number of
/// R2Ts already outstanding for it (`maxr2t` is the 0-based MAXR2T of the ICReq).
pub fn check_r2t(
    r: &R2T,
    transfer_len: u32,
    outstanding: u32,
    maxr2t: u32,
) -> Result<(), PduError> {
    if r.r2to as u64 + r.r2tl as u64 > transfer_len as u64 {
        return Err(PduError::new(
            Fes::DATA_TRANSFER_OUT_OF_RANGE,
            0,
            "R2T outside the command's data",
        ));
    }
    if outstanding as u64 > maxr2t as u64 {
        return Err(PduError::new(
            Fes::R2T_LIMIT_EXCEEDED,
            0,
            "too many outstanding R2Ts",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Whole-buffer decoding (tests, fuzzing, control paths)
// ---------------------------------------------------------------------------------------

/// A complete PDU with its data collected into a vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedPdu {
    pub header: PduHeader,
    pub data: Vec<u8>,
    pub data_digest_ok: bool,
}

/// Assembles decoder events into whole `DecodedPdu`s (header plus data in a vector). For
/// tests, fuzzing and control paths; the data path consumes events directly. When it sees
/// an ICReq / ICResp it applies the digests that PDU carries to the decoder, as both peers
/// of a connection that accepts them would.
#[derive(Default)]
pub struct PduAssembler {
    current: Option<DecodedPdu>,
    /// Completed PDUs, in order.
    pub pdus: Vec<DecodedPdu>,
}

impl PduAssembler {
    /// Takes one event from `dec`.
    pub fn on_event(&mut self, dec: &mut PduDecoder, ev: RxEvent<'_>) {
        match ev {
            RxEvent::Header { header, data_len } => {
                if let PduHeader::IcReq(IcReq { hdgst, ddgst, .. })
                | PduHeader::IcResp(IcResp { hdgst, ddgst, .. }) = header
                {
                    dec.configure(RxConfig {
                        hdgst,
                        ddgst,
                        ..*dec.config()
                    });
                }
                let pdu = DecodedPdu {
                    header,
                    data: Vec::with_capacity(data_len as usize),
                    data_digest_ok: true,
                };
                if data_len == 0 {
                    self.pdus.push(pdu);
                } else {
                    self.current = Some(pdu);
                }
            }
            RxEvent::Data { bytes, .. } => self.extend_data(bytes),
            RxEvent::DataEnd { digest_ok } => {
                if let Some(mut p) = self.current.take() {
                    p.data_digest_ok = digest_ok;
                    self.pdus.push(p);
                }
            }
        }
    }

    /// Appends data of the current PDU that the caller received directly.
    pub fn extend_data(&mut self, bytes: &[u8]) {
        if let Some(p) = self.current.as_mut() {
            p.data.extend_from_slice(bytes);
        }
    }

    /// Data bytes of the current PDU collected so far.
    pub fn current_data_len(&self) -> Option<usize> {
        self.current.as_ref().map(|p| p.data.len())
    }
}

/// Decodes every complete PDU of a contiguous stream (see `PduAssembler` for the IC
/// handling). Returns the PDUs decoded and the first error, if any; a trailing partial PDU
/// is neither.
pub fn decode_all(
    role: Role,
    cfg: RxConfig,
    bytes: &[u8],
) -> (Vec<DecodedPdu>, Result<(), PduError>) {
    let mut dec = PduDecoder::with_config(role, cfg);
    let mut asm = PduAssembler::default();
    let mut input = bytes;
    loop {
        match dec.feed(input) {
            Err(e) => return (asm.pdus, Err(e)),
            Ok((_, None)) => return (asm.pdus, Ok(())),
            Ok((used, Some(ev))) => {
                input = &input[used..];
                asm.on_event(&mut dec, ev);
            }
        }
    }
}

/// Fuzzing entry point (for cargo-fuzz or a test over random bytes). The first byte sets
/// up the decoder: bit 0 the role (0 target, 1 host), bits 1 and 2 header / data digests,
/// bits 3..=6 the chunk size the rest is fed in, bit 7 "IC exchange already done". Digests
/// requested by a decoded ICReq / ICResp are then applied. Must never panic on any input;
/// returns the number of complete PDUs decoded.
pub fn fuzz_decode(bytes: &[u8]) -> usize {
    let Some((&setup, rest)) = bytes.split_first() else {
        return 0;
    };
    let role = if setup & 1 == 0 {
        Role::Target
    } else {
        Role::Host
    };
    let cfg = RxConfig {
        hdgst: setup & 2 != 0,
        ddgst: setup & 4 != 0,
        ..RxConfig::default()
    };
    let chunk = 1 + ((setup >> 3) & 0xf) as usize * 13;
    let mut dec = PduDecoder::with_config(role, cfg);
    dec.ic_done = setup & 0x80 != 0;
    let mut asm = PduAssembler::default();
    for piece in rest.chunks(chunk) {
        let mut input = piece;
        loop {
            match dec.feed(input) {
                Err(_) => return asm.pdus.len(),
                Ok((_, None)) => break,
                Ok((used, Some(ev))) => {
                    input = &input[used..];
                    asm.on_event(&mut dec, ev);
                }
            }
        }
    }
    asm.pdus.len()
}

mod decoder;
#[cfg(test)]
mod tests;

pub use decoder::*;
