//! The incremental NVMe/TCP PDU decoder: bytes in any split in, checked headers and data out.

use super::*;

/// What the decoder accepts: digests as negotiated, the alignment it asked the peer for,
/// and the data limits of this queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxConfig {
    pub hdgst: bool,
    pub ddgst: bool,
    /// The PDA this side announced (target: CPDA; host: HPDA); received PDO must be a
    /// multiple of `(pda + 1) * 4`.
    pub pda: u8,
    /// Most data bytes in one H2CData (target: its MAXH2CDATA) or C2HData (host: its
    /// largest transfer).
    pub max_data_pdu: u32,
    /// Most in-capsule data bytes in a CapsuleCmd (target only).
    pub max_in_capsule: u32,
}

impl Default for RxConfig {
    /// Before the IC exchange: no digests, dword alignment, 128 KiB data PDUs, 8 KiB
    /// in-capsule data (what an admin queue accepts).
    fn default() -> Self {
        Self {
            hdgst: false,
            ddgst: false,
            pda: 0,
            max_data_pdu: 128 * 1024,
            max_in_capsule: 8192,
        }
    }
}

/// One step of decoding.
#[derive(Debug, PartialEq, Eq)]
pub enum RxEvent<'a> {
    /// A complete, validated PDU header (digest checked, padding consumed). `data_len`
    /// bytes of data follow as `Data` events (or via `data_received`), then `DataEnd`;
    /// with `data_len == 0` the PDU is complete.
    Header { header: PduHeader, data_len: u32 },
    /// A piece of the current PDU's data, at `offset` from the start of that data.
    Data { offset: u32, bytes: &'a [u8] },
    /// All data of the current PDU arrived. `digest_ok` is false only when a data digest
    /// was present and did not match (the stream stays in sync; the command fails with a
    /// transport error or the connection is dropped, as the caller's policy says).
    DataEnd { digest_ok: bool },
}

/// Data still expected for the current PDU: `len` bytes starting at `offset` within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataPending {
    pub offset: u32,
    pub len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum RxState {
    /// Collecting the common header (`need == CH_LEN`) or the rest of the header up to
    /// PDO / end of header digest.
    Header,
    Data,
    DataDigest,
    /// Data complete without digest: `DataEnd` is due.
    EndPending,
    Failed(PduError),
}

/// Incremental NVMe/TCP PDU decoder for one connection.
pub struct PduDecoder {
    role: Role,
    cfg: RxConfig,
    state: RxState,
    pub(in crate::nvmf::wire::pdu) ic_done: bool,
    hdr: [u8; MAX_HEADER_LEN],
    have: usize,
    need: usize,
    /// Current PDU: HLEN, whether a header/data digest is present, its data length and the
    /// data bytes received so far.
    hlen: usize,
    has_hdgst: bool,
    has_ddgst: bool,
    data_len: u32,
    data_done: u32,
    digest: DataDigest,
    ddgst_buf: [u8; DIGEST_LEN],
    ddgst_have: usize,
}

impl PduDecoder {
    pub fn new(role: Role) -> Self {
        Self::with_config(role, RxConfig::default())
    }

    pub fn with_config(role: Role, cfg: RxConfig) -> Self {
        Self {
            role,
            cfg,
            state: RxState::Header,
            ic_done: false,
            hdr: [0; MAX_HEADER_LEN],
            have: 0,
            need: CH_LEN,
            hlen: 0,
            has_hdgst: false,
            has_ddgst: false,
            data_len: 0,
            data_done: 0,
            digest: DataDigest::new(),
            ddgst_buf: [0; DIGEST_LEN],
            ddgst_have: 0,
        }
    }

    /// Applies the negotiated settings (after the IC exchange). Takes effect from the next
    /// PDU header; call it between PDUs.
    pub fn configure(&mut self, cfg: RxConfig) {
        self.cfg = cfg;
    }

