//! Tests of the NVMe/TCP PDU codec.
//!
//! Tests of the NVMe/TCP PDU codec: byte layouts, round trips of every PDU type with and
//! without digests and alignment, every decoder error with its FES/FEI, the direct-receive
//! path for large data, and seeded property tests (random streams in random splits, random
//! corruption, random bytes) that must never panic.

use super::*;
use crate::nvmf::wire::digest::digest_of;
use crate::nvmf::wire::{io_opc, SglDescriptor, Status};

/// The little-endian u32 at byte `off`. The layout tests below check the codec against the
/// specification's byte positions on purpose, independently of the `#[repr(C)]` types.
fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// A tiny deterministic PRNG (xorshift64*), so property tests need no dependency and every
/// failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn target_cfg(hdgst: bool, ddgst: bool) -> RxConfig {
    RxConfig {
        hdgst,
        ddgst,
        pda: 0,
        max_data_pdu: 128 * 1024,
        max_in_capsule: 8192,
    }
}

fn tx(hdgst: bool, ddgst: bool, pda: u8) -> TxConfig {
    TxConfig { hdgst, ddgst, pda }
}

fn icreq(hdgst: bool, ddgst: bool) -> PduHeader {
    PduHeader::IcReq(IcReq {
        pfv: 0,
        hpda: 0,
        hdgst,
        ddgst,
        maxr2t: 0,
    })
}

fn icresp(hdgst: bool, ddgst: bool) -> PduHeader {
    PduHeader::IcResp(IcResp {
        pfv: 0,
        cpda: 0,
        hdgst,
        ddgst,
        maxh2cdata: 131072,
    })
}

fn write_cmd(cid: u16, len: u32, in_capsule: bool) -> PduHeader {
    let mut sqe = Sqe::new(io_opc::WRITE, cid, 1);
    sqe.set_lba_range(cid as u64 * 8, len.div_ceil(512));
    sqe.dptr = if in_capsule {
        SglDescriptor::in_capsule(0, len)
    } else {
        SglDescriptor::transport_data_block(len)
    };
    PduHeader::CapsuleCmd(sqe)
}

/// Decodes `stream` fed in the given chunk sizes (cycled), mixing feed() with the
/// direct-receive path when `direct` is set, and returns the PDUs and the first error.
fn decode_split(
    role: Role,
    cfg: RxConfig,
    stream: &[u8],
    rng: &mut Rng,
    direct: bool,
) -> (Vec<DecodedPdu>, Result<(), PduError>) {
    let mut dec = PduDecoder::with_config(role, cfg);
    let mut asm = PduAssembler::default();
    let mut pos = 0;
    loop {
        let chunk = 1 + rng.below(300) as usize;
        let end = (pos + chunk).min(stream.len());
        let mut input = &stream[pos..end];
        pos = end;
        loop {
            if direct && rng.bool() {
                if let Some(p) = dec.data_pending() {
                    // "recv" straight into the PDU's own buffer.
                    let n = (p.len as usize).min(input.len());
                    assert_eq!(asm.current_data_len(), Some(p.offset as usize));
                    asm.extend_data(&input[..n]);
                    dec.data_received(&input[..n]).unwrap();
                    input = &input[n..];
                }
            }
            match dec.feed(input) {
                Err(e) => return (asm.pdus, Err(e)),
                Ok((_, None)) => break,
                Ok((used, Some(ev))) => {
                    input = &input[used..];
                    if let RxEvent::Data { offset, .. } = ev {
                        assert_eq!(asm.current_data_len(), Some(offset as usize));
                    }
                    asm.on_event(&mut dec, ev);
                }
            }
        }
        if pos == stream.len() {
            return (asm.pdus, Ok(()));
        }
    }
}

#[test]
fn icreq_and_icresp_layout() {
    let b = encode_pdu(
        &PduHeader::IcReq(IcReq {
            pfv: 0,
            hpda: 3,
            hdgst: true,
            ddgst: false,
            maxr2t: 7,
        }),
        &[],
        &tx(true, true, 0),
    )
    .unwrap();
    assert_eq!(b.len(), 128, "IC PDUs never carry digests");
    assert_eq!(&b[..8], &[0, 0, 128, 0, 128, 0, 0, 0]);
    assert_eq!(b[10], 3);
    assert_eq!(b[11], 0b01);
    assert_eq!(&b[12..16], &7u32.to_le_bytes());
    assert!(b[16..].iter().all(|&x| x == 0));
    let b = encode_pdu(&icresp(true, true), &[], &TxConfig::default()).unwrap();
    assert_eq!(&b[..4], &[1, 0, 128, 0]);
    assert_eq!(b[11], 0b11);
    assert_eq!(&b[12..16], &131072u32.to_le_bytes());
    let (pdus, r) = decode_all(Role::Host, RxConfig::default(), &b);
    r.unwrap();
    assert_eq!(pdus[0].header, icresp(true, true));
}

