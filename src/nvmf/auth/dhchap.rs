//! One DH-HMAC-CHAP transaction as the controller runs it on a queue, and as a host runs it: plain state machines over the messages.
//!
//! The controller ([`ControllerAuth`]) takes each AUTH_Send payload and says what the next
//! AUTH_Receive returns: Negotiate → Challenge (hash and DH group chosen from the host's
//! lists in its order among those allowed; C1 and SEQNUM S1 random; the controller's DH
//! value), Reply → Success1 (R1 checked; R2 computed when the host sent C2) or Failure1,
//! and for a bidirectional transaction Success2 (or the host's Failure2). A failure found
//! in an AUTH_Send is answered by the next AUTH_Receive with Failure1 and its reason; the
//! transaction is then over. The queue is authenticated once Success1 went out (one-way) or
//! Success2 came in (both ways). The host ([`HostAuth`]) does the mirror image.
//!
//! Responses (the specification's, as the Linux host and target compute them), with Ca the
//! challenge itself for the NULL group or `HMAC(H(g^xy mod p), C)` with a DH group:
//! `R1 = HMAC(Kh', Ca1 || S1 || T_ID || SC_C || "HostHost" || NQNh || 00h || NQNs)` and
//! `R2 = HMAC(Kc', Ca2 || S2 || T_ID || 00h || "Controller" || NQNs || 00h || NQNh)`, where
//! Kh' and Kc' are the host's and controller's transformed secrets, S and T_ID
//! little-endian.

use super::ffdhe::{DhGroup, DhKeyPair};
use super::messages::{FailureReason, Message};
use crate::nvmf::secret::{DhchapSecret, Hash};

/// The controller's side of authentication for one host on one subsystem.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub hostnqn: String,
    pub subnqn: String,
    /// The host's secret (what the host must prove it knows).
    pub host_key: DhchapSecret,
    /// The controller's secret, for a host that asks the controller to prove itself.
    pub ctrl_key: Option<DhchapSecret>,
    /// Allowed hashes, in the controller's order of preference.
    pub hashes: Vec<Hash>,
    /// Allowed DH groups (0: the NULL group).
    pub dhgroups: Vec<u8>,
}

/// Random bytes for challenges and sequence numbers.
fn random(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the kernel's random number generator");
    b
}

/// A non-zero random sequence number.
fn random_seqnum() -> u32 {
    loop {
        let b = random(4);
        let s = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if s != 0 {
            return s;
        }
    }
}

/// Equal without a time that depends on where the first difference lies.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The challenge as it enters a response: itself, or augmented with the DH session key.
fn augmented(hash: Hash, session_key: Option<&[u8]>, challenge: &[u8]) -> Vec<u8> {
    match session_key {
        None => challenge.to_vec(),
        Some(k) => hash.hmac(&hash.digest(k), &[challenge]),
    }
}

/// R1, the host's response.
#[allow(clippy::too_many_arguments)]
fn host_response(
    hash: Hash,
    key: &[u8],
    challenge: &[u8],
    seqnum: u32,
    tid: u16,
    sc_c: u8,
    hostnqn: &str,
    subnqn: &str,
) -> Vec<u8> {
    hash.hmac(
        key,
        &[
            challenge,
            &seqnum.to_le_bytes(),
            &tid.to_le_bytes(),
            &[sc_c],
            b"HostHost",
            hostnqn.as_bytes(),
            &[0],
            subnqn.as_bytes(),
        ],
    )
}

/// R2, the controller's response.
fn ctrl_response(
    hash: Hash,
    key: &[u8],
    challenge: &[u8],
    seqnum: u32,
    tid: u16,
    hostnqn: &str,
    subnqn: &str,
) -> Vec<u8> {
    hash.hmac(
        key,
        &[
            challenge,
            &seqnum.to_le_bytes(),
            &tid.to_le_bytes(),
            &[0],
            b"Controller",
            subnqn.as_bytes(),
            &[0],
            hostnqn.as_bytes(),
        ],
    )
}

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    InProgress,
    Authenticated,
    Failed(FailureReason),
}

