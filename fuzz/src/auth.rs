//! The DH-HMAC-CHAP harness: arbitrary AUTH_Send payloads through the message decoder, the controller's transaction and the host's, checking what must hold for any bytes.
//!
//! Input layout: byte 0 configures the controller (bits 0-2 the hashes it allows, SHA-256,
//! SHA-384, SHA-512, none meaning all; bit 3 allow ffdhe2048 besides the NULL group — the
//! larger groups cost seconds per input and add no decoding paths; bit 4 a controller key,
//! so a host's C2 is answered); then records `len u16 LE, payload` until the input runs out,
//! each one AUTH_Send to the same controller transaction, followed by an AUTH_Receive.
//! Properties for ANY input: no panic; a message that decodes re-encodes to bytes that
//! decode to the same message; what the controller returns (Challenge, Success1, Failure1)
//! decodes, and its length is what `pending_len` announced; the host's state machine
//! given the same payloads answers without panicking; and no input authenticates, since
//! the fuzzer does not know the host's secret (a success would be a forged response).

use pollux::nvmf::auth::dhchap::{AuthConfig, ControllerAuth, HostAuth, Outcome};
use pollux::nvmf::auth::messages::Message;
use pollux::nvmf::secret::{DhchapSecret, Hash};

pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:fuzz-host";
pub const SUBNQN: &str = "nqn.2016-06.io.pollux:fuzz-auth";

fn secret(byte: u8) -> DhchapSecret {
    DhchapSecret {
        transform: Some(Hash::Sha256),
        key: vec![byte; 32],
    }
}

/// The controller's configuration from the input's first byte.
pub fn config(byte: u8) -> AuthConfig {
    let all = [Hash::Sha256, Hash::Sha384, Hash::Sha512];
    let mut hashes: Vec<Hash> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| byte & (1 << i) != 0)
        .map(|(_, h)| *h)
        .collect();
    if hashes.is_empty() {
        hashes = all.to_vec();
    }
    AuthConfig {
        hostnqn: HOSTNQN.into(),
        subnqn: SUBNQN.into(),
        host_key: secret(1),
        ctrl_key: (byte & 0x10 != 0).then(|| secret(2)),
        hashes,
        dhgroups: if byte & 0x08 != 0 {
            vec![0, 1]
        } else {
            vec![0]
        },
    }
}

/// The records after the configuration byte (a truncated last record is ignored).
pub fn records(mut rest: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while rest.len() >= 2 {
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        rest = &rest[2..];
        let take = len.min(rest.len());
        out.push(&rest[..take]);
        rest = &rest[take..];
    }
    out
}

pub fn check(data: &[u8]) {
    let Some((&cfg, rest)) = data.split_first() else {
        return;
    };
    let mut ctrl = ControllerAuth::new(config(cfg));
    let mut host = HostAuth::new(HOSTNQN, SUBNQN, secret(1), Some(secret(2)), 1);
    host.dhgroups = vec![0, 1];
    for payload in records(rest) {
        if let Ok(msg) = Message::decode(payload) {
            let again = Message::decode(&msg.encode());
            assert_eq!(again.as_ref(), Ok(&msg), "re-encoding changed the message");
        }
        ctrl.on_send(payload);
        let announced = ctrl.pending_len();
        let answer = ctrl.on_receive();
        assert_eq!(announced, answer.as_ref().map(Vec::len));
        if let Some(answer) = &answer {
            let decoded = Message::decode(answer);
            assert!(decoded.is_ok(), "the controller sent {decoded:?}");
        }
        assert_ne!(
            ctrl.outcome(),
            Outcome::Authenticated,
            "an input without the secret authenticated"
        );
        // The host side takes the same bytes as a Challenge and as a Success1.
        let _ = host.reply(payload);
        let _ = host.success(payload);
    }
}