#[test]
fn capsule_cmd_layout_with_digests_and_alignment() {
    let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let cmd = write_cmd(5, 1000, true);
    // Header digest and data digest, no extra alignment: PDO = 72 + 4.
    let b = encode_pdu(&cmd, &[&data[..300], &data[300..]], &tx(true, true, 0)).unwrap();
    assert_eq!(b[0], pdu_type::CAPSULE_CMD);
    assert_eq!(b[1], pdu_flags::HDGSTF | pdu_flags::DDGSTF);
    assert_eq!((b[2], b[3]), (72, 76));
    assert_eq!(le32(&b, 4) as usize, 76 + 1000 + 4);
    assert_eq!(&b[72..76], &header_digest(&b[..72]));
    assert_eq!(&b[76..1076], &data[..]);
    assert_eq!(&b[1076..], &digest_of(&[&data]));
    // A host asking for 32-byte alignment (HPDA/CPDA 7): PDO = 96, zero padding.
    let b = encode_pdu(&cmd, &[&data], &tx(true, false, 7)).unwrap();
    assert_eq!(b[3], 96);
    assert!(b[76..96].iter().all(|&x| x == 0));
    assert_eq!(le32(&b, 4), 96 + 1000);
    let cfg = RxConfig {
        pda: 7,
        ..target_cfg(true, false)
    };
    let mut stream = encode_pdu(&icreq(true, false), &[], &TxConfig::default()).unwrap();
    stream.extend_from_slice(&b);
    let (pdus, r) = decode_all(Role::Target, cfg, &stream);
    r.unwrap();
    assert_eq!(pdus[1].header, cmd);
    assert_eq!(pdus[1].data, data);
    // Without data: PDO 0, PLEN = HLEN (+ digest), no DDGSTF.
    let b = encode_pdu(&write_cmd(1, 4096, false), &[], &tx(true, true, 0)).unwrap();
    assert_eq!((b[1], b[3], le32(&b, 4)), (pdu_flags::HDGSTF, 0, 76));
}

#[test]
fn data_pdus_and_r2t_layout() {
    let d = C2HData {
        cccid: 9,
        datao: 4096,
        datal: 8,
        last: true,
        success: true,
    };
    let b = encode_pdu(&PduHeader::C2HData(d), &[b"abcdefgh"], &TxConfig::default()).unwrap();
    assert_eq!(&b[..8], &[7, 0x0c, 24, 24, 32, 0, 0, 0]);
    assert_eq!(&b[8..10], &9u16.to_le_bytes());
    assert_eq!(&b[12..16], &4096u32.to_le_bytes());
    assert_eq!(&b[16..20], &8u32.to_le_bytes());
    let r = R2T {
        cccid: 3,
        ttag: 0x77,
        r2to: 0,
        r2tl: 65536,
    };
    let b = encode_pdu(&PduHeader::R2T(r), &[], &tx(true, true, 0)).unwrap();
    assert_eq!(&b[..8], &[9, 1, 24, 0, 28, 0, 0, 0]);
    assert_eq!(&b[10..12], &0x77u16.to_le_bytes());
    let h = H2CData {
        cccid: 3,
        ttag: 0x77,
        datao: 0,
        datal: 16,
        last: true,
    };
    let b = encode_pdu(&PduHeader::H2CData(h), &[&[1; 16]], &tx(false, true, 0)).unwrap();
    assert_eq!(&b[..4], &[6, 0x06, 24, 24]);
    assert_eq!(b.len(), 24 + 16 + 4);
    // Encoding errors are reported, not panics.
    let mut hb = [0u8; MAX_HEADER_LEN];
    assert_eq!(
        encode_header(&PduHeader::H2CData(h), 15, &TxConfig::default(), &mut hb),
        Err(EncodeError::LengthMismatch)
    );
    assert_eq!(
        encode_header(&PduHeader::R2T(r), 1, &TxConfig::default(), &mut hb),
        Err(EncodeError::DataNotAllowed)
    );
    assert_eq!(
        encode_header(&icreq(false, false), 0, &tx(false, false, 32), &mut hb),
        Err(EncodeError::BadAlignment)
    );
}