/// What the controller waits for.
enum Step {
    Negotiate,
    Reply {
        hash: Hash,
        challenge: Vec<u8>,
        seqnum: u32,
        dh: Option<DhKeyPair>,
    },
    /// Success1 with R2 went out; the host's Success2 (or Failure2) is next.
    Success2,
    Done,
}

/// The controller's side of one transaction.
pub struct ControllerAuth {
    cfg: AuthConfig,
    step: Step,
    tid: u16,
    /// The message the next AUTH_Receive returns.
    pending: Option<Message>,
    outcome: Outcome,
}

impl ControllerAuth {
    pub fn new(cfg: AuthConfig) -> Self {
        Self {
            cfg,
            step: Step::Negotiate,
            tid: 0,
            pending: None,
            outcome: Outcome::InProgress,
        }
    }

    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// Ends the transaction with `reason`: the next AUTH_Receive returns Failure1.
    fn fail(&mut self, reason: FailureReason) {
        self.pending = Some(Message::Failure1 {
            tid: self.tid,
            reason,
        });
        self.step = Step::Done;
        self.outcome = Outcome::Failed(reason);
    }

    /// An AUTH_Send payload.
    pub fn on_send(&mut self, payload: &[u8]) {
        if self.outcome != Outcome::InProgress {
            return self.fail(FailureReason::IncorrectProtocolMessage);
        }
        let msg = match Message::decode(payload) {
            Ok(m) => m,
            Err(e) => return self.fail(e.reason),
        };
        if !matches!(msg, Message::Negotiate { .. }) && msg.tid() != self.tid {
            return self.fail(FailureReason::IncorrectPayload);
        }
        let step = std::mem::replace(&mut self.step, Step::Done);
        match (step, msg) {
            (
                Step::Negotiate,
                Message::Negotiate {
                    tid,
                    sc_c,
                    hashes,
                    dhgroups,
                },
            ) => {
                self.tid = tid;
                if sc_c != 0 {
                    // Secure channel concatenation needs TLS, which this queue lacks.
                    return self.fail(FailureReason::ConcatMismatch);
                }
                self.challenge(&hashes, &dhgroups);
            }
            (
                Step::Reply {
                    hash,
                    challenge,
                    seqnum,
                    dh,
                },
                Message::Reply {
                    seqnum: s2,
                    response,
                    challenge: c2,
                    dh_value,
                    ..
                },
            ) => self.check_reply(hash, &challenge, seqnum, dh, s2, &response, c2, &dh_value),
            (Step::Success2, Message::Success2 { .. }) => {
                self.outcome = Outcome::Authenticated;
            }
            (_, Message::Failure2 { reason, .. }) => {
                self.outcome = Outcome::Failed(reason);
            }
            _ => self.fail(FailureReason::IncorrectProtocolMessage),
        }
    }

    fn challenge(&mut self, hashes: &[u8], dhgroups: &[u8]) {
        let Some(hash) = hashes
            .iter()
            .filter_map(|&h| Hash::from_id(h))
            .find(|h| self.cfg.hashes.contains(h))
        else {
            return self.fail(FailureReason::HashUnusable);
        };
        let Some(&group) = dhgroups.iter().find(|g| self.cfg.dhgroups.contains(g)) else {
            return self.fail(FailureReason::DhGroupUnusable);
        };
        let dh = match group {
            0 => None,
            id => match DhGroup::from_id(id).map(DhGroup::key_pair) {
                Some(Ok(pair)) => Some(pair),
                _ => return self.fail(FailureReason::DhGroupUnusable),
            },
        };
        let challenge = random(hash.digest_len());
        let seqnum = random_seqnum();
        self.pending = Some(Message::Challenge {
            tid: self.tid,
            hash: hash as u8,
            dhgroup: group,
            seqnum,
            challenge: challenge.clone(),
            dh_value: dh.as_ref().map(|d| d.public.clone()).unwrap_or_default(),
        });
        self.step = Step::Reply {
            hash,
            challenge,
            seqnum,
            dh,
        };
    }

