//! The DH-HMAC-CHAP messages carried by AUTH_Send and AUTH_Receive, encoded and decoded with every length checked.
//!
//! Every message starts with an [`AuthHeader`] (AUTH_Type 0 for the common messages, 1 for
//! DH-HMAC-CHAP; AUTH_Id; T_ID), then its fixed part and its variable values: Negotiate
//! (common, 00h) NAPD 64-byte [`ProtocolDescriptor`]s; Challenge (01h) C1 and the
//! controller's DH value; Reply (02h) R1, C2 and the host's DH value; Success1 (03h) R2 when
//! RVALID; Success2 (04h) nothing; Failure1 (F1h, controller) and Failure2 (F0h, host) a
//! reason code and its explanation (NVMe base specification, in-band authentication).

use super::*;
use std::mem::size_of;

/// AUTH_Type of the common messages (Negotiate, Failure1/2).
pub const TYPE_COMMON: u8 = 0x00;
/// AUTH_Type of the DH-HMAC-CHAP messages.
pub const TYPE_DHCHAP: u8 = 0x01;
/// AUTHID of DH-HMAC-CHAP in a Negotiate protocol descriptor.
pub const PROTOCOL_DHCHAP: u8 = 0x01;
/// The Security Protocol / SPSP values of AUTH_Send and AUTH_Receive for in-band
/// authentication (SECP E9h, SPSP0 01h, SPSP1 01h).
pub const SECP: u8 = 0xe9;

wire_enum! {
    /// AUTH_Id of each message (byte 1), within its AUTH_Type.
    pub enum AuthId in id {
        Negotiate / NEGOTIATE = 0x00,
        Challenge / CHALLENGE = 0x01,
        Reply / REPLY = 0x02,
        Success1 / SUCCESS1 = 0x03,
        Success2 / SUCCESS2 = 0x04,
        Failure2 / FAILURE2 = 0xf0,
        Failure1 / FAILURE1 = 0xf1,
    }
}

/// The bytes every message starts with: AUTH_Type, AUTH_Id, two reserved bytes, T_ID.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct AuthHeader {
    pub auth_type: u8,
    pub auth_id: u8,
    pub rsvd2: [u8; 2],
    pub tid: U16,
}

assert_offsets!(AuthHeader; auth_type 0, auth_id 1, tid 4);

impl AuthHeader {
    fn new(auth_type: u8, auth_id: u8, tid: u16) -> Self {
        Self {
            auth_type,
            auth_id,
            rsvd2: [0; 2],
            tid: tid.into(),
        }
    }
}

/// AUTH_Negotiate: the header, SC_C and NAPD; NAPD protocol descriptors follow.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct NegotiateHeader {
    pub head: AuthHeader,
    /// Secure channel concatenation.
    pub sc_c: u8,
    /// Number of protocol descriptors.
    pub napd: u8,
}

assert_offsets!(NegotiateHeader; sc_c 6, napd 7);

/// The most hash (and DH group) identifiers a protocol descriptor lists.
pub const MAX_IDS: usize = 30;

/// A Negotiate protocol descriptor: AUTHID, HALEN hash ids, DHLEN DH group ids.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ProtocolDescriptor {
    pub authid: u8,
    pub rsvd1: u8,
    pub halen: u8,
    pub dhlen: u8,
    pub hash_ids: [u8; MAX_IDS],
    pub dh_ids: [u8; MAX_IDS],
}

assert_offsets!(ProtocolDescriptor; authid 0, halen 2, dhlen 3, hash_ids 4, dh_ids 34);

/// DH-HMAC-CHAP_Challenge's fixed part; C1 (HL bytes) and the DH value (DHVLEN) follow.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ChallengeHeader {
    pub head: AuthHeader,
    pub hl: u8,
    pub rsvd7: u8,
    pub hash_id: u8,
    pub dhgroup_id: u8,
    pub dhvlen: U16,
    pub seqnum: U32,
}

assert_offsets!(ChallengeHeader; hl 6, hash_id 8, dhgroup_id 9, dhvlen 10, seqnum 12);