#[test]
fn term_req_encode_decode() {
    let err = PduError::field(field_off::HLEN, "x");
    let offending = [0xaau8; 200];
    let mut out = [0u8; TERM_REQ_MAX_PLEN];
    let n = encode_term_req(Role::Target, &err, &offending, &mut out);
    assert_eq!(n, 152);
    assert_eq!(&out[..8], &[3, 0, 24, 0, 152, 0, 0, 0]);
    assert_eq!(&out[8..10], &1u16.to_le_bytes());
    assert_eq!(&out[10..14], &2u32.to_le_bytes());
    let (pdus, r) = decode_all(Role::Host, RxConfig::default(), &out[..n]);
    r.unwrap();
    assert_eq!(
        pdus[0].header,
        PduHeader::C2HTermReq(TermReq {
            fes: Fes::INVALID_HEADER_FIELD,
            fei: 2
        })
    );
    assert_eq!(pdus[0].data, vec![0xaa; 128]);
    let n = encode_term_req(Role::Host, &err, &offending[..10], &mut out);
    assert_eq!((n, out[0]), (34, pdu_type::H2C_TERM_REQ));
    let (pdus, r) = decode_all(Role::Target, RxConfig::default(), &out[..n]);
    r.unwrap();
    assert_eq!(pdus[0].data.len(), 10);
}

/// Every PDU type of one direction, with random digests, alignment and data sizes.
fn random_stream(
    rng: &mut Rng,
    role_of_receiver: Role,
    n: usize,
) -> (Vec<u8>, Vec<DecodedPdu>, RxConfig) {
    let hdgst = rng.bool();
    let ddgst = rng.bool();
    let pda = [0u8, 0, 1, 7, 31][rng.below(5) as usize];
    let cfg = RxConfig {
        pda,
        ..target_cfg(false, false)
    };
    let txc = tx(hdgst, ddgst, pda);
    let mut stream = Vec::new();
    let mut expect = Vec::new();
    let mut push = |h: PduHeader, data: Vec<u8>, c: &TxConfig| {
        stream.extend_from_slice(&encode_pdu(&h, &[&data], c).unwrap());
        expect.push(DecodedPdu {
            header: h,
            data,
            data_digest_ok: true,
        });
    };
    let ic = match role_of_receiver {
        Role::Target => icreq(hdgst, ddgst),
        Role::Host => icresp(hdgst, ddgst),
    };
    push(ic, Vec::new(), &TxConfig::default());
    for i in 0..n {
        let cid = i as u16;
        let size = [1usize, 7, 512, 4096, 8192, 70_000, 131_072][rng.below(7) as usize];
        match (role_of_receiver, rng.below(4)) {
            (Role::Target, 0) => push(write_cmd(cid, 0, false), Vec::new(), &txc),
            (Role::Target, 1) => {
                let len = size.min(8192);
                push(write_cmd(cid, len as u32, true), rng.bytes(len), &txc)
            }
            (Role::Target, 2) => {
                let h = H2CData {
                    cccid: cid,
                    ttag: rng.next() as u16,
                    datao: rng.next() as u32,
                    datal: size as u32,
                    last: rng.bool(),
                };
                push(PduHeader::H2CData(h), rng.bytes(size), &txc)
            }
            (Role::Host, 0) => {
                let mut cqe = Cqe::new(cid, Status(rng.next() as u16 & 0x7fff));
                cqe.dw0 = (rng.next() as u32).into();
                cqe.dw1 = (rng.next() as u32).into();
                cqe.sqhd = (rng.next() as u16).into();
                cqe.sqid = (rng.next() as u16).into();
                cqe.set_phase(rng.bool());
                push(PduHeader::CapsuleResp(cqe), Vec::new(), &txc)
            }
            (Role::Host, 1) => {
                let last = rng.bool();
                let d = C2HData {
                    cccid: cid,
                    datao: rng.next() as u32,
                    datal: size as u32,
                    last,
                    success: last && rng.bool(),
                };
                push(PduHeader::C2HData(d), rng.bytes(size), &txc)
            }
            (Role::Host, 2) => {
                let r = R2T {
                    cccid: cid,
                    ttag: rng.next() as u16,
                    r2to: rng.next() as u32,
                    r2tl: 1 + rng.below(1 << 20) as u32,
                };
                push(PduHeader::R2T(r), Vec::new(), &txc)
            }
            // A Term Req may only end a stream; use a second capsule instead mid-stream.
            (Role::Target, _) => push(write_cmd(cid, 512, true), rng.bytes(512), &txc),
            (Role::Host, _) => push(
                PduHeader::CapsuleResp(Cqe::new(cid, Status::SUCCESS)),
                Vec::new(),
                &txc,
            ),
        }
    }
    (stream, expect, cfg)
}

