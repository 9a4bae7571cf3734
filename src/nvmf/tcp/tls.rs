//! TLS on the target: the PSK lookup of `ssl` listeners and the Connect checks that bind a queue's TLS identity to its host and subsystem.
//!
//! A secure-channel listener (`nvmf_subsystem_add_listener ... secure_channel`) accepts `ssl`
//! sockets only: a plaintext peer fails the TLS handshake and is closed before any PDU is
//! read. The handshake's identity (`NVMe0R0<h> <hostnqn> <subnqn>` or the `NVMe1R0<h>` form
//! with its PSK digest, see `nvmf::psk`) is looked up in this reactor's snapshot of the
//! target: the subsystem must allow the host and hold a PSK for it (`nvmf_subsystem_add_host
//! ... psk`); the TLS PSK derived from it must reproduce the offered identity (for version 1
//! its digest) and select the offered suite. The lookup reads only memory, so the handshake
//! never blocks the reactor. At Connect, [`check_connect`] refuses a queue whose TLS identity
//! names another host or subsystem, and a host that has a PSK but came without TLS.

use crate::nvmf::psk::parse_identity;
use crate::nvmf::subsystem::Subsystem;
use crate::nvmf::target::TargetView;
use crate::sock::tls::{ExternalPsk, PskLookup};
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    /// This reactor's target snapshot, for lookups made inside a socket poll.
    static VIEW: RefCell<Option<Arc<TargetView>>> = const { RefCell::new(None) };
}

/// Records this reactor's snapshot (called with every published view).
pub(super) fn set_view(view: &Arc<TargetView>) {
    VIEW.with(|v| *v.borrow_mut() = Some(view.clone()));
}

/// The PSK lookup of every secure-channel listener.
pub struct TargetPskLookup;

impl PskLookup for TargetPskLookup {
    fn lookup(&self, identity: &str) -> Option<ExternalPsk> {
        let view = VIEW.with(|v| v.borrow().clone())?;
        let found = lookup_in(&view, identity);
        if found.is_none() {
            tracing::info!(identity, "TLS: no PSK for the offered identity");
        }
        found
    }
}

fn lookup_in(view: &TargetView, identity: &str) -> Option<ExternalPsk> {
    let id = parse_identity(identity).ok()?;
    let s = view.by_nqn(&id.subnqn)?;
    if !s.host_allowed(&id.hostnqn) {
        return None;
    }
    let psk = &s.host_psks.get(&id.hostnqn)?.psk;
    let creds = psk.credentials(id.version, &id.hostnqn, &id.subnqn).ok()?;
    // The derivation must reproduce the identity: same suite (hash) and, for version 1, the
    // same PSK digest.
    if creds.identity != identity || creds.suite != id.suite {
        return None;
    }
    Some(ExternalPsk {
        identity: creds.identity,
        key: creds.psk,
    })
}

/// Why a Connect is refused for its transport security.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TlsRefusal {
    /// The TLS identity names another host or subsystem than the Connect.
    IdentityMismatch,
    /// The host has a PSK but the queue is not TLS.
    TlsRequired,
}

/// Checks a Connect's host and subsystem against the queue's TLS identity.
pub(super) fn check_connect(
    identity: Option<&str>,
    s: &Subsystem,
    hostnqn: &str,
    subnqn: &str,
) -> Result<(), TlsRefusal> {
    match identity {
        Some(identity) => match parse_identity(identity) {
            Ok(id) if id.hostnqn == hostnqn && id.subnqn == subnqn => Ok(()),
            _ => Err(TlsRefusal::IdentityMismatch),
        },
        None if s.host_psks.contains_key(hostnqn) => Err(TlsRefusal::TlsRequired),
        None => Ok(()),
    }
}
