//! The TLS harnesses: the server side of a TLS 1.3 PSK handshake fed arbitrary bytes (the
//! first thing a secure-channel listener does with a peer's bytes), and the PSK interchange
//! and identity parsers.
//!
//! `handshake`: the first 4 bytes seed how the rest is split into reads; each piece is fed
//! to a server session whose lookup knows one identity (`IDENTITY`, key `KEY`), and the
//! handshake is advanced after every piece. It must never panic, never report an
//! established session (the client's Finished covers the server's fresh random, so no fixed
//! byte string can complete it), stop at the first error (a failed session stays failed) and
//! keep its output bounded. `psk`: the input as text must parse or be refused as an
//! interchange key (a parsed key formats back to a string that parses to the same key) and
//! as an identity (a parsed identity names non-empty NQNs), and deriving credentials from
//! whatever parsed must not panic.

use crate::Splits;
use pollux::nvmf::psk::{parse_identity, ConfiguredPsk, IdentityVersion};
use pollux::sock::tls::{ExternalPsk, PskLookup, TlsOpts, TlsSession, TlsState};
use std::sync::Arc;

/// The one identity the handshake harness's server knows.
pub const IDENTITY: &str =
    "NVMe0R01 nqn.2014-08.org.nvmexpress:uuid:fuzz nqn.2016-06.io.pollux:fuzz";
/// Its TLS PSK (32 bytes: TLS_AES_128_GCM_SHA256).
pub const KEY: [u8; 32] = [0x42; 32];

struct OneKey;

impl PskLookup for OneKey {
    fn lookup(&self, identity: &str) -> Option<ExternalPsk> {
        (identity == IDENTITY).then(|| ExternalPsk {
            identity: IDENTITY.into(),
            key: KEY.to_vec(),
        })
    }
}

/// A server session of the harness.
pub fn server() -> TlsSession {
    TlsSession::new(&TlsOpts::Server(Arc::new(OneKey))).expect("a TLS server session")
}

/// A client session that offers the harness's identity and key (seed generation).
pub fn client() -> TlsSession {
    TlsSession::new(&TlsOpts::Client(ExternalPsk {
        identity: IDENTITY.into(),
        key: KEY.to_vec(),
    }))
    .expect("a TLS client session")
}

pub fn handshake(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let seed = u32::from_le_bytes(data[..4].try_into().expect("4 bytes"));
    let mut s = server();
    let mut failed = false;
    for piece in Splits::new(seed, 512).chunks(&data[4..]) {
        s.feed(piece);
        match s.handshake() {
            Ok(done) => {
                assert!(!failed, "a failed session came back");
                assert!(!done, "arbitrary bytes completed a handshake");
            }
            Err(_) => {
                failed = true;
                assert_eq!(s.state(), TlsState::Failed);
            }
        }
        // What the server answers (ServerHello .. Finished, or an alert) stays small.
        assert!(s.outgoing().len() < 64 * 1024, "unbounded handshake output");
        let n = s.outgoing().len();
        s.consumed(n);
    }
    s.feed_eof();
    let _ = s.handshake();
    assert_ne!(s.state(), TlsState::Established);
}

pub fn psk(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = ConfiguredPsk::parse(text) {
        let again = ConfiguredPsk::parse(&key.format()).expect("a formatted key parses");
        assert!(again == key, "format/parse round trip changed the key");
        for v in [IdentityVersion::V0, IdentityVersion::V1] {
            let _ = key.credentials(v, "nqn.h", "nqn.s");
        }
    }
    if let Ok(id) = parse_identity(text) {
        assert!(!id.hostnqn.is_empty() && !id.subnqn.is_empty());
        let key = ConfiguredPsk {
            retained_hash: None,
            key: vec![1; 32],
        };
        let _ = key.credentials(id.version, &id.hostnqn, &id.subnqn);
    }
}