/// DH-HMAC-CHAP_Reply's fixed part; R1, C2 (HL bytes each) and the DH value follow.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ReplyHeader {
    pub head: AuthHeader,
    pub hl: u8,
    pub rsvd7: u8,
    /// C2 is valid (the host wants the controller authenticated too).
    pub cvalid: u8,
    pub rsvd9: u8,
    pub dhvlen: U16,
    pub seqnum: U32,
}

assert_offsets!(ReplyHeader; hl 6, cvalid 8, dhvlen 10, seqnum 12);

/// DH-HMAC-CHAP_Success1's fixed part; R2 (HL bytes) follows when RVALID.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Success1Header {
    pub head: AuthHeader,
    pub hl: u8,
    pub rsvd7: u8,
    pub rvalid: u8,
    pub rsvd9: [u8; 7],
}

assert_offsets!(Success1Header; hl 6, rvalid 8);

/// DH-HMAC-CHAP_Success2: the header and reserved bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Success2Message {
    pub head: AuthHeader,
    pub rsvd6: [u8; 10],
}

/// AUTH_Failure1 / AUTH_Failure2: a reason code and its explanation.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct FailureMessage {
    pub head: AuthHeader,
    pub rescode: u8,
    pub rescode_exp: u8,
}

assert_offsets!(FailureMessage; rescode 6, rescode_exp 7);

wire_layout!(
    AuthHeader = 6,
    NegotiateHeader = 8,
    ProtocolDescriptor = 64,
    ChallengeHeader = 16,
    ReplyHeader = 16,
    Success1Header = 16,
    Success2Message = 16,
    FailureMessage = 8,
);

/// Reason code of both failure messages: authentication failure.
const RESCODE_FAILURE: u8 = 0x01;

/// The reason code explanations of a failure message (the reason code itself is always 1,
/// "authentication failure").
#[derive(Debug, Clone, Copy, PartialEq, Eq, num_enum::TryFromPrimitive)]
#[repr(u8)]
pub enum FailureReason {
    Failed = 0x01,
    NotUsable = 0x02,
    ConcatMismatch = 0x03,
    HashUnusable = 0x04,
    DhGroupUnusable = 0x05,
    IncorrectPayload = 0x06,
    IncorrectProtocolMessage = 0x07,
}

impl FailureReason {
    pub fn from_code(v: u8) -> Option<Self> {
        Self::try_from(v).ok()
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Failed => "authentication failed",
            Self::NotUsable => "authentication protocol not usable",
            Self::ConcatMismatch => "secure channel concatenation mismatch",
            Self::HashUnusable => "no usable hash function",
            Self::DhGroupUnusable => "no usable DH group",
            Self::IncorrectPayload => "incorrect payload",
            Self::IncorrectProtocolMessage => "incorrect protocol message",
        })
    }
}

/// One authentication message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Host: the hashes and DH groups it accepts, in its order of preference.
    Negotiate {
        tid: u16,
        sc_c: u8,
        hashes: Vec<u8>,
        dhgroups: Vec<u8>,
    },
    /// Controller: the chosen hash and group, C1, S1 and the controller's DH value.
    Challenge {
        tid: u16,
        hash: u8,
        dhgroup: u8,
        seqnum: u32,
        challenge: Vec<u8>,
        dh_value: Vec<u8>,
    },
    /// Host: R1, and C2 with S2 when it wants the controller to prove itself too.
    Reply {
        tid: u16,
        seqnum: u32,
        response: Vec<u8>,
        challenge: Option<Vec<u8>>,
        dh_value: Vec<u8>,
    },
    /// Controller: R2 when the host asked for it (`hl` is the hash length either way).
    Success1 {
        tid: u16,
        hl: u8,
        response: Option<Vec<u8>>,
    },
    Success2 {
        tid: u16,
    },
    /// From the controller.
    Failure1 {
        tid: u16,
        reason: FailureReason,
    },
    /// From the host.
    Failure2 {
        tid: u16,
        reason: FailureReason,
    },
}

/// A message that does not parse, with the failure the controller answers it with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct BadMessage {
    pub reason: FailureReason,
    pub detail: String,
}

fn bad(reason: FailureReason, detail: impl Into<String>) -> BadMessage {
    BadMessage {
        reason,
        detail: detail.into(),
    }
}