#[test]
fn random_streams_in_random_splits_round_trip() {
    for seed in 0..60u64 {
        let mut rng = Rng::new(seed);
        let role = if seed % 2 == 0 {
            Role::Target
        } else {
            Role::Host
        };
        let (stream, expect, cfg) = random_stream(&mut rng, role, 12);
        let (whole, r) = decode_all(role, cfg, &stream);
        r.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(whole, expect, "seed {seed} (contiguous)");
        for direct in [false, true] {
            let (split, r) = decode_split(role, cfg, &stream, &mut rng, direct);
            r.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert_eq!(split, expect, "seed {seed} (split, direct {direct})");
        }
    }
}

#[test]
fn large_h2c_data_lands_in_caller_buffer() {
    let data: Vec<u8> = (0..131_072u32).map(|i| (i * 13) as u8).collect();
    let h = H2CData {
        cccid: 1,
        ttag: 2,
        datao: 0,
        datal: data.len() as u32,
        last: true,
    };
    let mut hbuf = [0u8; MAX_HEADER_LEN];
    let txc = tx(true, true, 0);
    let enc = encode_header(&PduHeader::H2CData(h), h.datal, &txc, &mut hbuf).unwrap();
    let mut dec = PduDecoder::with_config(Role::Target, target_cfg(true, true));
    dec.ic_done = true;
    // The header arrives; the socket then receives straight into the I/O buffer.
    let (used, ev) = dec.feed(&hbuf[..enc.len]).unwrap();
    assert_eq!(used, enc.len);
    assert_eq!(
        ev,
        Some(RxEvent::Header {
            header: PduHeader::H2CData(h),
            data_len: 131_072
        })
    );
    let mut io_buf = vec![0u8; 131_072];
    while let Some(p) = dec.data_pending() {
        let n = (p.len as usize).min(10_000);
        let dst = &mut io_buf[p.offset as usize..p.offset as usize + n];
        dst.copy_from_slice(&data[p.offset as usize..p.offset as usize + n]); // the recv()
        dec.data_received(dst).unwrap();
    }
    assert_eq!(dec.data_received(&[0]), Err(DataOverrun));
    let dg = digest_of(&[&data]);
    assert_eq!(dec.feed(&dg[..1]).unwrap(), (1, None));
    assert_eq!(
        dec.feed(&dg[1..]).unwrap(),
        (3, Some(RxEvent::DataEnd { digest_ok: true }))
    );
    assert!(dec.at_pdu_boundary());
    assert_eq!(io_buf, data);
}

#[test]
fn data_digest_mismatch_is_reported_and_stream_stays_in_sync() {
    let mut stream = encode_pdu(&icreq(false, true), &[], &TxConfig::default()).unwrap();
    let mut bad = encode_pdu(&write_cmd(1, 100, true), &[&[5; 100]], &tx(false, true, 0)).unwrap();
    let n = bad.len();
    bad[n - 10] ^= 0x40; // flip a data bit
    stream.extend_from_slice(&bad);
    stream.extend_from_slice(
        &encode_pdu(&write_cmd(2, 4, true), &[&[6; 4]], &tx(false, true, 0)).unwrap(),
    );
    let (pdus, r) = decode_all(Role::Target, target_cfg(false, false), &stream);
    r.unwrap();
    assert_eq!(pdus.len(), 3);
    assert!(!pdus[1].data_digest_ok);
    assert!(pdus[2].data_digest_ok);
}

/// Decodes `pdu` after a valid IC exchange (unless `with_ic` is false) and returns the error.
fn target_error(pdu: &[u8], cfg: RxConfig, with_ic: bool) -> PduError {
    let mut stream = Vec::new();
    if with_ic {
        stream = encode_pdu(&icreq(cfg.hdgst, cfg.ddgst), &[], &TxConfig::default()).unwrap();
    }
    stream.extend_from_slice(pdu);
    let (_, r) = decode_all(Role::Target, cfg, &stream);
    r.expect_err("the PDU must be rejected")
}

fn fes_fei(e: &PduError) -> (Fes, u32) {
    (e.fes, e.fei)
}

