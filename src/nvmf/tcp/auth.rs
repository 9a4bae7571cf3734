//! DH-HMAC-CHAP on a queue pair: Authentication Send/Receive and the gate that refuses other commands until the queue is authenticated.
//!
//! A queue whose host has a key in the subsystem (`Subsystem::host_keys`) is connected with
//! AUTHREQ.ATR set in the Connect response and stays [`QpAuth::Required`] until a
//! transaction ([`ControllerAuth`]) succeeds; until then every command but the fabrics ones
//! (Property Get/Set, Authentication Send/Receive, Disconnect) answers Authentication
//! Required, as the Linux target does. A Negotiate on an authenticated queue starts a
//! re-authentication.
//!
//! Keys, as SPDK uses them: each transaction (the host's Negotiate) takes the host's keys
//! as the subsystem holds them *now*, so `nvmf_subsystem_set_keys` applies to the next
//! re-authentication of controllers already connected, and a host whose keys were taken
//! away, or whose key was removed from the keyring (`keyring_file_remove_key`; SPDK's
//! removed keys answer -ENOKEY to every later use), fails its next transaction with
//! Failure1 "authentication failed" and a log line naming why. Unlike SPDK, which reads the
//! key file at every use, the reactor never touches the filesystem: the secrets were read
//! and parsed on the main reactor when `nvmf_subsystem_add_host` / `_set_keys` named the
//! keys, and reach the poll groups in the published target view (so a rotated key file
//! takes effect with the next `_set_keys`, not by itself).

use super::*;
use crate::nvmf::auth::dhchap::{AuthConfig, ControllerAuth, Outcome};
use crate::nvmf::auth::messages::{FailureReason, Message, SECP};
use crate::nvmf::subsystem::HostKeys;

/// The authentication state of one queue.
pub(super) enum QpAuth {
    /// The host has no key: the queue needs no authentication.
    NotRequired,
    /// The host must authenticate; no transaction has started.
    Required { subnqn: Arc<str> },
    /// A transaction is under way (or ended; its outcome says how).
    Running {
        subnqn: Arc<str>,
        txn: Box<ControllerAuth>,
        /// The queue was authenticated before this transaction (re-authentication).
        was_authenticated: bool,
    },
    /// The keys could not be used: the next AUTH_Receive returns this Failure1.
    Refused {
        subnqn: Arc<str>,
        failure1: Option<Vec<u8>>,
    },
}

impl QpAuth {
    /// Whether commands other than the fabrics ones may run.
    pub(super) fn allows_commands(&self) -> bool {
        match self {
            Self::NotRequired => true,
            Self::Running {
                txn,
                was_authenticated,
                ..
            } => match txn.outcome() {
                Outcome::Authenticated => true,
                Outcome::InProgress => *was_authenticated,
                Outcome::Failed(_) => false,
            },
            Self::Required { .. } | Self::Refused { .. } => false,
        }
    }
}

/// The transaction's configuration from the host's keys as the subsystem holds them now.
fn auth_config(
    keys: Option<&HostKeys>,
    hostnqn: &str,
    subnqn: &str,
    policy: &crate::nvmf::target::DhchapPolicy,
) -> Result<AuthConfig, String> {
    let keys = keys.ok_or("the host no longer has a DH-HMAC-CHAP key")?;
    for k in std::iter::once(&keys.key).chain(keys.ctrlr_key.as_ref()) {
        if k.is_removed() {
            return Err(format!("key '{}' was removed from the keyring", k.name));
        }
    }
    Ok(AuthConfig {
        hostnqn: hostnqn.to_string(),
        subnqn: subnqn.to_string(),
        host_key: keys.secret.clone(),
        ctrl_key: keys.ctrlr_secret.clone(),
        hashes: policy.digests.clone(),
        dhgroups: policy.dhgroups.clone(),
    })
}

/// The checks both commands share: SECP E9h, SPSP0 = SPSP1 = 01h, a non-zero length.
fn check_fields(a: &wire::AuthCmd) -> Result<(), Status> {
    if a.secp != SECP || a.spsp0 != 0x01 || a.spsp1 != 0x01 || a.length == 0 {
        return Err(Status::INVALID_FIELD.with_dnr());
    }
    Ok(())
}