    pub fn config(&self) -> &RxConfig {
        &self.cfg
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the decoder is between PDUs (no partial PDU buffered).
    pub fn at_pdu_boundary(&self) -> bool {
        self.state == RxState::Header && self.have == 0
    }

    /// The bytes of the PDU header received so far (up to 128): the data of the Term Req
    /// that reports an error in it.
    pub fn error_header(&self) -> &[u8] {
        &self.hdr[..self.have.min(TERM_REQ_MAX_DATA)]
    }

    /// Consumes bytes from `input` and returns how many it used and at most one event.
    /// It returns no event only once all of `input` is consumed, so call it in a loop with
    /// the remaining input until it yields `None`. Errors are sticky: the connection must
    /// send a Term Req (see `encode_term_req`) and close.
    pub fn feed<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<RxEvent<'a>>), PduError> {
        let mut used = 0;
        loop {
            match self.state {
                RxState::Failed(e) => return Err(e),
                RxState::EndPending => {
                    self.reset_for_next_pdu();
                    return Ok((used, Some(RxEvent::DataEnd { digest_ok: true })));
                }
                RxState::Header => {
                    let take = (self.need - self.have).min(input.len() - used);
                    self.hdr[self.have..self.have + take]
                        .copy_from_slice(&input[used..used + take]);
                    self.have += take;
                    used += take;
                    if self.have < self.need {
                        return Ok((used, None));
                    }
                    if self.have == CH_LEN && self.hlen == 0 {
                        if let Err(e) = self.check_common_header() {
                            return Err(self.fail(e));
                        }
                        continue;
                    }
                    return match self.finish_header() {
                        Ok(ev) => Ok((used, Some(ev))),
                        Err(e) => Err(self.fail(e)),
                    };
                }
                RxState::Data => {
                    if used == input.len() {
                        return Ok((used, None));
                    }
                    let take = ((self.data_len - self.data_done) as usize).min(input.len() - used);
                    let bytes = &input[used..used + take];
                    let offset = self.data_done;
                    self.account_data(bytes);
                    return Ok((used + take, Some(RxEvent::Data { offset, bytes })));
                }
                RxState::DataDigest => {
                    let take = (DIGEST_LEN - self.ddgst_have).min(input.len() - used);
                    self.ddgst_buf[self.ddgst_have..self.ddgst_have + take]
                        .copy_from_slice(&input[used..used + take]);
                    self.ddgst_have += take;
                    used += take;
                    if self.ddgst_have < DIGEST_LEN {
                        return Ok((used, None));
                    }
                    let digest_ok = self.digest.matches(&self.ddgst_buf);
                    self.reset_for_next_pdu();
                    return Ok((used, Some(RxEvent::DataEnd { digest_ok })));
                }
            }
        }
    }

    /// Whether no byte of the next PDU has been received yet.
    pub fn at_pdu_start(&self) -> bool {
        self.state == RxState::Header && self.have == 0
    }

    /// The current PDU's header length through its data offset (PDO), once its `Header`
    /// event was returned.
    pub fn header_len(&self) -> usize {
        self.need
    }

    /// Whether the current PDU's data is followed by a data digest.
    pub fn has_data_digest(&self) -> bool {
        self.has_ddgst
    }

    /// When the decoder is inside a PDU's data: where the rest of it goes. The caller may
    /// receive up to `len` bytes from the socket straight into its own buffer and report
    /// them with `data_received`, instead of feeding them.
    pub fn data_pending(&self) -> Option<DataPending> {
        (self.state == RxState::Data).then(|| DataPending {
            offset: self.data_done,
            len: self.data_len - self.data_done,
        })
    }

    /// Reports data bytes the caller received directly (see `data_pending`); they are
    /// added to the data digest. Afterwards call `feed` (possibly with empty input) to get
    /// `DataEnd`. More bytes than pending is a caller error and leaves the decoder unchanged.
    pub fn data_received(&mut self, bytes: &[u8]) -> Result<(), DataOverrun> {
        match self.data_pending() {
            Some(p) if bytes.len() <= p.len as usize => {
                self.account_data(bytes);
                Ok(())
            }
            _ => Err(DataOverrun),
        }
    }

    fn account_data(&mut self, bytes: &[u8]) {
        if self.has_ddgst {
            self.digest.update(bytes);
        }
        self.data_done += bytes.len() as u32;
        if self.data_done == self.data_len {
            self.state = if self.has_ddgst {
                RxState::DataDigest
            } else {
                RxState::EndPending
            };
        }
    }

    fn reset_for_next_pdu(&mut self) {
        self.state = RxState::Header;
        self.have = 0;
        self.need = CH_LEN;
        self.hlen = 0;
        self.has_hdgst = false;
        self.has_ddgst = false;
        self.data_len = 0;
        self.data_done = 0;
        self.digest = DataDigest::new();
        self.ddgst_have = 0;
    }

    fn fail(&mut self, e: PduError) -> PduError {
        self.state = RxState::Failed(e);
        e
    }