    #[allow(clippy::too_many_arguments)]
    fn check_reply(
        &mut self,
        hash: Hash,
        c1: &[u8],
        s1: u32,
        dh: Option<DhKeyPair>,
        s2: u32,
        response: &[u8],
        c2: Option<Vec<u8>>,
        host_dh: &[u8],
    ) {
        if response.len() != hash.digest_len() {
            return self.fail(FailureReason::IncorrectPayload);
        }
        let session_key = match &dh {
            None if host_dh.is_empty() => None,
            None => return self.fail(FailureReason::IncorrectPayload),
            Some(pair) => match pair.shared_secret(host_dh) {
                Ok(k) => Some(k),
                Err(_) => return self.fail(FailureReason::IncorrectPayload),
            },
        };
        let cfg = &self.cfg;
        let expected = host_response(
            hash,
            &cfg.host_key.transformed(&cfg.hostnqn),
            &augmented(hash, session_key.as_deref(), c1),
            s1,
            self.tid,
            0,
            &cfg.hostnqn,
            &cfg.subnqn,
        );
        if !ct_eq(&expected, response) {
            return self.fail(FailureReason::Failed);
        }
        let hl = hash.digest_len() as u8;
        let Some(c2) = c2 else {
            self.pending = Some(Message::Success1 {
                tid: self.tid,
                hl,
                response: None,
            });
            self.outcome = Outcome::Authenticated;
            return;
        };
        let Some(ctrl_key) = &cfg.ctrl_key else {
            // The host asks the controller to prove a secret it was not given.
            return self.fail(FailureReason::Failed);
        };
        if s2 == 0 || ct_eq(&c2, c1) {
            return self.fail(FailureReason::IncorrectPayload);
        }
        let r2 = ctrl_response(
            hash,
            &ctrl_key.transformed(&cfg.subnqn),
            &augmented(hash, session_key.as_deref(), &c2),
            s2,
            self.tid,
            &cfg.hostnqn,
            &cfg.subnqn,
        );
        self.pending = Some(Message::Success1 {
            tid: self.tid,
            hl,
            response: Some(r2),
        });
        self.step = Step::Success2;
    }

    /// What an AUTH_Receive returns now (`None`: nothing is pending, a sequence error).
    pub fn on_receive(&mut self) -> Option<Vec<u8>> {
        self.pending.take().map(|m| m.encode())
    }

    /// The length of what the next AUTH_Receive returns, left pending (a receive whose
    /// allocation length is too short is refused and the host may ask again).
    pub fn pending_len(&self) -> Option<usize> {
        self.pending.as_ref().map(|m| m.encode().len())
    }
}

/// A host's side of one transaction (pollux's host library, tests).
pub struct HostAuth {
    pub hostnqn: String,
    pub subnqn: String,
    pub host_key: DhchapSecret,
    /// Set to ask the controller to prove this secret.
    pub ctrl_key: Option<DhchapSecret>,
    pub hashes: Vec<Hash>,
    pub dhgroups: Vec<u8>,
    pub tid: u16,
    expect: Option<AwaitedSuccess>,
}

/// What the host needs to check the controller's Success1: the hash, its own C2 and S2,
/// and the DH session key.
struct AwaitedSuccess {
    hash: Hash,
    c2: Vec<u8>,
    s2: u32,
    session_key: Option<Vec<u8>>,
}

impl HostAuth {
    pub fn new(
        hostnqn: &str,
        subnqn: &str,
        host_key: DhchapSecret,
        ctrl_key: Option<DhchapSecret>,
        tid: u16,
    ) -> Self {
        Self {
            hostnqn: hostnqn.into(),
            subnqn: subnqn.into(),
            host_key,
            ctrl_key,
            hashes: vec![Hash::Sha256, Hash::Sha384, Hash::Sha512],
            dhgroups: vec![0, 1, 2, 3, 4, 5],
            tid,
            expect: None,
        }
    }

