//! DH-HMAC-CHAP on one host queue: the options a host authenticates with, and the driver that turns the host transaction into AUTH_Send / AUTH_Receive commands.
//!
//! When a Connect response carries AUTHREQ.ATR the queue (admin or I/O) runs one
//! transaction before it is ready: AUTH_Send Negotiate, AUTH_Receive Challenge, AUTH_Send
//! Reply, AUTH_Receive Success1 and, when the host asked the controller to prove itself
//! (a controller secret is set), AUTH_Send Success2. The protocol itself is
//! [`HostAuth`]'s; [`QueueAuth`] only sequences the commands. A Failure1 from the
//! controller ends the queue with its reason; a failure the host finds (a controller
//! response that does not verify, a hash or group the host did not offer) is sent to the
//! controller as Failure2 first, as the Linux host does. A queue that needs
//! authentication but has no secret fails at once; the whole transaction is bounded by
//! [`DhchapOpts::timeout`].

use super::HostError;
use crate::nvmf::auth::dhchap::HostAuth;
use crate::nvmf::auth::ffdhe::DhGroup;
use crate::nvmf::auth::messages::{FailureReason, Message, SECP};
use crate::nvmf::secret::{DhchapSecret, Hash};
use crate::nvmf::wire::{AuthCmd, FabricsCommand, SglDescriptor, Sqe};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Allocation length of each AUTH_Receive (the Linux host's buffer size; the largest
/// Challenge, SHA-512 with ffdhe8192, is 1104 bytes).
pub(super) const RECEIVE_LEN: usize = 4096;

/// An AUTH_Send (`send`) or AUTH_Receive command of `length` bytes carrying a
/// DH-HMAC-CHAP message (SECP [`SECP`], SPSP0 and SPSP1 01h).
pub fn dhchap_sqe(send: bool, length: u32) -> Sqe {
    let a = AuthCmd {
        cid: 0,
        sgl: SglDescriptor::default(),
        secp: SECP,
        spsp0: 0x01,
        spsp1: 0x01,
        length,
    };
    if send {
        FabricsCommand::AuthenticationSend(a).to_sqe()
    } else {
        FabricsCommand::AuthenticationReceive(a).to_sqe()
    }
}

/// How a host authenticates (nvme-cli's `--dhchap-secret` / `--dhchap-ctrl-secret`).
#[derive(Debug, Clone)]
pub struct DhchapOpts {
    /// The host's secret.
    pub secret: DhchapSecret,
    /// The controller's secret: set, the controller must prove it knows it
    /// (bidirectional authentication).
    pub ctrl_secret: Option<DhchapSecret>,
    /// Hashes offered, in order of preference.
    pub digests: Vec<Hash>,
    /// DH groups offered (0: NULL), in order of preference.
    pub dhgroups: Vec<u8>,
    /// Bound of one transaction on one queue.
    pub timeout: Duration,
}

impl DhchapOpts {
    /// Every hash and group offered, the Linux host's order (SHA-256 first, NULL first).
    pub fn new(secret: DhchapSecret, ctrl_secret: Option<DhchapSecret>) -> Self {
        Self {
            secret,
            ctrl_secret,
            digests: vec![Hash::Sha256, Hash::Sha384, Hash::Sha512],
            dhgroups: vec![0, 1, 2, 3, 4, 5],
            timeout: Duration::from_secs(10),
        }
    }

    /// From `DHHC-1:` strings.
    pub fn parse(secret: &str, ctrl_secret: Option<&str>) -> Result<Self, String> {
        let secret =
            DhchapSecret::parse(secret).map_err(|e| format!("DH-HMAC-CHAP secret: {e}"))?;
        let ctrl = ctrl_secret
            .map(DhchapSecret::parse)
            .transpose()
            .map_err(|e| format!("DH-HMAC-CHAP controller secret: {e}"))?;
        Ok(Self::new(secret, ctrl))
    }
}

/// A hash by its SPDK / nvme-cli name (`sha256`, `sha384`, `sha512`).
pub fn hash_by_name(name: &str) -> Option<Hash> {
    [Hash::Sha256, Hash::Sha384, Hash::Sha512]
        .into_iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
}

/// A DH group id by its SPDK / nvme-cli name (`null`, `ffdhe2048` ... `ffdhe8192`).
pub fn dhgroup_by_name(name: &str) -> Option<u8> {
    if name.eq_ignore_ascii_case("null") {
        return Some(0);
    }
    (1..=5).find(|&id| DhGroup::from_id(id).is_some_and(|g| g.name().eq_ignore_ascii_case(name)))
}

/// What the queue does next for the transaction.
#[derive(Debug)]
pub(super) enum AuthAction {
    /// AUTH_Send this payload.
    Send(Vec<u8>),
    /// AUTH_Receive the controller's next message.
    Receive,
    /// Authenticated: the queue is ready.
    Done,
    /// The queue fails with this error.
    Fail(HostError),
}

/// Which command of the transaction is in flight.
#[derive(Debug, Clone, Copy)]
enum Awaiting {
    NegotiateSent,
    Challenge,
    ReplySent,
    Success1,
    Success2Sent,
    /// A Failure2 the host sent (why, and what it says).
    Failure2Sent(FailureReason, &'static str),
}

/// One queue's transaction in flight.
pub(super) struct QueueAuth {
    txn: HostAuth,
    awaiting: Awaiting,
    pub(super) deadline: Instant,
}

/// Transaction ids of this process (each transaction its own, like the Linux host's).
static NEXT_TID: AtomicU16 = AtomicU16::new(1);

fn auth_error(reason: Option<FailureReason>, detail: impl Into<String>) -> HostError {
    HostError::Auth {
        reason,
        detail: detail.into(),
    }
}

impl QueueAuth {
    /// Starts a transaction: the Negotiate is the first thing sent.
    pub(super) fn start(opts: &DhchapOpts, hostnqn: &str, subnqn: &str) -> (Self, AuthAction) {
        let tid = NEXT_TID.fetch_add(1, Ordering::Relaxed);
        let mut txn = HostAuth::new(
            hostnqn,
            subnqn,
            opts.secret.clone(),
            opts.ctrl_secret.clone(),
            tid,
        );
        txn.hashes = opts.digests.clone();
        txn.dhgroups = opts.dhgroups.clone();
        let negotiate = txn.negotiate();
        let me = Self {
            txn,
            awaiting: Awaiting::NegotiateSent,
            deadline: Instant::now() + opts.timeout,
        };
        (me, AuthAction::Send(negotiate))
    }

    /// The error of a transaction that did not finish in time.
    pub(super) fn timed_out(&self) -> HostError {
        auth_error(
            None,
            format!(
                "no answer to the transaction in time ({:?} pending)",
                self.awaiting
            ),
        )
    }

    /// Sends the host's Failure2 and remembers why.
    fn failure2(&mut self, reason: FailureReason, why: &'static str) -> AuthAction {
        self.awaiting = Awaiting::Failure2Sent(reason, why);
        AuthAction::Send(
            Message::Failure2 {
                tid: self.txn.tid,
                reason,
            }
            .encode(),
        )
    }

    /// The command in flight completed: `Ok(data)` with what an AUTH_Receive returned
    /// (empty for an AUTH_Send), or the command's error.
    pub(super) fn on_completion(&mut self, result: Result<&[u8], HostError>) -> AuthAction {
        let data = match (result, self.awaiting) {
            (_, Awaiting::Failure2Sent(reason, why)) => {
                return AuthAction::Fail(auth_error(Some(reason), why));
            }
            (Ok(d), _) => d,
            (Err(e), step) => {
                return AuthAction::Fail(auth_error(
                    None,
                    format!("the controller refused the command ({step:?}): {e}"),
                ))
            }
        };
        let step = self.awaiting;
        match step {
            Awaiting::NegotiateSent => {
                self.awaiting = Awaiting::Challenge;
                AuthAction::Receive
            }
            Awaiting::ReplySent => {
                self.awaiting = Awaiting::Success1;
                AuthAction::Receive
            }
            Awaiting::Success2Sent => AuthAction::Done,
            Awaiting::Challenge | Awaiting::Success1 => {
                match Message::decode(data) {
                    Ok(Message::Failure1 { reason, .. }) => {
                        return AuthAction::Fail(auth_error(
                            Some(reason),
                            format!("the controller answered Failure1: {reason}"),
                        ))
                    }
                    Ok(m) if m.tid() != self.txn.tid => {
                        return self.failure2(
                            FailureReason::IncorrectPayload,
                            "the controller's message carries another transaction id",
                        )
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return self.failure2(e.reason, "the controller's message does not parse")
                    }
                }
                if let Awaiting::Challenge = step {
                    match self.txn.reply(data) {
                        Ok(reply) => {
                            self.awaiting = Awaiting::ReplySent;
                            AuthAction::Send(reply)
                        }
                        Err(reason) => {
                            self.failure2(reason, "the controller's Challenge is not acceptable")
                        }
                    }
                } else {
                    match self.txn.success(data) {
                        Ok(Some(success2)) => {
                            self.awaiting = Awaiting::Success2Sent;
                            AuthAction::Send(success2)
                        }
                        Ok(None) => AuthAction::Done,
                        Err(reason) => self.failure2(
                            reason,
                            "the controller's response (R2) does not prove the controller secret",
                        ),
                    }
                }
            }
            Awaiting::Failure2Sent(reason, why) => AuthAction::Fail(auth_error(Some(reason), why)),
        }
    }
}
