//! NVMe/TCP TLS pre-shared keys: the interchange format, the retained and TLS PSK derivations and the PSK identities.
//!
//! NVMe/TCP transport specification, TLS part (TP 8011 / 8018). A configured PSK is written
//! `NVMeTLSkey-1:HH:<base64>:` where `HH` names the hash that derives the retained PSK (00
//! none, 01 SHA-256, 02 SHA-384) and the base64 holds the 32 or 48 key bytes followed by
//! their CRC-32 (IEEE, little-endian), as for DH-HMAC-CHAP secrets. The key length chooses
//! the cipher suite: 32 bytes TLS_AES_128_GCM_SHA256, 48 bytes TLS_AES_256_GCM_SHA384, and
//! that suite's hash is the one of the identity and of the TLS PSK derivation.
//!
//! - retained PSK = HKDF-Expand-Label(HKDF-Extract(0, configured), "HostNQN", hostnqn, L)
//!   (the configured PSK itself when `HH` is 00);
//! - identity version 0: `NVMe0R0<h> <hostnqn> <subnqn>`, TLS PSK =
//!   HKDF-Expand-Label(HKDF-Extract(0, retained), "nvme-tls-psk", identity, L) (SPDK);
//! - identity version 1: `NVMe1R0<h> <hostnqn> <subnqn> <digest>` where digest =
//!   base64(HMAC(hash, retained, hostnqn " " subnqn " NVMe-over-Fabrics")), TLS PSK =
//!   HKDF-Expand-Label(HKDF-Extract(0, retained), "nvme-tls-psk", "0<h> <digest>", L) (Linux).
//!
//! HKDF-Expand-Label is RFC 8446's (length-prefixed "tls13 " label and context).

use crate::nvmf::secret::{from_interchange_error, Hash, Interchange};
use base64::Engine;
use sha2::{Sha256, Sha384};

/// The TLS 1.3 cipher suite a PSK selects (by its length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherSuite {
    Aes128GcmSha256,
    Aes256GcmSha384,
}

impl CipherSuite {
    /// The suite for a configured PSK of `len` bytes.
    pub fn for_key_len(len: usize) -> Option<Self> {
        match len {
            32 => Some(Self::Aes128GcmSha256),
            48 => Some(Self::Aes256GcmSha384),
            _ => None,
        }
    }

    /// OpenSSL's (and the RFC's) name of the suite.
    pub fn name(self) -> &'static str {
        match self {
            Self::Aes128GcmSha256 => "TLS_AES_128_GCM_SHA256",
            Self::Aes256GcmSha384 => "TLS_AES_256_GCM_SHA384",
        }
    }

    /// The suite's two-byte TLS code point.
    pub fn code(self) -> [u8; 2] {
        match self {
            Self::Aes128GcmSha256 => [0x13, 0x01],
            Self::Aes256GcmSha384 => [0x13, 0x02],
        }
    }

    /// The hash of the suite (of the identity and the TLS PSK derivation).
    pub fn hash(self) -> Hash {
        match self {
            Self::Aes128GcmSha256 => Hash::Sha256,
            Self::Aes256GcmSha384 => Hash::Sha384,
        }
    }
}

/// Why a PSK or an identity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PskError {
    #[error("not a TLS PSK: it must read NVMeTLSkey-1:<hash>:<base64>:")]
    Format,
    #[error("unknown PSK hash {0:?} (00 none, 01 SHA-256, 02 SHA-384)")]
    Hash(String),
    #[error("the PSK is not base64: {0}")]
    Base64(String),
    #[error("the PSK holds {0} bytes with its CRC; it must hold 32 or 48 and 4")]
    Length(usize),
    #[error("the PSK's CRC-32 does not match (written {written:08x}, computed {computed:08x})")]
    Crc { written: u32, computed: u32 },
    #[error("the PSK identity is too long for HKDF-Expand-Label ({0} bytes, at most 255)")]
    IdentityTooLong(usize),
    #[error("not an NVMe TLS PSK identity: {0}")]
    Identity(String),
}

/// `NVMeTLSkey-1:` PSKs: no hash, SHA-256 or SHA-384; 32 or 48 bytes.
const NVME_TLS_KEY_1: Interchange = Interchange {
    prefix: "NVMeTLSkey-1:",
    closing_colon_optional: false,
    hashes: &[Hash::Sha256, Hash::Sha384],
    key_lens: &[32, 48],
};

from_interchange_error!(PskError);

/// A configured PSK parsed from the interchange format.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfiguredPsk {
    /// The hash deriving the retained PSK; `None` for 00 (the key is the retained PSK).
    pub retained_hash: Option<Hash>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for ConfiguredPsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfiguredPsk")
            .field("retained_hash", &self.retained_hash)
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .finish()
    }
}