#[test]
fn every_header_error_names_its_fes_and_field() {
    let cfg = target_cfg(false, false);
    let good = encode_pdu(&write_cmd(1, 64, true), &[&[0; 64]], &TxConfig::default()).unwrap();

    // PDU type a target never receives, and an undefined type.
    let resp = encode_pdu(
        &PduHeader::CapsuleResp(Cqe::default()),
        &[],
        &TxConfig::default(),
    )
    .unwrap();
    assert_eq!(
        fes_fei(&target_error(&resp, cfg, true)),
        (Fes::INVALID_HEADER_FIELD, 0)
    );
    let mut b = good.clone();
    b[0] = 0x0b;
    assert_eq!(
        fes_fei(&target_error(&b, cfg, true)),
        (Fes::INVALID_HEADER_FIELD, 0)
    );
    // HLEN.
    let mut b = good.clone();
    b[2] = 80;
    assert_eq!(
        fes_fei(&target_error(&b, cfg, true)),
        (Fes::INVALID_HEADER_FIELD, 2)
    );
    // PDO inside the header, beyond PLEN, misaligned for the PDA we announced.
    let mut b = good.clone();
    b[3] = 70;
    assert_eq!(
        fes_fei(&target_error(&b, cfg, true)),
        (Fes::INVALID_HEADER_FIELD, 3)
    );
    let mut b = good.clone();
    b[3] = 200;
    assert_eq!(
        fes_fei(&target_error(&b, cfg, true)),
        (Fes::INVALID_HEADER_FIELD, 3)
    );
    let aligned = RxConfig { pda: 7, ..cfg };
    assert_eq!(
        fes_fei(&target_error(&good, aligned, true)),
        (Fes::INVALID_HEADER_FIELD, 3)
    );
    // PLEN shorter than the header; data on a PDU type without data.
    let mut b = good.clone();
    b[4..8].copy_from_slice(&10u32.to_le_bytes());
    assert_eq!(
        fes_fei(&target_error(&b, cfg, true)),
        (Fes::INVALID_HEADER_FIELD, 4)
    );
    let mut ic = encode_pdu(&icreq(false, false), &[], &TxConfig::default()).unwrap();
    ic[4] = 129;
    assert_eq!(
        fes_fei(&target_error(&ic, cfg, false)),
        (Fes::INVALID_HEADER_FIELD, 4)
    );
    // Digest flags that contradict the negotiation.
    let hd = encode_pdu(&write_cmd(1, 64, true), &[&[0; 64]], &tx(true, false, 0)).unwrap();
    assert_eq!(
        fes_fei(&target_error(&hd, cfg, true)),
        (Fes::INVALID_HEADER_FIELD, 1)
    );
    let dd = encode_pdu(&write_cmd(1, 64, true), &[&[0; 64]], &tx(false, true, 0)).unwrap();
    assert_eq!(
        fes_fei(&target_error(&dd, cfg, true)),
        (Fes::INVALID_HEADER_FIELD, 1)
    );
    assert_eq!(
        fes_fei(&target_error(&good, target_cfg(false, true), true)),
        (Fes::INVALID_HEADER_FIELD, 1)
    );
    // Header digest error.
    let mut b = encode_pdu(&write_cmd(1, 64, true), &[&[0; 64]], &tx(true, false, 0)).unwrap();
    b[20] ^= 1;
    assert_eq!(
        fes_fei(&target_error(&b, target_cfg(true, false), true)),
        (Fes::HEADER_DIGEST_ERROR, 0)
    );
    // Sequence: command before ICReq, second ICReq.
    assert_eq!(target_error(&good, cfg, false).fes, Fes::PDU_SEQUENCE_ERROR);
    let second_ic = encode_pdu(&icreq(false, false), &[], &TxConfig::default()).unwrap();
    assert_eq!(
        target_error(&second_ic, cfg, true).fes,
        Fes::PDU_SEQUENCE_ERROR
    );
    // ICReq parameters.
    let mut b = encode_pdu(&icreq(false, false), &[], &TxConfig::default()).unwrap();
    b[8] = 1;
    assert_eq!(
        fes_fei(&target_error(&b, cfg, false)),
        (Fes::UNSUPPORTED_PARAMETER, 8)
    );
    let mut b = encode_pdu(&icreq(false, false), &[], &TxConfig::default()).unwrap();
    b[10] = 32;
    assert_eq!(
        fes_fei(&target_error(&b, cfg, false)),
        (Fes::INVALID_HEADER_FIELD, 10)
    );
    // Data limits: in-capsule and MAXH2CDATA.
    let small = RxConfig {
        max_in_capsule: 32,
        max_data_pdu: 4096,
        ..cfg
    };
    assert_eq!(
        fes_fei(&target_error(&good, small, true)),
        (Fes::DATA_TRANSFER_LIMIT_EXCEEDED, 0)
    );
    let h = H2CData {
        cccid: 1,
        ttag: 1,
        datao: 0,
        datal: 4100,
        last: true,
    };
    let big = encode_pdu(&PduHeader::H2CData(h), &[&[0; 4100]], &TxConfig::default()).unwrap();
    assert_eq!(
        fes_fei(&target_error(&big, small, true)),
        (Fes::DATA_TRANSFER_LIMIT_EXCEEDED, 0)
    );
    // DATAL that disagrees with PLEN.
    let mut b = big.clone();
    b[16..20].copy_from_slice(&4000u32.to_le_bytes());
    assert_eq!(
        fes_fei(&target_error(&b, cfg, true)),
        (Fes::INVALID_HEADER_FIELD, 16)
    );
    // Errors are sticky and the offending header is available for the Term Req.
    let mut dec = PduDecoder::with_config(Role::Target, cfg);
    let e1 = dec.feed(&good).unwrap_err();
    assert_eq!(dec.feed(&[]).unwrap_err(), e1);
    assert_eq!(dec.error_header(), &good[..8]);
}