    /// Validates the 8-byte common header against the PDU type, direction, sequence and
    /// negotiated limits, and sets how many header bytes (through PDO) to collect.
    fn check_common_header(&mut self) -> Result<(), PduError> {
        let ch = layout::<CommonHeader>(&self.hdr)?;
        let t = ch.pdu_type;
        let flags = ch.flags;
        let hlen = ch.hlen as usize;
        let pdo = ch.pdo as usize;
        let plen = ch.plen.get() as usize;

        let info = match type_info(t) {
            Some(i) if i.from_host == (self.role == Role::Target) => i,
            _ => return Err(PduError::field(field_off::PDU_TYPE, "unexpected PDU type")),
        };
        let is_ic = t == pdu_type::IC_REQ || t == pdu_type::IC_RESP;
        let is_term = t == pdu_type::H2C_TERM_REQ || t == pdu_type::C2H_TERM_REQ;
        if is_ic && self.ic_done {
            return Err(PduError::sequence("second connection initialization PDU"));
        }
        if !is_ic && !is_term && !self.ic_done {
            return Err(PduError::sequence("PDU before connection initialization"));
        }
        if hlen != info.hlen {
            return Err(PduError::field(
                field_off::HLEN,
                "HLEN does not match the PDU type",
            ));
        }
        if is_ic {
            if plen != IC_HLEN {
                return Err(PduError::field(field_off::PLEN, "IC PDU length is not 128"));
            }
            self.hlen = hlen;
            self.need = IC_HLEN;
            return Ok(());
        }
        if is_term {
            if !(TERM_REQ_HLEN..=TERM_REQ_MAX_PLEN).contains(&plen) {
                return Err(PduError::field(
                    field_off::PLEN,
                    "Term Req length out of range",
                ));
            }
            self.hlen = hlen;
            self.need = hlen;
            self.data_len = (plen - hlen) as u32;
            return Ok(());
        }

        // Digests are all-or-nothing per connection: the flag must match the negotiation.
        let hd = flags.contains(PduFlags::HDGSTF);
        if info.digests && hd != self.cfg.hdgst {
            return Err(PduError::field(
                field_off::FLAGS,
                "HDGSTF does not match negotiation",
            ));
        }
        let header_end = hlen + if hd { DIGEST_LEN } else { 0 };
        if plen < header_end {
            return Err(PduError::field(
                field_off::PLEN,
                "PLEN shorter than the header",
            ));
        }
        let mut collect = header_end;
        let mut data_len = 0usize;
        if plen > header_end {
            if !info.carries_data {
                return Err(PduError::field(
                    field_off::PLEN,
                    "PLEN leaves data on a PDU without data",
                ));
            }
            if pdo < header_end || pdo >= plen {
                return Err(PduError::field(field_off::PDO, "PDO outside the PDU"));
            }
            if !pdo.is_multiple_of(pda_bytes(self.cfg.pda)) {
                return Err(PduError::field(
                    field_off::PDO,
                    "PDO violates the data alignment",
                ));
            }
            let dd = flags.contains(PduFlags::DDGSTF);
            if dd != self.cfg.ddgst {
                return Err(PduError::field(
                    field_off::FLAGS,
                    "DDGSTF does not match negotiation",
                ));
            }
            let dd_len = if dd { DIGEST_LEN } else { 0 };
            if plen < pdo + dd_len + 1 {
                return Err(PduError::field(
                    field_off::PLEN,
                    "PLEN leaves no room for data",
                ));
            }
            data_len = plen - pdo - dd_len;
            collect = pdo;
            let limit = match t {
                pdu_type::CAPSULE_CMD => self.cfg.max_in_capsule,
                _ => self.cfg.max_data_pdu,
            };
            if data_len > limit as usize {
                return Err(match self.role {
                    Role::Target => PduError::new(
                        Fes::DATA_TRANSFER_LIMIT_EXCEEDED,
                        0,
                        "PDU data exceeds the negotiated limit",
                    ),
                    Role::Host => PduError::new(
                        Fes::DATA_TRANSFER_OUT_OF_RANGE,
                        0,
                        "PDU data exceeds the largest transfer",
                    ),
                });
            }
            self.has_ddgst = dd;
        }
        self.hlen = hlen;
        self.has_hdgst = hd;
        self.need = collect;
        self.data_len = data_len as u32;
        Ok(())
    }

    /// DATAL of a data PDU must be the (non-zero) data length that PLEN and PDO leave.
    fn check_datal(&self, datal: u32) -> Result<(), PduError> {
        if datal != self.data_len || datal == 0 {
            return Err(PduError::field(
                field_off::DATAL,
                "DATAL does not match the PDU length",
            ));
        }
        Ok(())
    }