/// Appends `value` to `out` as its wire bytes.
fn put(out: &mut Vec<u8>, value: &(impl IntoBytes + Immutable)) {
    out.extend_from_slice(value.as_bytes());
}

/// The fixed part of type `T` at the start of `b`, or the payload error naming `what`.
fn fixed<T: FromBytes>(b: &[u8], what: &str) -> Result<T, BadMessage> {
    T::read_from_prefix(b)
        .map(|(v, _)| v)
        .map_err(|_| short(what, b.len(), size_of::<T>()))
}

fn short(what: &str, have: usize, need: usize) -> BadMessage {
    bad(
        FailureReason::IncorrectPayload,
        format!("{what}: {have} bytes, {need} needed"),
    )
}

/// The `len` bytes at `at` in `b`, or the payload error naming `what`.
fn part<'a>(b: &'a [u8], at: usize, len: usize, what: &str) -> Result<&'a [u8], BadMessage> {
    b.get(at..at + len)
        .ok_or_else(|| short(what, b.len(), at + len))
}

impl Message {
    /// The transaction id.
    pub fn tid(&self) -> u16 {
        match self {
            Self::Negotiate { tid, .. }
            | Self::Challenge { tid, .. }
            | Self::Reply { tid, .. }
            | Self::Success1 { tid, .. }
            | Self::Success2 { tid }
            | Self::Failure1 { tid, .. }
            | Self::Failure2 { tid, .. } => *tid,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Negotiate {
                tid,
                sc_c,
                hashes,
                dhgroups,
            } => {
                let (halen, dhlen) = (hashes.len().min(MAX_IDS), dhgroups.len().min(MAX_IDS));
                put(
                    &mut out,
                    &NegotiateHeader {
                        head: AuthHeader::new(TYPE_COMMON, id::NEGOTIATE, *tid),
                        sc_c: *sc_c,
                        napd: 1,
                    },
                );
                let mut d = ProtocolDescriptor {
                    authid: PROTOCOL_DHCHAP,
                    halen: halen as u8,
                    dhlen: dhlen as u8,
                    ..Default::default()
                };
                d.hash_ids[..halen].copy_from_slice(&hashes[..halen]);
                d.dh_ids[..dhlen].copy_from_slice(&dhgroups[..dhlen]);
                put(&mut out, &d);
            }
            Self::Challenge {
                tid,
                hash,
                dhgroup,
                seqnum,
                challenge,
                dh_value,
            } => {
                put(
                    &mut out,
                    &ChallengeHeader {
                        head: AuthHeader::new(TYPE_DHCHAP, id::CHALLENGE, *tid),
                        hl: challenge.len() as u8,
                        rsvd7: 0,
                        hash_id: *hash,
                        dhgroup_id: *dhgroup,
                        dhvlen: (dh_value.len() as u16).into(),
                        seqnum: (*seqnum).into(),
                    },
                );
                out.extend_from_slice(challenge);
                out.extend_from_slice(dh_value);
            }
            Self::Reply {
                tid,
                seqnum,
                response,
                challenge,
                dh_value,
            } => {
                let hl = response.len();
                put(
                    &mut out,
                    &ReplyHeader {
                        head: AuthHeader::new(TYPE_DHCHAP, id::REPLY, *tid),
                        hl: hl as u8,
                        rsvd7: 0,
                        cvalid: challenge.is_some() as u8,
                        rsvd9: 0,
                        dhvlen: (dh_value.len() as u16).into(),
                        seqnum: (*seqnum).into(),
                    },
                );
                out.extend_from_slice(response);
                match challenge {
                    Some(c) => out.extend_from_slice(c),
                    None => out.resize(out.len() + hl, 0),
                }
                out.extend_from_slice(dh_value);
            }
            Self::Success1 { tid, hl, response } => {
                put(
                    &mut out,
                    &Success1Header {
                        head: AuthHeader::new(TYPE_DHCHAP, id::SUCCESS1, *tid),
                        hl: *hl,
                        rvalid: response.is_some() as u8,
                        ..Default::default()
                    },
                );
                if let Some(r) = response {
                    out.extend_from_slice(r);
                }
            }
            Self::Success2 { tid } => put(
                &mut out,
                &Success2Message {
                    head: AuthHeader::new(TYPE_DHCHAP, id::SUCCESS2, *tid),
                    rsvd6: [0; 10],
                },
            ),
            Self::Failure1 { tid, reason } | Self::Failure2 { tid, reason } => {
                let auth_id = if matches!(self, Self::Failure1 { .. }) {
                    id::FAILURE1
                } else {
                    id::FAILURE2
                };
                put(
                    &mut out,
                    &FailureMessage {
                        head: AuthHeader::new(TYPE_COMMON, auth_id, *tid),
                        rescode: RESCODE_FAILURE,
                        rescode_exp: *reason as u8,
                    },
                );
            }
        }
        out
    }