#[test]
fn host_side_errors() {
    let cfg = RxConfig {
        max_data_pdu: 4096,
        ..RxConfig::default()
    };
    let mut resp = encode_pdu(&icresp(false, false), &[], &TxConfig::default()).unwrap();
    resp[12..16].copy_from_slice(&1024u32.to_le_bytes());
    let (_, r) = decode_all(Role::Host, cfg, &resp);
    assert_eq!(fes_fei(&r.unwrap_err()), (Fes::INVALID_HEADER_FIELD, 12));
    let mut stream = encode_pdu(&icresp(false, false), &[], &TxConfig::default()).unwrap();
    let d = C2HData {
        cccid: 1,
        datao: 0,
        datal: 8192,
        last: true,
        success: false,
    };
    stream.extend_from_slice(
        &encode_pdu(&PduHeader::C2HData(d), &[&[0; 8192]], &TxConfig::default()).unwrap(),
    );
    let (_, r) = decode_all(Role::Host, cfg, &stream);
    assert_eq!(r.unwrap_err().fes, Fes::DATA_TRANSFER_OUT_OF_RANGE);
    // SUCCESS without LAST_PDU.
    let mut stream = encode_pdu(&icresp(false, false), &[], &TxConfig::default()).unwrap();
    let mut b = encode_pdu(
        &PduHeader::C2HData(C2HData { datal: 4, ..d }),
        &[&[0; 4]],
        &TxConfig::default(),
    )
    .unwrap();
    b[1] = pdu_flags::SUCCESS;
    stream.extend_from_slice(&b);
    let (_, r) = decode_all(Role::Host, cfg, &stream);
    assert_eq!(fes_fei(&r.unwrap_err()), (Fes::INVALID_HEADER_FIELD, 1));
    // A host never receives a CapsuleCmd.
    let mut stream = encode_pdu(&icresp(false, false), &[], &TxConfig::default()).unwrap();
    stream.extend_from_slice(
        &encode_pdu(&write_cmd(1, 0, false), &[], &TxConfig::default()).unwrap(),
    );
    let (_, r) = decode_all(Role::Host, cfg, &stream);
    assert_eq!(fes_fei(&r.unwrap_err()), (Fes::INVALID_HEADER_FIELD, 0));
}

#[test]
fn context_checks_for_state_machines() {
    let r2t = R2T {
        cccid: 4,
        ttag: 9,
        r2to: 8192,
        r2tl: 8192,
    };
    let h = H2CData {
        cccid: 4,
        ttag: 9,
        datao: 8192,
        datal: 4096,
        last: false,
    };
    check_h2c_data(&h, &r2t, 8192).unwrap();
    check_h2c_data(&H2CData { datao: 12288, ..h }, &r2t, 12288).unwrap();
    assert_eq!(
        check_h2c_data(
            &H2CData {
                datao: 12288,
                datal: 8192,
                ..h
            },
            &r2t,
            12288
        )
        .unwrap_err()
        .fes,
        Fes::DATA_TRANSFER_OUT_OF_RANGE
    );
    assert_eq!(
        check_h2c_data(&h, &r2t, 0).unwrap_err().fes,
        Fes::DATA_TRANSFER_OUT_OF_RANGE
    );
    assert_eq!(
        fes_fei(&check_h2c_data(&H2CData { ttag: 1, ..h }, &r2t, 8192).unwrap_err()),
        (Fes::INVALID_HEADER_FIELD, 10)
    );
    assert_eq!(
        fes_fei(&check_h2c_data(&H2CData { cccid: 1, ..h }, &r2t, 8192).unwrap_err()),
        (Fes::INVALID_HEADER_FIELD, 8)
    );
    let c = C2HData {
        cccid: 1,
        datao: 0,
        datal: 4096,
        last: true,
        success: true,
    };
    check_c2h_data(&c, 4096, 0).unwrap();
    assert_eq!(
        check_c2h_data(&c, 2048, 0).unwrap_err().fes,
        Fes::DATA_TRANSFER_OUT_OF_RANGE
    );
    assert_eq!(
        check_c2h_data(
            &C2HData {
                datao: u32::MAX,
                ..c
            },
            4096,
            0
        )
        .unwrap_err()
        .fes,
        Fes::DATA_TRANSFER_OUT_OF_RANGE
    );
    check_r2t(&r2t, 16384, 0, 0).unwrap();
    assert_eq!(
        check_r2t(&r2t, 16384, 1, 0).unwrap_err().fes,
        Fes::R2T_LIMIT_EXCEEDED
    );
    assert_eq!(
        check_r2t(&r2t, 12288, 0, 0).unwrap_err().fes,
        Fes::DATA_TRANSFER_OUT_OF_RANGE
    );
}

