//! A userspace NVMe/TCP host (initiator) on the reactor framework.
//!
//! nvmf::host: a userspace NVMe/TCP host (initiator) built on the reactor framework and the
//! sock layer, used by the integration tests, the reliability tests and `pollux-perf`. Three
//! layers, each usable on its own: [`Qpair`] is one NVMe/TCP connection (TCP connect, ICReq /
//! ICResp negotiation, fabrics Connect, then commands with many in flight, command ids from a
//! slab, in-capsule or R2T/H2CData writes, C2HData reads received straight into the caller's
//! buffer) driven by calling `poll` from a poller, with completions handed back by tag and no
//! allocation per I/O; [`Controller`] owns an admin queue and optional I/O queues on one
//! reactor, runs the bring-up sequence (Connect, Property Get CAP/VS, CC.EN and CSTS.RDY,
//! Identify, Number of Queues), sends Keep Alive on a timer and offers callback-based admin
//! and I/O commands whose NVMe errors are typed ([`HostError::Nvme`]); [`SyncController`]
//! runs a controller on its own one-reactor application and exposes blocking calls with
//! timeouts, for tests and tools. [`discover`] fetches and decodes a discovery log page.
//! A queue whose Connect response asks for DH-HMAC-CHAP authenticates before it is ready
//! (`auth.rs`, with the secrets of [`DhchapOpts`]).

mod auth;
mod ctrlr;
pub mod fake;
mod qpair;
pub mod reservation;
mod sync;
#[cfg(test)]
mod tests;

pub use auth::{dhchap_sqe, dhgroup_by_name, hash_by_name, DhchapOpts};
pub use ctrlr::{ConnectOpts, Controller, ControllerInfo};
pub use qpair::{Completion, DataBuf, HostTls, Qpair, QpairConfig, QpairState, Request};
pub use sync::{discover, SyncController};

use super::pdu::PduError;
use super::wire::Status;
use crate::buf::IoBuf;
use std::time::Duration;

/// A command's callback: called once with the command's result.
pub trait OnDone<T>: FnOnce(Result<T, HostError>) + 'static {}

impl<T, F: FnOnce(Result<T, HostError>) + 'static> OnDone<T> for F {}

/// An I/O buffer holding a copy of `data`.
fn io_buf_of(data: &[u8]) -> IoBuf {
    let mut buf = IoBuf::with_len(data.len());
    buf.copy_from_slice(data);
    buf
}

/// Everything a host operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The controller completed the command with an error status.
    #[error("{status} (dw0 {dw0:#x}){}", connect_hint(*status, *dw0))]
    Nvme { status: Status, dw0: u32 },
    /// The TCP connection could not be established or broke.
    #[error("connection error: {0}")]
    Connection(String),
    /// The peer violated NVMe/TCP (or we did and it sent a Term Req).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A data digest did not match; the command's data is not trustworthy.
    #[error("data digest mismatch")]
    DataDigest,
    /// The queue has as many commands in flight as its depth.
    #[error("queue full")]
    QueueFull,
    /// The queue is not (or no longer) connected.
    #[error("queue not ready: {0}")]
    NotReady(String),
    /// A caller mistake (bad length, buffer too small, unknown queue, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// DH-HMAC-CHAP authentication failed: the AUTH_Failure reason code explanation
    /// (the controller's Failure1, or the Failure2 the host sent) when there is one.
    #[error("DH-HMAC-CHAP authentication failed: {detail}")]
    Auth {
        reason: Option<crate::nvmf::auth::messages::FailureReason>,
        detail: String,
    },
    /// No answer within the allowed time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl HostError {
    /// The NVMe status when the controller answered with one.
    pub fn nvme_status(&self) -> Option<Status> {
        match self {
            HostError::Nvme { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// For a rejected fabrics Connect: which field the controller refused (IATTR/IPO in DW0).
fn connect_hint(status: Status, dw0: u32) -> String {
    if !status.same_code(Status::CONNECT_INVALID_PARAMETERS) || status.sct() != 1 {
        return String::new();
    }
    let (in_data, off) = super::wire::connect_invalid_param_from_dw0(dw0);
    use super::wire::connect_off as o;
    let field = match (in_data, off) {
        (true, o::SUBNQN) => "subnqn (unknown subsystem or host not allowed)",
        (true, o::HOSTNQN) => "hostnqn",
        (true, o::CNTLID) => "cntlid",
        (true, o::HOSTID) => "hostid",
        (false, o::QID) => "qid",
        (false, o::SQSIZE) => "sqsize",
        (false, o::KATO) => "kato",
        _ => "a field",
    };
    format!(": Connect refused {field}")
}

impl From<PduError> for HostError {
    fn from(e: PduError) -> Self {
        HostError::Protocol(e.to_string())
    }
}

/// An SPDK-style transport id: `trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420
/// subnqn:NQN` (keys case-insensitive, separated by spaces; `hostnqn` optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportId {
    pub traddr: String,
    pub trsvcid: u16,
    pub subnqn: String,
    pub hostnqn: Option<String>,
}

impl TransportId {
    /// A TCP transport id for `addr:port` and `subnqn`.
    pub fn tcp(addr: &str, port: u16, subnqn: &str) -> Self {
        Self {
            traddr: addr.to_string(),
            trsvcid: port,
            subnqn: subnqn.to_string(),
            hostnqn: None,
        }
    }
}

impl std::str::FromStr for TransportId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (mut addr, mut port, mut nqn, mut hostnqn) = (None, None, None, None);
        let mut adrfam: Option<String> = None;
        for part in s.split_whitespace() {
            let (key, value) = part
                .split_once(':')
                .ok_or_else(|| format!("transport id: {part:?} is not key:value"))?;
            match key.to_ascii_lowercase().as_str() {
                "trtype" => {
                    if !value.eq_ignore_ascii_case("tcp") {
                        return Err(format!("transport id: trtype {value:?} is not TCP"));
                    }
                }
                "adrfam" => {
                    if !["ipv4", "ipv6"].contains(&value.to_ascii_lowercase().as_str()) {
                        return Err(format!("transport id: adrfam {value:?} is not IPv4/IPv6"));
                    }
                    adrfam = Some(value.to_ascii_lowercase());
                }
                "traddr" => addr = Some(value.to_string()),
                "trsvcid" => {
                    port = Some(value.parse::<u16>().map_err(|_| {
                        format!("transport id: trsvcid {value:?} is not a port number")
                    })?)
                }
                "subnqn" => nqn = Some(value.to_string()),
                "hostnqn" => hostnqn = Some(value.to_string()),
                other => return Err(format!("transport id: unknown key {other:?}")),
            }
        }
        let traddr = addr.ok_or("transport id: traddr is missing")?;
        let ip = crate::sock::parse_addr(&traddr, 0).map_err(|e| format!("transport id: {e}"))?;
        match adrfam.as_deref() {
            Some("ipv4") if !ip.is_ipv4() => {
                return Err(format!("transport id: {traddr} is not an IPv4 address"))
            }
            Some("ipv6") if !ip.is_ipv6() => {
                return Err(format!("transport id: {traddr} is not an IPv6 address"))
            }
            _ => {}
        }
        let subnqn = nqn.unwrap_or_else(|| super::wire::DISCOVERY_NQN.to_string());
        if subnqn.len() > super::wire::NQN_MAX_LEN {
            return Err("transport id: subnqn is longer than 223 bytes".into());
        }
        Ok(Self {
            traddr,
            trsvcid: port.unwrap_or(4420),
            subnqn,
            hostnqn,
        })
    }
}