    /// Decodes a message; nothing in it is used as a length before it is checked against
    /// the bytes there are.
    pub fn decode(b: &[u8]) -> Result<Self, BadMessage> {
        // Every message is at least as long as the failure messages.
        if b.len() < FailureMessage::SIZE {
            return Err(bad(
                FailureReason::IncorrectPayload,
                format!("{} bytes", b.len()),
            ));
        }
        let head: AuthHeader = fixed(b, "header")?;
        let tid = head.tid.get();
        match (head.auth_type, head.auth_id) {
            (TYPE_COMMON, id::NEGOTIATE) => {
                let n: NegotiateHeader = fixed(b, "Negotiate")?;
                let napd = n.napd as usize;
                let descriptors = part(
                    b,
                    NegotiateHeader::SIZE,
                    ProtocolDescriptor::SIZE * napd,
                    "Negotiate",
                )?;
                let d = descriptors
                    .chunks_exact(ProtocolDescriptor::SIZE)
                    .filter_map(ProtocolDescriptor::decode_slice)
                    .find(|d| d.authid == PROTOCOL_DHCHAP)
                    .ok_or_else(|| {
                        bad(
                            FailureReason::NotUsable,
                            "no DH-HMAC-CHAP protocol descriptor",
                        )
                    })?;
                let (halen, dhlen) = (d.halen as usize, d.dhlen as usize);
                if halen > MAX_IDS || dhlen > MAX_IDS {
                    return Err(bad(
                        FailureReason::IncorrectPayload,
                        format!("HALEN {halen} / DHLEN {dhlen} above {MAX_IDS}"),
                    ));
                }
                Ok(Self::Negotiate {
                    tid,
                    sc_c: n.sc_c,
                    hashes: d.hash_ids[..halen].to_vec(),
                    dhgroups: d.dh_ids[..dhlen].to_vec(),
                })
            }
            (TYPE_DHCHAP, id::CHALLENGE) => {
                let c: ChallengeHeader = fixed(b, "Challenge")?;
                let hl = c.hl as usize;
                let values = part(
                    b,
                    ChallengeHeader::SIZE,
                    hl + c.dhvlen.get() as usize,
                    "Challenge",
                )?;
                let (challenge, dh_value) = values.split_at(hl);
                Ok(Self::Challenge {
                    tid,
                    hash: c.hash_id,
                    dhgroup: c.dhgroup_id,
                    seqnum: c.seqnum.get(),
                    challenge: challenge.to_vec(),
                    dh_value: dh_value.to_vec(),
                })
            }
            (TYPE_DHCHAP, id::REPLY) => {
                let r: ReplyHeader = fixed(b, "Reply")?;
                let hl = r.hl as usize;
                let values = part(
                    b,
                    ReplyHeader::SIZE,
                    2 * hl + r.dhvlen.get() as usize,
                    "Reply",
                )?;
                let (response, rest) = values.split_at(hl);
                let (challenge, dh_value) = rest.split_at(hl);
                Ok(Self::Reply {
                    tid,
                    seqnum: r.seqnum.get(),
                    response: response.to_vec(),
                    challenge: (r.cvalid != 0).then(|| challenge.to_vec()),
                    dh_value: dh_value.to_vec(),
                })
            }
            (TYPE_DHCHAP, id::SUCCESS1) => {
                let s: Success1Header = fixed(b, "Success1")?;
                let response = if s.rvalid != 0 {
                    Some(part(b, Success1Header::SIZE, s.hl as usize, "Success1")?.to_vec())
                } else {
                    None
                };
                Ok(Self::Success1 {
                    tid,
                    hl: s.hl,
                    response,
                })
            }
            (TYPE_DHCHAP, id::SUCCESS2) => {
                fixed::<Success2Message>(b, "Success2")?;
                Ok(Self::Success2 { tid })
            }
            (TYPE_COMMON, id::FAILURE1) | (TYPE_COMMON, id::FAILURE2) => {
                let f: FailureMessage = fixed(b, "Failure")?;
                let reason = FailureReason::from_code(f.rescode_exp).ok_or_else(|| {
                    bad(
                        FailureReason::IncorrectPayload,
                        format!("reason explanation {:#x}", f.rescode_exp),
                    )
                })?;
                Ok(if head.auth_id == id::FAILURE1 {
                    Self::Failure1 { tid, reason }
                } else {
                    Self::Failure2 { tid, reason }
                })
            }
            (auth_type, auth_id) => Err(bad(
                FailureReason::IncorrectProtocolMessage,
                format!("AUTH_Type {auth_type:#x} AUTH_Id {auth_id:#x}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Success1 as Linux's `struct nvmf_auth_dhchap_success1_data` lays it out: HL at
    /// byte 6, RVALID at byte 8, the response from byte 16 (the Linux host refused a
    /// controller response whose flag sat at byte 10).
    #[test]
    fn success1_layout() {
        let b = Message::Success1 {
            tid: 0x0102,
            hl: 32,
            response: Some(vec![9; 32]),
        }
        .encode();
        assert_eq!(b.len(), 48);
        assert_eq!((b[4], b[5], b[6], b[8], b[10]), (0x02, 0x01, 32, 1, 0));
        assert_eq!(&b[16..], &[9; 32]);
    }

    fn all() -> Vec<Message> {
        vec![
            Message::Negotiate {
                tid: 3,
                sc_c: 0,
                hashes: vec![1, 2, 3],
                dhgroups: vec![0, 1, 5],
            },
            Message::Challenge {
                tid: 3,
                hash: 2,
                dhgroup: 1,
                seqnum: 0xdead_beef,
                challenge: vec![7; 48],
                dh_value: vec![9; 256],
            },
            Message::Reply {
                tid: 3,
                seqnum: 5,
                response: vec![1; 32],
                challenge: Some(vec![2; 32]),
                dh_value: vec![],
            },
            Message::Reply {
                tid: 3,
                seqnum: 0,
                response: vec![1; 32],
                challenge: None,
                dh_value: vec![4; 384],
            },
            Message::Success1 {
                tid: 3,
                hl: 64,
                response: Some(vec![3; 64]),
            },
            Message::Success1 {
                tid: 3,
                hl: 32,
                response: None,
            },
            Message::Success2 { tid: 3 },
            Message::Failure1 {
                tid: 3,
                reason: FailureReason::HashUnusable,
            },
            Message::Failure2 {
                tid: 3,
                reason: FailureReason::Failed,
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in all() {
            assert_eq!(Message::decode(&m.encode()), Ok(m.clone()), "{m:?}");
        }
    }

    /// Every prefix of every message either decodes to something or is refused; none
    /// panics (the lengths inside are checked before use).
    #[test]
    fn truncated_and_inflated_messages_are_refused() {
        for m in all() {
            let b = m.encode();
            for n in 0..b.len() {
                let _ = Message::decode(&b[..n]);
            }
        }
        let mut c = all()[1].encode();
        c[10] = 0xff;
        c[11] = 0xff; // DHVLEN 65535
        assert_eq!(
            Message::decode(&c).unwrap_err().reason,
            FailureReason::IncorrectPayload
        );
        let mut n = all()[0].encode();
        n[7] = 200; // NAPD beyond the message
        assert!(Message::decode(&n).is_err());
        let mut n = all()[0].encode();
        n[8 + 2] = 31;
        assert!(Message::decode(&n).is_err(), "HALEN 31");
        assert_eq!(
            Message::decode(&[1, 0x42, 0, 0, 0, 0, 0, 0])
                .unwrap_err()
                .reason,
            FailureReason::IncorrectProtocolMessage
        );
    }
}