/// The two identity forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdentityVersion {
    /// `NVMe0R0<h> <hostnqn> <subnqn>` (TP 8011; what SPDK sends and accepts).
    #[default]
    V0,
    /// `NVMe1R0<h> <hostnqn> <subnqn> <digest>` (TP 8018; what Linux sends).
    V1,
}

/// An identity taken apart (what a server learns from a ClientHello).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedIdentity {
    pub version: IdentityVersion,
    pub suite: CipherSuite,
    pub hostnqn: String,
    pub subnqn: String,
    /// The base64 PSK digest of a version 1 identity.
    pub digest: Option<String>,
}

/// An identity with its TLS PSK, ready for a handshake.
#[derive(Clone)]
pub struct TlsCredentials {
    pub identity: String,
    pub suite: CipherSuite,
    pub psk: Vec<u8>,
}

impl std::fmt::Debug for TlsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCredentials")
            .field("identity", &self.identity)
            .field("suite", &self.suite)
            .field("psk", &format_args!("<{} bytes>", self.psk.len()))
            .finish()
    }
}

impl ConfiguredPsk {
    /// Parses `NVMeTLSkey-1:HH:<base64>:`, checking the hash, the length and the CRC.
    pub fn parse(text: &str) -> Result<Self, PskError> {
        let (retained_hash, key) = NVME_TLS_KEY_1.parse(text)?;
        Ok(Self { retained_hash, key })
    }

    /// The interchange representation `parse` reads.
    pub fn format(&self) -> String {
        NVME_TLS_KEY_1.format(self.retained_hash, &self.key)
    }

    /// The cipher suite the key selects (its length was checked by `parse`).
    pub fn suite(&self) -> CipherSuite {
        CipherSuite::for_key_len(self.key.len()).unwrap_or(CipherSuite::Aes128GcmSha256)
    }

    /// The retained PSK of `hostnqn`.
    pub fn retained(&self, hostnqn: &str) -> Result<Vec<u8>, PskError> {
        match self.retained_hash {
            None => Ok(self.key.clone()),
            Some(h) => hkdf_extract_expand_label(
                h,
                &self.key,
                b"HostNQN",
                hostnqn.as_bytes(),
                self.key.len(),
            ),
        }
    }

    /// The identity (of the given form) and TLS PSK of `hostnqn` talking to `subnqn`.
    pub fn credentials(
        &self,
        version: IdentityVersion,
        hostnqn: &str,
        subnqn: &str,
    ) -> Result<TlsCredentials, PskError> {
        let suite = self.suite();
        let hash = suite.hash();
        let retained = self.retained(hostnqn)?;
        let h = hash as u8;
        let (identity, context) = match version {
            IdentityVersion::V0 => {
                let id = format!("NVMe0R0{h} {hostnqn} {subnqn}");
                (id.clone(), id)
            }
            IdentityVersion::V1 => {
                let digest = psk_digest(hash, &retained, hostnqn, subnqn);
                (
                    format!("NVMe1R0{h} {hostnqn} {subnqn} {digest}"),
                    format!("{h:02} {digest}"),
                )
            }
        };
        let psk = hkdf_extract_expand_label(
            hash,
            &retained,
            b"nvme-tls-psk",
            context.as_bytes(),
            retained.len(),
        )?;
        Ok(TlsCredentials {
            identity,
            suite,
            psk,
        })
    }
}

/// The base64 PSK digest of a version 1 identity.
pub fn psk_digest(hash: Hash, retained: &[u8], hostnqn: &str, subnqn: &str) -> String {
    let mac = hash.hmac(
        retained,
        &[
            hostnqn.as_bytes(),
            b" ",
            subnqn.as_bytes(),
            b" NVMe-over-Fabrics",
        ],
    );
    base64::engine::general_purpose::STANDARD.encode(mac)
}

/// Takes an identity apart: `NVMe<v>R0<h> <hostnqn> <subnqn>[ <digest>]`.
pub fn parse_identity(identity: &str) -> Result<ParsedIdentity, PskError> {
    let bad = || PskError::Identity(identity.chars().take(64).collect());
    let mut parts = identity.split(' ');
    let head = parts.next().ok_or_else(bad)?;
    let (version, h) = match head.as_bytes() {
        [b'N', b'V', b'M', b'e', v, b'R', b'0', h] => (*v, *h),
        _ => return Err(bad()),
    };
    let version = match version {
        b'0' => IdentityVersion::V0,
        b'1' => IdentityVersion::V1,
        _ => return Err(bad()),
    };
    let suite = match h {
        b'1' => CipherSuite::Aes128GcmSha256,
        b'2' => CipherSuite::Aes256GcmSha384,
        _ => return Err(bad()),
    };
    let hostnqn = parts.next().filter(|s| !s.is_empty()).ok_or_else(bad)?;
    let subnqn = parts.next().filter(|s| !s.is_empty()).ok_or_else(bad)?;
    let digest = parts.next();
    if parts.next().is_some() {
        return Err(bad());
    }
    let digest = match (version, digest) {
        (IdentityVersion::V0, None) => None,
        (IdentityVersion::V1, Some(d)) if !d.is_empty() => Some(d.to_string()),
        _ => return Err(bad()),
    };
    Ok(ParsedIdentity {
        version,
        suite,
        hostnqn: hostnqn.to_string(),
        subnqn: subnqn.to_string(),
        digest,
    })
}