#[test]
fn corruption_gives_errors_not_panics() {
    let mut detected = 0;
    for seed in 0..300u64 {
        let mut rng = Rng::new(seed + 1000);
        let role = if seed % 2 == 0 {
            Role::Target
        } else {
            Role::Host
        };
        let (mut stream, expect, cfg) = random_stream(&mut rng, role, 4);
        let flips = 1 + rng.below(4);
        for _ in 0..flips {
            let i = rng.below(stream.len() as u64) as usize;
            stream[i] ^= 1 << rng.below(8);
        }
        if rng.bool() {
            stream.truncate(rng.below(stream.len() as u64) as usize);
        }
        let direct = rng.bool();
        let (got, r) = decode_split(role, cfg, &stream, &mut rng, direct);
        if r.is_err() || got != expect {
            detected += 1;
        }
    }
    // Nearly every corruption is visible (an error, a digest failure, or different PDUs).
    assert!(detected > 250, "only {detected} of 300 corruptions visible");
}

#[test]
fn fuzz_entry_never_panics_on_random_or_mutated_input() {
    let mut rng = Rng::new(42);
    for _ in 0..3000 {
        let n = rng.below(600) as usize;
        fuzz_decode(&rng.bytes(n));
    }
    let mut complete = 0;
    let mut mutated_pdus = 0;
    for seed in 0..300u64 {
        let role = if seed % 2 == 0 {
            Role::Target
        } else {
            Role::Host
        };
        let (stream, expect, _) = random_stream(&mut rng, role, 3);
        // Setup byte: role bit, no preset digests (the IC PDU brings them), random chunking.
        let setup = (seed % 2) as u8 | ((rng.next() as u8) & 0x78);
        let mut input = vec![setup];
        input.extend_from_slice(&stream);
        // Unmutated, every PDU comes out whatever the chunking.
        if fuzz_decode(&input) == expect.len() {
            complete += 1;
        }
        for _ in 0..1 + rng.below(6) {
            let i = 1 + rng.below(input.len() as u64 - 1) as usize;
            input[i] = rng.next() as u8;
        }
        mutated_pdus += fuzz_decode(&input);
    }
    assert_eq!(complete, 300);
    assert!(
        mutated_pdus > 100,
        "mutated streams should still decode partly ({mutated_pdus})"
    );
    assert_eq!(fuzz_decode(&[]), 0);
}