    pub fn negotiate(&self) -> Vec<u8> {
        Message::Negotiate {
            tid: self.tid,
            sc_c: 0,
            hashes: self.hashes.iter().map(|h| *h as u8).collect(),
            dhgroups: self.dhgroups.clone(),
        }
        .encode()
    }

    /// The Reply to a Challenge (or the controller's failure).
    pub fn reply(&mut self, challenge: &[u8]) -> Result<Vec<u8>, FailureReason> {
        let (hash, c1, s1, group, dhv) = match Message::decode(challenge).map_err(|e| e.reason)? {
            Message::Challenge {
                hash,
                challenge,
                seqnum,
                dhgroup,
                dh_value,
                ..
            } => (hash, challenge, seqnum, dhgroup, dh_value),
            Message::Failure1 { reason, .. } => return Err(reason),
            _ => return Err(FailureReason::IncorrectProtocolMessage),
        };
        // Only what the host offered is acceptable.
        let hash = Hash::from_id(hash)
            .filter(|h| self.hashes.contains(h))
            .ok_or(FailureReason::HashUnusable)?;
        if !self.dhgroups.contains(&group) {
            return Err(FailureReason::DhGroupUnusable);
        }
        let (session_key, my_dh) = match group {
            0 => (None, Vec::new()),
            id => {
                let pair = DhGroup::from_id(id)
                    .ok_or(FailureReason::DhGroupUnusable)?
                    .key_pair()
                    .map_err(|_| FailureReason::Failed)?;
                let k = pair
                    .shared_secret(&dhv)
                    .map_err(|_| FailureReason::IncorrectPayload)?;
                (Some(k), pair.public)
            }
        };
        let r1 = host_response(
            hash,
            &self.host_key.transformed(&self.hostnqn),
            &augmented(hash, session_key.as_deref(), &c1),
            s1,
            self.tid,
            0,
            &self.hostnqn,
            &self.subnqn,
        );
        let (c2, s2) = match &self.ctrl_key {
            Some(_) => (Some(random(hash.digest_len())), random_seqnum()),
            None => (None, 0),
        };
        self.expect = Some(AwaitedSuccess {
            hash,
            c2: c2.clone().unwrap_or_default(),
            s2,
            session_key,
        });
        Ok(Message::Reply {
            tid: self.tid,
            seqnum: s2,
            response: r1,
            challenge: c2,
            dh_value: my_dh,
        }
        .encode())
    }

