//! The PDU decoder harness. Input layout: byte 0 is the setup (bit 0 role: 0 target, 1 host;
//! bits 1-2 the header / data digests an IC preamble asks for; bit 3 prepend that IC PDU, so
//! the stream is past connection initialization; bit 4 take data through `data_pending` /
//! `data_received` instead of `feed`; bits 5-7 the PDA the decoder announced), byte 1 the
//! data limits (low nibble: max data PDU = 256 << n, high nibble: max in-capsule = 256 << n),
//! bytes 2-5 the seed of the split sizes, the rest the byte stream. Properties:
//! - `pdu::fuzz_decode` (the codec's own entry point) never panics;
//! - decoding in arbitrary splits yields exactly the PDUs and the error of a whole decode;
//! - every decoded PDU that the encoder accepts re-encodes into a stream that decodes to the
//!   same PDUs (data digests recomputed), so encoder and decoder agree on every field.

use crate::Splits;
use pollux::nvmf::pdu::{
    self, decode_all, encode_pdu, DecodedPdu, IcReq, IcResp, PduAssembler, PduDecoder, PduError,
    PduHeader, Role, RxConfig, TxConfig, PFV_1_0,
};

/// How one input is decoded (parsed from its first bytes).
#[derive(Clone, Copy, Debug)]
struct Setup {
    role: Role,
    hdgst: bool,
    ddgst: bool,
    ic_preamble: bool,
    direct_data: bool,
    cfg: RxConfig,
    split_seed: u32,
}

const SETUP_LEN: usize = 6;

fn setup(head: &[u8; SETUP_LEN]) -> Setup {
    let s = head[0];
    let cfg = RxConfig {
        hdgst: false,
        ddgst: false,
        pda: s >> 5,
        max_data_pdu: 256 << (head[1] & 0xf),
        max_in_capsule: 256 << (head[1] >> 4),
    };
    Setup {
        role: if s & 1 == 0 { Role::Target } else { Role::Host },
        hdgst: s & 2 != 0,
        ddgst: s & 4 != 0,
        ic_preamble: s & 8 != 0,
        direct_data: s & 16 != 0,
        cfg,
        split_seed: u32::from_le_bytes([head[2], head[3], head[4], head[5]]),
    }
}

/// The IC PDU the peer of `role` sends first, asking for the given digests.
fn ic_preamble(role: Role, hdgst: bool, ddgst: bool) -> Vec<u8> {
    let hdr = match role {
        Role::Target => PduHeader::IcReq(IcReq {
            pfv: PFV_1_0,
            hpda: 0,
            hdgst,
            ddgst,
            maxr2t: 0,
        }),
        Role::Host => PduHeader::IcResp(IcResp {
            pfv: PFV_1_0,
            cpda: 0,
            hdgst,
            ddgst,
            maxh2cdata: 8192,
        }),
    };
    encode_pdu(&hdr, &[], &TxConfig::default()).expect("an IC PDU always encodes")
}

/// Decodes `stream` fed in `chunks`, optionally taking PDU data through the direct path.
fn decode_split(
    role: Role,
    cfg: RxConfig,
    chunks: &[&[u8]],
    direct_data: bool,
) -> (Vec<DecodedPdu>, Result<(), PduError>) {
    let mut dec = PduDecoder::with_config(role, cfg);
    let mut asm = PduAssembler::default();
    for chunk in chunks {
        let mut input: &[u8] = chunk;
        loop {
            if direct_data && !input.is_empty() {
                if let Some(pending) = dec.data_pending() {
                    let n = (pending.len as usize).min(input.len());
                    assert!(dec.data_received(&input[..n]).is_ok());
                    asm.extend_data(&input[..n]);
                    assert_eq!(asm.current_data_len(), Some((pending.offset as usize) + n));
                    input = &input[n..];
                }
            }
            match dec.feed(input) {
                Err(e) => {
                    // Errors are sticky: the decoder never resynchronizes by itself.
                    assert_eq!(dec.feed(b"\x04\x00").err().as_ref(), Some(&e));
                    assert!(dec.error_header().len() <= pdu::TERM_REQ_MAX_DATA);
                    return (asm.pdus, Err(e));
                }
                Ok((used, None)) => {
                    assert_eq!(used, input.len(), "no event only once the input is used up");
                    break;
                }
                Ok((used, Some(ev))) => {
                    assert!(used <= input.len());
                    input = &input[used..];
                    asm.on_event(&mut dec, ev);
                }
            }
        }
    }
    (asm.pdus, Ok(()))
}

/// Re-encodes decoded PDUs as their sender would (digests switched on by the IC PDU).
/// `None` when the encoder refuses one of them (it has stricter rules than the decoder
/// only where the decoder cannot know the context, e.g. none today).
fn reencode(pdus: &[DecodedPdu], pda: u8) -> Option<Vec<u8>> {
    let mut tx = TxConfig {
        pda,
        ..TxConfig::default()
    };
    let mut out = Vec::new();
    for p in pdus {
        out.extend_from_slice(&encode_pdu(&p.header, &[&p.data], &tx).ok()?);
        if let PduHeader::IcReq(IcReq { hdgst, ddgst, .. })
        | PduHeader::IcResp(IcResp { hdgst, ddgst, .. }) = p.header
        {
            tx.hdgst = hdgst;
            tx.ddgst = ddgst;
        }
    }
    Some(out)
}

pub fn check(data: &[u8]) {
    pdu::fuzz_decode(data);
    let Some((head, rest)) = data.split_first_chunk::<SETUP_LEN>() else {
        return;
    };
    let s = setup(head);
    let mut stream = Vec::new();
    if s.ic_preamble {
        stream = ic_preamble(s.role, s.hdgst, s.ddgst);
    }
    stream.extend_from_slice(rest);

    let (whole, whole_result) = decode_all(s.role, s.cfg, &stream);
    let chunks = Splits::new(s.split_seed, 97).chunks(&stream);
    let (split, split_result) = decode_split(s.role, s.cfg, &chunks, s.direct_data);
    assert_eq!(whole, split, "PDUs depend on how the bytes were split");
    assert_eq!(whole_result, split_result, "errors depend on the split");

    // Round trip: what was decoded re-encodes to bytes that decode the same way (the data
    // digest is recomputed, so a PDU whose digest failed comes back with a good one). The
    // header padding is re-encoded for the decoder's own PDA, which it must accept.
    if let Some(again) = reencode(&whole, s.cfg.pda) {
        let (redecoded, result) = decode_all(s.role, s.cfg, &again);
        assert_eq!(result, Ok(()), "a re-encoded PDU was refused");
        let expected: Vec<DecodedPdu> = whole
            .iter()
            .cloned()
            .map(|mut p| {
                p.data_digest_ok = true;
                p
            })
            .collect();
        assert_eq!(redecoded, expected, "encoder and decoder disagree");
    }
}
