//! The DH-HMAC-CHAP messages carried by AUTH_Send and AUTH_Receive, encoded and decoded with every length checked.
//!
//! Layouts (NVMe base specification, authentication; all little-endian): every message
//! starts with AUTH_Type (0 common, 1 DH-HMAC-CHAP), AUTH_Id, two reserved bytes and the
//! transaction id T_ID. Negotiate (common, 0x00) adds SC_C, NAPD and NAPD 64-byte protocol
//! descriptors (AUTHID 1, HALEN, DHLEN, 30 hash ids then 30 DH group ids); Challenge (0x01)
//! HL, HashID, DHGID, DHVLEN, SEQNUM, then C1 (HL bytes) and the DH value; Reply (0x02)
//! HL, CVALID, DHVLEN, SEQNUM, then R1, C2 (HL bytes, meaningful when CVALID) and the DH
//! value; Success1 (0x03) HL, RVALID and R2 at byte 16; Success2 (0x04) nothing more;
//! Failure1 (0xf1, controller) and Failure2 (0xf0, host) a reason code (1) and its
//! explanation.

/// AUTH_Type of the common messages (Negotiate, Failure1/2).
pub const TYPE_COMMON: u8 = 0x00;
/// AUTH_Type of the DH-HMAC-CHAP messages.
pub const TYPE_DHCHAP: u8 = 0x01;
/// AUTHID of DH-HMAC-CHAP in a Negotiate protocol descriptor.
pub const PROTOCOL_DHCHAP: u8 = 0x01;
/// The Security Protocol / SPSP values of AUTH_Send and AUTH_Receive for in-band
/// authentication (SECP E9h, SPSP0 01h, SPSP1 01h).
pub const SECP: u8 = 0xe9;