impl PollGroup {
    /// Authentication Send: the host's Negotiate, Reply, Success2 or Failure2.
    pub(super) fn auth_send(&mut self, idx: usize, slot: u16, a: &wire::AuthCmd) -> (Status, u64) {
        let policy = self.view.dhchap.clone();
        let qp = &mut self.qpairs[idx];
        if qp.qid.is_none() {
            return (Status::COMMAND_SEQUENCE_ERROR.with_dnr(), 0);
        }
        if let Err(st) = check_fields(a) {
            return (st, 0);
        }
        let req = &qp.machine.reqs[slot as usize];
        let Some(payload) = req.buf.as_deref() else {
            return (Status::DATA_SGL_LENGTH_INVALID.with_dnr(), 0);
        };
        if payload.len() != a.length as usize {
            return (Status::DATA_SGL_LENGTH_INVALID.with_dnr(), 0);
        }
        let hostnqn = qp.hostnqn.clone().unwrap_or_else(|| Arc::from(""));
        let (qid, cntlid, subsys_id) = (qp.qid.unwrap_or(0), qp.cntlid, qp.subsys_id);
        let state = std::mem::replace(&mut qp.auth, QpAuth::NotRequired);
        let is_negotiate = matches!(Message::decode(payload), Ok(Message::Negotiate { .. }));
        qp.auth = match state {
            QpAuth::NotRequired => {
                tracing::info!(cntlid, qid, %hostnqn, "Authentication Send from a host without a key");
                qp.auth = QpAuth::NotRequired;
                return (Status::INVALID_FIELD.with_dnr(), 0);
            }
            QpAuth::Running {
                mut txn,
                subnqn,
                was_authenticated,
            } if !is_negotiate => {
                txn.on_send(payload);
                if let Outcome::Failed(reason) = txn.outcome() {
                    tracing::info!(cntlid, qid, %hostnqn, %reason, "DH-HMAC-CHAP authentication failed");
                }
                QpAuth::Running {
                    txn,
                    subnqn,
                    was_authenticated,
                }
            }
            // A Negotiate starts a transaction (again, on an authenticated queue).
            other => {
                let (subnqn, was_authenticated) = match other {
                    QpAuth::Required { subnqn } | QpAuth::Refused { subnqn, .. } => (subnqn, false),
                    QpAuth::Running { subnqn, txn, .. } => {
                        let ok = txn.outcome() == Outcome::Authenticated;
                        (subnqn, ok)
                    }
                    QpAuth::NotRequired => return (Status::INVALID_FIELD.with_dnr(), 0),
                };
                let keys = self
                    .view
                    .subsystem(subsys_id)
                    .and_then(|s| s.host_keys.get(&*hostnqn));
                match auth_config(keys, &hostnqn, &subnqn, &policy) {
                    Ok(cfg) => {
                        let mut txn = Box::new(ControllerAuth::new(cfg));
                        txn.on_send(payload);
                        if let Outcome::Failed(reason) = txn.outcome() {
                            tracing::info!(cntlid, qid, %hostnqn, %reason, "DH-HMAC-CHAP negotiation failed");
                        }
                        QpAuth::Running {
                            subnqn,
                            txn,
                            was_authenticated,
                        }
                    }
                    Err(why) => {
                        tracing::warn!(cntlid, qid, %hostnqn, reason = %why, "DH-HMAC-CHAP transaction failed: the key could not be used");
                        let tid = Message::decode(payload).map(|m| m.tid()).unwrap_or(0);
                        QpAuth::Refused {
                            subnqn,
                            failure1: Some(
                                Message::Failure1 {
                                    tid,
                                    reason: FailureReason::Failed,
                                }
                                .encode(),
                            ),
                        }
                    }
                }
            }
        };
        (Status::SUCCESS, 0)
    }

    /// Authentication Receive: the controller's pending Challenge, Success1 or Failure1;
    /// returns the status and the length of the message put in the command's buffer.
    pub(super) fn auth_receive(
        &mut self,
        idx: usize,
        slot: u16,
        a: &wire::AuthCmd,
    ) -> (Status, usize) {
        let qp = &mut self.qpairs[idx];
        if qp.qid.is_none() {
            return (Status::COMMAND_SEQUENCE_ERROR.with_dnr(), 0);
        }
        if let Err(st) = check_fields(a) {
            return (st, 0);
        }
        let pending = match &qp.auth {
            QpAuth::Running { txn, .. } => txn.pending_len(),
            QpAuth::Refused { failure1, .. } => failure1.as_ref().map(Vec::len),
            QpAuth::NotRequired | QpAuth::Required { .. } => None,
        };
        let Some(len) = pending else {
            return (Status::COMMAND_SEQUENCE_ERROR.with_dnr(), 0);
        };
        let room = qp.machine.reqs[slot as usize]
            .buf
            .as_ref()
            .map_or(0, |b| b.len());
        if len > room || len > a.length as usize {
            // Too short to hold it: refused, the message stays pending for another try.
            return (Status::INVALID_FIELD.with_dnr(), 0);
        }
        let msg = match &mut qp.auth {
            QpAuth::Running { txn, .. } => txn.on_receive(),
            QpAuth::Refused { failure1, .. } => failure1.take(),
            QpAuth::NotRequired | QpAuth::Required { .. } => None,
        };
        let (Some(msg), Some(buf)) = (msg, qp.machine.reqs[slot as usize].buf.as_mut()) else {
            return (Status::COMMAND_SEQUENCE_ERROR.with_dnr(), 0);
        };
        buf.as_mut_slice()[..msg.len()].copy_from_slice(&msg);
        (Status::SUCCESS, msg.len())
    }
}