    /// Checks Success1; answers Success2 when the controller had to prove itself (and did),
    /// `None` when the transaction is complete.
    pub fn success(&mut self, success1: &[u8]) -> Result<Option<Vec<u8>>, FailureReason> {
        let response = match Message::decode(success1).map_err(|e| e.reason)? {
            Message::Success1 { response, .. } => response,
            Message::Failure1 { reason, .. } => return Err(reason),
            _ => return Err(FailureReason::IncorrectProtocolMessage),
        };
        let AwaitedSuccess {
            hash,
            c2,
            s2,
            session_key,
        } = self
            .expect
            .take()
            .ok_or(FailureReason::IncorrectProtocolMessage)?;
        let Some(ctrl_key) = &self.ctrl_key else {
            return Ok(None);
        };
        let expected = ctrl_response(
            hash,
            &ctrl_key.transformed(&self.subnqn),
            &augmented(hash, session_key.as_deref(), &c2),
            s2,
            self.tid,
            &self.hostnqn,
            &self.subnqn,
        );
        match response {
            Some(r2) if ct_eq(&r2, &expected) => {
                Ok(Some(Message::Success2 { tid: self.tid }.encode()))
            }
            _ => Err(FailureReason::Failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:host-a";
    const SUBNQN: &str = "nqn.2016-06.io.pollux:auth";

    fn secret(hash: Option<Hash>, byte: u8, len: usize) -> DhchapSecret {
        DhchapSecret {
            transform: hash,
            key: vec![byte; len],
        }
    }

    fn config(ctrl_key: Option<DhchapSecret>) -> AuthConfig {
        AuthConfig {
            hostnqn: HOSTNQN.into(),
            subnqn: SUBNQN.into(),
            host_key: secret(Some(Hash::Sha256), 1, 32),
            ctrl_key,
            hashes: vec![Hash::Sha256, Hash::Sha384, Hash::Sha512],
            dhgroups: vec![0, 1, 2, 3, 4, 5],
        }
    }

    /// Runs a whole transaction; returns both sides' view.
    fn run(ctrl: &mut ControllerAuth, host: &mut HostAuth) -> Result<(), FailureReason> {
        ctrl.on_send(&host.negotiate());
        let challenge = ctrl.on_receive().expect("a challenge");
        let reply = host.reply(&challenge)?;
        ctrl.on_send(&reply);
        let success1 = ctrl.on_receive().expect("success1 or failure1");
        if let Some(success2) = host.success(&success1)? {
            ctrl.on_send(&success2);
        }
        Ok(())
    }

    #[test]
    fn every_hash_and_group_one_way_and_both_ways() {
        for (hash, group) in [
            (Hash::Sha256, 0u8),
            (Hash::Sha384, 0),
            (Hash::Sha512, 0),
            (Hash::Sha256, 1),
            (Hash::Sha512, 2),
        ] {
            for both_ways in [false, true] {
                let ctrl_key = both_ways.then(|| secret(Some(Hash::Sha512), 2, 64));
                let mut ctrl = ControllerAuth::new(config(ctrl_key.clone()));
                let mut host = HostAuth::new(
                    HOSTNQN,
                    SUBNQN,
                    secret(Some(Hash::Sha256), 1, 32),
                    ctrl_key,
                    7,
                );
                host.hashes = vec![hash];
                host.dhgroups = vec![group];
                run(&mut ctrl, &mut host).unwrap();
                assert_eq!(
                    ctrl.outcome(),
                    Outcome::Authenticated,
                    "{hash:?} group {group} both ways {both_ways}"
                );
            }
        }
    }

    /// `pending_len` looks without taking: the message is still there for the receive.
    #[test]
    fn pending_length_leaves_the_message_pending() {
        let mut ctrl = ControllerAuth::new(config(None));
        let host = HostAuth::new(HOSTNQN, SUBNQN, secret(None, 1, 32), None, 1);
        assert_eq!(ctrl.pending_len(), None);
        ctrl.on_send(&host.negotiate());
        let len = ctrl.pending_len().expect("a challenge is pending");
        assert_eq!(ctrl.pending_len(), Some(len));
        assert_eq!(ctrl.on_receive().map(|m| m.len()), Some(len));
        assert_eq!(ctrl.pending_len(), None);
    }

    #[test]
    fn wrong_or_missing_keys_fail_with_their_reason() {
        // The host holds another secret.
        let mut ctrl = ControllerAuth::new(config(None));
        let mut host = HostAuth::new(HOSTNQN, SUBNQN, secret(Some(Hash::Sha256), 9, 32), None, 1);
        assert_eq!(run(&mut ctrl, &mut host), Err(FailureReason::Failed));
        assert_eq!(ctrl.outcome(), Outcome::Failed(FailureReason::Failed));
        // The same bytes under another NQN transform differently.
        let mut ctrl = ControllerAuth::new(config(None));
        let mut host = HostAuth::new(
            "nqn.2014-08.org.nvmexpress:uuid:host-b",
            SUBNQN,
            secret(Some(Hash::Sha256), 1, 32),
            None,
            1,
        );
        assert_eq!(run(&mut ctrl, &mut host), Err(FailureReason::Failed));
        // The host wants the controller to prove a key the controller was not given.
        let mut ctrl = ControllerAuth::new(config(None));
        let mut host = HostAuth::new(
            HOSTNQN,
            SUBNQN,
            secret(Some(Hash::Sha256), 1, 32),
            Some(secret(None, 3, 32)),
            1,
        );
        assert_eq!(run(&mut ctrl, &mut host), Err(FailureReason::Failed));
        // The controller proves another key than the host expects.
        let mut ctrl = ControllerAuth::new(config(Some(secret(None, 4, 32))));
        let mut host = HostAuth::new(
            HOSTNQN,
            SUBNQN,
            secret(Some(Hash::Sha256), 1, 32),
            Some(secret(None, 5, 32)),
            1,
        );
        assert_eq!(run(&mut ctrl, &mut host), Err(FailureReason::Failed));
    }

    #[test]
    fn unusable_hash_or_group_and_protocol_errors() {
        let mut cfg = config(None);
        cfg.hashes = vec![Hash::Sha512];
        let mut ctrl = ControllerAuth::new(cfg);
        let mut host = HostAuth::new(HOSTNQN, SUBNQN, secret(None, 1, 32), None, 1);
        host.hashes = vec![Hash::Sha256];
        assert_eq!(run(&mut ctrl, &mut host), Err(FailureReason::HashUnusable));

        let mut cfg = config(None);
        cfg.dhgroups = vec![3];
        let mut ctrl = ControllerAuth::new(cfg);
        let mut host = HostAuth::new(HOSTNQN, SUBNQN, secret(None, 1, 32), None, 1);
        host.dhgroups = vec![0, 1];
        assert_eq!(
            run(&mut ctrl, &mut host),
            Err(FailureReason::DhGroupUnusable)
        );

        // A Reply before any Negotiate, a truncated Reply, a Reply of another transaction.
        let mut ctrl = ControllerAuth::new(config(None));
        let mut host = HostAuth::new(HOSTNQN, SUBNQN, secret(None, 1, 32), None, 1);
        ctrl.on_send(&Message::Success2 { tid: 0 }.encode());
        assert_eq!(
            ctrl.outcome(),
            Outcome::Failed(FailureReason::IncorrectProtocolMessage)
        );
        let mut ctrl = ControllerAuth::new(config(None));
        ctrl.on_send(&host.negotiate());
        let reply = host.reply(&ctrl.on_receive().unwrap()).unwrap();
        ctrl.on_send(&reply[..20]);
        assert_eq!(
            ctrl.outcome(),
            Outcome::Failed(FailureReason::IncorrectPayload)
        );
        let mut ctrl = ControllerAuth::new(config(None));
        ctrl.on_send(&host.negotiate());
        let challenge = ctrl.on_receive().unwrap();
        host.tid = 2;
        let reply = host.reply(&challenge).unwrap();
        ctrl.on_send(&reply);
        assert_eq!(
            ctrl.outcome(),
            Outcome::Failed(FailureReason::IncorrectPayload)
        );
        // A replayed Reply (from an earlier transaction) fails: the challenge is new.
        let mut ctrl = ControllerAuth::new(config(None));
        let mut host = HostAuth::new(HOSTNQN, SUBNQN, secret(Some(Hash::Sha256), 1, 32), None, 1);
        ctrl.on_send(&host.negotiate());
        let old_reply = host.reply(&ctrl.on_receive().unwrap()).unwrap();
        let mut ctrl = ControllerAuth::new(config(None));
        ctrl.on_send(&host.negotiate());
        let _ = ctrl.on_receive();
        ctrl.on_send(&old_reply);
        assert_eq!(ctrl.outcome(), Outcome::Failed(FailureReason::Failed));
        assert!(matches!(
            Message::decode(&ctrl.on_receive().unwrap()),
            Ok(Message::Failure1 {
                reason: FailureReason::Failed,
                ..
            })
        ));
        // Secure channel concatenation without TLS.
        let mut ctrl = ControllerAuth::new(config(None));
        ctrl.on_send(
            &Message::Negotiate {
                tid: 1,
                sc_c: 1,
                hashes: vec![1],
                dhgroups: vec![0],
            }
            .encode(),
        );
        assert_eq!(
            ctrl.outcome(),
            Outcome::Failed(FailureReason::ConcatMismatch)
        );
    }
}