#[test]
fn ic_negotiation_both_sides() {
    let req = IcReq {
        pfv: 0,
        hpda: 3,
        hdgst: true,
        ddgst: true,
        maxr2t: 0,
    };
    let params = TargetIcParams {
        cpda: 1,
        maxh2cdata: 131_073,
        max_in_capsule: 4096,
        allow_hdgst: true,
        allow_ddgst: false,
    };
    let (resp, ttx, trx) = target_negotiate(&req, &params);
    assert_eq!(
        (resp.hdgst, resp.ddgst, resp.cpda, resp.maxh2cdata),
        (true, false, 1, 131_072)
    );
    assert_eq!(ttx, tx(true, false, 3));
    assert_eq!(
        (trx.pda, trx.max_data_pdu, trx.max_in_capsule),
        (1, 131_072, 4096)
    );
    let (htx, hrx) = host_negotiate(&req, &resp, 1 << 20).unwrap();
    assert_eq!(htx, tx(true, false, 1));
    assert_eq!(
        (hrx.hdgst, hrx.ddgst, hrx.pda, hrx.max_data_pdu),
        (true, false, 3, 1 << 20)
    );
    // Each side's sender and the other side's receiver agree: a C2HData made with the
    // target's TxConfig decodes with the host's RxConfig, and vice versa.
    let d = C2HData {
        cccid: 1,
        datao: 0,
        datal: 100,
        last: true,
        success: true,
    };
    let mut s = encode_pdu(&PduHeader::IcResp(resp), &[], &TxConfig::default()).unwrap();
    s.extend_from_slice(&encode_pdu(&PduHeader::C2HData(d), &[&[1; 100]], &ttx).unwrap());
    let mut dec = PduDecoder::new(Role::Host);
    let (n, ev) = dec.feed(&s).unwrap();
    assert!(matches!(
        ev,
        Some(RxEvent::Header {
            header: PduHeader::IcResp(_),
            ..
        })
    ));
    dec.configure(hrx);
    let mut rest = &s[n..];
    let mut data = Vec::new();
    let mut ended = false;
    while let (used, Some(ev)) = dec.feed(rest).unwrap() {
        rest = &rest[used..];
        match ev {
            RxEvent::Header { header, data_len } => {
                assert_eq!((header, data_len), (PduHeader::C2HData(d), 100))
            }
            RxEvent::Data { bytes, .. } => data.extend_from_slice(bytes),
            RxEvent::DataEnd { digest_ok } => ended = digest_ok,
        }
    }
    assert!(ended && data == [1; 100]);
    let h = encode_pdu(&write_cmd(1, 64, true), &[&[0; 64]], &htx).unwrap();
    let mut tdec = PduDecoder::with_config(Role::Target, trx);
    tdec.ic_done = true;
    let (_, ev) = tdec.feed(&h).unwrap();
    assert!(matches!(ev, Some(RxEvent::Header { data_len: 64, .. })));
    // A controller enabling an unrequested digest is refused by the host.
    let bad = IcResp {
        ddgst: true,
        ..resp
    };
    let plain = IcReq {
        ddgst: false,
        ..req
    };
    assert_eq!(
        fes_fei(&host_negotiate(&plain, &bad, 4096).unwrap_err()),
        (Fes::INVALID_HEADER_FIELD, 11)
    );
}

/// Throughput of the decoder, for the report (run with `--ignored --nocapture`, in release).
/// It checks the decoded counts; the printed rates are informational, never asserted.
#[test]
#[ignore]
fn measure_decoder_throughput() {
    use std::time::Instant;
    // The first pass warms caches and the allocator; it is measured but not meaningful.
    for hdgst in [false, true, false, true] {
        let mut stream = encode_pdu(&icreq(hdgst, false), &[], &TxConfig::default()).unwrap();
        let n = 100_000;
        for i in 0..n {
            let h = write_cmd(i as u16, 4096, false);
            stream.extend_from_slice(&encode_pdu(&h, &[], &tx(hdgst, false, 0)).unwrap());
        }
        let t = Instant::now();
        let mut dec = PduDecoder::new(Role::Target);
        let mut input = &stream[..];
        let mut headers = 0;
        while let (used, Some(ev)) = dec.feed(input).unwrap() {
            input = &input[used..];
            if let RxEvent::Header { .. } = ev {
                headers += 1;
                if headers == 1 {
                    dec.configure(target_cfg(hdgst, false));
                }
            }
        }
        let dt = t.elapsed();
        assert_eq!(headers, n + 1);
        println!(
            "capsule command headers, hdgst {hdgst}: {:.0} ns/PDU",
            dt.as_nanos() as f64 / n as f64
        );
    }
    for ddgst in [false, true] {
        let data = vec![0x5au8; 131_072];
        let h = H2CData {
            cccid: 1,
            ttag: 1,
            datao: 0,
            datal: data.len() as u32,
            last: true,
        };
        let mut hbuf = [0u8; MAX_HEADER_LEN];
        let enc = encode_header(
            &PduHeader::H2CData(h),
            h.datal,
            &tx(false, ddgst, 0),
            &mut hbuf,
        )
        .unwrap();
        let dg = digest_of(&[&data]);
        let mut dec = PduDecoder::with_config(Role::Target, target_cfg(false, ddgst));
        dec.ic_done = true;
        let rounds = 4000;
        let t = Instant::now();
        let mut ok = 0;
        for _ in 0..rounds {
            dec.feed(&hbuf[..enc.len]).unwrap();
            dec.data_received(&data).unwrap();
            let tail: &[u8] = if ddgst { &dg } else { &[] };
            if let (_, Some(RxEvent::DataEnd { digest_ok: true })) = dec.feed(tail).unwrap() {
                ok += 1;
            }
        }
        let dt = t.elapsed();
        assert_eq!(ok, rounds);
        // Without a digest the decoder touches no data byte, so only the per-PDU cost shows.
        println!(
            "128 KiB H2CData via data_received, ddgst {ddgst}: {:.0} ns/PDU, {:.2} GB/s",
            dt.as_nanos() as f64 / rounds as f64,
            (rounds * data.len()) as f64 / dt.as_secs_f64() / 1e9
        );
    }
}