    /// The whole header (and padding) is in: checks the header digest, decodes the typed
    /// header and its field rules, and moves to the data (if any).
    fn finish_header(&mut self) -> Result<RxEvent<'static>, PduError> {
        let hlen = self.hlen;
        if self.has_hdgst {
            let want = header_digest(&self.hdr[..hlen]);
            if self.hdr[hlen..hlen + DIGEST_LEN] != want {
                return Err(PduError::new(
                    Fes::HEADER_DIGEST_ERROR,
                    0,
                    "header digest mismatch",
                ));
            }
        }
        let h = &self.hdr[..];
        let ch = layout::<CommonHeader>(h)?;
        let flags = ch.flags;
        let t = ch.pdu_type;
        // check_common_header admitted only known types, each with its own HLEN, and the
        // whole header is in `h`: every layout below fits.
        let header = match t {
            pdu_type::IC_REQ | pdu_type::IC_RESP => {
                let p = layout::<IcPdu>(h)?;
                let pfv = p.pfv.get();
                if pfv != PFV_1_0 {
                    return Err(PduError::new(
                        Fes::UNSUPPORTED_PARAMETER,
                        field_off::PFV,
                        "unsupported PDU format version",
                    ));
                }
                let pda = p.pda;
                if pda > MAX_PDA {
                    return Err(PduError::field(
                        field_off::PDA,
                        "PDU data alignment above 31",
                    ));
                }
                let hdgst = p.dgst.contains(DigestFlags::HDGST);
                let ddgst = p.dgst.contains(DigestFlags::DDGST);
                let limit = p.limit.get();
                self.ic_done = true;
                if t == pdu_type::IC_REQ {
                    PduHeader::IcReq(IcReq {
                        pfv,
                        hpda: pda,
                        hdgst,
                        ddgst,
                        maxr2t: limit,
                    })
                } else {
                    if limit < MIN_MAXH2CDATA || !limit.is_multiple_of(4) {
                        return Err(PduError::field(field_off::IC_LIMIT, "invalid MAXH2CDATA"));
                    }
                    PduHeader::IcResp(IcResp {
                        pfv,
                        cpda: pda,
                        hdgst,
                        ddgst,
                        maxh2cdata: limit,
                    })
                }
            }
            pdu_type::H2C_TERM_REQ | pdu_type::C2H_TERM_REQ => {
                let p = layout::<TermReqHdr>(h)?;
                let term = TermReq {
                    fes: Fes(p.fes.get()),
                    fei: p.fei.get(),
                };
                if t == pdu_type::H2C_TERM_REQ {
                    PduHeader::H2CTermReq(term)
                } else {
                    PduHeader::C2HTermReq(term)
                }
            }
            pdu_type::CAPSULE_CMD => {
                let p = layout::<CapsuleCmdHdr>(h)?;
                PduHeader::CapsuleCmd(p.sqe)
            }
            pdu_type::CAPSULE_RESP => {
                let p = layout::<CapsuleRespHdr>(h)?;
                PduHeader::CapsuleResp(p.cqe)
            }
            pdu_type::H2C_DATA => {
                let p = layout::<DataHdr>(h)?;
                let d = H2CData {
                    cccid: p.cccid.get(),
                    ttag: p.ttag.get(),
                    datao: p.datao.get(),
                    datal: p.datal.get(),
                    last: flags.contains(PduFlags::LAST_PDU),
                };
                self.check_datal(d.datal)?;
                PduHeader::H2CData(d)
            }
            pdu_type::C2H_DATA => {
                let p = layout::<DataHdr>(h)?;
                let d = C2HData {
                    cccid: p.cccid.get(),
                    datao: p.datao.get(),
                    datal: p.datal.get(),
                    last: flags.contains(PduFlags::LAST_PDU),
                    success: flags.contains(PduFlags::SUCCESS),
                };
                self.check_datal(d.datal)?;
                if d.success && !d.last {
                    return Err(PduError::field(
                        field_off::FLAGS,
                        "SUCCESS without LAST_PDU",
                    ));
                }
                PduHeader::C2HData(d)
            }
            pdu_type::R2T => {
                let p = layout::<DataHdr>(h)?;
                let r = R2T {
                    cccid: p.cccid.get(),
                    ttag: p.ttag.get(),
                    r2to: p.datao.get(),
                    r2tl: p.datal.get(),
                };
                if r.r2tl == 0 {
                    return Err(PduError::field(field_off::DATAL, "R2T of zero length"));
                }
                PduHeader::R2T(r)
            }
            // check_common_header admitted only the types above.
            _ => return Err(PduError::field(field_off::PDU_TYPE, "unexpected PDU type")),
        };
        let data_len = self.data_len;
        if data_len == 0 {
            self.reset_for_next_pdu();
        } else {
            self.state = RxState::Data;
        }
        Ok(RxEvent::Header { header, data_len })
    }
}

/// `data_received` was given more bytes than the current PDU still expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataOverrun;
