//! What a queue pair is told: where the controller is, what to ask for on the queue, TLS.

use super::super::auth::DhchapOpts;
use std::sync::Arc;

/// How to reach the controller and what to ask for on this queue.
#[derive(Debug, Clone)]
pub struct QpairConfig {
    /// Sock impl by name (`posix`, `uring`); `None` is the application's default.
    pub sock_impl: Option<String>,
    pub traddr: String,
    pub trsvcid: u16,
    pub subnqn: String,
    pub hostnqn: String,
    pub hostid: [u8; 16],
    /// 0 for the admin queue.
    pub qid: u16,
    /// 0xffff (dynamic) for the admin queue; the admin queue's controller id for I/O queues.
    pub cntlid: u16,
    /// Commands in flight at most (the Connect SQSIZE is this minus one).
    pub depth: u16,
    /// Keep Alive timeout announced in the admin Connect (ms, 0 = none).
    pub kato_ms: u32,
    pub hdgst: bool,
    pub ddgst: bool,
    /// Largest write sent as in-capsule data; larger writes wait for R2T.
    pub max_in_capsule: u32,
    /// Largest data transfer of one command (bounds C2HData PDUs).
    pub max_transfer: u32,
    /// Ask the controller to disable SQ flow control (Connect CATTR bit 2). This queue never
    /// gates submissions on the SQ head pointer (it bounds the commands in flight by
    /// `depth`), and without SQ flow control a controller may complete a successful read
    /// with the C2HData SUCCESS flag alone, sparing a response PDU per read on both sides.
    pub disable_sq_flow_control: bool,
    /// DH-HMAC-CHAP secrets, used when the Connect response asks for authentication.
    pub dhchap: Option<Arc<DhchapOpts>>,
    /// TLS with this PSK (the `ssl` sock impl); `None`: plaintext.
    pub tls: Option<HostTls>,
}

/// The TLS side of a host's queues: its configured PSK and the identity form it offers
/// (the TLS PSK and the identity are derived per queue from the host and subsystem NQNs).
#[derive(Debug, Clone)]
pub struct HostTls {
    pub psk: std::sync::Arc<crate::nvmf::psk::ConfiguredPsk>,
    pub identity: crate::nvmf::psk::IdentityVersion,
    /// The host NQN the identity and TLS PSK are derived for; `None` (normal): the one the
    /// queue's Connect names. (Set otherwise, it shows that a target refuses a Connect whose
    /// host is not the TLS identity's.)
    pub psk_hostnqn: Option<String>,
}

impl HostTls {
    /// Reads `--psk`: an interchange key (`NVMeTLSkey-1:...`) or the path of a file holding one.
    pub fn from_arg(
        psk: &str,
        identity: crate::nvmf::psk::IdentityVersion,
    ) -> Result<Self, String> {
        let text = if psk.starts_with("NVMeTLSkey-1:") {
            psk.to_string()
        } else {
            std::fs::read_to_string(psk).map_err(|e| format!("--psk {psk}: {e}"))?
        };
        let psk =
            crate::nvmf::psk::ConfiguredPsk::parse(&text).map_err(|e| format!("--psk: {e}"))?;
        Ok(Self {
            psk: std::sync::Arc::new(psk),
            identity,
            psk_hostnqn: None,
        })
    }
}

impl QpairConfig {
    /// An admin queue configuration with common defaults.
    pub fn admin(traddr: &str, trsvcid: u16, subnqn: &str, hostnqn: &str) -> Self {
        Self {
            sock_impl: None,
            traddr: traddr.into(),
            trsvcid,
            subnqn: subnqn.into(),
            hostnqn: hostnqn.into(),
            hostid: [0; 16],
            qid: 0,
            cntlid: crate::nvmf::wire::CNTLID_DYNAMIC,
            depth: 32,
            kato_ms: 0,
            hdgst: false,
            ddgst: false,
            max_in_capsule: 4096,
            max_transfer: 128 * 1024,
            disable_sq_flow_control: false,
            dhchap: None,
            tls: None,
        }
    }
}