/// HKDF-Expand-Label(HKDF-Extract(zero salt, ikm), label, context, len) (RFC 8446 7.1).
fn hkdf_extract_expand_label(
    hash: Hash,
    ikm: &[u8],
    label: &[u8],
    context: &[u8],
    len: usize,
) -> Result<Vec<u8>, PskError> {
    if context.len() > 255 {
        return Err(PskError::IdentityTooLong(context.len()));
    }
    let mut info = Vec::with_capacity(4 + 6 + label.len() + context.len());
    info.extend_from_slice(&(len as u16).to_be_bytes());
    info.push((6 + label.len()) as u8);
    info.extend_from_slice(b"tls13 ");
    info.extend_from_slice(label);
    info.push(context.len() as u8);
    info.extend_from_slice(context);
    let mut out = vec![0u8; len];
    let ok = match hash {
        Hash::Sha256 => hkdf::Hkdf::<Sha256>::new(None, ikm)
            .expand(&info, &mut out)
            .is_ok(),
        Hash::Sha384 => hkdf::Hkdf::<Sha384>::new(None, ikm)
            .expand(&info, &mut out)
            .is_ok(),
        Hash::Sha512 => false,
    };
    if ok {
        Ok(out)
    } else {
        Err(PskError::Length(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libnvme's test/psk.c configured PSK (32 bytes; the 48-byte one repeats bytes 16..32).
    const KEY32: [u8; 32] = [
        0x55, 0x12, 0xDB, 0xB6, 0x73, 0x7D, 0x01, 0x06, 0xF6, 0x59, 0x75, 0xB7, 0x73, 0xDF, 0xB0,
        0x11, 0xFF, 0xC3, 0x44, 0xBC, 0xF4, 0x42, 0xE2, 0xDD, 0x6D, 0x8B, 0xC4, 0x87, 0x0B, 0x5D,
        0x5B, 0x03,
    ];

    fn key48() -> Vec<u8> {
        let mut k = KEY32.to_vec();
        k.extend_from_slice(&KEY32[16..32]);
        k
    }

    /// libnvme test/psk.c: the exported interchange strings of those keys.
    #[test]
    fn interchange_matches_libnvme() {
        for (hash, key, text) in [
            (
                None,
                KEY32.to_vec(),
                "NVMeTLSkey-1:00:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:",
            ),
            (
                Some(Hash::Sha256),
                KEY32.to_vec(),
                "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:",
            ),
            (
                Some(Hash::Sha384),
                key48(),
                "NVMeTLSkey-1:02:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwP/w0S89ELi3W2LxIcLXVsDn8kXZQ==:",
            ),
        ] {
            let psk = ConfiguredPsk::parse(text).unwrap();
            assert_eq!(psk.retained_hash, hash);
            assert_eq!(psk.key, key);
            assert_eq!(psk.format(), text);
        }
    }

    /// libnvme test/psk.c `test_data_identity` (nvme_generate_tls_key_identity, version 1):
    /// the digest is computed from the retained PSK derived with RFC 8446's labels.
    #[test]
    fn v1_identities_match_libnvme() {
        let cases = [
            (
                Hash::Sha256,
                KEY32.to_vec(),
                "NVMe1R01 nqn.psk-test-host nqn.psk-test-subsys iSbjiStwJ/1TrTvDlt2fjFmzvsytOJelidNnA+X5lEU=",
                CipherSuite::Aes128GcmSha256,
            ),
            (
                Hash::Sha384,
                key48(),
                "NVMe1R02 nqn.psk-test-host nqn.psk-test-subsys QhW2+Rp6RzHlNtCslyRxMnwJ11tKKhz8JCAQpQ+XUD8f9td1VeH5h53yz2wKJG1a",
                CipherSuite::Aes256GcmSha384,
            ),
        ];
        let mut c = None;
        for (hash, key, identity, suite) in cases {
            let len = key.len();
            let psk = ConfiguredPsk {
                retained_hash: Some(hash),
                key,
            };
            let creds = psk
                .credentials(
                    IdentityVersion::V1,
                    "nqn.psk-test-host",
                    "nqn.psk-test-subsys",
                )
                .unwrap();
            assert_eq!(creds.identity, identity);
            assert_eq!(creds.suite, suite);
            assert_eq!(creds.psk.len(), len);
            c = Some(creds);
        }
        let c = c.unwrap();
        let parsed = parse_identity(&c.identity).unwrap();
        assert_eq!(parsed.version, IdentityVersion::V1);
        assert_eq!(parsed.hostnqn, "nqn.psk-test-host");
        assert_eq!(parsed.subnqn, "nqn.psk-test-subsys");
        assert_eq!(parsed.suite, CipherSuite::Aes256GcmSha384);
    }

    /// RFC 8446's HKDF-Expand-Label checked against OpenSSL's TLS 1.3 KDF (an independent
    /// implementation), and the version 0 identity and its TLS PSK, which differ per form.
    #[test]
    fn v0_identity_and_expand_label() {
        let p = ConfiguredPsk {
            retained_hash: Some(Hash::Sha256),
            key: KEY32.to_vec(),
        };
        let v0 = p
            .credentials(IdentityVersion::V0, "nqn.h", "nqn.s")
            .unwrap();
        assert_eq!(v0.identity, "NVMe0R01 nqn.h nqn.s");
        let v1 = p
            .credentials(IdentityVersion::V1, "nqn.h", "nqn.s")
            .unwrap();
        assert_ne!(v0.psk, v1.psk);
        // Retained PSK by OpenSSL's HKDF with the RFC 8446 label written out by hand.
        let mut info = vec![0, 32, 13];
        info.extend_from_slice(b"tls13 HostNQN");
        info.push(5);
        info.extend_from_slice(b"nqn.h");
        let openssl_retained = openssl_hkdf(&KEY32, &info, 32);
        assert_eq!(p.retained("nqn.h").unwrap(), openssl_retained);
        let mut info = vec![0, 32, 18];
        info.extend_from_slice(b"tls13 nvme-tls-psk");
        info.push(v0.identity.len() as u8);
        info.extend_from_slice(v0.identity.as_bytes());
        assert_eq!(v0.psk, openssl_hkdf(&openssl_retained, &info, 32));
        // No hash: the configured PSK is the retained PSK.
        let none = ConfiguredPsk {
            retained_hash: None,
            key: KEY32.to_vec(),
        };
        assert_eq!(none.retained("nqn.h").unwrap(), KEY32);
    }

    fn openssl_hkdf(ikm: &[u8], info: &[u8], len: usize) -> Vec<u8> {
        use openssl::md::Md;
        use openssl::pkey::Id;
        use openssl::pkey_ctx::PkeyCtx;
        let mut ctx = PkeyCtx::new_id(Id::HKDF).unwrap();
        ctx.derive_init().unwrap();
        ctx.set_hkdf_md(Md::sha256()).unwrap();
        ctx.set_hkdf_key(ikm).unwrap();
        ctx.add_hkdf_info(info).unwrap();
        let mut out = vec![0; len];
        ctx.derive(Some(&mut out)).unwrap();
        out
    }

    #[test]
    fn refusals_name_their_reason() {
        let good = ConfiguredPsk {
            retained_hash: Some(Hash::Sha256),
            key: vec![3; 32],
        }
        .format();
        let mut bad: Vec<char> = good.chars().collect();
        bad[17] = if bad[17] == 'A' { 'B' } else { 'A' };
        let bad: String = bad.into_iter().collect();
        assert!(matches!(
            ConfiguredPsk::parse(&bad),
            Err(PskError::Crc { .. })
        ));
        assert_eq!(
            ConfiguredPsk::parse("DHHC-1:00:AAAA:"),
            Err(PskError::Format)
        );
        assert_eq!(
            ConfiguredPsk::parse("NVMeTLSkey-1:03:AAAA:"),
            Err(PskError::Hash("03".into()))
        );
        assert_eq!(
            ConfiguredPsk::parse("NVMeTLSkey-1:01:AAAAAAAA:"),
            Err(PskError::Length(6))
        );
        assert!(matches!(
            ConfiguredPsk::parse("NVMeTLSkey-1:01:!!!!:"),
            Err(PskError::Base64(_))
        ));
        assert_eq!(
            ConfiguredPsk::parse("NVMeTLSkey-1:01:AAAA"),
            Err(PskError::Format)
        );
        for id in [
            "NVMe0R01 a",
            "NVMe0R03 a b",
            "NVMe2R01 a b",
            "NVMe0R01 a b c",
            "NVMe1R01 a b",
            "NVMe1R01 a b c d",
            "nvme0R01 a b",
            "",
        ] {
            assert!(parse_identity(id).is_err(), "{id}");
        }
        let long = "n".repeat(250);
        let p = ConfiguredPsk::parse(&good).unwrap();
        assert!(matches!(
            p.credentials(IdentityVersion::V0, &long, "nqn.s"),
            Err(PskError::IdentityTooLong(_))
        ));
        assert!(format!("{p:?}").contains("<32 bytes>"));
    }
}