mod id {
    pub const NEGOTIATE: u8 = 0x00;
    pub const CHALLENGE: u8 = 0x01;
    pub const REPLY: u8 = 0x02;
    pub const SUCCESS1: u8 = 0x03;
    pub const SUCCESS2: u8 = 0x04;
    pub const FAILURE2: u8 = 0xf0;
    pub const FAILURE1: u8 = 0xf1;
}

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

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The 16-byte header every DH-HMAC-CHAP message starts with (the rest zero).
fn header(auth_type: u8, auth_id: u8, tid: u16, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    out[0] = auth_type;
    out[1] = auth_id;
    out[4..6].copy_from_slice(&tid.to_le_bytes());
    out
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
        match self {
            Self::Negotiate {
                tid,
                sc_c,
                hashes,
                dhgroups,
            } => {
                let mut out = header(TYPE_COMMON, id::NEGOTIATE, *tid, 8 + 64);
                out[6] = *sc_c;
                out[7] = 1;
                let d = &mut out[8..];
                d[0] = PROTOCOL_DHCHAP;
                d[2] = hashes.len().min(30) as u8;
                d[3] = dhgroups.len().min(30) as u8;
                for (i, h) in hashes.iter().take(30).enumerate() {
                    d[4 + i] = *h;
                }
                for (i, g) in dhgroups.iter().take(30).enumerate() {
                    d[34 + i] = *g;
                }
                out
            }
            Self::Challenge {
                tid,
                hash,
                dhgroup,
                seqnum,
                challenge,
                dh_value,
            } => {
                let mut out = header(TYPE_DHCHAP, id::CHALLENGE, *tid, 16);
                out[6] = challenge.len() as u8;
                out[8] = *hash;
                out[9] = *dhgroup;
                out[10..12].copy_from_slice(&(dh_value.len() as u16).to_le_bytes());
                out[12..16].copy_from_slice(&seqnum.to_le_bytes());
                out.extend_from_slice(challenge);
                out.extend_from_slice(dh_value);
                out
            }
            Self::Reply {
                tid,
                seqnum,
                response,
                challenge,
                dh_value,
            } => {
                let hl = response.len();
                let mut out = header(TYPE_DHCHAP, id::REPLY, *tid, 16);
                out[6] = hl as u8;
                out[8] = challenge.is_some() as u8;
                out[10..12].copy_from_slice(&(dh_value.len() as u16).to_le_bytes());
                out[12..16].copy_from_slice(&seqnum.to_le_bytes());
                out.extend_from_slice(response);
                match challenge {
                    Some(c) => out.extend_from_slice(c),
                    None => out.resize(out.len() + hl, 0),
                }
                out.extend_from_slice(dh_value);
                out
            }
            Self::Success1 { tid, hl, response } => {
                let mut out = header(TYPE_DHCHAP, id::SUCCESS1, *tid, 16);
                out[6] = *hl;
                if let Some(r) = response {
                    out[8] = 1;
                    out.extend_from_slice(r);
                }
                out
            }
            Self::Success2 { tid } => header(TYPE_DHCHAP, id::SUCCESS2, *tid, 16),
            Self::Failure1 { tid, reason } | Self::Failure2 { tid, reason } => {
                let auth_id = if matches!(self, Self::Failure1 { .. }) {
                    id::FAILURE1
                } else {
                    id::FAILURE2
                };
                let mut out = header(TYPE_COMMON, auth_id, *tid, 8);
                out[6] = 1;
                out[7] = *reason as u8;
                out
            }
        }
    }

    /// Decodes a message; nothing in it is used as a length before it is checked against
    /// the bytes there are.
    pub fn decode(b: &[u8]) -> Result<Self, BadMessage> {
        use FailureReason::{IncorrectPayload, IncorrectProtocolMessage};
        if b.len() < 8 {
            return Err(bad(IncorrectPayload, format!("{} bytes", b.len())));
        }
        let (auth_type, auth_id, tid) = (b[0], b[1], le16(b, 4));
        let need = |n: usize, what: &str| {
            if b.len() < n {
                Err(bad(
                    IncorrectPayload,
                    format!("{what}: {} bytes, {n} needed", b.len()),
                ))
            } else {
                Ok(())
            }
        };
        match (auth_type, auth_id) {
            (TYPE_COMMON, id::NEGOTIATE) => {
                let napd = b[7] as usize;
                need(8 + 64 * napd, "Negotiate")?;
                let d = (0..napd)
                    .map(|i| &b[8 + 64 * i..8 + 64 * (i + 1)])
                    .find(|d| d[0] == PROTOCOL_DHCHAP)
                    .ok_or_else(|| {
                        bad(
                            FailureReason::NotUsable,
                            "no DH-HMAC-CHAP protocol descriptor",
                        )
                    })?;
                let (halen, dhlen) = (d[2] as usize, d[3] as usize);
                if halen > 30 || dhlen > 30 {
                    return Err(bad(
                        IncorrectPayload,
                        format!("HALEN {halen} / DHLEN {dhlen} above 30"),
                    ));
                }
                Ok(Self::Negotiate {
                    tid,
                    sc_c: b[6],
                    hashes: d[4..4 + halen].to_vec(),
                    dhgroups: d[34..34 + dhlen].to_vec(),
                })
            }
            (TYPE_DHCHAP, id::CHALLENGE) => {
                need(16, "Challenge")?;
                let (hl, dhvlen) = (b[6] as usize, le16(b, 10) as usize);
                need(16 + hl + dhvlen, "Challenge")?;
                Ok(Self::Challenge {
                    tid,
                    hash: b[8],
                    dhgroup: b[9],
                    seqnum: le32(b, 12),
                    challenge: b[16..16 + hl].to_vec(),
                    dh_value: b[16 + hl..16 + hl + dhvlen].to_vec(),
                })
            }
            (TYPE_DHCHAP, id::REPLY) => {
                need(16, "Reply")?;
                let (hl, dhvlen) = (b[6] as usize, le16(b, 10) as usize);
                need(16 + 2 * hl + dhvlen, "Reply")?;
                let cvalid = b[8] != 0;
                Ok(Self::Reply {
                    tid,
                    seqnum: le32(b, 12),
                    response: b[16..16 + hl].to_vec(),
                    challenge: cvalid.then(|| b[16 + hl..16 + 2 * hl].to_vec()),
                    dh_value: b[16 + 2 * hl..16 + 2 * hl + dhvlen].to_vec(),
                })
            }
            (TYPE_DHCHAP, id::SUCCESS1) => {
                need(16, "Success1")?;
                let hl = b[6];
                let rvalid = b[8] != 0;
                if rvalid {
                    need(16 + hl as usize, "Success1")?;
                }
                Ok(Self::Success1 {
                    tid,
                    hl,
                    response: rvalid.then(|| b[16..16 + hl as usize].to_vec()),
                })
            }
            (TYPE_DHCHAP, id::SUCCESS2) => {
                need(16, "Success2")?;
                Ok(Self::Success2 { tid })
            }
            (TYPE_COMMON, id::FAILURE1) | (TYPE_COMMON, id::FAILURE2) => {
                let reason = FailureReason::from_code(b[7]).ok_or_else(|| {
                    bad(IncorrectPayload, format!("reason explanation {:#x}", b[7]))
                })?;
                Ok(if auth_id == id::FAILURE1 {
                    Self::Failure1 { tid, reason }
                } else {
                    Self::Failure2 { tid, reason }
                })
            }
            _ => Err(bad(
                IncorrectProtocolMessage,
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
